"""`python -m worker report EVENTS.jsonl [--out report.png]`: a chart and a summary of a run's output.

The input is either replay output (`{"topic", "key", "value"}` per line, `python -m worker replay`) or a
raw topic dump (one event JSON per line, e.g. the `liquidations`, `insurance-fund` and `dead-letters`
topics concatenated). Lines that are not JSON events are counted and skipped; an event delivered twice
(at-least-once: same id) is counted once.

The summary is exact: every amount is a decimal string at the settlement scale, parsed to an integer
of minor units and added as an integer. Floats appear only in the chart. The chart (PNG, matplotlib's
Agg backend, no display needed) has four panels over event time (`ts`): the insurance fund balance
(`insurance_fund_entry.balance_after`), liquidations per second, the cumulative penalty split by
destination, and the cumulative socialized loss.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

DESTINATIONS = ("liquidator", "insurance_fund", "protocol")
BANKRUPTCY = ("shortfall", "insurance_cover", "socialized_loss")
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ amounts
def decimals(text: str) -> int:
    """Number of decimals a decimal string carries."""
    return len(text.partition(".")[2])


def to_units(text: Any, scale: int) -> int:
    """A decimal string → integer units at ``scale`` decimals, exactly ("1.5", 6 → 1 500 000).

    Refuses anything that is not a plain decimal string (JSON numbers included: money is never a
    float) and a string with more decimals than ``scale`` (it would need rounding).
    """
    if not isinstance(text, str) or not DECIMAL.fullmatch(text):
        raise ValueError(f"not a decimal string: {text!r}")
    whole, _, fraction = text.partition(".")
    if len(fraction) > scale:
        raise ValueError(f"{text!r} has more than {scale} decimals")
    negative = whole.startswith("-")
    units = int(whole.lstrip("-")) * 10**scale + int(fraction.ljust(scale, "0") or "0")
    return -units if negative else units


def fmt_units(units: int, scale: int) -> str:
    """Integer units → decimal string with exactly ``scale`` decimals (inverse of to_units)."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}" if scale else sign + digits


# ----------------------------------------------------------------------------------------- reading
def _dedup_key(event: dict) -> tuple | None:
    kind = event.get("type")
    if kind == "liquidation":
        return kind, event.get("liquidation_id")
    if kind == "insurance_fund_entry":  # a liquidation's entries, or a repayment round's (SPEC §5.2)
        return kind, event.get("liquidation_id") or event.get("round_id"), event.get("reason")
    if kind == "socialized_loss":
        return kind, event.get("liquidation_id"), event.get("symbol"), event.get("side")
    if kind in ("haircut", "claim_repayment", "haircut_round", "repayment_round"):
        return kind, event.get("haircut_id") or event.get("repayment_id") or event.get("round_id")
    if kind == "dead_letter":
        source = event.get("source") or {}
        return kind, source.get("topic"), source.get("partition"), source.get("offset"), source.get("index")
    return None


def _events_of(record: Any) -> list[dict] | None:
    """The events of one line: replay output `{topic, key, value}` or a bare event (or an array of them)."""
    if isinstance(record, dict) and "topic" in record and "value" in record and "type" not in record:
        record = record["value"]
    items = record if isinstance(record, list) else [record]
    if items and all(isinstance(item, dict) and isinstance(item.get("type"), str) for item in items):
        return items
    return None


@dataclass
class Events:
    """The distinct events of an input, in input order."""

    events: list[dict] = field(default_factory=list)
    lines: int = 0
    unreadable: int = 0
    duplicates: int = 0
    conflicting: int = 0  # same id, different content: kept the first

    @classmethod
    def read(cls, lines: Iterable[bytes | str]) -> "Events":
        found = cls()
        seen: dict[tuple, str] = {}
        for line in lines:
            if isinstance(line, bytes):
                line = line.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            found.lines += 1
            try:
                events = _events_of(json.loads(line))
            except ValueError:
                events = None
            if events is None:
                found.unreadable += 1
                continue
            for event in events:
                key = _dedup_key(event)
                if key is not None:
                    canonical = json.dumps(event, sort_keys=True)
                    if key in seen:
                        found.duplicates += 1
                        found.conflicting += seen[key] != canonical
                        continue
                    seen[key] = canonical
                found.events.append(event)
        return found


