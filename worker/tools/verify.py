"""`python -m worker verify OUTPUT.jsonl --params PARAMS.toml`: an independent check of what the engine published.

For settlement teams and auditors (SPEC §5.3). It re-derives every `liquidation` event from its own
fields and the parameters, every haircut and repayment round from its events, checks that every
transfer list matches its totals and every insurance-fund entry chains
(``balance_after`` = previous balance + ``delta``, never paid below the floor), and prints a table
of the events checked by type and, for each mismatch, the event's id, the field, what was expected
and what was found. The exit status is 1 on any mismatch (2 when it cannot run).

Input: replay output (``{"topic", "key", "value"}`` JSON lines, as ``python -m worker replay``
prints them; bare event lines are accepted too; ``-`` reads stdin), or the output topics of a
cluster read back from the beginning to their current end (``--bootstrap HOST:PORT
--topic-prefix P``, with the worker's security flags/RISK_* variables; a progress bar on stderr for
long reads). Replay output is in emission order, so checks that tie events of different topics
together (the deficit a haircut round starts from, the claims and fund balance a repayment round
starts from) are exact; topics read back keep only each partition's order, and those few checks
become bounds (``--unordered`` treats a file the same way, e.g. a concatenation of topic dumps).

It is written apart from the engine: it imports neither ``worker/core/liquidation.py``,
``engine.py``, ``fund.py``, ``sharing.py`` nor ``margin.py`` (tests/test_verify.py walks the
import graph); the rules are written out again in ``worker/tools/verify_math.py``. Only the
parameter loader and the decimal parser are shared. What can and cannot be re-derived from the
output alone is listed in ``verify_liquidation.py`` and ``verify_sharing.py`` and in
docs/methodology.md ("Verification").

Liquidation ids: ``sha256("{account}|{scope}|{seq}|{n}")[:32]`` needs the account's positions
``seq``, which a mark-triggered liquidation does not carry (a position- or balance-triggered one
does: its trigger's seq). The checker learns it from the account's events and searches upward from
the last seq it knows, ``--seq-window`` values (default 100 000); an id that matches no seq there
is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, TextIO

from worker.core.params import Params, ParamsError, load_params

from .verify_common import Context, Event, Malformed, decimal_at, integer, text
from .verify_liquidation import FundLink, check_liquidation
from .verify_math import call_level, liquidation_id, ratio_ppm
from .verify_sharing import Sharing

# event type → the catalog topic it is published on, and the field its key is
TOPIC_OF = {
    "liquidation": ("liquidations", "account_id"),
    "margin_call": ("margin-calls", "account_id"),
    "margin_call_cleared": ("margin-calls", "account_id"),
    "insurance_fund_entry": ("insurance-fund", "asset"),
    "socialized_loss": ("insurance-fund", "asset"),
    "haircut": ("loss-sharing", "account_id"),
    "haircut_round": ("loss-sharing", "symbol"),
    "claim_repayment": ("loss-sharing", "account_id"),
    "repayment_round": ("loss-sharing", "asset"),
    "risk_snapshot": ("risk-snapshots", "symbol"),
    "dead_letter": ("dead-letters", None),
}
CHECKED_TYPES = ("liquidation", "insurance_fund_entry", "socialized_loss", "haircut", "haircut_round",
                 "claim_repayment", "repayment_round", "margin_call", "margin_call_cleared")
# read back in this order: the fund's ledger first (it is what the others are checked against)
BROKER_TOPICS = ("insurance-fund", "liquidations", "loss-sharing", "margin-calls")
REQUIRED_TOPICS = ("insurance-fund", "liquidations")
DEFAULT_SEQ_WINDOW = 100_000


class VerifyError(Exception):
    """The check cannot run (unreadable input, no such topic, …): exit status 2."""


@dataclass
class Record:
    index: int  # position in the input (emission order for replay output)
    topic: str | None
    key: Any
    value: dict
    where: str  # "line 12" or "liquidations[3]@1042"


# ------------------------------------------------------------------------------------ reading
def records_from_lines(lines: Iterable[bytes | str], ctx: Context) -> list[Record]:
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if isinstance(item, dict) and "value" in item and "type" not in item:
            topic, key, value = item.get("topic"), item.get("key"), item.get("value")
        elif isinstance(item, dict) and isinstance(item.get("type"), str):
            topic, key, value = None, None, item  # a bare event (a topic dump)
        else:
            topic = key = value = None
        if not isinstance(value, dict):
            ctx.report("input", f"line {number}", "line", "a JSON event or {\"topic\", \"key\", \"value\"}",
                       line.strip()[:80])
            continue
        records.append(Record(len(records), topic, key, value, f"line {number}"))
    return records


# catalog topic → [(partition, offset, key, value)]
TopicRecords = dict[str, list[tuple[int, int, bytes | None, bytes | None]]]


def records_from_topics(found: TopicRecords, ctx: Context) -> list[Record]:
    """(catalog topic → [(partition, offset, key, value)]) → records, topic by topic, partition by partition."""
    records: list[Record] = []
    for topic in BROKER_TOPICS:
        for partition, offset, key, value in found.get(topic, []):
            where = f"{topic}[{partition}]@{offset}"
            try:
                event = json.loads(value) if value is not None else None
            except ValueError:
                event = None
            if not isinstance(event, dict):
                ctx.report("input", where, "value", "a JSON event", (value or b"")[:80].decode("utf-8", "replace"))
                continue
            records.append(Record(len(records), topic, None if key is None else key.decode("utf-8", "replace"),
                                  event, where))
    return records


# ------------------------------------------------------------------------------- the check
def dedup_key(value: dict) -> tuple | None:
    kind = value.get("type")
    if kind == "liquidation":
        return kind, value.get("liquidation_id")
    if kind == "insurance_fund_entry":
        return kind, value.get("liquidation_id") or value.get("round_id"), value.get("reason")
    if kind == "socialized_loss":
        return kind, value.get("liquidation_id"), value.get("symbol"), value.get("side")
    if kind == "haircut":
        return kind, value.get("haircut_id")
    if kind in ("haircut_round", "repayment_round"):
        return kind, value.get("round_id")
    if kind == "claim_repayment":
        return kind, value.get("repayment_id")
    return None


def distinct(records: list[Record], ctx: Context) -> list[Record]:
    """At-least-once delivery may repeat an event (same id, same bytes): keep the first. The same
    id with other content is a mismatch."""
    seen: dict[tuple, str] = {}
    kept = []
    duplicates = 0
    for record in records:
        key = dedup_key(record.value)
        if key is not None:
            canonical = json.dumps(record.value, sort_keys=True)
            if key in seen:
                duplicates += 1
                if seen[key] != canonical:
                    ctx.report(str(key[0]), " ".join(str(k) for k in key[1:]), "content",
                               "the same content as its first delivery (same id)", f"other content at {record.where}")
                continue
            seen[key] = canonical
        kept.append(record)
    if duplicates:
        ctx.notes.append(f"{duplicates} repeated deliveries of an event (same id) counted once")
    return kept


def check_topic_and_key(ctx: Context, record: Record) -> None:
    kind = record.value.get("type")
    spec = TOPIC_OF.get(kind)
    if spec is None or record.topic is None:
        return
    topic, key_field = spec
    if record.topic != topic:
        ctx.report("input", record.where, "topic", f"{topic} (for a {kind} event)", record.topic)
    elif key_field is not None and record.key is not None and record.key != record.value.get(key_field):
        ctx.report("input", record.where, "key", f"{record.value.get(key_field)} (its {key_field})", record.key)


class FundLedger:
    """The insurance-fund topic in order: the chain of balances and what each id moved."""

    REASONS = {"penalty_insurance_fund": ("liquidation_id", 1), "insurance_cover": ("liquidation_id", -1),
               "claim_repayment": ("round_id", -1), "repayment_residue": ("round_id", 1)}

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.balance = ctx.params.insurance_initial_units
        self.alternative: int | None = None  # after a break: the balance the chain expected
        self.held = {self.balance}
        self.links: dict[str, FundLink] = {}  # liquidation_id → its records
        self.round_links: dict[str, FundLink] = {}  # round_id → its entries
        self.social_by_pair: dict[tuple[str, str], list[int]] = {}

    def link(self, table: dict[str, FundLink], key: str, index: int) -> FundLink:
        found = table.get(key)
        if found is None:
            found = table[key] = FundLink(balance_first=self.balance, first_index=index)
        return found

    def entry(self, record: Record) -> None:
        ctx, ev = self.ctx, record.value
        reason = ev.get("reason")
        link_field, sign = self.REASONS.get(reason, ("liquidation_id", 0))
        link_id = ev.get(link_field)
        e = Event(ctx, "insurance_fund_entry", f"{link_id} {reason}")
        ctx.count("insurance_fund_entry")
        try:
            if sign == 0:
                raise Malformed("reason", "/".join(self.REASONS), reason)
            text(link_id, link_field)
            delta = ctx.amount(ev.get("delta"), "delta")
            after = ctx.amount(ev.get("balance_after"), "balance_after")
        except Malformed as exc:
            e.malformed(exc)
            return
        e.same("asset", ctx.params.asset, ev.get("asset"))
        if delta == 0 or (delta > 0) != (sign > 0):
            e.report("delta", f"{'a credit (> 0)' if sign > 0 else 'a debit (< 0)'} for reason {reason}",
                     ctx.fmt(delta))
        before = self.balance
        if self.alternative is not None and after == self.alternative + delta:
            before = self.alternative  # the previous entry's balance_after was the wrong field: reported there
        self.alternative = None
        if after != before + delta:
            e.report("balance_after", f"{ctx.fmt(before + delta)} (previous balance_after {ctx.fmt(before)} + delta "
                     f"{ctx.fmt(delta)})", ctx.fmt(after))
            self.alternative = before + delta
        floor = ctx.params.insurance_floor_units
        if delta < 0 and after < floor:
            e.report("balance_after", f"at least the floor {ctx.fmt(floor)} (the fund never pays below it)",
                     ctx.fmt(after))
        table = self.links if link_field == "liquidation_id" else self.round_links
        self.link(table, link_id, record.index).entries[reason] = (delta, before, record.index, ev)
        self.balance = after  # carry on from what it says, so one break is reported once
        self.held.add(after)

    def social(self, record: Record) -> None:
        ctx, ev = self.ctx, record.value
        e = Event(ctx, "socialized_loss", f"{ev.get('liquidation_id')} {ev.get('symbol')}/{ev.get('side')}")
        ctx.count("socialized_loss")
        try:
            lid = text(ev.get("liquidation_id"), "liquidation_id")
            symbol = ev.get("symbol")
            if symbol not in ctx.syms:
                raise Malformed("symbol", "a symbol of the parameters", symbol)
            side = text(ev.get("side"), "side", ("long", "short"))
            units = ctx.amount(ev.get("amount"), "amount", positive=True)
        except Malformed as exc:
            e.malformed(exc)
            return
        e.same("asset", ctx.params.asset, ev.get("asset"))
        self.link(self.links, lid, record.index).social.append((record.index, ev))
        self.social_by_pair.setdefault((symbol, side), []).append(units)


class LiquidationIds:
    """``liquidation_id`` = sha256("{account}|{scope}|{seq}|{n}")[:32] (SPEC §4), per account in order."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.seq: dict[str, int] = {}  # account → the lowest its positions seq can be now
        self.last: dict[tuple[str, str], tuple[int, int]] = {}  # (account, scope) → (seq, n) of its last

    def learn(self, account: Any, seq: Any) -> None:
        if isinstance(account, str) and isinstance(seq, int):
            self.seq[account] = max(self.seq.get(account, 0), seq)

    def check(self, ctx: Context, ev: dict) -> None:
        account, scope, lid = ev.get("account_id"), ev.get("scope"), ev.get("liquidation_id")
        trigger = ev.get("trigger")
        if not (isinstance(account, str) and isinstance(scope, str) and isinstance(trigger, dict)):
            return  # reported by the liquidation's own check
        e = Event(ctx, "liquidation", str(lid))
        last = self.last.get((account, scope))

        def n_at(seq: int) -> int:  # liquidations of the scope already emitted at that seq
            return last[1] + 1 if last is not None and last[0] == seq else 0

        found = None
        if trigger.get("source") in ("position", "balance") and isinstance(trigger.get("seq"), int):
            seq = trigger["seq"]  # the event that triggered it is the account's newest
            want = liquidation_id(account, scope, seq, n_at(seq))
            if want == lid:
                found = seq
            else:
                e.report("liquidation_id", f"{want} (sha256(\"{account}|{scope}|{seq}|{n_at(seq)}\")[:32])", lid)
        else:
            low = max(self.seq.get(account, 0), last[0] if last else 0)
            for seq in range(low, low + self.window + 1):
                if liquidation_id(account, scope, seq, n_at(seq)) == lid:
                    found = seq
                    break
            else:
                e.report("liquidation_id", f"sha256(\"{account}|{scope}|seq|n\")[:32] for the account's positions seq "
                         f"(searched {low}…{low + self.window}) and n = the scope's liquidations at that seq", lid)
        if found is not None:
            self.seq[account] = found
            self.last[(account, scope)] = (found, n_at(found))


