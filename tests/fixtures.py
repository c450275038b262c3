"""Shared fixtures: parameter files, scenario builders and helpers (one module, SPEC §9 shapes)."""
from __future__ import annotations

import asyncio
import hashlib
import types
from pathlib import Path
from typing import Any

from worker.core.engine import Engine
from worker.core.outputs import Source
from worker.core.params import Params, parse_params

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"


def params_toml(
    *,
    mode: str = "partial",
    buffer_ppm: int = 20_000,
    liquidator_ppm: int = 500_000,
    protocol_ppm: int = 0,
    initial_balance: str = "0",
    floor: str = "0",
    pending_timeout_ms: int = 30_000,
    max_mark_age_ms: int = 0,
    max_jump_ppm: int = 0,
    snapshot_interval_ms: int = 0,
    btc_brackets: str = '[{mmr_ppm = 4000}]',
    btc_penalty: str = '{model = "flat", min_ppm = 0, max_ppm = 0}',
    btc_slippage_ppm: int = 0,
    btc_min_notional: str = "0",
    eth_penalty: str = '{model = "flat", min_ppm = 0, max_ppm = 0}',
    eth_slippage_ppm: int = 0,
    eth_brackets: str = '[{mmr_ppm = 5000}]',
    extra: str = "",
) -> str:
    """A complete parameter file; BTC-PERP at 1 price / 3 size decimals, ETH-PERP at 2 / 2."""
    return f"""
[settlement]
asset = "USD"
decimals = 6

[insurance_fund]
initial_balance = "{initial_balance}"
floor = "{floor}"

[engine]
call_ratio_ppm = 1500000
pending_timeout_ms = {pending_timeout_ms}
max_mark_age_ms = {max_mark_age_ms}
max_jump_ppm = {max_jump_ppm}
snapshot_interval_ms = {snapshot_interval_ms}

[liquidation]
mode = "{mode}"
buffer_ppm = {buffer_ppm}

[split]
liquidator_ppm = {liquidator_ppm}
protocol_ppm = {protocol_ppm}

[symbols.BTC-PERP]
price_decimals = 1
size_decimals = 3
brackets = {btc_brackets}
penalty = {btc_penalty}
min_notional = "{btc_min_notional}"
slippage_ppm = {btc_slippage_ppm}

[symbols.ETH-PERP]
price_decimals = 2
size_decimals = 2
brackets = {eth_brackets}
penalty = {eth_penalty}
slippage_ppm = {eth_slippage_ppm}
{extra}
"""


def make_params(**overrides: Any) -> Params:
    return parse_params(params_toml(**overrides).encode())


def lid(account_id: str, scope: str, seq: int, n: int) -> str:
    """The SPEC §4 formula written out independently of the engine."""
    return hashlib.sha256(f"{account_id}|{scope}|{seq}|{n}".encode()).hexdigest()[:32]


def mark(symbol: str, price: str, ts: int, seq: int) -> dict:
    return {"symbol": symbol, "mark_price": price, "ts": ts, "seq": seq}


def position(account: str, symbol: str, size: str, entry: str, seq: int, ts: int, **extra: Any) -> dict:
    return {"type": "position", "account_id": account, "symbol": symbol, "size": size, "entry_price": entry,
            "seq": seq, "ts": ts, **extra}


def balance(account: str, collateral: str, seq: int, ts: int, **extra: Any) -> dict:
    return {"type": "balance", "account_id": account, "asset": "USD", "collateral": collateral, "seq": seq,
            "ts": ts, **extra}


class Driver:
    """Feeds events to an Engine the way replay does and collects outputs by topic."""

    def __init__(self, params: Params) -> None:
        self.engine = Engine(params)
        self.outputs: list = []

    def mark(self, symbol: str, price: str, ts: int, seq: int) -> list:
        return self._keep(self.engine.process_mark(mark(symbol, price, ts, seq), Source("mark-prices", 0, 0, None, b"")))

    def positions(self, *events: dict) -> list:
        value: Any = list(events) if len(events) > 1 else events[0]
        return self._keep(self.engine.process_positions(value, Source("positions", 0, 0, None, b"")))

    def _keep(self, outputs: list) -> list:
        self.outputs.extend(outputs)
        return outputs

    def values(self, topic: str, kind: str | None = None) -> list[dict]:
        return [o.value for o in self.outputs if o.topic == topic and (kind is None or o.value["type"] == kind)]

    def liquidations(self) -> list[dict]:
        return self.values("liquidations")


SHARING = '[loss_sharing]\nmode = "haircut"\nrepay_above = "40"\nround_interval_ms = 1000'
SHARING_T0 = 1_700_000_000_000