# ----------------------------------------------------------------------------------------- summary
@dataclass
class Summary:
    """Exact figures of a run: amounts in integer units at ``scale`` decimals of ``asset``."""

    scale: int
    asset: str
    events: int
    first_ts: int | None
    last_ts: int | None
    solvent: int = 0
    bankrupt: int = 0
    penalty: int = 0
    split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DESTINATIONS, 0))
    bankruptcy: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BANKRUPTCY, 0))
    socialized_events: int = 0  # sum of socialized_loss events (equals bankruptcy["socialized_loss"])
    fund_entries: int = 0
    fund_opening: int | None = None  # balance before the first entry: its balance_after − delta
    fund_final: int | None = None
    fund_lowest: int | None = None
    dead_letters: Counter = field(default_factory=Counter)
    # time series for the chart: (ts, value in units)
    fund_series: list[tuple[int, int]] = field(default_factory=list)
    liquidation_times: list[tuple[int, bool]] = field(default_factory=list)  # (ts, bankrupt)
    split_series: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # cumulative
    socialized_series: list[tuple[int, int]] = field(default_factory=list)  # cumulative

    @property
    def liquidations(self) -> int:
        return self.solvent + self.bankrupt


def _amounts(event: dict) -> list[str]:
    kind = event["type"]
    if kind == "liquidation":
        return [v for k, v in (event.get("totals") or {}).items() if isinstance(v, str)]
    if kind == "insurance_fund_entry":
        return [event["delta"], event["balance_after"]]
    if kind == "socialized_loss":
        return [event["amount"]]
    return []


def settlement_scale(events: list[dict]) -> int:
    """The settlement scale: every amount carries exactly its decimals (SPEC §6), so all agree."""
    seen = {decimals(a) for e in events for a in _amounts(e) if isinstance(a, str)}
    if len(seen) > 1:
        raise ValueError(f"amounts carry different numbers of decimals: {sorted(seen)}")
    return seen.pop() if seen else 0


def _asset(events: list[dict]) -> str:
    for event in events:
        if event["type"] in ("insurance_fund_entry", "socialized_loss") and event.get("asset"):
            return str(event["asset"])
        for transfer in event.get("transfers") or ():
            if transfer.get("asset"):
                return str(transfer["asset"])
    return "units"


def summarize(events: list[dict]) -> Summary:
    scale = settlement_scale(events)
    times = [e["ts"] for e in events if isinstance(e.get("ts"), int)]
    summary = Summary(scale=scale, asset=_asset(events), events=len(events),
                      first_ts=min(times, default=None), last_ts=max(times, default=None))
    split = dict.fromkeys(DESTINATIONS, 0)
    socialized = 0
    for event in events:
        kind, ts = event["type"], event.get("ts")
        if kind == "liquidation":
            totals = event["totals"]
            if event["bankrupt"]:
                summary.bankrupt += 1
            else:
                summary.solvent += 1
            summary.liquidation_times.append((ts, bool(event["bankrupt"])))
            summary.penalty += to_units(totals["penalty"], scale)
            for destination in DESTINATIONS:
                split[destination] += to_units(totals[destination], scale)
            summary.split_series.append((ts, dict(split)))
            for name in BANKRUPTCY:
                summary.bankruptcy[name] += to_units(totals[name], scale)
            socialized += to_units(totals["socialized_loss"], scale)
            summary.socialized_series.append((ts, socialized))
        elif kind == "insurance_fund_entry":
            balance = to_units(event["balance_after"], scale)
            if summary.fund_opening is None:
                summary.fund_opening = balance - to_units(event["delta"], scale)
            summary.fund_entries += 1
            summary.fund_final = balance
            summary.fund_lowest = balance if summary.fund_lowest is None else min(summary.fund_lowest, balance)
            summary.fund_series.append((ts, balance))
        elif kind == "socialized_loss":
            summary.socialized_events += to_units(event["amount"], scale)
        elif kind == "dead_letter":
            summary.dead_letters[(event.get("error") or {}).get("code", "?")] += 1
    summary.split = split
    return summary


