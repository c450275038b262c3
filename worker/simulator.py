"""Market simulator and matching-engine stand-in: `python -m worker simulate`, the demo, docker-compose.

It plays the exchange: opens accounts, moves BTC/ETH marks (a random walk with a crash), publishes
per-partition batches on `positions`, and acknowledges every liquidation it reads on `liquidations`
with post-trade position and balance snapshots carrying the `liquidation_id`.

Time is counted in ticks. Tick 0 publishes the opening marks and the accounts; tick k ≥ 1 moves the
marks, at event time `ts` = opening + k × int(1000 / tick_hz) ms, one tick per 1/tick_hz s of wall
clock. The crash starts at tick round(crash_at × tick_hz) and lasts round(crash_s × tick_hz) ticks:
the marks gap down crash_gap_pct at its first tick and lose the rest of crash_pct evenly over its
ticks. The seed and the settings fix every trader and every mark whatever the machine's speed; only
the acknowledgements depend on the workers. The run ends after `ticks` ticks, after `duration`
seconds, or on SIGINT/SIGTERM (0: no limit) — liquidations published after its last tick stay
unacknowledged.

Calibration (the defaults, with the demo's examples/params-demo.toml): the gap bankrupts the longs
of the thin 50x–100x tail (a few % of the traders), whose shortfall is of the order of the fund; the
slow fall after it (0.125 % a second, noise 0.02 % a tick) liquidates the 15x–20x longs while they
are still solvent. A partial liquidation leaves the account's equity just above its maintenance
margin (≈ 0.4–0.5 % of the notional left, `buffer_ppm` 2 % above the bar) and the account is not
looked at again until the acknowledgement: a move larger than that between liquidation and
acknowledgement makes it bankrupt. The former 9 % in 6 s, against workers lagging a second or two
in the cascade, made nearly every liquidated trader bankrupt; 5 % in 20 s with 0.04 % of noise a
tick still added a few % of them whenever the workers lagged a second (offline, acknowledgements
0–1.5 s late: 4–8 % of the traders bankrupt, against 2–3 % now).

`--record FILE` also writes every message it produces, in the order produced, as replay JSON Lines
(SPEC §7: `{"topic", "key", "value"}`, topic names without the prefix), so that a run can be replayed
offline with `python -m worker replay FILE`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

from aiokafka import AIOKafkaProducer

from topics.codec import decode, encode

from .app import partition_for
from .kafka_security import SECURITY_SETTINGS, KafkaSecurity, new_consumer, new_producer
from .settings import SETTINGS, Setting, WorkerSettings, add_arguments, resolve, resolve_values

SYMBOLS = {"BTC-PERP": (1, 3), "ETH-PERP": (2, 2)}  # price decimals, size decimals (examples/params.toml)

# Traders' leverage at opening: (leverage, weight in % of traders). Most trade at 10x or less; the
# 15x–20x longs are liquidated as the crash goes on (solvent: the fall after its gap is slow), and a
# thin tail at 50x and 100x (3 %) has less margin than the crash's gap: its longs go bankrupt there.
# No leverage sits near the gap (a 25x trader's 4 % margin against a 4 % gap), where a few ticks of
# noise before the crash would decide between bankruptcy and a solvent liquidation.
LEVERAGE = ((2, 15), (3, 15), (5, 20), (10, 20), (15, 15), (20, 12), (50, 2), (100, 1))
NOISE = 0.0002  # standard deviation of a tick's relative move (0.02 % a tick, before and during the crash)

# The worker's settings the simulator shares: where the cluster is, how to log in, how topics are named
# and partitioned (positions are batched per partition, with the workers' partition count).
CONNECTION_SETTINGS: tuple[Setting, ...] = tuple(
    s for s in SETTINGS
    if s.name in ("bootstrap", "topic_prefix", "partitions") or s in SECURITY_SETTINGS)

SIM_SETTINGS: tuple[Setting, ...] = (
    Setting("accounts", "RISK_SIM_ACCOUNTS", 5_000, "traders opened at tick 0"),
    Setting("seed", "RISK_SIM_SEED", 42, "random seed: same seed and settings, same traders and marks"),
    Setting("tick_hz", "RISK_SIM_TICK_HZ", 10.0, "mark ticks per second (event time advances 1/tick-hz s a tick)"),
    Setting("crash_at", "RISK_SIM_CRASH_AT", 15.0, "simulated second (tick / tick-hz) at which the crash starts"),
    Setting("crash_pct", "RISK_SIM_CRASH_PCT", 9.0,
            "fall of the marks over the crash, percent (the gap, then an even share per tick)"),
    Setting("crash_gap_pct", "RISK_SIM_CRASH_GAP_PCT", 4.0,
            "part of --crash-pct the marks lose at once, on the crash's first tick (a gap), percent"),
    Setting("crash_s", "RISK_SIM_CRASH_S", 40.0, "how long the crash lasts, simulated seconds"),
    Setting("ticks", "RISK_SIM_TICKS", 0, "stop after this many ticks (0: no limit)"),
    Setting("duration", "RISK_SIM_DURATION", 0.0, "stop after this many seconds of wall clock (0: no limit)"),
    Setting("record", "RISK_SIM_RECORD", "", "also write every message produced to this file as replay JSON Lines"),
)


@dataclass(frozen=True)
class SimSettings:
    accounts: int
    seed: int
    tick_hz: float
    crash_at: float
    crash_pct: float
    crash_gap_pct: float
    crash_s: float
    ticks: int
    duration: float
    record: str

    @classmethod
    def resolve(cls, args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> "SimSettings":
        """Flag, else environment variable (RISK_SIM_*), else default; refused when out of range."""
        settings = cls(**resolve_values(SIM_SETTINGS, args, environ))
        problems = [text for bad, text in (
            (settings.accounts < 0, "--accounts must be ≥ 0"),
            (settings.tick_hz <= 0, "--tick-hz must be > 0"),
            (settings.crash_at < 0, "--crash-at must be ≥ 0"),
            (not 0 <= settings.crash_pct < 100, "--crash-pct must be in [0, 100)"),
            (not 0 <= settings.crash_gap_pct <= settings.crash_pct, "--crash-gap-pct must be in [0, --crash-pct]"),
            (settings.crash_s <= 0, "--crash-s must be > 0"),
            (settings.ticks < 0, "--ticks must be ≥ 0"),
            (settings.duration < 0, "--duration must be ≥ 0"),
        ) if bad]
        if problems:
            raise SystemExit("error: " + "; ".join(problems))
        return settings


def connection(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> WorkerSettings:
    """The connection settings (flag, else RISK_* variable, else default); the worker's others at their defaults."""
    return dataclasses.replace(resolve(environ={}), **resolve_values(CONNECTION_SETTINGS, args, environ))