def sharing_book(extra: str = SHARING, **overrides: Any) -> Driver:
    """Fund 100 USD above a floor of 40 (full mode, no BTC penalty, ETH flat 0.2 %).

    alice  long 1 BTC @ 20 000, wallet 1 000          → bankrupt at 18 900
    bob    short 1 BTC @ 20 000, wallet 10 000 (cross)  winner: w = 1 · (18 900 − 20 000)·−1 = 1 100
    carol  short 0.5 BTC @ 19 500, wallet 10 000         winner: w = 0.5 · 600 = 300
    dan    isolated short 0.3 BTC @ 19 000, margin 1 000  winner: w = 0.3 · 100 = 30
    frank  long 0.1 BTC @ 18 000 (profit, but on the losing side: not eligible)
    gina   short 1 BTC @ 18 000 (a loss of 900 at 18 900: not eligible)
    erin   long 10 ETH @ 1 500, wallet 250              → solvent liquidation at 1 480
    """
    params = make_params(mode="full", initial_balance="100", floor="40",
                         eth_penalty='{model = "flat", min_ppm = 2000}', extra=extra, **overrides)
    d = Driver(params)
    T = SHARING_T0
    d.mark("BTC-PERP", "20000.0", T, 1)
    d.mark("ETH-PERP", "1500.00", T, 1)
    d.positions(balance("alice", "1000", 1, T), position("alice", "BTC-PERP", "1.000", "20000.0", 2, T))
    d.positions(balance("bob", "10000", 1, T), position("bob", "BTC-PERP", "-1.000", "20000.0", 2, T))
    d.positions(balance("carol", "10000", 1, T), position("carol", "BTC-PERP", "-0.500", "19500.0", 2, T))
    d.positions(balance("dan", "0", 1, T), position("dan", "BTC-PERP", "-0.300", "19000.0", 2, T,
                                                     margin_mode="isolated", isolated_margin="1000"))
    d.positions(balance("frank", "1000", 1, T), position("frank", "BTC-PERP", "0.100", "18000.0", 2, T))
    d.positions(balance("gina", "5000", 1, T), position("gina", "BTC-PERP", "-1.000", "18000.0", 2, T))
    d.positions(balance("erin", "250", 1, T), position("erin", "ETH-PERP", "10.00", "1500.00", 2, T))
    d.outputs.clear()
    return d


def jsonl(records: list[dict]) -> list[bytes]:
    import json

    return [json.dumps(r, separators=(",", ":")).encode() for r in records]


def cascade_scenario(accounts: int = 300, ticks: int = 40, seed: int = 11) -> tuple[list[bytes], list[bytes]]:
    """Setup (marks, balances, BTC positions at 2–25× leverage, in batches) and a BTC sell-off.

    Returns replay JSON Lines: (setup, cascade). The cascade is BTC ticks only (one symbol, so
    one partition keeps their order on the broker as in the file).
    """
    import random

    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    setup = [
        {"topic": "mark-prices", "key": "BTC-PERP", "value": mark("BTC-PERP", "20000.0", t0, 1)},
        {"topic": "mark-prices", "key": "ETH-PERP", "value": mark("ETH-PERP", "1500.00", t0, 1)},
    ]
    for i in range(accounts):
        account = f"acct-{i:05d}"
        lots = rng.randint(100, 3_000)
        leverage = rng.choice([2, 4, 6, 8, 10, 12, 15, 20, 25])
        collateral = 20_000 * lots // 1000 // leverage + 1
        side = 1 if i % 5 else -1
        setup.append({"topic": "positions", "key": account, "value": [
            balance(account, str(collateral), 1, t0 + 1),
            position(account, "BTC-PERP", f"{side * lots / 1000:.3f}", "20000.0", 2, t0 + 1)]})
    cascade = []
    price = 200_000
    for k in range(ticks):
        price = price * 995 // 1000
        cascade.append({"topic": "mark-prices", "key": "BTC-PERP",
                        "value": mark("BTC-PERP", f"{price // 10}.{price % 10}", t0 + 1000 * (k + 1), k + 2)})
    return jsonl(setup), jsonl(cascade)


def sharing_scenario(accounts: int = 40, seed: int = 5) -> tuple[str, list[bytes]]:
    """(params TOML, replay lines) of a BTC crash with loss sharing on: 20× longs go bankrupt at
    −6 %, 12× longs are liquidated solvent at −8 % (their penalties credit the fund, which then
    repays claims), shorts at 3–8× win and pay the haircuts; every few ticks a round can run."""
    import random

    rng = random.Random(seed)
    params = params_toml(mode="full", initial_balance="50", floor="0", liquidator_ppm=500_000,
                         btc_penalty='{model = "flat", min_ppm = 3000}',
                         extra='[loss_sharing]\nmode = "haircut"\nrepay_above = "10"\nround_interval_ms = 0')
    t0 = SHARING_T0
    lines = [{"topic": "mark-prices", "key": "BTC-PERP", "value": mark("BTC-PERP", "20000.0", t0, 1)}]
    for i in range(accounts):
        kind = ("L", "M", "S", "S")[i % 4]
        account = f"{kind}-{i:04d}"
        lots = rng.randint(200, 2_000)
        leverage = {"L": 20, "M": 12}.get(kind) or rng.randint(3, 8)
        collateral = 20_000 * lots // 1000 // leverage + 1
        size = lots if kind != "S" else -lots
        extra = {"margin_mode": "isolated", "isolated_margin": str(collateral)} if i % 7 == 3 else {}
        lines.append({"topic": "positions", "key": account, "value": [
            balance(account, str(collateral), 1, t0 + 1),
            position(account, "BTC-PERP", f"{size / 1000:.3f}", "20000.0", 2, t0 + 1, **extra)]})
    for k, price in enumerate(["18800.0", "18800.0", "18400.0", "18400.0", "18300.0", "18300.0", "18200.0",
                               "18200.0", "18100.0"], start=2):
        lines.append({"topic": "mark-prices", "key": "BTC-PERP", "value": mark("BTC-PERP", price, t0 + 1000 * k, k)})
    return params, jsonl(lines)


class FakeProducer:
    """Stands in for Faust's producer: accepts sends, or fails them as a broker outage would."""

    def __init__(self) -> None:
        self.failing = False
        self.sent: list[tuple] = []
        self.buffer = types.SimpleNamespace(flush=self._nothing)
        self._producer = None

    async def _nothing(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def send(self, topic, key, value, partition, timestamp, headers):  # noqa: ANN001
        if self.failing:
            raise ConnectionError("broker unreachable")
        self.sent.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future
