"""`python -m worker backtest INPUT.jsonl --params A.toml --params B.toml [...] --out DIR` (SPEC §7).

Replays one input under each parameter set — the offline replay itself (``worker.replay``: the same
engine, the same output a `replay` run prints) — and compares what came out: a table on stdout and PNG
charts in DIR. What a risk team runs before changing parameters.

- One process per parameter set (``ProcessPoolExecutor``, at most ``--jobs``, default the CPU count):
  the replays are independent. With one parameter set or ``--jobs 1`` it runs in this process.
- Every figure is exact: amounts are read from the events' decimal strings into integer units at the
  settlement scale (``parse_decimal``) and added as integers; they are formatted at the end. The charts
  convert to float, for plotting only.
- A progress bar (stderr, when it is a terminal or with ``--progress on``): bytes of input replayed,
  over all parameter sets; drawn only once a run has lasted half a second.

The input is a recorded history: replayed under other parameters, the margin rules may liquidate other
accounts or other amounts, but the positions and balances that follow (the matching engine's
acknowledgements) are the recorded ones. Parameter sets sharing the recording's brackets, slippage,
call ratio and guards see the same liquidations at the same moments; their penalties, split, fund and
loss sharing are what the comparison is about.

Figures (per parameter set), from the replay's output events:
  liquidations (solvent, bankrupt) ............ count of `liquidation` events
  penalty paid by traders, by destination ..... Σ totals.penalty / liquidator / insurance_fund / protocol
  shortfall, insurance cover, socialized loss . Σ of those totals
  insurance fund opening / low point / end .... initial_balance; min over it and every balance_after; the last
  haircuts, haircut amount, rounds ............ `haircut` events and Σ amount; `haircut_round` events
  repaid, repayments, rounds .................. `claim_repayment` events and Σ amount; `repayment_round` events
  claims outstanding .......................... Σ over accounts of their last claim_after
  deficit unshared ............................ socialized loss − haircut amount
  margin calls, dead letters .................. counts of `margin_call` and `dead_letter` events
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

from ..core.engine import Engine
from ..core.fixed import format_units, parse_decimal
from ..core.params import Params, ParamsError, load_params
from ..gc_tuning import tune_collector
from ..replay import replay_lines
from ..wire import encode_output

DESTINATIONS = ("liquidator", "insurance_fund", "protocol")
CHARTS = ("backtest.png", "fund.png", "penalty.png", "loss.png", "liquidations.png")
PROGRESS_EVERY_LINES = 200  # a worker publishes its position in the input this often


# ----------------------------------------------------------------------------------------- figures
@dataclass
class Figures:
    """What one replay produced. Amounts in integer units at ``scale`` decimals of ``asset``;
    series are (ts, units) in emission order."""

    label: str
    params_path: str
    params_version: str
    asset: str
    scale: int
    fund_floor: int
    fund_opening: int
    events: int = 0
    liquidations: int = 0
    solvent: int = 0
    bankrupt: int = 0
    penalty: int = 0
    split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DESTINATIONS, 0))
    shortfall: int = 0
    insurance_cover: int = 0
    socialized_loss: int = 0
    fund_low: int = 0
    fund_end: int = 0
    fund_entries: int = 0
    haircut_rounds: int = 0
    haircuts: int = 0
    haircut_amount: int = 0
    repayment_rounds: int = 0
    repayments: int = 0
    repaid: int = 0
    claims: dict[str, int] = field(default_factory=dict)  # account → its last claim_after
    margin_calls: int = 0
    dead_letters: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    fund_series: list[tuple[int, int]] = field(default_factory=list)
    penalty_series: list[tuple[int, int, int, int]] = field(default_factory=list)  # ts, cumulative per destination
    socialized_series: list[tuple[int, int]] = field(default_factory=list)  # cumulative
    claims_series: list[tuple[int, int]] = field(default_factory=list)  # outstanding after each change
    haircut_series: list[tuple[int, int]] = field(default_factory=list)  # cumulative haircuts paid
    liquidation_times: list[tuple[int, bool]] = field(default_factory=list)  # (ts, bankrupt)

    @property
    def claims_outstanding(self) -> int:
        return sum(self.claims.values())

    @property
    def deficit_unshared(self) -> int:
        return self.socialized_loss - self.haircut_amount

    def units(self, text: str) -> int:
        return parse_decimal(text, self.scale)

    def add(self, event: dict[str, Any]) -> None:
        """Account for one output event (the value of a replay output line)."""
        self.events += 1
        kind, ts = event.get("type"), event.get("ts")
        if isinstance(ts, int):
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        if kind == "liquidation":
            totals = event["totals"]
            self.liquidations += 1
            if event["bankrupt"]:
                self.bankrupt += 1
            else:
                self.solvent += 1
            self.liquidation_times.append((ts, bool(event["bankrupt"])))
            self.penalty += self.units(totals["penalty"])
            for destination in DESTINATIONS:
                self.split[destination] += self.units(totals[destination])
            self.penalty_series.append((ts, *(self.split[d] for d in DESTINATIONS)))
            self.shortfall += self.units(totals["shortfall"])
            self.insurance_cover += self.units(totals["insurance_cover"])
            social = self.units(totals["socialized_loss"])
            if social:
                self.socialized_loss += social
                self.socialized_series.append((ts, self.socialized_loss))
        elif kind == "insurance_fund_entry":
            balance = self.units(event["balance_after"])
            self.fund_entries += 1
            self.fund_end = balance
            self.fund_low = min(self.fund_low, balance)
            self.fund_series.append((ts, balance))
        elif kind == "haircut":
            self.haircuts += 1
            self.haircut_amount += self.units(event["amount"])
            self.haircut_series.append((ts, self.haircut_amount))
            self._claim(event["account_id"], self.units(event["claim_after"]), ts)
        elif kind == "claim_repayment":
            self.repayments += 1
            self.repaid += self.units(event["amount"])
            self._claim(event["account_id"], self.units(event["claim_after"]), ts)
        elif kind == "haircut_round":
            self.haircut_rounds += 1
        elif kind == "repayment_round":
            self.repayment_rounds += 1
        elif kind == "margin_call":
            self.margin_calls += 1
        elif kind == "dead_letter":
            self.dead_letters += 1

    def _claim(self, account_id: str, claim_after: int, ts: int) -> None:
        before = self.claims.get(account_id, 0)
        self.claims[account_id] = claim_after
        total = (self.claims_series[-1][1] if self.claims_series else 0) + claim_after - before
        self.claims_series.append((ts, total))


def new_figures(label: str, params_path: str, params: Params) -> Figures:
    return Figures(label=label, params_path=params_path, params_version=params.params_version, asset=params.asset,
                   scale=params.quote_decimals, fund_floor=params.insurance_floor_units,
                   fund_opening=params.insurance_initial_units, fund_low=params.insurance_initial_units,
                   fund_end=params.insurance_initial_units)


# --------------------------------------------------------------------------------------- replaying
_PROGRESS: Any = None  # per worker: a shared array of bytes replayed, one slot per parameter set


def _init_worker(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress


def _counted(handle: BinaryIO, slot: int) -> Iterator[bytes]:
    done = 0
    for number, line in enumerate(handle, start=1):
        done += len(line)
        if _PROGRESS is not None and number % PROGRESS_EVERY_LINES == 0:
            _PROGRESS[slot] = done
        yield line
    if _PROGRESS is not None:
        _PROGRESS[slot] = done


def replay_figures(input_path: str, params_path: str, label: str, slot: int = 0) -> Figures:
    """Replay ``input_path`` under ``params_path`` (exactly as `python -m worker replay` does) and add up
    its output. Runs in a worker process: takes paths, returns plain data."""
    tune_collector()
    params = load_params(params_path)
    figures = new_figures(label, params_path, params)
    engine = Engine(params)
    with open(input_path, "rb") as handle:
        for output in replay_lines(_counted(handle, slot), engine):
            sent, _, _ = encode_output(engine, output)  # what replay would write for it
            figures.add(sent.value)
    return figures


def labels_for(paths: Sequence[str]) -> list[str]:
    """Column names: the file's stem, numbered when two files share one."""
    stems = [Path(path).stem for path in paths]
    labels = []
    for index, stem in enumerate(stems):
        repeats = stems[:index].count(stem)
        labels.append(stem if stems.count(stem) == 1 else f"{stem}#{repeats + 1}")
    return labels


