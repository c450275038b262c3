"""Market simulator and matching-engine stand-in for the demo and the streaming benchmarks.

It plays the exchange: opens accounts, moves BTC/ETH marks (a random walk with a crash),
publishes per-partition batches on `positions`, and acknowledges every liquidation it reads on
`liquidations` with post-trade position and balance snapshots carrying the `liquidation_id`.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from topics.codec import decode, encode

from .app import partition_for
from .kafka_security import KafkaSecurity, new_consumer, new_producer

SYMBOLS = {"BTC-PERP": (1, 3), "ETH-PERP": (2, 2)}  # price decimals, size decimals (examples/params.toml)


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
                 seed: int = 42, crash_at_s: float = 15.0, crash_pct: float = 9.0, tick_hz: float = 10.0,
                 security: KafkaSecurity | None = None) -> None:
        self.bootstrap, self.prefix, self.partitions = bootstrap, prefix, partitions
        self.security = KafkaSecurity.from_env() if security is None else security  # RISK_* by default
        self.rng = random.Random(seed)
        self.n_accounts = accounts
        self.crash_at_s, self.crash_pct, self.tick_hz = crash_at_s, crash_pct, tick_hz
        self.accounts: dict[str, SimAccount] = {}
        self.marks = {"BTC-PERP": 650_000, "ETH-PERP": 320_000}  # 65 000.0 and 3 200.00
        self.mark_seq = {s: 0 for s in SYMBOLS}
        self.ts = 1_700_000_000_000
        self.acks = 0
        self.producer: AIOKafkaProducer | None = None

    def topic(self, name: str) -> str:
        return self.prefix + name

    async def start(self) -> None:
        self.producer = new_producer(self.bootstrap, self.security, linger_ms=10, acks="all")
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send_marks(self) -> None:
        assert self.producer is not None
        for symbol, ticks in self.marks.items():
            self.mark_seq[symbol] += 1
            value = {"symbol": symbol, "mark_price": fmt(ticks, SYMBOLS[symbol][0]), "ts": self.ts,
                     "seq": self.mark_seq[symbol]}
            await self.producer.send(self.topic("mark-prices"), encode(value), key=symbol.encode())

    async def send_positions(self, events_by_account: dict[str, list[dict]]) -> None:
        """One batch message per partition (SPEC §6: a batch holds accounts of its partition only)."""
        assert self.producer is not None
        batches: dict[int, list[dict]] = {}
        for account_id, events in events_by_account.items():
            batches.setdefault(partition_for(account_id.encode(), self.partitions), []).extend(events)
        for partition, events in sorted(batches.items()):
            for start in range(0, len(events), 500):
                chunk = events[start:start + 500]
                await self.producer.send(self.topic("positions"), encode(chunk), key=chunk[0]["account_id"].encode(),
                                         partition=partition)

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
            leverage = self.rng.choice([2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 40])
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

    def step_marks(self, elapsed_s: float) -> None:
        crashing = self.crash_at_s <= elapsed_s < self.crash_at_s + 6
        for symbol in self.marks:
            drift = -self.crash_pct / 100 / (6 * self.tick_hz) if crashing else 0.0
            shock = self.rng.gauss(0, 0.0004)
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

    async def run(self, stop: asyncio.Event, started: float) -> None:
        loop = asyncio.get_running_loop()
        await self.send_marks()
        await self.open_accounts()
        while not stop.is_set():
            self.ts += int(1000 / self.tick_hz)
            self.step_marks(loop.time() - started)
            await self.send_marks()
            if self.rng.random() < 0.3:
                await self.churn(20)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1 / self.tick_hz)
            except asyncio.TimeoutError:
                pass

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
                        out = []
                        for close in allocation["closes"]:
                            size_decimals = SYMBOLS[close["symbol"]][1]
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
                        # the acknowledgement rides on the last event of the update: the engine
                        # evaluates the account again on it, when the whole update is applied
                        out[-1]["liquidation_id"] = lid
                        events.setdefault(account.account_id, []).extend(out)
                        self.acks += 1
                if events:
                    await self.send_positions(events)
        finally:
            await consumer.stop()
