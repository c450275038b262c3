"""`python -m worker demo`: its parameters, its console board, and the simulator's calibration.

The board's figures are checked against the engine's own state on the worked loss-sharing book
(tests/test_sharing.py). The calibration test plays the simulator's default market offline: the
Market publishes into an in-process replay Engine and its matching engine fills the liquidations
once a second (up to a second late, as the live demo's acknowledgements when the workers are busy
with the cascade; no broker).
"""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.fixtures import EXAMPLES, sharing_book
from topics.codec import encode
from worker.core.engine import Engine
from worker.core.outputs import Source
from worker.core.params import load_params
from worker.demo import DEMO_PARAMS, Board, demo_parser, sharing, units
from worker.kafka_security import KafkaSecurity
from worker.simulator import Market, SimSettings

T = 1_700_000_000_000


# ------------------------------------------------------------------------------------- parameters
def test_the_demo_runs_its_own_parameters_by_default():
    assert demo_parser().parse_args([]).params == str(DEMO_PARAMS) == str(EXAMPLES / "params-demo.toml")


def test_the_demo_parameters_are_the_examples_with_loss_sharing_and_a_larger_fund():
    demo, example = load_params(DEMO_PARAMS), load_params(EXAMPLES / "params.toml")
    assert demo.loss_sharing_mode == "haircut" and example.loss_sharing_mode == "record"
    assert demo.insurance_floor_units <= demo.repay_above_units < demo.insurance_initial_units
    changed = {"params_version", "insurance_initial_units", "insurance_floor_units", "loss_sharing_mode",
               "repay_above_units"}
    same = {f.name for f in dataclasses.fields(demo)} - changed
    assert {name: getattr(demo, name) for name in same} == {name: getattr(example, name) for name in same}


# ------------------------------------------------------------------------------------------ board
@pytest.mark.parametrize("text, value", [
    ("12.5", 12_500_000), ("-0.000001", -1), ("3", 3_000_000), ("0.000000", 0), ("1000.000000", 1_000_000_000)])
def test_amounts_are_parsed_exactly(text, value):
    assert units(text) == value


@pytest.mark.parametrize("text", ["1.0000001", "abc", "", "-", "1.", "--1", "+1", "1e3", "0.5 ", "١"])
def test_what_is_not_an_amount_is_refused(text):
    with pytest.raises(ValueError):
        units(text)


def worked_book():
    """tests/test_sharing.py's book: alice's bankruptcy leaves 40 USD on (BTC-PERP, long); two
    haircut rounds share all but 1 unit among bob, carol and dan; two repayment rounds."""
    d = sharing_book()
    for symbol, price, ts, seq in [("BTC-PERP", "18900.0", T + 1000, 2), ("BTC-PERP", "18900.0", T + 2000, 3),
                                   ("ETH-PERP", "1480.00", T + 3000, 2), ("ETH-PERP", "1480.00", T + 4000, 3),
                                   ("BTC-PERP", "18900.0", T + 4000, 5), ("BTC-PERP", "18900.0", T + 5000, 6)]:
        d.mark(symbol, price, ts, seq)
    return d


def test_the_board_adds_up_the_loss_sharing_events_as_the_engine_does():
    d = worked_book()
    board = Board()
    for output in d.outputs:
        board.add(output.topic, output.value)
    claims = {a: s.claim_units for a, s in d.engine.accounts.items() if s.claim_units}
    assert board.socialized == 40_000_000
    assert (board.haircuts, board.haircut_rounds, board.repayment_rounds) == (4, 3, 2)
    assert board.shared == 40_000_000 - 1 == 30_769_230 + 8_391_608 + 839_160 + 1
    assert board.carried == sum(d.engine.deficits.deficits.values()) == 1
    assert board.repaid == 11_384_615 + 3_104_895 + 310_489
    assert board.claims_outstanding == d.engine.claims_units == sum(claims.values())
    assert {a: c for a, c in board.claims.items() if c} == claims and board.claimants == 3
    assert board.fund_balance == d.engine.fund.balance_units == 40_000_001

    before = vars(board).copy()
    for output in d.outputs:  # at-least-once: every event again, with the same ids
        board.add(output.topic, output.value)
    assert {k: v for k, v in vars(board).items() if k != "times"} == {k: v for k, v in before.items() if k != "times"}

    assert sharing(board) == ("shared 39.99 in 4 haircuts (3 rounds)  carried 0.00  claims 25.20 (3 claimants)  "
                              "repaid 14.79 (2 rounds)")


