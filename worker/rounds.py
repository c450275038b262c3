"""Loss-sharing rounds across partitions (SPEC §5.1, §5.2): the coordinator and the participants.

The **coordinator** is the fund's single writer (the fund agent). Its input is the one-partition
`insurance-requests` topic, where it reads, in order, liquidation items, tick markers (the worker
that owns positions partition 0 brackets each tick's own items with `begin` and `end`) and the
partition owners' reports. It keeps the deficits and the rounds in flight in the fund ledger and
drives each round in two phases over the internal broadcast topic `loss-rounds` (one partition,
keyed by round id, read whole by every worker):

  announce  (round id, kind, symbol, loss side, mark seq and price, ts)
      → every owner of a positions partition snapshots its partition (winners and their
        weights, or claimants and their claims), makes the snapshot durable, reports its total
  allocate  (W and A, or C and B), once every partition reported
      → each owner pays from its snapshot (haircuts or repayments, idempotent per account),
        makes the claims durable, publishes the events, reports what it paid
  done      → the coordinator has settled the deficit (or the fund's residue) and published the
              summary; owners drop their snapshots

A report is applied once (per round, partition and phase); a partition that changes owner is
answered by its new owner from the snapshot its old owner made durable (or from a fresh one when
the old owner never reported), so every round stays exact, conserved and applied once.
The math and the events are the core's (worker/core/sharing.py), as in replay.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .core.engine import AccountState
from .core.fund import FundLedger
from .core.outputs import Output
from .core.params import Params
from .core.sharing import (DeficitBook, SharingError, Winner, forget_round, haircut_round_event, haircut_round_id,
                           pay_haircuts_rendered, pay_repayments, repayment_budget, repayment_round_event,
                           repayment_round_id, round_fund_entry, round_memory_rows, rounds_due, shared_amount,
                           snapshot_rows_by_partition)

log = logging.getLogger("worker")
BROADCAST = "loss-rounds"
SNAPSHOT_CHUNK = 2_000  # snapshot entries per changelog record (≈ 80 KiB)


def broadcast(round_id: str, record: dict[str, Any], phase: str) -> Output:
    message = {"type": "round", "schema_version": 1, "round_id": round_id, "phase": phase,
               **{k: record[k] for k in ("kind", "symbol", "loss_side", "mark_seq", "mark", "ts", "partitions")},
               "total": record.get("total"), "amount": record.get("amount")}
    return Output(BROADCAST, round_id, message)


class RoundCoordinator:
    """The coordinator's state machine: pure (no I/O), persisted with the fund ledger."""

    def __init__(self, params: Params, ledger: FundLedger, partitions: int, state: dict[str, Any] | None = None):
        self.params = params
        self.ledger = ledger
        self.partitions = partitions
        self.claims_units = 0  # Σ claims outstanding, as the completed rounds left them
        self.ticks: dict[str, int] = {}  # symbol → seq of the last tick marker applied
        self.due: dict[str, list[Any]] = {}  # symbol → [seq, sides, repay] decided at "begin"
        self.inflight: dict[str, dict[str, Any]] = {}
        self.started_at: dict[str, float] = {}  # round id → monotonic start (metrics only, not state)
        self.durations: list[tuple[str, float]] = []  # (kind, seconds) of finished rounds, for metrics
        if state is not None:
            self.load(state)

    @property
    def book(self) -> DeficitBook:
        return self.ledger.deficits

    # --------------------------------------------------------------- state
    def to_dict(self) -> dict[str, Any]:
        return {"book": self.book.to_dict(), "claims": str(self.claims_units), "ticks": dict(self.ticks),
                "due": {s: list(v) for s, v in self.due.items()}, "inflight": self.inflight}

    def load(self, state: dict[str, Any]) -> None:
        self.ledger.deficits = DeficitBook.from_dict(state["book"])
        self.claims_units = int(state["claims"])
        self.ticks = dict(state["ticks"])
        self.due = {s: list(v) for s, v in state["due"].items()}
        self.inflight = {k: dict(v) for k, v in state["inflight"].items()}

    # --------------------------------------------------------------- input
    def apply(self, item: dict[str, Any]) -> list[Output]:
        """One `insurance-requests` item of kind "tick" or "report"; atomic (state restored if it raises)."""
        before = self.to_dict()
        balance = self.ledger.fund.balance_units
        try:
            if item["kind"] == "tick":
                return self._tick(item)
            if item["kind"] == "report":
                return self._report(item)
            raise ValueError(f"unknown item kind {str(item['kind'])[:40]!r}")
        except BaseException:
            self.load(before)
            self.ledger.fund.balance_units = balance
            raise

    def _tick(self, item: dict[str, Any]) -> list[Output]:
        symbol, seq, ts = item["symbol"], item["seq"], item["ts"]
        if seq <= self.ticks.get(symbol, -1) or self.params.loss_sharing_mode != "haircut":
            return []  # a duplicate or an older tick (two emitters during a handover)
        if item["at"] == "begin":
            if symbol in self.due and self.due[symbol][0] == seq:
                return []  # the same begin again
            # as replay decides it, less what a round in flight already covers
            sides, repay = rounds_due(self.params, self.book, self.claims_units, self.ledger.fund.balance_units,
                                      symbol, ts, seq)
            sides = [side for side in sides if not any(
                r["kind"] == "haircut" and r["symbol"] == symbol and r["loss_side"] == side
                for r in self.inflight.values())]
            repay = repay and not any(r["kind"] == "repay" for r in self.inflight.values())
            self.due[symbol] = [seq, sides, repay]
            return []
        decided = self.due.pop(symbol, None)
        self.ticks[symbol] = seq
        if decided is None or decided[0] != seq or not item["usable"]:
            return []
        out: list[Output] = []
        for side in decided[1]:  # pairs long, then short (SPEC §5.1)
            deficit = self.book.deficit(symbol, side)
            round_id = haircut_round_id(symbol, side, self.book.start_round(symbol, side, ts))
            record = {"kind": "haircut", "symbol": symbol, "loss_side": side, "mark_seq": seq, "mark": item["mark"],
                      "ts": ts, "partitions": self.partitions, "deficit": str(deficit), "phase": "announce",
                      "reports": {}}
            out.extend(self._start(round_id, record))
        if decided[2]:
            round_id = repayment_round_id(self.params.asset, self.book.start_repayment(ts))
            record = {"kind": "repay", "symbol": None, "loss_side": None, "mark_seq": seq, "mark": None, "ts": ts,
                      "partitions": self.partitions, "phase": "announce", "reports": {}}
            out.extend(self._start(round_id, record))
        return out

    def _start(self, round_id: str, record: dict[str, Any]) -> list[Output]:
        self.inflight[round_id] = record
        self.started_at[round_id] = time.monotonic()
        return [broadcast(round_id, record, "announce")]

    def _report(self, item: dict[str, Any]) -> list[Output]:
        record = self.inflight.get(item["round_id"])
        partition = str(item["partition"])
        if record is None or item["phase"] != record["phase"] or partition in record["reports"]:
            return []  # late, duplicate or of a round already done: applied once
        if not 0 <= item["partition"] < self.partitions:
            raise ValueError(f"report for partition {item['partition']} of {self.partitions}")
        record["reports"][partition] = [item["total"], item["count"]]
        if len(record["reports"]) < self.partitions:
            return []
        total = sum(int(t) for t, _ in record["reports"].values())
        count = sum(c for _, c in record["reports"].values())
        round_id = item["round_id"]
        if record["phase"] == "announce":
            return self._allocate(round_id, record, total)
        return self._finish(round_id, record, total, count)

    def _allocate(self, round_id: str, record: dict[str, Any], total: int) -> list[Output]:
        record["reports"] = {}
        record["phase"] = "allocate"
        record["total"] = str(total)
        out: list[Output] = []
        if record["kind"] == "haircut":
            amount = shared_amount(int(record["deficit"]), total)  # A = min(deficit, W)
        else:
            assert self.params.repay_above_units is not None
            balance = self.ledger.fund.balance_units
            record["balance_before"] = str(balance)
            amount = repayment_budget(balance, self.params.repay_above_units, total)  # B
            if amount:  # the fund's debit comes before the repayments (SPEC §6.2)
                out.append(Output("insurance-fund", self.params.asset, round_fund_entry(
                    self.params, ts=record["ts"], delta_units=-amount,
                    balance_after_units=self.ledger.fund.debit(amount), reason="claim_repayment",
                    round_id=round_id)))
        record["amount"] = str(amount)
        if amount == 0:  # nothing to pay: every share is 0
            return out + self._finish(round_id, record, 0, 0)
        return out + [broadcast(round_id, record, "allocate")]

    def _finish(self, round_id: str, record: dict[str, Any], paid: int, count: int) -> list[Output]:
        params = self.params
        total, amount = int(record["total"]), int(record["amount"])
        out: list[Output] = []
        if record["kind"] == "haircut":
            deficit = int(record["deficit"])
            self.book.settle_round(record["symbol"], record["loss_side"], deficit, paid)
            self.claims_units += paid
            out.append(Output("loss-sharing", record["symbol"], haircut_round_event(
                params, round_id=round_id, ts=record["ts"], symbol=record["symbol"], loss_side=record["loss_side"],
                mark_seq=record["mark_seq"], mark_ticks=record["mark"], deficit_before_units=deficit,
                eligible_weight_units=total, shared_units=amount, paid_units=paid,
                carried_units=deficit - paid, haircuts=count), (paid,)))
        else:
            if paid > amount:
                raise SharingError(f"repayment round {round_id} paid {paid} of {amount}")
            if amount - paid:  # the floors' residue goes back to the fund
                out.append(Output("insurance-fund", params.asset, round_fund_entry(
                    params, ts=record["ts"], delta_units=amount - paid,
                    balance_after_units=self.ledger.fund.credit(amount - paid), reason="repayment_residue",
                    round_id=round_id)))
            self.claims_units -= paid
            out.append(Output("loss-sharing", params.asset, repayment_round_event(
                params, round_id=round_id, ts=record["ts"], balance_before_units=int(record["balance_before"]),
                claims_before_units=total, budget_units=amount, paid_units=paid, claimants=count), (paid,)))
        del self.inflight[round_id]
        started = self.started_at.pop(round_id, None)
        if started is not None:
            self.durations.append((record["kind"], time.monotonic() - started))
        out.append(broadcast(round_id, record, "done"))
        return out

    def take_durations(self) -> list[tuple[str, float]]:
        durations, self.durations = self.durations, []
        return durations

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        ages = [now - self.started_at[r] for r in self.inflight if r in self.started_at]
        return {"rounds_in_flight": len(self.inflight), "oldest_round_s": max(ages, default=0.0),
                "claims_units": str(self.claims_units),
                "deficits": {f"{s}/{d}": str(v) for (s, d), v in sorted(self.book.deficits.items())}}