class Progress:
    """`backtest [########------------]  40%  1.2/3.0 MB` on one stderr line, redrawn in place."""

    WIDTH = 30

    def __init__(self, total_bytes: int, enabled: bool, stream: Any = None, delay_s: float = 0.5) -> None:
        self.total = max(1, total_bytes)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.delay_s = delay_s
        self.drawn = False
        self.last = ""

    def update(self, done_bytes: int) -> None:
        if not self.enabled or time.monotonic() - self.start < self.delay_s:
            return
        done = min(done_bytes, self.total)
        filled = self.WIDTH * done // self.total
        line = (f"backtest [{'#' * filled}{'-' * (self.WIDTH - filled)}] {100 * done // self.total:3d}%  "
                f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
        if line != self.last:
            self.stream.write("\r" + line)
            self.stream.flush()
            self.last = line
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.update(self.total)
            self.stream.write("\n")
            self.stream.flush()


class _Slots(list):
    """In this process: the slots of bytes replayed, redrawing the progress bar as they move."""

    def __init__(self, count: int, progress: Progress) -> None:
        super().__init__([0] * count)
        self.progress = progress

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        self.progress.update(sum(self))


def run_backtest(input_path: str, params_paths: Sequence[str], jobs: int | None = None,
                 progress: Progress | None = None) -> list[Figures]:
    """The figures of each parameter set, in the order given."""
    labels = labels_for(params_paths)
    size = os.path.getsize(input_path)
    progress = progress or Progress(size * len(params_paths), enabled=False)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(params_paths)))
    if jobs == 1:
        global _PROGRESS
        _PROGRESS = _Slots(len(params_paths), progress)
        try:
            return [replay_figures(input_path, path, label, slot)
                    for slot, (path, label) in enumerate(zip(params_paths, labels))]
        finally:
            _PROGRESS = None
            progress.close()
    import multiprocessing

    context = multiprocessing.get_context()
    shared = context.Array("q", len(params_paths), lock=False)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(shared,)) as pool:
        futures: list[Future] = [pool.submit(replay_figures, input_path, path, label, slot)
                                 for slot, (path, label) in enumerate(zip(params_paths, labels))]
        try:
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                progress.update(sum(shared))
        finally:
            progress.close()
        return [future.result() for future in futures]