def check_margin_call(ctx: Context, ev: dict) -> None:
    kind = ev.get("type")
    e = Event(ctx, kind, f"{ev.get('account_id')}/{ev.get('scope')}@{ev.get('ts')}")
    ctx.count(kind)
    try:
        equity = ctx.amount(ev.get("equity"), "equity")
        maintenance = ctx.amount(ev.get("maintenance"), "maintenance", non_negative=True)
        level = ctx.amount(ev.get("call_level"), "call_level", non_negative=True)
        zone = text(ev.get("zone"), "zone", ("call",) if kind == "margin_call" else ("healthy", "liquidatable"))
        trigger = ev.get("trigger")
        if isinstance(trigger, dict) and trigger.get("source") == "mark":
            symbol = trigger.get("symbol")
            if symbol in ctx.syms:
                decimal_at(trigger.get("price"), ctx.syms[symbol].price_decimals, "trigger.price", positive=True)
                ctx.mark_seen(e, "trigger.price", symbol, integer(trigger.get("seq"), "trigger.seq"),
                              trigger.get("price"))
    except Malformed as exc:
        e.malformed(exc)
        return
    e.same("params_version", ctx.params.params_version, ev.get("params_version"))
    e.same_amount("call_level", call_level(maintenance, ctx.params.call_ratio_ppm), level,
                  f"ceil(maintenance · {ctx.params.call_ratio_ppm} / 10^6)")
    e.same("ratio_ppm", ratio_ppm(equity, maintenance), ev.get("ratio_ppm"))
    liquidatable = maintenance > 0 and equity < maintenance
    if zone == "call" and (liquidatable or equity >= level):
        e.report("zone", "not call (equity is not in [maintenance, call_level))", zone)
    elif zone == "liquidatable" and not liquidatable:
        e.report("zone", "not liquidatable (equity ≥ maintenance)", zone)
    elif zone == "healthy" and (liquidatable or (maintenance > 0 and equity < level)):
        e.report("zone", "not healthy (equity below the call level)", zone)