def client_settings(settings: WorkerSettings) -> tuple[str, KafkaSecurity]:
    """The one place the simulator's Kafka clients (producer and consumer) get their connection settings:
    the worker's bootstrap and security (worker/kafka_security.py)."""
    return settings.bootstrap, settings.security


def fmt(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}" if decimals else sign + digits


@dataclass
class SimAccount:
    account_id: str
    seq: int = 0
    collateral_units: int = 0  # USD at 6 decimals
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # symbol → (lots, entry ticks)


class Market:
    def __init__(self, bootstrap: str, prefix: str = "", partitions: int = 4, accounts: int = 5_000,
                 seed: int = 42, crash_at_s: float = 15.0, crash_pct: float = 9.0, crash_s: float = 40.0,
                 tick_hz: float = 10.0, crash_gap_pct: float = 4.0, record: BinaryIO | None = None,
                 security: KafkaSecurity | None = None) -> None:
        self.bootstrap, self.prefix, self.partitions = bootstrap, prefix, partitions
        self.security = KafkaSecurity.from_env() if security is None else security  # RISK_* by default
        self.rng = random.Random(seed)
        self.n_accounts = accounts
        self.crash_pct, self.crash_gap_pct, self.tick_hz = crash_pct, crash_gap_pct, tick_hz
        self.crash_start = max(1, round(crash_at_s * tick_hz))  # first tick of the crash
        self.crash_ticks = max(1, round(crash_s * tick_hz))
        self.accounts: dict[str, SimAccount] = {}
        self.marks = {"BTC-PERP": 650_000, "ETH-PERP": 320_000}  # 65 000.0 and 3 200.00
        self.mark_seq = {s: 0 for s in SYMBOLS}
        self.ts = 1_700_000_000_000
        self.tick = 0
        self.acks = 0
        self.sent = 0  # messages produced
        self.failed: list[BaseException] = []  # deliveries the broker refused (after the producer's retries)
        self.record = record
        self._send_lock = asyncio.Lock()  # the record's order is the order messages were handed to the producer
        self.producer: AIOKafkaProducer | None = None

    @classmethod
    def from_settings(cls, conn: WorkerSettings, sim: SimSettings, record: BinaryIO | None = None) -> "Market":
        bootstrap, security = client_settings(conn)
        return cls(bootstrap, conn.topic_prefix, conn.partitions, accounts=sim.accounts, seed=sim.seed,
                   crash_at_s=sim.crash_at, crash_pct=sim.crash_pct, crash_gap_pct=sim.crash_gap_pct,
                   crash_s=sim.crash_s, tick_hz=sim.tick_hz,
                   record=record, security=security)

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def start(self) -> None:
        self.producer = new_producer(self.bootstrap, self.security, linger_ms=10, acks="all")
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, topic: str, key: str, value: Any, partition: int | None = None) -> None:
        """Produce one message (`topic` without the prefix) and, with a record file, write it there too."""
        assert self.producer is not None
        async with self._send_lock:
            delivery = await self.producer.send(self.topic(topic), encode(value), key=key.encode(), partition=partition)
            delivery.add_done_callback(self._delivered)
            self.sent += 1
            if self.record is not None:
                self.record.write(encode({"topic": topic, "key": key, "value": value}) + b"\n")

    def _delivered(self, delivery: asyncio.Future) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self.failed.append(delivery.exception())

    async def send_marks(self) -> None:
        for symbol, ticks in self.marks.items():
            self.mark_seq[symbol] += 1
            value = {"symbol": symbol, "mark_price": fmt(ticks, SYMBOLS[symbol][0]), "ts": self.ts,
                     "seq": self.mark_seq[symbol]}
            await self.send("mark-prices", symbol, value)

    async def send_positions(self, events_by_account: dict[str, list[dict]]) -> None:
        """One batch message per partition (SPEC §6: a batch holds accounts of its partition only)."""
        batches: dict[int, list[dict]] = {}
        for account_id, events in events_by_account.items():
            batches.setdefault(partition_for(account_id.encode(), self.partitions), []).extend(events)
        for partition, events in sorted(batches.items()):
            for start in range(0, len(events), 500):
                chunk = events[start:start + 500]
                await self.send("positions", chunk[0]["account_id"], chunk, partition=partition)

    def _snapshot(self, account: SimAccount, symbol: str, liquidation_id: str | None = None) -> dict:
        lots, entry = account.positions.get(symbol, (0, 0))
        price_decimals, size_decimals = SYMBOLS[symbol]
        account.seq += 1
        event = {"type": "position", "account_id": account.account_id, "symbol": symbol,
                 "size": fmt(lots, size_decimals), "entry_price": fmt(entry, price_decimals),
                 "seq": account.seq, "ts": self.ts}
        if liquidation_id:
            event["liquidation_id"] = liquidation_id
        return event

    def _balance(self, account: SimAccount, liquidation_id: str | None = None) -> dict:
        account.seq += 1
        event = {"type": "balance", "account_id": account.account_id, "asset": "USD",
                 "collateral": fmt(account.collateral_units, 6), "seq": account.seq, "ts": self.ts}
        if liquidation_id:
            event["liquidation_id"] = liquidation_id
        return event

    async def open_accounts(self) -> None:
        events: dict[str, list[dict]] = {}
        for i in range(self.n_accounts):
            account = SimAccount(f"trader-{i:06d}")
            leverage = self.rng.choices([lev for lev, _ in LEVERAGE], weights=[w for _, w in LEVERAGE])[0]
            notional_usd = self.rng.randint(1_000, 60_000)
            symbol = "BTC-PERP" if i % 3 else "ETH-PERP"
            price_decimals, size_decimals = SYMBOLS[symbol]
            mark = self.marks[symbol]
            lots = max(1, notional_usd * 10**size_decimals * 10**price_decimals // mark)
            side = -1 if self.rng.random() < 0.3 else 1
            account.positions[symbol] = (side * lots, mark)
            account.collateral_units = notional_usd * 10**6 // leverage
            self.accounts[account.account_id] = account
            events[account.account_id] = [self._balance(account), self._snapshot(account, symbol)]
        await self.send_positions(events)

    def crashing(self) -> bool:
        return self.crash_start <= self.tick < self.crash_start + self.crash_ticks

    def step_marks(self) -> None:
        """A tick's move: noise, and in the crash an even share of its fall beyond the gap, plus the
        gap on its first tick."""
        drift = 0.0
        if self.crashing():
            drift = -(self.crash_pct - self.crash_gap_pct) / 100 / self.crash_ticks
            if self.tick == self.crash_start:
                drift -= self.crash_gap_pct / 100
        for symbol in self.marks:
            shock = self.rng.gauss(0, NOISE)
            self.marks[symbol] = max(1, int(self.marks[symbol] * (1 + drift + shock)))

    async def churn(self, count: int) -> None:
        """Some traders add to or trim their positions."""
        events: dict[str, list[dict]] = {}
        for account in self.rng.sample(list(self.accounts.values()), min(count, len(self.accounts))):
            if not account.positions:
                continue
            symbol = next(iter(account.positions))
            lots, entry = account.positions[symbol]
            change = int(lots * self.rng.uniform(-0.2, 0.2))
            if change and (lots + change) * lots > 0:
                account.positions[symbol] = (lots + change, entry)
                events[account.account_id] = [self._snapshot(account, symbol)]
        await self.send_positions(events)

    async def step(self) -> None:
        """Tick k ≥ 1: the marks move and are published; now and then some traders churn."""
        self.tick += 1
        self.ts += int(1000 / self.tick_hz)
        self.step_marks()
        await self.send_marks()
        if self.rng.random() < 0.3:
            await self.churn(20)

    async def run(self, stop: asyncio.Event, ticks: int = 0) -> None:
        """Tick 0 (opening marks, accounts), then one tick per 1/tick_hz s until `stop` or tick `ticks` (0: none)."""
        await self.send_marks()
        await self.open_accounts()
        while not stop.is_set() and not (ticks and self.tick >= ticks):
            await self.step()
            if ticks and self.tick >= ticks:
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=1 / self.tick_hz)
            except asyncio.TimeoutError:
                pass

    async def drive(self, stop: asyncio.Event, ticks: int = 0, duration_s: float = 0.0) -> None:
        """The market and, beside it, the matching engine, until `stop`, `ticks` ticks or `duration_s` seconds
        (0: no limit). Either of them failing stops both and raises."""
        timer = asyncio.get_running_loop().call_later(duration_s, stop.set) if duration_s > 0 else None
        tasks = [asyncio.create_task(self.run(stop, ticks)), asyncio.create_task(self.acknowledge(stop))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            if timer is not None:
                timer.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def fill(self, account: SimAccount, allocation: dict) -> list[dict]:
        """The matching engine fills one liquidation: the account's post-trade snapshots, the last one
        carrying the `liquidation_id` (the engine evaluates the account again on it, when the whole
        update is applied)."""
        out = []
        for close in allocation["closes"]:
            lots, entry = account.positions.get(close["symbol"], (0, 0))
            remaining = int(close["remaining_size"].replace(".", ""))
            if remaining == 0:
                account.positions.pop(close["symbol"], None)
            else:
                account.positions[close["symbol"]] = ((1 if lots > 0 else -1) * remaining, entry)
            out.append(self._snapshot(account, close["symbol"]))
        if allocation["scope"] == "cross":
            account.collateral_units = int(allocation["collateral_after"].replace(".", ""))
            out.append(self._balance(account))
        out[-1]["liquidation_id"] = allocation["liquidation_id"]
        self.acks += 1
        return out

    async def acknowledge(self, stop: asyncio.Event) -> None:
        """The matching engine: fill each liquidation and acknowledge it on `positions`."""
        consumer = new_consumer(self.bootstrap, self.topic("liquidations"), security=self.security, group_id=None,
                                auto_offset_reset="latest")
        await consumer.start()
        seen: set[str] = set()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                events: dict[str, list[dict]] = {}
                for records in batch.values():
                    for record in records:
                        allocation = decode(record.value)
                        lid = allocation["liquidation_id"]
                        account = self.accounts.get(allocation["account_id"])
                        if lid in seen or account is None:
                            continue
                        seen.add(lid)
                        events.setdefault(account.account_id, []).extend(self.fill(account, allocation))
                if events:
                    await self.send_positions(events)
        finally:
            await consumer.stop()


# --------------------------------------------------------------------------------------------- CLI
@contextlib.contextmanager
def open_record(path: str) -> Iterator[BinaryIO | None]:
    """The `--record` file (truncated), or None without one."""
    if not path:
        yield None
        return
    try:
        handle = open(path, "wb")
    except OSError as exc:
        raise SystemExit(f"error: cannot write {path}: {exc}") from None
    with handle:
        yield handle


def summary(market: Market, record: str = "") -> str:
    return (f"simulator: {len(market.accounts)} accounts, {market.tick} ticks, {market.acks} acknowledgements, "
            f"{market.sent} messages" + (f", recorded in {record}" if record else ""))


async def run_simulator(conn: WorkerSettings, sim: SimSettings) -> Market:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with open_record(sim.record) as record:
        market = Market.from_settings(conn, sim, record)
        print(f"simulator: {sim.accounts} traders on {conn.bootstrap} (prefix {conn.topic_prefix!r}, "
              f"{conn.partitions} partitions), {sim.tick_hz:g} ticks/s, crash of {sim.crash_pct:g} % (a gap of "
              f"{sim.crash_gap_pct:g} % at its first tick) from tick {market.crash_start} for {market.crash_ticks} ticks",
              flush=True)
        await market.start()
        try:
            await market.drive(stop, sim.ticks, sim.duration)
        finally:
            await market.stop()
    return market


def main_simulate(argv: list[str]) -> int:
    """``python -m worker simulate [flags]``: the market and matching engine against a Kafka cluster."""
    parser = argparse.ArgumentParser(
        prog="python -m worker simulate",
        description="Market simulator and matching-engine stand-in: traders, BTC/ETH marks with a crash, "
                    "acknowledgement of every liquidation. Every setting is a flag, a RISK_* variable or the default.")
    add_arguments(parser.add_argument_group("cluster (the worker's settings)"), CONNECTION_SETTINGS)
    add_arguments(parser.add_argument_group("simulation"), SIM_SETTINGS)
    args = parser.parse_args(argv)
    conn, sim = connection(args), SimSettings.resolve(args)
    market = asyncio.run(run_simulator(conn, sim))
    print(summary(market, sim.record), flush=True)
    if market.failed:
        print(f"error: {len(market.failed)} of {market.sent} messages were not delivered: {market.failed[0]!r}",
              file=sys.stderr)
        return 1
    return 0