# ------------------------------------------------------------------------------------------- table
def table_rows(results: Sequence[Figures]) -> list[tuple[str, list[str]]]:
    """(label, one value per parameter set): amounts formatted at each set's own scale."""
    def money(get) -> list[str]:
        return [format_units(get(f), f.scale) for f in results]

    def count(get) -> list[str]:
        return [str(get(f)) for f in results]

    return [
        ("params_version", [f.params_version for f in results]),
        ("settlement asset", [f.asset for f in results]),
        ("liquidations", count(lambda f: f.liquidations)),
        ("  solvent", count(lambda f: f.solvent)),
        ("  bankrupt", count(lambda f: f.bankrupt)),
        ("penalty paid by traders", money(lambda f: f.penalty)),
        ("  to liquidator", money(lambda f: f.split["liquidator"])),
        ("  to insurance fund", money(lambda f: f.split["insurance_fund"])),
        ("  to protocol", money(lambda f: f.split["protocol"])),
        ("shortfall", money(lambda f: f.shortfall)),
        ("  insurance cover", money(lambda f: f.insurance_cover)),
        ("  socialized loss", money(lambda f: f.socialized_loss)),
        ("insurance fund opening", money(lambda f: f.fund_opening)),
        ("  low point", money(lambda f: f.fund_low)),
        ("  end", money(lambda f: f.fund_end)),
        ("  ledger entries", count(lambda f: f.fund_entries)),
        ("haircut rounds", count(lambda f: f.haircut_rounds)),
        ("  haircuts", count(lambda f: f.haircuts)),
        ("  haircut amount", money(lambda f: f.haircut_amount)),
        ("  deficit unshared", money(lambda f: f.deficit_unshared)),
        ("repayment rounds", count(lambda f: f.repayment_rounds)),
        ("  repayments", count(lambda f: f.repayments)),
        ("  repaid", money(lambda f: f.repaid)),
        ("claims outstanding", money(lambda f: f.claims_outstanding)),
        ("margin calls", count(lambda f: f.margin_calls)),
        ("dead letters", count(lambda f: f.dead_letters)),
        ("output events", count(lambda f: f.events)),
    ]