def _iso(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def format_summary(summary: Summary, source: str, read: Events) -> str:
    money = lambda units: fmt_units(units, summary.scale)  # noqa: E731
    rows: list[tuple[str, str]] = [
        (f"Liquidation report: {source}", ""),
        ("  events", f"{summary.events}"),
        ("  unreadable lines", f"{read.unreadable}"),
        ("  duplicates skipped", f"{read.duplicates}" + (f" ({read.conflicting} conflicting)" if read.conflicting else "")),
        ("  first event", _iso(summary.first_ts)),
        ("  last event", _iso(summary.last_ts)),
        ("Liquidations", f"{summary.liquidations}"),
        ("  solvent", f"{summary.solvent}"),
        ("  bankrupt", f"{summary.bankrupt}"),
        (f"Penalty ({summary.asset})", money(summary.penalty)),
        *((f"  {d}", money(summary.split[d])) for d in DESTINATIONS),
        (f"Bankruptcy ({summary.asset})", ""),
        *((f"  {b}", money(summary.bankruptcy[b])) for b in BANKRUPTCY),
        (f"Insurance fund ({summary.asset})", ""),
        ("  opening balance", "-" if summary.fund_opening is None else money(summary.fund_opening)),
        ("  final balance", "-" if summary.fund_final is None else money(summary.fund_final)),
        ("  lowest balance", "-" if summary.fund_lowest is None else money(summary.fund_lowest)),
        ("  ledger entries", f"{summary.fund_entries}"),
        ("Dead letters", f"{sum(summary.dead_letters.values())}"),
        *((f"  {code}", f"{count}") for code, count in sorted(summary.dead_letters.items())),
    ]
    width = max(len(label) for label, _ in rows[1:]) + 2
    return "\n".join(f"{label:<{width}}{value:>24}" if value else label for label, value in rows) + "\n"


# ------------------------------------------------------------------------------------------- chart
def write_chart(summary: Summary, out_path: str, title: str) -> None:
    """Four panels over event time, written as PNG with the Agg backend (no display, no pyplot state)."""
    from .extras import charts

    charts()  # the 'charts' extra (matplotlib); a one-line error without it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = summary.first_ts or 0
    span = ((summary.last_ts or t0) - t0) / 1000
    # Floats from here on: for plotting only. Every figure of the summary stays in exact integer units.
    unit = 10**summary.scale

    def seconds(ts: int) -> float:
        return (ts - t0) / 1000

    def step(points: list[tuple[int, float]], start: float) -> tuple[list[float], list[float]]:
        xs, ys = [0.0], [start]
        for ts, value in points:
            xs.append(seconds(ts))
            ys.append(value)
        xs.append(max(span, xs[-1]))
        ys.append(ys[-1])
        return xs, ys

    fig = Figure(figsize=(13, 8.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(f"{title}: {summary.liquidations} liquidations ({summary.bankrupt} bankrupt), "
                 f"event time from {_iso(summary.first_ts)}")
    (fund_ax, rate_ax), (split_ax, social_ax) = fig.subplots(2, 2, sharex=True)
    xlabel = "event time (s since first event)"

    fund_ax.set_title(f"Insurance fund balance ({summary.asset})")
    if summary.fund_series and summary.fund_opening is not None:
        xs, ys = step([(ts, units / unit) for ts, units in summary.fund_series], summary.fund_opening / unit)
        fund_ax.step(xs, ys, where="post", color="tab:blue")
        fund_ax.plot(xs[1:-1], ys[1:-1], "o", color="tab:blue", markersize=3)
        fund_ax.set_ylim(bottom=0, top=max(ys) * 1.1 or 1)
    else:
        fund_ax.text(0.5, 0.5, "no insurance_fund_entry", ha="center", va="center", transform=fund_ax.transAxes)

    rate_ax.set_title("Liquidations per second of event time")
    per_second: dict[int, list[int]] = {}  # whole second of event time (ts // 1000) → [solvent, bankrupt]
    for ts, bankrupt in summary.liquidation_times:
        counts = per_second.setdefault(ts // 1000, [0, 0])
        counts[1 if bankrupt else 0] += 1
    if per_second:
        seconds_ = sorted(per_second)
        xs = [seconds(second * 1000) for second in seconds_]
        solvent = [per_second[second][0] for second in seconds_]
        bankrupt = [per_second[second][1] for second in seconds_]
        rate_ax.bar(xs, solvent, width=0.9, align="edge", color="tab:green", label="solvent")
        rate_ax.bar(xs, bankrupt, width=0.9, align="edge", bottom=solvent, color="tab:red", label="bankrupt")
        rate_ax.legend(loc="upper left")
        rate_ax.yaxis.get_major_locator().set_params(integer=True)
    else:
        rate_ax.text(0.5, 0.5, "no liquidation", ha="center", va="center", transform=rate_ax.transAxes)

    split_ax.set_title(f"Cumulative penalty by destination ({summary.asset})")
    for destination, color in zip(DESTINATIONS, ("tab:orange", "tab:blue", "tab:purple")):
        xs, ys = step([(ts, split[destination] / unit) for ts, split in summary.split_series], 0.0)
        split_ax.step(xs, ys, where="post", color=color, label=destination)
    split_ax.legend(loc="lower right")

    social_ax.set_title(f"Cumulative socialized loss ({summary.asset})")
    xs, ys = step([(ts, units / unit) for ts, units in summary.socialized_series], 0.0)
    social_ax.step(xs, ys, where="post", color="tab:red")
    if not summary.bankruptcy["socialized_loss"]:
        social_ax.set_ylim(-0.05, 1)
        social_ax.text(0.5, 0.5, "no socialized loss", ha="center", va="center", transform=social_ax.transAxes)
    else:
        social_ax.set_ylim(bottom=0)

    for ax in (fund_ax, rate_ax, split_ax, social_ax):
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=min(0.0, seconds(t0 // 1000 * 1000)), right=max(span, 1.0) + 1)
    for ax in (split_ax, social_ax):
        ax.set_xlabel(xlabel)
    fig.savefig(out_path, format="png")


# --------------------------------------------------------------------------------------------- CLI
def main_report(argv: list[str] | None = None) -> int:
    from .extras import charts

    charts()  # every report draws the chart: say what to install before reading anything
    parser = argparse.ArgumentParser(
        prog="python -m worker report",
        description="Chart (PNG) and exact summary of replay output or a topic dump.")
    parser.add_argument("input", help="JSON Lines: replay output ({topic, key, value}) or one event per line; "
                                      "- for standard input")
    parser.add_argument("--out", default="report.png", help="PNG chart to write (default: report.png)")
    args = parser.parse_args(argv)
    try:
        if args.input == "-":
            read = Events.read(sys.stdin.buffer)
        else:
            with open(args.input, "rb") as handle:
                read = Events.read(handle)
    except OSError as exc:
        raise SystemExit(f"error: cannot read {args.input}: {exc}") from None
    if not read.events:
        print(f"error: no events in {args.input} ({read.unreadable} unreadable lines)", file=sys.stderr)
        return 1
    try:
        summary = summarize(read.events)
    except (KeyError, TypeError, ValueError) as exc:
        print(f"error: {args.input}: malformed event: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(format_summary(summary, args.input, read))
    try:
        write_chart(summary, args.out, title=args.input)
    except OSError as exc:
        raise SystemExit(f"error: cannot write {args.out}: {exc}") from None
    print(f"chart: {args.out}")
    return 0


if __name__ == "__main__":  # `python -m worker.report`, until `python -m worker report` dispatches here
    raise SystemExit(main_report())