def verify(params: Params, records: list[Record], ctx: Context, seq_window: int = DEFAULT_SEQ_WINDOW) -> Context:
    """Check every record; mismatches and counts land in ``ctx``."""
    records = distinct(records, ctx)
    for record in records:
        check_topic_and_key(ctx, record)
    fund = FundLedger(ctx)
    for record in records:
        kind = record.value.get("type")
        if kind == "insurance_fund_entry":
            fund.entry(record)
        elif kind == "socialized_loss":
            fund.social(record)
    sharing = Sharing(ctx, fund.social_by_pair, fund.held, fund.round_links)
    ids = LiquidationIds(seq_window)
    liquidations: set[str] = set()
    unchecked: dict[str, int] = {}
    for record in records:
        ev = record.value
        kind = ev.get("type")
        if kind == "liquidation":
            ctx.count("liquidation")
            ids.check(ctx, ev)
            lid = ev.get("liquidation_id")
            liquidations.add(lid)  # type: ignore[arg-type]
            check_liquidation(ctx, ev, fund.links.get(lid) if isinstance(lid, str) else None, record.index)
        elif kind == "insurance_fund_entry":
            sharing.on_fund_entry(ev)
        elif kind == "socialized_loss":
            sharing.on_social(ev)
        elif kind == "haircut":
            ctx.count("haircut")
            sharing.haircut(record.index, ev)
        elif kind == "claim_repayment":
            ctx.count("claim_repayment")
            sharing.repayment(record.index, ev)
        elif kind == "haircut_round":
            sharing.haircut_round(record.index, ev)
        elif kind == "repayment_round":
            sharing.repayment_round(record.index, ev)
        elif kind in ("margin_call", "margin_call_cleared"):
            check_margin_call(ctx, ev)
            trigger = ev.get("trigger")
            if ctx.ordered and isinstance(trigger, dict) and trigger.get("source") in ("position", "balance"):
                ids.learn(ev.get("account_id"), trigger.get("seq"))
        else:
            unchecked[str(kind)] = unchecked.get(str(kind), 0) + 1
    sharing.finish()
    for lid, link in fund.links.items():
        if lid not in liquidations:
            kind = "insurance_fund_entry" if link.entries else "socialized_loss"
            Event(ctx, kind, lid).report("liquidation_id", "the id of a liquidation event", lid)
    if unchecked:
        ctx.notes.append("not checked: " + ", ".join(f"{k} {v}" for k, v in sorted(unchecked.items())))
    return ctx