def report_item(round_id: str, partition: int, phase: str, total: int, count: int) -> dict[str, Any]:
    return {"kind": "report", "round_id": round_id, "partition": partition, "phase": phase, "total": str(total),
            "count": count}


def item_key(item: dict[str, Any]) -> str:
    """What a fund-request item is stored under once applied (its outputs, for a re-delivery).
    Total over any JSON: a malformed item (dead-lettered when first applied) has no stored outputs."""
    if not isinstance(item, dict):
        return ""
    kind = item.get("kind", "liquidation")
    if kind == "liquidation":
        return str(item.get("liquidation_id", ""))
    if kind == "tick":
        return f"tick:{item.get('symbol')}:{item.get('seq')}:{item.get('at')}"
    return f"report:{item.get('round_id')}:{item.get('partition')}:{item.get('phase')}"


# ------------------------------------------------------------ participants
def partition_snapshot(params: Params, accounts: dict[str, Any], message: dict[str, Any],
                       partition_of: dict[str, int]) -> dict[int, list[list[Any]]]:
    """What each partition's owner snapshots when it reads an announcement: per partition, the
    winners [account, scope, w] (haircut) or claimants [account, c] (repayment), ascending
    (``partition_of``: account → positions partition, Runtime.partition_of)."""
    return snapshot_rows_by_partition(params, accounts, message["kind"], message.get("symbol"),
                                      message.get("loss_side"), message.get("mark"), partition_of)