def test_a_haircut_read_before_its_bankruptcy_carries_nothing_negative():
    d = worked_book()
    board = Board()
    for output in d.outputs:
        if output.topic != "liquidations":
            board.add(output.topic, output.value)
    assert (board.socialized, board.carried, board.shared) == (0, 0, 39_999_999)


# ------------------------------------------------------------------------------------ calibration
class OfflineMarket(Market):
    """The simulator's market and matching engine around an in-process replay Engine."""

    def __init__(self, engine: Engine, sim: SimSettings) -> None:
        super().__init__("offline:0", accounts=sim.accounts, seed=sim.seed, crash_at_s=sim.crash_at,
                         crash_pct=sim.crash_pct, crash_gap_pct=sim.crash_gap_pct, crash_s=sim.crash_s,
                         tick_hz=sim.tick_hz, security=KafkaSecurity())
        self.engine = engine
        self.outputs: list = []
        self.unfilled: list[dict] = []

    async def send(self, topic, key, value, partition=None) -> None:
        self.sent += 1
        source = Source(topic, 0, self.sent, key.encode(), encode(value))
        process = self.engine.process_mark if topic == "mark-prices" else self.engine.process_positions
        out = process(value, source)
        self.outputs.extend(out)
        self.unfilled.extend(o.value for o in out if o.topic == "liquidations")

    async def fill_tick(self) -> None:
        """Fill the liquidations published so far; those the fills bring about wait for the next tick."""
        allocations, self.unfilled = self.unfilled, []
        events: dict[str, list[dict]] = {}
        for allocation in allocations:
            account = self.accounts[allocation["account_id"]]
            events.setdefault(account.account_id, []).extend(self.fill(account, allocation))
        await self.send_positions(events)

    async def play(self, ticks: int, fill_every: int) -> None:
        """Tick 0, then the ticks; the matching engine fills every `fill_every` ticks."""
        await self.send_marks()
        await self.open_accounts()
        while self.tick < ticks:
            await self.step()
            if self.tick % fill_every == 0:
                await self.fill_tick()


def test_the_default_crash_bankrupts_a_few_percent_and_socializes_about_the_fund():
    """The demo's defaults (5 000 traders, a 9 % crash from 15 s: a 4 % gap, then 5 % over 40 s) on
    its parameters: a quarter of the traders liquidated, a few % bankrupt (the 50x/100x longs at the
    gap), a socialized loss of the order of the fund, shared in haircuts and partly repaid."""
    sim = SimSettings.resolve(environ={})
    params = load_params(DEMO_PARAMS)
    market = OfflineMarket(Engine(params), sim)
    # acknowledgements up to a second late, as in the live demo's cascade (a worker lags)
    asyncio.run(market.play(ticks=market.crash_start + market.crash_ticks + 50, fill_every=round(sim.tick_hz)))
    liquidations = [o.value for o in market.outputs if o.topic == "liquidations"]
    liquidated = {v["account_id"] for v in liquidations}
    bankrupt = {v["account_id"] for v in liquidations if v["bankrupt"]}
    socialized = sum(units(v["totals"]["socialized_loss"]) for v in liquidations)
    board = Board()
    for output in market.outputs:
        board.add(output.topic, output.value)
    assert [o for o in market.outputs if o.topic == "dead-letters"] == []
    assert 0.15 < len(liquidated) / sim.accounts < 0.40
    assert 0.01 < len(bankrupt) / sim.accounts < 0.05
    assert 0.5 < socialized / params.insurance_initial_units < 3
    # shared but for the floors' residue: the shorts' profits exceed the deficit
    assert board.socialized == socialized and board.carried == sum(market.engine.deficits.deficits.values())
    assert board.carried < 1_000_000 and board.claims_outstanding == market.engine.claims_units
    assert board.haircuts > 100 and 0 < board.repaid < board.shared