def format_table(results: Sequence[Figures], title: str) -> str:
    rows = table_rows(results)
    header = ("", [f.label for f in results])
    label_width = max(len(label) for label, _ in rows) + 2
    widths = [max(len(values[i]) for _, values in (header, *rows)) for i in range(len(results))]
    lines = [title]
    for label, values in (header, *rows):
        cells = "".join(f"  {value:>{width}}" for value, width in zip(values, widths))
        lines.append(f"{label:<{label_width}}{cells}".rstrip())
    return "\n".join(lines) + "\n"


def summary_json(results: Sequence[Figures], input_path: str) -> dict[str, Any]:
    """The table as data: amounts as decimal strings at each set's scale."""
    rows = table_rows(results)
    return {"input": input_path, "columns": [
        {"label": figures.label, "params": figures.params_path,
         "figures": {label.strip(): values[index] for label, values in rows}}
        for index, figures in enumerate(results)]}


# ------------------------------------------------------------------------------------------ charts
def write_charts(results: Sequence[Figures], out_dir: Path, title: str) -> list[Path]:
    """The PNG charts (matplotlib's Agg backend: no display, no pyplot state). Floats from here on,
    for plotting only."""
    from ..extras import charts

    charts()  # the 'charts' extra (matplotlib); a one-line error without it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    starts = [f.first_ts for f in results if f.first_ts is not None]
    ends = [f.last_ts for f in results if f.last_ts is not None]
    t0 = min(starts, default=0)
    span = (max(ends, default=t0) - t0) / 1000
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]
    styles = {"liquidator": "-.", "insurance_fund": "--", "protocol": ":"}

    def color(index: int) -> str:
        return colors[index % len(colors)]

    def seconds(ts: int) -> float:
        return (ts - t0) / 1000

    def step(points: Sequence[tuple[int, int]], start: int, unit: int) -> tuple[list[float], list[float]]:
        xs, ys = [0.0], [start / unit]
        for ts, value in points:
            xs.append(seconds(ts))
            ys.append(value / unit)
        xs.append(max(span, xs[-1]))
        ys.append(ys[-1])
        return xs, ys

    def fund(ax: Any) -> None:
        ax.set_title(f"Insurance fund balance ({_assets(results)})")
        for i, f in enumerate(results):
            unit = 10**f.scale
            xs, ys = step(f.fund_series, f.fund_opening, unit)
            ax.step(xs, ys, where="post", color=color(i), label=f.label)
            ax.axhline(f.fund_floor / unit, color=color(i), linewidth=0.8, linestyle=":", alpha=0.7)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize="small")

    def penalty(ax: Any, destinations: Sequence[str] = DESTINATIONS) -> None:
        ax.set_title(f"Cumulative penalty: paid by traders, and by destination ({_assets(results)})")
        for i, f in enumerate(results):
            unit = 10**f.scale
            xs, ys = step([(p[0], sum(p[1:])) for p in f.penalty_series], 0, unit)
            ax.step(xs, ys, where="post", color=color(i), linewidth=2.2, label=f"{f.label}: traders' total")
            for d in destinations:
                column = 1 + DESTINATIONS.index(d)
                xs, ys = step([(p[0], p[column]) for p in f.penalty_series], 0, unit)
                ax.step(xs, ys, where="post", color=color(i), linestyle=styles[d], label=f"{f.label}: {d}")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize="x-small", ncol=max(1, len(results) // 3))

    def loss(ax: Any) -> None:
        ax.set_title(f"Socialized loss, haircuts (cumulative) and claims outstanding ({_assets(results)})")
        for i, f in enumerate(results):
            unit = 10**f.scale
            xs, ys = step(f.socialized_series, 0, unit)
            ax.step(xs, ys, where="post", color=color(i), label=f"{f.label}: socialized loss")
            if f.haircut_series:
                xs, ys = step(f.haircut_series, 0, unit)
                ax.step(xs, ys, where="post", color=color(i), linestyle="-.", label=f"{f.label}: haircuts")
            if f.claims_series:
                xs, ys = step(f.claims_series, 0, unit)
                ax.step(xs, ys, where="post", color=color(i), linestyle="--", label=f"{f.label}: claims outstanding")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize="x-small")

    def rate(ax: Any) -> None:
        ax.set_title("Liquidations per second of event time (dark: bankrupt)")
        width = 0.9 / max(1, len(results))
        for i, f in enumerate(results):
            per_second: dict[int, list[int]] = {}
            for ts, bankrupt in f.liquidation_times:
                per_second.setdefault((ts - t0) // 1000, [0, 0])[1 if bankrupt else 0] += 1
            seconds_ = sorted(per_second)
            xs = [s + i * width for s in seconds_]
            solvent = [per_second[s][0] for s in seconds_]
            bankrupt = [per_second[s][1] for s in seconds_]
            ax.bar(xs, solvent, width=width, align="edge", color=color(i), alpha=0.55, label=f.label)
            ax.bar(xs, bankrupt, width=width, align="edge", bottom=solvent, color=color(i))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper right", fontsize="small")

    def figure(panels: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
        fig = Figure(figsize=size, dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 2, sharex=True).flatten().tolist() if panels == 4 else [fig.subplots()]
        for ax in axes:
            ax.grid(True, alpha=0.3)
            ax.set_xlim(-0.5, max(span, 1.0) + 1)
        for ax in axes[-2:] if panels == 4 else axes:
            ax.set_xlabel("event time (s since the first event)")
        return fig, axes

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (a, b, c, d) = figure(4, (14, 9))
    fig.suptitle(f"Backtest of {title}: " + " vs ".join(f.label for f in results))
    fund(a), penalty(b), loss(c), rate(d)
    written.append(_save(fig, out_dir / "backtest.png"))
    for name, draw in (("fund.png", fund), ("penalty.png", penalty), ("loss.png", loss),
                       ("liquidations.png", rate)):
        fig, (ax,) = figure(1, (11, 5.5))
        draw(ax)
        written.append(_save(fig, out_dir / name))
    return written


def _assets(results: Sequence[Figures]) -> str:
    return "/".join(sorted({f.asset for f in results}))


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same bytes on every run
    return path


# --------------------------------------------------------------------------------------------- CLI
def main_backtest(argv: Sequence[str]) -> int:
    from ..extras import charts

    parser = argparse.ArgumentParser(
        prog="python -m worker backtest",
        description="Replay one input under several parameter files and compare them: a table of exact figures "
                    "on stdout, PNG charts in --out.")
    parser.add_argument("input", help="replay JSON Lines (SPEC §7): {topic, key, value} per line")
    parser.add_argument("--params", action="append", required=True, metavar="PARAMS.toml",
                        help="a parameter file; give it once per parameter set to compare")
    parser.add_argument("--out", required=True, help="directory for the charts (created if absent)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes replaying in parallel (default: the CPU count, at most one per file)")
    parser.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                        help="progress bar on stderr (auto: when stderr is a terminal)")
    args = parser.parse_args(list(argv))
    charts()  # every backtest draws the charts: say what to install before replaying anything
    if args.jobs is not None and args.jobs < 1:
        raise SystemExit("error: --jobs must be ≥ 1")
    for path in args.params:  # refuse a bad file before any replay starts
        try:
            load_params(path)
        except ParamsError as exc:
            raise SystemExit(f"error: {path}: {exc}") from None
        except OSError as exc:
            raise SystemExit(f"error: cannot read parameters: {exc}") from None
    try:
        size = os.path.getsize(args.input)
    except OSError as exc:
        raise SystemExit(f"error: cannot read {args.input}: {exc}") from None
    enabled = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    results = run_backtest(args.input, args.params, args.jobs, Progress(size * len(args.params), enabled))
    sys.stdout.write(format_table(results, f"Backtest: {args.input} under {len(results)} parameter sets "
                                           f"(amounts in {_assets(results)})"))
    out_dir = Path(args.out)
    try:
        written = write_charts(results, out_dir, Path(args.input).name)
        (out_dir / "summary.json").write_text(json.dumps(summary_json(results, args.input), indent=2) + "\n",
                                              encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"error: cannot write to {out_dir}: {exc}") from None
    for path in written:
        print(f"chart: {path}")
    print(f"summary: {out_dir / 'summary.json'}")
    return 0