def hold_accounts(accounts: dict[str, Any], rows: list[list[Any]]) -> None:
    """Create the account of each row (its first field) that ``accounts`` does not hold: one whose
    record was never written before a takeover (the commit's flush had not run). Its own events come
    again; its claim starts with the round's pay (``pay_partition``) or pay record
    (``Runtime.restore_round_claims``)."""
    for row in rows:
        if row[0] not in accounts:
            accounts[row[0]] = AccountState(row[0])


def pay_partition(params: Params, accounts: dict[str, Any], message: dict[str, Any], rows: list[list[Any]],
                  dirty: set[str]) -> tuple[list[tuple[str, Any]], int, int]:
    """Pay one partition's snapshot: ([(account, event)], paid, how many events), each event keyed by its
    account on `loss-sharing` (SPEC §6); a haircut as its JSON text (``pay_haircuts_rendered``) unless
    JSON would escape one of its strings, a dict otherwise (``Runtime.publish_round_chunk`` sends both)."""
    total, amount = int(message["total"]), int(message["amount"])
    hold_accounts(accounts, rows)
    events: list[tuple[str, Any]]
    if message["kind"] == "haircut":
        snapshot: list[Winner] = [(a, scope, int(w)) for a, scope, w in rows]
        events, paid = pay_haircuts_rendered(
            params, accounts, snapshot, round_id=message["round_id"], ts=message["ts"], symbol=message["symbol"],
            loss_side=message["loss_side"], shared_units=amount, total_weight_units=total, dirty=dirty)
    else:
        repaid, paid = pay_repayments(params, accounts, [(a, int(c)) for a, c in rows],
                                      round_id=message["round_id"], ts=message["ts"], budget_units=amount,
                                      claims_total_units=total, dirty=dirty)
        events = list(repaid)
    return events, paid, len(events)