# ------------------------------------------------------------------------------------ report
def summary(ctx: Context, source: str, out: TextIO) -> int:
    params = ctx.params
    order = "emission order" if ctx.ordered else "topic by topic (cross-topic checks as bounds)"
    print(f"verify: {source} ({order}); parameters params_version {params.params_version}", file=out)
    counts: dict[str, int] = {}
    for m in ctx.mismatches:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    kinds = list(CHECKED_TYPES) + sorted(k for k in counts if k not in CHECKED_TYPES)
    print(f"\n  {'event type':<22}{'checked':>9}{'events with mismatches':>25}{'mismatches':>12}", file=out)
    for kind in kinds:
        print(f"  {kind:<22}{ctx.checked.get(kind, 0):>9}{len(ctx.failed.get(kind, ())):>25}{counts.get(kind, 0):>12}",
              file=out)
    if ctx.bounded:
        print(f"\n  {ctx.bounded} liquidation(s) checked partly as bounds: positions the event does not list, on "
              "symbols with slippage (see docs/methodology.md, Verification)", file=out)
    for note in ctx.notes:
        print(f"  {note}", file=out)
    if not ctx.mismatches:
        print("\nOK: no mismatch", file=out)
        return 0
    print(f"\nMISMATCHES ({len(ctx.mismatches)}):", file=out)
    for m in ctx.mismatches:
        print("  " + m.line(), file=out)
    events = sum(len(ids) for ids in ctx.failed.values())
    print(f"\nFAILED: {len(ctx.mismatches)} mismatch(es) in {events} event(s)", file=out)
    return 1


