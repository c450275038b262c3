"""Writes examples/cascade.jsonl: 750 traders through a BTC/ETH crash and a short squeeze (for `backtest`).

Run from the repository root: `.venv/bin/python examples/make_cascade.py [OUT]` (default
examples/cascade.jsonl). Offline and deterministic (fixed seed, no broker): the same bytes on every
run (tests/test_backtest.py checks it).

It is what `python -m worker simulate --record` writes against one worker fed in lockstep, without a
broker: a market (marks every 200 ms of event time; calm, a crash with two gaps, a bottom, a short
squeeze, calm again), 600 traders opening cross and isolated positions at 2–100× leverage before it
and 150 more at the bottom (most of them short, 5–25×),
some of them trimming or adding, some answering a margin call with a deposit, and the matching
engine's acknowledgements. The acknowledgements need the liquidations: the generator runs the
engine (`worker.core.engine.Engine`, the replay's) with examples/params.toml beside the market and
answers every liquidation it emits with post-trade snapshots carrying the `liquidation_id`, right
after the tick that caused it — as the simulator does (worker/simulator.py).

So the file is a recorded history under examples/params.toml. Replayed under another parameter set
(`backtest`), the margin rules decide the same liquidations at the same moments when the brackets,
slippage, call ratio and guards are the same (examples/params-gentle.toml keeps them); the penalty,
split, fund and loss sharing differ; the post-trade snapshots are the recorded ones.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.core.engine import Engine  # noqa: E402
from worker.core.outputs import Source  # noqa: E402
from worker.core.params import load_params  # noqa: E402
from worker.replay import run_replay  # noqa: E402

OUT = ROOT / "examples" / "cascade.jsonl"
PARAMS = ROOT / "examples" / "params.toml"
SEED = 2024
TRADERS = 600
T0 = 1_700_000_000_000
TICK_MS = 200
SECONDS = 100
SYMBOLS = {"BTC-PERP": (1, 3, 650_000), "ETH-PERP": (2, 2, 320_000)}  # price decimals, size decimals, opening mark
LEVERAGE = [2, 3, 5, 5, 10, 10, 15, 20, 20, 25, 33, 50, 75, 100]


def fmt(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}" if decimals else sign + digits


def units(text: str, decimals: int) -> int:
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    return -value if text.startswith("-") else value


def drift(second: float, symbol: str) -> float:
    """Drift per second of the marks, by phase (fractions of 1: -0.012 = -1.2 % a second)."""
    eth = symbol == "ETH-PERP"
    if 20 <= second < 32:
        return -0.015 if eth else -0.012  # the crash
    if 50 <= second < 62:
        return 0.015 if eth else 0.012  # the short squeeze
    return 0.0


GAPS = {24.0: -0.025, 29.0: -0.025}  # one-tick gaps at these seconds
LATECOMERS = range(36, 46)  # at each of these seconds, 15 traders open at the bottom, most of them short
LATE_LEVERAGE = [5, 10, 10, 15, 20, 25]


class Trader:
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.seq = 0
        self.collateral = 0  # cross wallet, USD units at 6 decimals
        self.positions: dict[str, list] = {}  # symbol → [lots, entry ticks, isolated margin units or None]


class Generator:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        self.engine = Engine(load_params(str(PARAMS)))
        self.lines: list[dict] = []
        self.marks = {s: m for s, (_, _, m) in SYMBOLS.items()}
        self.mark_seq = dict.fromkeys(SYMBOLS, 0)
        self.traders: dict[str, Trader] = {}
        self.to_ack: list[dict] = []  # liquidations emitted, acknowledged after the line that caused them
        self.calls: list[str] = []  # accounts that entered the margin-call zone (cross)
        self.liquidations: list[bytes] = []

    # ------------------------------------------------------------------ writing and the engine
    def emit(self, topic: str, key: str, value) -> None:
        record = {"topic": topic, "key": key, "value": value}
        self.lines.append(record)
        source = Source(topic, 0, len(self.lines) - 1, key.encode(), b"")
        process = self.engine.process_mark if topic == "mark-prices" else self.engine.process_positions
        for output in process(value, source):
            if output.topic == "liquidations":
                self.to_ack.append(output.value)
                self.liquidations.append(json.dumps(output.value, sort_keys=True).encode())
            elif output.topic == "margin-calls" and output.value["type"] == "margin_call" \
                    and output.value["scope"] == "cross":
                self.calls.append(output.value["account_id"])
            elif output.topic == "dead-letters":
                raise AssertionError(f"the generator wrote a bad event: {output.value}")

    def snapshot(self, trader: Trader, symbol: str, ts: int) -> dict:
        lots, entry, isolated = trader.positions.get(symbol, [0, 0, None])
        price_decimals, size_decimals, _ = SYMBOLS[symbol]
        trader.seq += 1
        event = {"type": "position", "account_id": trader.account_id, "symbol": symbol,
                 "size": fmt(lots, size_decimals), "entry_price": fmt(entry, price_decimals) if lots else "0",
                 "seq": trader.seq, "ts": ts}
        if isolated is not None:
            event["margin_mode"] = "isolated"
            event["isolated_margin"] = fmt(isolated, 6)
        return event

    def balance(self, trader: Trader, ts: int) -> dict:
        trader.seq += 1
        return {"type": "balance", "account_id": trader.account_id, "asset": "USD",
                "collateral": fmt(trader.collateral, 6), "seq": trader.seq, "ts": ts}

    # ------------------------------------------------------------------------------ the market
    def open_accounts(self, ts: int, first: int, count: int, short_share: float, leverages: list[int]) -> None:
        for i in range(first, first + count):
            trader = Trader(f"trader-{i:04d}")
            self.traders[trader.account_id] = trader
            symbols = ["BTC-PERP" if i % 3 else "ETH-PERP"]
            if i % 10 == 7:
                symbols = ["BTC-PERP", "ETH-PERP"]  # a few hold both, cross
            isolated = i % 12 == 5
            events = []
            trader.collateral = 0
            for symbol in symbols:
                price_decimals, size_decimals, _ = SYMBOLS[symbol]
                leverage = self.rng.choice(leverages)
                notional_usd = self.rng.randint(1_000, 60_000)
                mark = self.marks[symbol]
                lots = max(1, notional_usd * 10**size_decimals * 10**price_decimals // mark)
                side = -1 if self.rng.random() < short_share else 1
                margin = notional_usd * 10**6 // leverage
                if isolated:
                    trader.positions[symbol] = [side * lots, mark, margin]
                    trader.collateral += 1_000 * 10**6  # a cross wallet beside it, untouched by its liquidation
                else:
                    trader.positions[symbol] = [side * lots, mark, None]
                    trader.collateral += margin
            events.append(self.balance(trader, ts))
            events += [self.snapshot(trader, symbol, ts) for symbol in symbols]
            self.emit("positions", trader.account_id, events)

    def tick(self, k: int, ts: int) -> None:
        second = k * TICK_MS / 1000
        for symbol, (price_decimals, _, _) in SYMBOLS.items():
            move = drift(second, symbol) * TICK_MS / 1000 + self.rng.gauss(0, 0.0004) + GAPS.get(second, 0.0)
            self.marks[symbol] = max(1, int(self.marks[symbol] * (1 + move)))
            self.mark_seq[symbol] += 1
            self.emit("mark-prices", symbol, {"symbol": symbol, "mark_price": fmt(self.marks[symbol], price_decimals),
                                              "ts": ts, "seq": self.mark_seq[symbol]})

    def acknowledge(self, ts: int) -> None:
        """Fill every liquidation and acknowledge it (the ack may find the account liquidatable again)."""
        while self.to_ack:
            batch, self.to_ack = self.to_ack, []
            for allocation in batch:
                trader = self.traders[allocation["account_id"]]
                out = []
                after = units(allocation["collateral_after"], 6)
                for close in allocation["closes"]:
                    symbol = close["symbol"]
                    lots, entry, isolated = trader.positions[symbol]
                    remaining = units(close["remaining_size"], SYMBOLS[symbol][1])
                    sign = 1 if lots > 0 else -1
                    trader.positions[symbol] = [sign * remaining, entry, isolated]
                    if allocation["scope"] != "cross":
                        trader.positions[symbol][2] = after if remaining else 0
                    out.append(self.snapshot(trader, symbol, ts))
                    if not remaining:
                        del trader.positions[symbol]
                if allocation["scope"] == "cross":
                    trader.collateral = after
                    out.append(self.balance(trader, ts))
                elif after and allocation["scope"] not in trader.positions:
                    trader.collateral += after  # a closed isolated position's margin returns to the wallet
                    out.append(self.balance(trader, ts))
                out[-1]["liquidation_id"] = allocation["liquidation_id"]  # on the last event of the update
                self.emit("positions", trader.account_id, out)

    def deposits(self, ts: int) -> None:
        """A quarter of the traders called since the last tick deposit half their wallet again."""
        called, self.calls = sorted(set(self.calls)), []
        for account_id in called:
            trader = self.traders[account_id]
            if self.rng.random() < 0.25 and trader.collateral > 0:
                trader.collateral += trader.collateral // 2
                self.emit("positions", account_id, [self.balance(trader, ts)])

    def churn(self, ts: int) -> None:
        """Ten traders trim or add up to 20 % of a position (at its entry: a simplification)."""
        for trader in self.rng.sample(sorted(self.traders.values(), key=lambda t: t.account_id), 10):
            if not trader.positions:
                continue
            symbol = sorted(trader.positions)[0]
            lots, entry, isolated = trader.positions[symbol]
            change = int(lots * self.rng.uniform(-0.2, 0.2))
            if change and (lots + change) * lots > 0:
                trader.positions[symbol] = [lots + change, entry, isolated]
                self.emit("positions", trader.account_id, [self.snapshot(trader, symbol, ts)])

    def run(self) -> None:
        for symbol, (price_decimals, _, mark) in SYMBOLS.items():
            self.mark_seq[symbol] += 1
            self.emit("mark-prices", symbol, {"symbol": symbol, "mark_price": fmt(mark, price_decimals), "ts": T0,
                                              "seq": self.mark_seq[symbol]})
        self.open_accounts(T0 + 1, 0, TRADERS, 0.35, LEVERAGE)
        opened = TRADERS
        for k in range(1, SECONDS * 1000 // TICK_MS + 1):
            ts = T0 + k * TICK_MS
            self.tick(k, ts)
            self.acknowledge(ts + 20)
            self.deposits(ts + 40)
            self.acknowledge(ts + 41)  # a deposit re-evaluates the account: it is not liquidated by one
            if k * TICK_MS % 1000 == 0 and k * TICK_MS // 1000 in LATECOMERS:
                self.open_accounts(ts + 50, opened, 15, 0.8, LATE_LEVERAGE)
                opened += 15
            if k % 10 == 0:
                self.churn(ts + 60)
                self.acknowledge(ts + 61)


def main(argv: list[str]) -> int:
    out_path = Path(argv[0]) if argv else OUT  # tests write elsewhere and compare
    generator = Generator()
    generator.run()
    data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in generator.lines)
    out_path.write_bytes(data)
    # the file replays to the liquidations the lockstep engine saw (and every one was acknowledged)
    import io
    out = io.BytesIO()
    engine = run_replay(io.BytesIO(data), out, load_params(str(PARAMS)))
    replayed = [json.dumps(json.loads(line)["value"], sort_keys=True).encode() for line in out.getvalue().splitlines()
                if json.loads(line)["topic"] == "liquidations"]
    assert replayed == generator.liquidations, "replay differs from the lockstep run"
    assert not engine.counters["pending_timeouts"] and not engine.counters["unmatched_acks"], engine.counters
    print(f"{out_path}: {len(generator.lines)} lines, {len(data)} bytes, "
          f"{len(replayed)} liquidations under {PARAMS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
