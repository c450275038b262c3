"""Margin math (SPEC §3): equity, tiered maintenance, zones, liquidation/bankruptcy prices, severity."""
from fractions import Fraction

import pytest

from tests.fixtures import make_params
from worker.core.margin import (
    Leg, MarginState, bankruptcy_price, liquidation_price, liquidation_price_ticks, maintenance, margin_state, severity_ppm, zone,
)

PARAMS = make_params()  # BTC-PERP: one bracket at 0.4 %, 1 price decimal, 3 size decimals
BTC = PARAMS.symbols["BTC-PERP"]
USD = 1_000_000  # quote units per dollar


def long_one_btc(mark_ticks: int) -> list[Leg]:
    # 1.000 BTC = 1 000 lots, entry 20 000.0 = 200 000 ticks
    return [Leg(BTC, 1_000, 200_000, mark_ticks)]


@pytest.mark.parametrize(
    "mark_ticks, equity_units, maintenance_units, expected_zone",
    [
        # EQ = 1 000 + (19 076.3 − 20 000) = 76.3; MM = ceil(19 076.3 · 0.004) = 76.3052 → EQ < MM
        pytest.param(190_763, 76_300_000, 76_305_200, "liquidatable", id="liquidatable at mark 19076.3"),
        # EQ = 76.4; MM = 76.3056 → EQ ≥ MM, and EQ < 1.5·MM = 114.4584 → margin call
        pytest.param(190_764, 76_400_000, 76_305_600, "call", id="not liquidatable at mark 19076.4, in the call zone"),
        # EQ = 1 000 + 0 = 1 000; MM = 80 → healthy
        pytest.param(200_000, 1_000 * USD, 80 * USD, "healthy", id="healthy at entry"),
    ],
)
def test_wallet_1000_long_1_btc_at_20000(mark_ticks, equity_units, maintenance_units, expected_zone):
    state = margin_state(1_000 * USD, long_one_btc(mark_ticks))
    assert (state.equity_units, state.maintenance_units) == (equity_units, maintenance_units)
    assert zone(state, 1_500_000) == expected_zone


def test_liquidation_price_of_the_spec_check_is_19076_31():
    # P_liq = (q·E − C' − cum) / (q − |q|·mmr) = (20 000 − 1 000 − 0) / 0.996 = 19 076.3052…
    price_ticks = liquidation_price(1_000 * USD, long_one_btc(200_000), 0)
    assert price_ticks == Fraction(19_000 * 10, 1) / Fraction(996, 1000)
    assert Fraction(1907630, 100) < price_ticks / 10 < Fraction(1907631, 100)
    # reported: the highest tick still liquidatable for a long, 19 076.3 (checked above to be so)
    assert liquidation_price_ticks(price_ticks, 1_000) == 190_763


def test_short_liquidation_price_is_the_lowest_liquidatable_tick():
    # short 1 BTC at 20 000, wallet 1 000: EQ = 1 000 − (P − 20 000), MM = 0.004·P;
    # EQ < MM ⇔ 21 000 < 1.004·P ⇔ P > 20 916.334… → lowest liquidatable tick 20 916.4
    legs = [Leg(BTC, -1_000, 200_000, 200_000)]
    price = liquidation_price(1_000 * USD, legs, 0)
    assert liquidation_price_ticks(price, -1_000) == 209_164
    assert zone(margin_state(1_000 * USD, [Leg(BTC, -1_000, 200_000, 209_164)]), 1_500_000) == "liquidatable"
    assert zone(margin_state(1_000 * USD, [Leg(BTC, -1_000, 200_000, 209_163)]), 1_500_000) != "liquidatable"


def test_bankruptcy_price_is_entry_minus_collateral_per_lot():
    # P_bk = E − C/q = 20 000 − 1 000 / 1 = 19 000.0
    assert bankruptcy_price(1_000 * USD, long_one_btc(195_000), 0) == 190_000


def test_severity_at_the_boundary_is_tiny_and_clamped_at_one():
    # (MM − EQ)/MM = (76.3052 − 76.3)/76.3052 = 68.1 ppm → 68
    assert severity_ppm(margin_state(1_000 * USD, long_one_btc(190_763))) == 68
    # EQ below zero: (MM − EQ)/MM > 1 → clamped to 10^6
    assert severity_ppm(margin_state(1_000 * USD, long_one_btc(180_000))) == 1_000_000


def test_tiered_maintenance_is_continuous_across_a_bracket_boundary():
    params = make_params(btc_brackets='[{max_notional = "50000", mmr_ppm = 4000}, {mmr_ppm = 5000}]')
    sym = params.symbols["BTC-PERP"]
    # at N = 50 000: 0.4 % · 50 000 − 0 = 200; just above: ceil(50 000.000001 · 0.5 %) − 50 = 200.000001
    assert maintenance(sym, 50_000 * USD) == 200 * USD
    assert maintenance(sym, 50_000 * USD + 1) == 200 * USD + 1


def test_multi_position_equity_and_maintenance_add_up():
    eth = PARAMS.symbols["ETH-PERP"]  # 0.5 %, 2 price / 2 size decimals
    legs = [Leg(BTC, 1_000, 200_000, 195_000), Leg(eth, -1_000, 150_000, 160_000)]
    # U = −500 + (−10 · 100) = −1 500; MM = 0.004·19 500 + 0.005·16 000 = 78 + 80 = 158
    state = margin_state(2_000 * USD, legs)
    assert (state.equity_units, state.maintenance_units) == (500 * USD, 158 * USD)
    assert state.leg_maintenance_units == (78 * USD, 80 * USD)


def test_a_state_is_equal_by_equity_and_maintenance_whatever_legs_it_keeps():
    # it keeps its legs only to give MM_i when a liquidation's plan asks: two states with the same
    # EQ and MM are equal and hash alike, as when it held the MM_i themselves
    legs = [Leg(BTC, 1_000, 200_000, 195_000)]
    state = margin_state(2_000 * USD, legs)  # EQ = 2 000 + 1 · (19 500 − 20 000) = 1 500; MM = 0.004 · 19 500 = 78
    same = MarginState(1_500 * USD, 78 * USD, [])
    assert state == same and hash(state) == hash(same)