# ------------------------------------------------------------------------------------ broker
class Progress:
    """A progress bar on stderr for long reads (a line per 10 % when stderr is not a terminal)."""

    MIN_RECORDS = 2_000

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled, self.stream = enabled, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.shown_at = 0.0
        self.decile = -1

    def update(self, done: int, total: int, final: bool = False) -> None:
        if not self.enabled or total < self.MIN_RECORDS:
            return
        share = done / total if total else 1.0
        if self.tty:
            now = time.monotonic()
            if not final and now - self.shown_at < 0.2:
                return
            self.shown_at = now
            bar = "#" * int(share * 30)
            self.stream.write(f"\rreading topics [{bar:<30}] {share:4.0%} {done:,}/{total:,} records")
            if final:
                self.stream.write("\n")
        elif int(share * 10) > self.decile or final:
            self.decile = int(share * 10)
            self.stream.write(f"reading topics: {share:4.0%} {done:,}/{total:,} records\n")
        self.stream.flush()


async def read_output_topics(bootstrap: str, prefix: str, security: Any, timeout_s: float,
                             progress: Progress) -> TopicRecords:
    """Read the output topics from their beginning to (at least) the end they had when the read started."""
    from aiokafka.structs import TopicPartition

    from worker.kafka_security import new_consumer

    consumer = new_consumer(bootstrap, security=security, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest")
    await consumer.start()
    try:
        existing = await consumer.topics()
        missing = [prefix + t for t in REQUIRED_TOPICS if prefix + t not in existing]
        if missing:
            raise VerifyError(f"no topic {', '.join(missing)} on {bootstrap} (check --topic-prefix)")
        tps = [TopicPartition(prefix + t, p) for t in BROKER_TOPICS if prefix + t in existing
               for p in sorted(consumer.partitions_for_topic(prefix + t) or ())]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        total = sum(end[tp] - begin[tp] for tp in tps)
        found: TopicRecords = {t: [] for t in BROKER_TOPICS}
        left = {tp for tp in tps if end[tp] > begin[tp]}
        done = 0
        moved_at = time.monotonic()
        while left:
            batch = await consumer.getmany(*left, timeout_ms=500)
            for tp, messages in batch.items():
                # every fetched record is kept: a fetch returns whole batches, and some brokers (the
                # embedded Tansu) report a partition's end as its last batch's first offset + 1
                for message in messages:
                    found[tp.topic[len(prefix):]].append((tp.partition, message.offset, message.key, message.value))
                    done += 1
            for tp in list(left):
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
            if batch:
                moved_at = time.monotonic()
            elif time.monotonic() - moved_at > timeout_s:
                raise VerifyError(f"no record for {timeout_s:g} s; read {done} of {total}")
            progress.update(done, max(total, done))
        progress.update(done, max(total, done), final=True)
        for records in found.values():
            records.sort(key=lambda r: (r[0], r[1]))
        return found
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------------ command
def main_verify(argv: list[str]) -> int:
    from worker.kafka_security import add_security_arguments

    parser = argparse.ArgumentParser(
        prog="python -m worker verify",
        description="Re-derive every liquidation, loss-sharing round and fund entry of an output, independently "
                    "of the engine; exit 1 on any mismatch.")
    parser.add_argument("output", nargs="?", help="replay output (JSON Lines {topic, key, value}); - for stdin")
    parser.add_argument("--params", help="the parameter TOML the output was produced with (or $RISK_PARAMS)")
    parser.add_argument("--bootstrap", help="read the output topics back from this cluster instead of a file")
    parser.add_argument("--topic-prefix", default=os.environ.get("RISK_TOPIC_PREFIX", ""),
                        help="prefix of the topic names [env RISK_TOPIC_PREFIX]")
    parser.add_argument("--unordered", action="store_true",
                        help="the file is not in emission order (e.g. topic dumps concatenated)")
    parser.add_argument("--seq-window", type=int, default=DEFAULT_SEQ_WINDOW,
                        help="positions seqs searched above the last known one for a mark-triggered liquidation's id")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up a broker read after this long idle (s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_security_arguments(parser)
    args = parser.parse_args(argv)
    if (args.output is None) == (args.bootstrap is None):
        parser.error("give either OUTPUT or --bootstrap")
    path = args.params or os.environ.get("RISK_PARAMS")
    if not path:
        parser.error("--params PATH (or RISK_PARAMS) is required")
    try:
        params = load_params(path)
    except (ParamsError, OSError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.bootstrap is None:
            ctx = Context(params, ordered=not args.unordered)
            source = "stdin" if args.output == "-" else args.output
            if args.output == "-":
                records = records_from_lines(sys.stdin.buffer, ctx)
            else:
                with open(args.output, "rb") as handle:
                    records = records_from_lines(handle, ctx)
        else:
            import asyncio

            from worker.kafka_security import KafkaSecurity
            from worker.settings import SettingsError

            try:
                security = KafkaSecurity.resolve(args).check()
            except SettingsError as exc:
                raise VerifyError(str(exc)) from None
            ctx = Context(params, ordered=False)
            found = asyncio.run(read_output_topics(args.bootstrap, args.topic_prefix, security, args.timeout,
                                                   Progress(not args.no_progress)))
            records = records_from_topics(found, ctx)
            source = f"{args.bootstrap} topics {args.topic_prefix}{{{','.join(BROKER_TOPICS)}}}"
    except (OSError, VerifyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verify(params, records, ctx, args.seq_window)
    return summary(ctx, f"{len(records)} records from {source}", sys.stdout)