def forget_partition(accounts: dict[str, Any], round_id: str, rows: list[list[Any]], dirty: set[str]) -> None:
    forget_round(accounts, [row[0] for row in rows], round_id, dirty)


class RoundParticipant:
    """The partition side in one worker: reads the broadcast (through the mark reader), answers
    every round in flight for the positions partitions it owns, in a task of its own so that a
    large round yields to ticks between chunks."""

    PAY_CHUNK = 2_000  # accounts paid per hold of the publish lock
    SWEEP_CHUNK = 1_000  # accounts written per hold of the publish lock after a round (ticks wait for one)
    CHUNKS_IN_FLIGHT = 2  # chunks whose publication is under way at most (the last one paid, and one)
    SNAPSHOT_CHUNK = SNAPSHOT_CHUNK

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.messages: dict[str, dict[str, Any]] = {}  # rounds in flight: latest broadcast
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Future | None = None
        self._publishing: list[asyncio.Future[None]] = []  # chunks' publications under way, oldest first
        self._failures: list[BaseException] = []  # theirs, until the pay loop takes them
        # fault injection for the kill -9 tests only (tests/test_broker_sharing.py): "<phase>:<seconds>"
        # holds this process once per round: "announce" or "allocate" when it first acts on the round
        # in that phase, "paid" once the round's first pay chunk is delivered (its record and events),
        # "sweep" once the sweep has written the first chunk of the round's accounts; and
        # RISK_TEST_PAY_CHUNK pays (and sweeps) in chunks of that many accounts
        pause = os.environ.get("RISK_TEST_ROUND_PAUSE", "")
        self._pause_phase, _, seconds = pause.partition(":")
        self._pause_s = float(seconds or 0)
        self._paused: set[str] = set()
        self.holding: str | None = None  # the phase held now (/stats: the tests wait for it)
        if os.environ.get("RISK_TEST_PAY_CHUNK"):
            self.PAY_CHUNK = self.SWEEP_CHUNK = int(os.environ["RISK_TEST_PAY_CHUNK"])

    # ----------------------------------------------------------- broadcast
    def on_message(self, message: dict[str, Any]) -> None:
        round_id = message["round_id"]
        if message["phase"] == "done":
            self.messages.pop(round_id, None)
        else:
            self.messages[round_id] = message
        if self.runtime.assigned:
            self.queue.put_nowait(round_id)

    def catch_up(self) -> None:
        """After a (re)assignment: answer every round in flight for the partitions now owned,
        and drop what rounds finished while nobody held them."""
        for round_id in list(self.messages):
            self.queue.put_nowait(round_id)
        self.queue.put_nowait("")  # "": sweep the snapshots of rounds that are done

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            round_id = await self.queue.get()
            try:
                if round_id:
                    await self.act(round_id)
                else:
                    await self.sweep()
            except Exception:  # a round's failure is counted and logged; the round stalls, alerted
                log.exception("loss-sharing round %s failed", round_id)
                self.runtime.counters["internal_error:rounds"] += 1

    # -------------------------------------------------------------- phases
    async def act(self, round_id: str) -> None:
        message = self.messages.get(round_id)
        if message is None:
            await self.sweep()
            return
        rt = self.runtime
        if await self._hold(message["phase"], round_id):
            message = self.messages.get(round_id)
            if message is None:
                return
        reports: list[dict[str, Any]] = []
        if message["phase"] == "announce":
            async with rt.publish_lock:
                if not rt.assigned:
                    return  # a takeover in progress: its catch-up answers the round
                owned = sorted(rt.owned)
                missing = [p for p in owned if rt.snapshot_commit(round_id, p) is None]
                fresh = partition_snapshot(rt.params, rt.engine.accounts, message, rt.partition_of) if missing else {}
                for p in missing:  # durable before its report (a new owner answers from it)
                    await rt.write_snapshot(round_id, p, fresh.get(p, []), message["kind"])
                if missing:
                    await rt.flush()
                for p in owned:
                    commit = rt.snapshot_commit(round_id, p)
                    reports.append(report_item(round_id, p, "announce", int(commit["total"]), commit["count"]))
        else:
            for p in sorted(rt.owned):
                commit = rt.snapshot_commit(round_id, p)
                if commit is None:
                    log.error("round %s: no snapshot of partition %d to pay from", round_id, p)
                    rt.counters["internal_error:rounds"] += 1
                    continue
                rows = rt.snapshot_rows(round_id, p, commit)
                paid = count = 0
                revoked = False
                try:
                    for start in range(0, len(rows), self.PAY_CHUNK):
                        async with rt.publish_lock:
                            if p not in rt.owned or not rt.assigned:
                                revoked = True  # revoked meanwhile: the new owner pays (idempotently)
                                break
                            # the accounts are not marked changed: the chunk's claims are made durable
                            # by its record (the round's memory of each account paid), and the accounts
                            # are written once, at the sweep
                            events, chunk_paid, chunk_count = pay_partition(
                                rt.params, rt.engine.accounts, message, rows[start:start + self.PAY_CHUNK],
                                set())
                            paid_rows = round_memory_rows(rt.engine.accounts, round_id, [a for a, _ in events])
                            # claims durable first, then the events: in a task of its own, delivered
                            # while the next chunk is paid (one chunk's publication waits for another
                            # in nothing: their records and events are different ones)
                            self._publishing.append(asyncio.ensure_future(rt.publish_round_chunk(
                                round_id, p, start // self.PAY_CHUNK, paid_rows, events)))
                        paid += chunk_paid
                        count += chunk_count
                        # (a task leaves the list once done, so that a revocation's settle waits for it)
                        await self._settle(keep=self.CHUNKS_IN_FLIGHT - 1)
                        if self._pause_phase == "paid" and chunk_count:
                            await self._settle(keep=0)
                            await self._hold("paid", round_id)
                        if self._failures:
                            break
                        await asyncio.sleep(0)  # let ticks through
                finally:
                    await self.settle()  # every chunk delivered before the report
                # a chunk's failure, whichever settle met it (a revocation's too): no report, the
                # round stalls (alerted) and is answered again, idempotently
                failures, self._failures = self._failures, []
                if failures:
                    raise failures[0]
                if not revoked and p in rt.owned and rt.assigned:
                    reports.append(report_item(round_id, p, "allocate", paid, count))
        if reports:
            await rt.send_reports(reports)

    async def settle(self) -> None:
        """Wait until every chunk's publication under way is done (the pay loop before it reports;
        a revocation before it writes back and drops the accounts). Their failures are kept for the
        pay loop (``_failures``), which raises the first instead of reporting."""
        await self._settle(keep=0)

    async def _settle(self, keep: int) -> None:
        """Wait until at most ``keep`` chunks' publications are under way, the oldest first; each
        leaves the list only once it is done."""
        while len(self._publishing) > keep:
            task = self._publishing[0]
            try:
                await asyncio.shield(task)
            except Exception as exc:  # noqa: BLE001 - kept for the pay loop (a revocation goes on)
                self._failures.append(exc)
            if self._publishing and self._publishing[0] is task:
                self._publishing.pop(0)

    async def sweep(self) -> None:
        """Drop the snapshots (and the accounts' memory) of rounds no longer in flight. Until then a
        round's claims are durable through its snapshot's pay chunk records (``Runtime.write_paid``);
        the sweep first writes each account the round paid, its memory of the round kept, chunk by
        chunk under the publish lock (ticks publish in between), then drops the snapshot and its
        records, and only then forgets the memory, in memory only. So at any kill -9 an account's
        claim is either in its record with the round's memory (a recovery leaves it) or in a chunk
        record still there (a recovery applies it again: ``Runtime.restore_round_claims``), never both
        applied; a record that keeps the memory of a round swept is cleared by the next write or
        recovery."""
        rt = self.runtime
        async with rt.publish_lock:
            done = [(r, p, c) for r, p, c in rt.snapshots_owned() if r not in self.messages]
        for round_id, p, commit in done:
            rows = rt.snapshot_rows(round_id, p, commit)
            dropped = False
            for start in range(0, max(len(rows), 1), self.SWEEP_CHUNK):
                async with rt.publish_lock:
                    if p not in rt.owned or rt.snapshot_commit(round_id, p) is None:
                        break  # revoked meanwhile (its new owner sweeps), or swept already
                    accounts = rt.engine.accounts
                    for row in rows[start:start + self.SWEEP_CHUNK]:
                        account = accounts.get(row[0])
                        if account is not None and account.round_memory(round_id) is not None:
                            rt.engine.dirty.add(row[0])  # written with the memory
                    await rt.persist_dirty_batched()
                    if start + self.SWEEP_CHUNK >= len(rows):
                        await rt.drop_snapshot(round_id, p, commit)
                        dropped = True
                await asyncio.sleep(0)  # let ticks through
                await self._hold("sweep", round_id)
            # then the memory, in memory only (nothing to write: a record that keeps it is cleared by
            # the account's next write or a recovery), chunk by chunk between ticks (25 000 accounts
            # at once held ticks ~10 ms); no await inside a chunk, so no lock is needed
            for start in range(0, len(rows) if dropped else 0, self.SWEEP_CHUNK):
                forget_partition(accounts, round_id, rows[start:start + self.SWEEP_CHUNK], set())
                await asyncio.sleep(0)

    async def _hold(self, phase: str, round_id: str) -> bool:
        """RISK_TEST_ROUND_PAUSE (the kill -9 tests only): hold here the first time per round."""
        if phase != self._pause_phase or f"{phase}:{round_id}" in self._paused:
            return False
        self._paused.add(f"{phase}:{round_id}")
        log.warning("RISK_TEST_ROUND_PAUSE: holding round %s in %s for %.1f s", round_id, phase, self._pause_s)
        self.holding = phase
        await asyncio.sleep(self._pause_s)
        self.holding = None
        return True

    def stats(self) -> dict[str, Any]:
        return {"rounds_seen_in_flight": len(self.messages), "round_queue": self.queue.qsize(),
                "snapshots_kept": len(self.runtime.snapshots_owned()), "holding": self.holding}
