"""Liquidation (SPEC §4), insurance fund and socialized loss (§5), through the engine as replay drives it."""
import pytest

from tests.fixtures import Driver, balance, lid, make_params, position
from worker.core.engine import Engine
from worker.core.margin import Leg, margin_state
from worker.core.outputs import Source

T = 1_700_000_000_000


def open_long_btc(driver: Driver, account: str = "acct", collateral: str = "1000", size: str = "1.000",
                  entry: str = "20000.0", ts: int = T) -> None:
    driver.mark("BTC-PERP", "20000.0", ts, 1)
    driver.positions(balance(account, collateral, 1, ts))
    driver.positions(position(account, "BTC-PERP", size, entry, 2, ts))


def test_penalty_is_capped_at_the_liquidation_value_left_after_the_close():
    # full mode, flat 5 %: wallet 1 000, long 1 BTC at 20 000, mark 19 050 (EQ 50 < MM 76.2).
    # X = 19 050 (no slippage); R = −950 → collateral 50; uncapped F = floor(19 050 · 5 %) = 952.5;
    # LV1 = 50 → F = 50. Split 50 % liquidator: 25 / 25 to the insurance fund.
    driver = Driver(make_params(mode="full", btc_penalty='{model = "flat", min_ppm = 50000}'))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    [event] = driver.liquidations()
    assert event["closes"][0]["penalty"] == "50.000000"
    assert event["totals"] == {
        "penalty": "50.000000", "liquidator": "25.000000", "insurance_fund": "25.000000", "protocol": "0.000000",
        "shortfall": "0.000000", "insurance_cover": "0.000000", "socialized_loss": "0.000000"}
    assert event["collateral_after"] == "0.000000"


def test_penalty_cap_counts_the_slippage_later_closes_will_lose():
    # full mode, 1 % flat on both; ETH slippage 0.5 %. Wallet 1 100, long 1 BTC @ 20 000, long 10 ETH @ 1 500.
    # marks 19 500 / 1 450: EQ = 1 100 − 500 − 500 = 100 < MM = 78 + 72.5 = 150.5.
    # X_eth = floor(1 450 · 0.995) = 1 442.75; LV = 1 100 − 500 − 572.5 = 27.5 ≥ 0: solvent.
    # BTC first (MM 78 > 72.5): collateral 600; F = min(195, LV1 = 600 − 572.5 = 27.5) = 27.5.
    # ETH: R = −572.5 → collateral 0; F = min(144.275, 0) = 0. A cap on collateral alone (600)
    # would have charged 195 and left −167.5 of bad debt.
    driver = Driver(make_params(mode="full", btc_penalty='{model = "flat", min_ppm = 10000}',
                                eth_penalty='{model = "flat", min_ppm = 10000}', eth_slippage_ppm=5000))
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    driver.positions(balance("acct", "1100", 1, T), position("acct", "BTC-PERP", "1.000", "20000.0", 2, T),
                     position("acct", "ETH-PERP", "10.00", "1500.00", 3, T))
    driver.mark("ETH-PERP", "1450.00", T + 1, 2)
    assert driver.liquidations() == []  # EQ = 1 100 − 500 = 600 ≥ MM
    driver.mark("BTC-PERP", "19500.0", T + 2, 2)
    [event] = driver.liquidations()
    assert [(c["symbol"], c["execution_price"], c["realized_pnl"], c["penalty"]) for c in event["closes"]] == [
        ("BTC-PERP", "19500.0", "-500.000000", "27.500000"),
        ("ETH-PERP", "1442.75", "-572.500000", "0.000000"),
    ]
    assert event["bankrupt"] is False and event["collateral_after"] == "0.000000"


def test_bankruptcy_is_covered_by_the_fund_down_to_its_floor_and_the_rest_socialized():
    # fund 100, floor 40. Wallet 1 000, long 1 BTC @ 20 000, mark 18 900: LV = 1 000 − 1 100 = −100.
    # shortfall 100: cover = min(100, 100 − 40) = 60; socialized 40; fund ends at its floor, 40.
    driver = Driver(make_params(initial_balance="100", floor="40"))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "18900.0", T + 1, 2)
    [event] = driver.liquidations()
    assert event["bankrupt"] is True
    assert event["closes"][0]["penalty"] == "0.000000"
    assert (event["totals"]["shortfall"], event["totals"]["insurance_cover"], event["totals"]["socialized_loss"]) == (
        "100.000000", "60.000000", "40.000000")
    assert event["transfers"] == [
        {"from": "insurance_fund", "to": "account:acct", "amount": "60.000000", "asset": "USD", "reason": "insurance_cover"},
        {"from": "socialized_loss", "to": "account:acct", "amount": "40.000000", "asset": "USD", "reason": "socialized_loss"},
    ]
    [entry] = driver.values("insurance-fund", "insurance_fund_entry")
    assert (entry["delta"], entry["balance_after"]) == ("-60.000000", "40.000000")
    [loss] = driver.values("insurance-fund", "socialized_loss")
    assert (loss["symbol"], loss["side"], loss["amount"]) == ("BTC-PERP", "long", "40.000000")
    assert (event["equity_after"], event["maintenance_after"], event["collateral_after"]) == (
        "0.000000", "0.000000", "0.000000")
    # the fund entry is published before the allocation that depends on it (§5)
    topics = [o.topic for o in driver.outputs]
    assert topics.index("insurance-fund") < topics.index("liquidations")


def partial_driver() -> Driver:
    # partial, buffer 2 %, flat 0.1 %, no slippage; wallet 1 000, long 1 BTC @ 20 000
    return Driver(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'))


def test_partial_liquidation_closes_the_smallest_restoring_size():
    # mark 19 050: EQ = 50 < MM = 76.2. Closing δ BTC at X = 19 050 keeps EQ = 50 − F,
    # F = 19.05·δ (0.1 % of 19 050·δ); MM = 76.2·(1 − δ); bar = ceil(1.02 · MM).
    # 50 − 19.05δ ≥ 77.724 − 77.724δ ⇔ δ ≥ 0.47250… → δ = 0.473 (473 lots).
    # δ = 0.472: EQ = 50 − 8.9916 = 41.0084 < bar ceil(1.02 · 40.2336) = 41.038272  → fails
    # δ = 0.473: EQ = 50 − 9.01065 = 40.98935 ≥ bar ceil(1.02 · 40.1574) = 40.960548 → holds
    driver = partial_driver()
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    [event] = driver.liquidations()
    [close] = event["closes"]
    assert (close["closed_size"], close["remaining_size"], close["penalty"]) == ("0.473", "0.527", "9.010650")
    assert (event["equity_after"], event["maintenance_after"]) == ("40.989350", "40.157400")


@pytest.mark.parametrize("closed_lots, restores", [
    pytest.param(473, True, id="after closing delta lots the buffer bar holds"),
    pytest.param(472, False, id="after closing delta minus one lots it does not"),
])
def test_partial_minimality_recomputed_independently(closed_lots, restores):
    params = make_params(btc_penalty='{model = "flat", min_ppm = 1000}')
    btc = params.symbols["BTC-PERP"]
    # collateral after: 1 000 − 0.95·δ (realized) − floor(δ · 19 050 · 0.1 %) (penalty), in units
    realized = -950 * closed_lots * 1_000  # −950 USD per BTC, δ in thousandths
    penalty = (closed_lots * 19_050 * 1_000) // 1_000  # δ·19 050 USD · 10^6 units · 10^-3 BTC · 0.1 %
    state = margin_state(1_000_000_000 + realized - penalty, [Leg(btc, 1_000 - closed_lots, 200_000, 190_500)])
    bar = -((-state.maintenance_units * 1_020_000) // 1_000_000)
    assert (state.equity_units >= bar) is restores


def test_partial_close_takes_the_whole_position_when_the_rest_would_be_below_min_notional():
    # same account, min_notional 10 000: the rest 0.527 · 19 050 = 10 039.35 ≥ 10 000 → partial;
    # with min_notional 10 100 the rest is too small → the whole 1.000 BTC is closed
    driver = Driver(make_params(btc_penalty='{model = "flat", min_ppm = 1000}', btc_min_notional="10100"))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    [event] = driver.liquidations()
    assert event["closes"][0]["closed_size"] == "1.000"


def test_isolated_bankruptcy_leaves_the_owners_cross_collateral_untouched():
    # cross wallet 5 000 with 10 ETH long healthy; isolated long 0.5 BTC @ 20 000 with margin 300.
    # mark 19 000: isolated LV = 300 − 500 = −200 → bankrupt, fund empty → 200 socialized.
    driver = Driver(make_params())
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    driver.positions(balance("carol", "5000", 1, T),
                     position("carol", "ETH-PERP", "10.00", "1500.00", 2, T),
                     position("carol", "BTC-PERP", "0.500", "20000.0", 3, T, margin_mode="isolated",
                              isolated_margin="300"))
    driver.mark("BTC-PERP", "19000.0", T + 1, 2)
    [event] = driver.liquidations()
    assert (event["scope"], event["bankrupt"], event["collateral_before"]) == ("BTC-PERP", True, "300.000000")
    assert [c["symbol"] for c in event["closes"]] == ["BTC-PERP"]
    assert event["transfers"] == [{"from": "socialized_loss", "to": "account:carol", "amount": "200.000000",
                                   "asset": "USD", "reason": "socialized_loss"}]
    assert event["liquidation_id"] == lid("carol", "BTC-PERP", 3, 0)
    assert driver.engine.accounts["carol"].collateral_units == 5_000_000_000


def test_split_rounding_residue_goes_to_the_insurance_fund():
    # liquidator and protocol 33.3333 % each. Wallet 1 000.000001, long 1 BTC @ 20 000, mark 19 001:
    # EQ = 1.000001 < MM 76.004; full mode 5 % → F capped at LV1 = 1.000001 (1 000 001 units).
    # liquidator = protocol = floor(1 000 001 · 0.333333) = 333 333; fund = 1 000 001 − 666 666 = 333 335.
    driver = Driver(make_params(mode="full", btc_penalty='{model = "flat", min_ppm = 50000}',
                                liquidator_ppm=333_333, protocol_ppm=333_333))
    open_long_btc(driver, collateral="1000.000001")
    driver.mark("BTC-PERP", "19001.0", T + 1, 2)
    [event] = driver.liquidations()
    totals = event["totals"]
    assert (totals["penalty"], totals["liquidator"], totals["protocol"], totals["insurance_fund"]) == (
        "1.000001", "0.333333", "0.333333", "0.333335")


def test_severity_penalty_rate_interpolates_on_severity_before_the_evaluation():
    # full mode, severity 1 000..5 000 ppm. At 19 050: sev = floor((76.2 − 50)·10^6/76.2) = 343 832;
    # f = 1 000 + floor(4 000 · 343 832 / 10^6) = 1 000 + 1 375 = 2 375 ppm
    driver = Driver(make_params(mode="full", btc_penalty='{model = "severity", min_ppm = 1000, max_ppm = 5000}'))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    [event] = driver.liquidations()
    assert (event["severity_ppm"], event["closes"][0]["penalty_rate_ppm"]) == (343_832, 2_375)


def test_pending_then_acknowledged_then_evaluated_again():
    driver = partial_driver()
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    assert [e["liquidation_id"] for e in driver.liquidations()] == [lid("acct", "cross", 2, 0)]
    driver.mark("BTC-PERP", "19040.0", T + 2, 3)  # pending: not liquidated again
    assert len(driver.liquidations()) == 1
    # the matching engine acknowledges without having filled: still liquidatable → evaluated on the ack
    driver.positions(position("acct", "BTC-PERP", "1.000", "20000.0", 3, T + 3,
                              liquidation_id=lid("acct", "cross", 2, 0)))
    assert [e["liquidation_id"] for e in driver.liquidations()] == [lid("acct", "cross", 2, 0),
                                                                    lid("acct", "cross", 3, 0)]
    assert driver.liquidations()[1]["trigger"] == {"source": "position", "symbol": "BTC-PERP", "seq": 3,
                                                   "price": "19040.0"}
    assert driver.engine.counters["acks"] == 1


def test_pending_then_timed_out_is_liquidated_again_with_n_1():
    driver = partial_driver()  # pending_timeout_ms = 30 000
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    driver.mark("BTC-PERP", "19049.0", T + 1 + 29_999, 3)  # 1 ms short of the timeout
    assert len(driver.liquidations()) == 1
    driver.mark("BTC-PERP", "19048.0", T + 1 + 30_000, 4)
    ids = [e["liquidation_id"] for e in driver.liquidations()]
    assert ids == [lid("acct", "cross", 2, 0), lid("acct", "cross", 2, 1)]
    assert driver.engine.counters["reliquidations"] == 1


def test_no_timeout_waits_for_the_acknowledgement_forever():
    driver = Driver(make_params(btc_penalty='{model = "flat", min_ppm = 1000}', pending_timeout_ms=0))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    driver.mark("BTC-PERP", "19000.0", T + 10**9, 3)
    assert len(driver.liquidations()) == 1


def scenario_events():
    return [
        balance("a", "1000", 1, T), position("a", "BTC-PERP", "1.000", "20000.0", 2, T),
        balance("b", "800", 1, T), position("b", "BTC-PERP", "-1.000", "19500.0", 2, T),
        position("b", "ETH-PERP", "5.00", "1500.00", 3, T),
    ]


def test_a_batched_message_gives_the_same_output_as_single_events():
    params = make_params(btc_penalty='{model = "flat", min_ppm = 1000}')
    single, batched = Driver(params), Driver(params)
    for driver in (single, batched):
        driver.mark("BTC-PERP", "20000.0", T, 1)
        driver.mark("ETH-PERP", "1500.00", T, 1)
    for event in scenario_events():
        single.positions(event)
    batched.positions(*scenario_events())
    for driver in (single, batched):
        driver.mark("BTC-PERP", "19050.0", T + 1, 2)
        driver.mark("BTC-PERP", "20500.0", T + 2, 3)
    assert single.outputs == batched.outputs
    assert {e["account_id"] for e in single.liquidations()} == {"a", "b"}


def test_a_bad_element_of_a_batch_is_dead_lettered_alone_with_its_index():
    driver = Driver(make_params())
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions(balance("a", "1000", 1, T), {"type": "position", "account_id": "a"},
                     position("a", "BTC-PERP", "1.000", "20000.0", 2, T))
    [dead] = driver.values("dead-letters")
    assert (dead["source"]["index"], dead["error"]["code"], dead["value_encoding"]) == (1, "missing_field", "json")
    assert driver.engine.accounts["a"].positions["BTC-PERP"].size_lots == 1_000


@pytest.mark.parametrize("event, code", [
    pytest.param(position("a", "BTC-PERP", "1.0001", "20000.0", 5, T), "too_many_decimals",
                 id="a size finer than a lot is refused"),
    pytest.param(position("a", "DOGE-PERP", "1", "1", 5, T), "unknown_symbol", id="an unknown symbol is refused"),
    pytest.param({"type": "transfer", "account_id": "a"}, "unknown_type", id="an unknown event type is refused"),
    pytest.param(balance("a", "10", 5, T) | {"asset": "EUR"}, "unknown_asset", id="another asset is refused"),
    pytest.param(position("a", "BTC-PERP", "1.000", "20000.0", 1, T), "stale_seq",
                 id="an older seq is ignored and dead-lettered"),
    pytest.param(position("a", "BTC-PERP", "1.000", "20000.0", "6", T), "wrong_type", id="a string seq is refused"),
])
def test_bad_positions_events_are_dead_lettered_with_a_code(event, code):
    driver = Driver(make_params())
    driver.positions(balance("a", "1000", 2, T))
    driver.positions(event)
    [dead] = driver.values("dead-letters")
    assert dead["error"]["code"] == code
    assert driver.engine.counters[f"dead_letter:{code}"] == 1


def test_stale_mark_guard_holds_the_liquidation_until_a_fresh_tick():
    # max age 5 s: BTC's mark from T is stale once an event at T + 6 s is seen
    driver = Driver(make_params(max_mark_age_ms=5_000))
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    driver.positions(balance("a", "1000", 1, T), position("a", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.mark("ETH-PERP", "1500.00", T + 6_000, 2)
    driver.positions(balance("a", "10", 3, T + 6_000))  # EQ = 10 < MM 80, but BTC's mark is 6 s old
    assert driver.liquidations() == []
    assert driver.engine.counters["guard_trip:stale_mark"] == 1
    driver.mark("BTC-PERP", "20000.0", T + 6_001, 2)
    assert len(driver.liquidations()) == 1


def test_jump_guard_waits_for_the_next_tick_to_confirm():
    # max jump 5 %: 20 000 → 18 000 is a 10 % jump, unconfirmed; 17 990 confirms it
    driver = Driver(make_params(max_jump_ppm=50_000))
    open_long_btc(driver)
    driver.mark("BTC-PERP", "18000.0", T + 1, 2)
    assert driver.liquidations() == [] and driver.engine.counters["guard_trip:unconfirmed_jump"] == 1
    driver.mark("BTC-PERP", "17990.0", T + 2, 3)
    assert len(driver.liquidations()) == 1


def test_margin_call_is_emitted_once_per_crossing_and_cleared_on_leaving():
    # wallet 1 000, long 1 BTC @ 20 000: call iff EQ < 1.5 · MM ⇔ P − 19 000 < 0.006·P ⇔ P < 19 114.7
    driver = Driver(make_params())
    open_long_btc(driver)
    for seq, price in enumerate(["19100.0", "19090.0", "19080.0", "19200.0"], start=2):
        driver.mark("BTC-PERP", price, T + seq, seq)
    assert [(e["type"], e["trigger"]["price"]) for e in driver.values("margin-calls")] == [
        ("margin_call", "19100.0"), ("margin_call_cleared", "19200.0")]


def test_a_scope_holding_a_symbol_without_a_mark_is_not_evaluated():
    driver = Driver(make_params())
    driver.positions(balance("a", "1", 1, T), position("a", "BTC-PERP", "1.000", "20000.0", 2, T))
    assert driver.liquidations() == []
    driver.mark("BTC-PERP", "20000.0", T + 1, 1)  # first mark: EQ 1 < MM 80 → liquidated now
    assert len(driver.liquidations()) == 1


def test_the_engine_state_round_trips_through_plain_dicts():
    driver = partial_driver()
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    from worker.core.engine import AccountState

    state = driver.engine.accounts["acct"]
    assert AccountState.from_dict(state.to_dict()) == state
    assert AccountState.from_record(state.to_record()) == state  # the changelog's compact format
    assert Engine(driver.engine.params, {"acct": state}).accounts["acct"].pending == state.pending


def test_source_of_a_dead_letter_is_kept():
    driver = Driver(make_params())
    out = driver.engine.process_mark({"symbol": "BTC-PERP"}, Source("mark-prices", 3, 42, b"BTC-PERP", b"{}"))
    assert out[0].value["source"] == {"topic": "mark-prices", "partition": 3, "offset": 42, "index": None}
    assert out[0].value["key"] == "BTC-PERP"


def test_a_timed_out_scope_that_recovered_is_not_counted_as_a_reliquidation():
    driver = partial_driver()  # pending timeout 30 s
    open_long_btc(driver)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    driver.mark("BTC-PERP", "21000.0", T + 1 + 30_000, 3)  # timed out, but healthy again: no new liquidation
    assert len(driver.liquidations()) == 1
    assert (driver.engine.counters["pending_timeouts"], driver.engine.counters["reliquidations"]) == (1, 0)


@pytest.mark.pure_core
def test_an_evaluation_that_raises_is_dead_lettered_and_the_other_accounts_are_still_liquidated(monkeypatch):
    from worker.core import engine as engine_module

    driver = partial_driver()
    driver.mark("BTC-PERP", "20000.0", T, 1)
    for account in ("a", "b", "c"):
        driver.positions(balance(account, "1000", 1, T), position(account, "BTC-PERP", "1.000", "20000.0", 2, T))
    real = engine_module.plan_liquidation

    def failing_for_b(collateral, legs, params):
        if collateral == 1_000_000_000 and failing_for_b.calls == 1:
            failing_for_b.calls += 1
            raise engine_module.plan_liquidation.__globals__["AccountingError"]("injected")
        failing_for_b.calls += 1
        return real(collateral, legs, params)

    failing_for_b.calls = 0
    monkeypatch.setattr(engine_module, "plan_liquidation", failing_for_b)
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    assert [e["account_id"] for e in driver.liquidations()] == ["a", "c"]
    [dead] = driver.values("dead-letters")
    assert dead["error"]["code"] == "internal_error" and "b/cross" in dead["error"]["message"]
    assert "b" not in {a for a, acc in driver.engine.accounts.items() if acc.pending}  # nothing recorded for b
    driver.mark("BTC-PERP", "19049.0", T + 2, 3)  # b is looked at again on the next tick
    assert [e["account_id"] for e in driver.liquidations()] == ["a", "c", "b"]


def test_an_oversized_utf8_value_is_cut_on_a_character_boundary_and_stays_text():
    from worker.core.outputs import MAX_DEAD_LETTER_VALUE_BYTES, dead_letter_event

    # "é" is 2 bytes: 1 ASCII byte first puts a character across the 64 KiB cut
    raw = b"x" + "é".encode() * MAX_DEAD_LETTER_VALUE_BYTES
    event = dead_letter_event(ts=0, source=Source("positions", 0, 0, None, raw), code="oversized", message="big")
    assert event["value_encoding"] == "utf-8" and event["value_truncated"] is True
    assert len(event["value"].encode()) == MAX_DEAD_LETTER_VALUE_BYTES - 1  # 1 + 2·32 767 bytes kept
    assert event["value_size"] == len(raw)


def test_the_metrics_read_the_kept_pending_and_margin_call_counts():
    """/metrics reads the engine's kept counts (no sum over the accounts per scrape); they follow
    a margin call, its clearing, a liquidation and its ack."""
    from types import SimpleNamespace

    from metrics import WorkerMetrics

    driver = Driver(make_params())
    runtime = SimpleNamespace(engine=driver.engine, owned={0})
    metrics = WorkerMetrics()

    def gauges() -> tuple[float, float]:
        metrics.sync_engine(runtime)
        value = metrics.registry.get_sample_value
        return value("risk_pending_liquidations"), value("risk_margin_call_scopes")

    # wallet 1 000, long 1 BTC @ 20 000 (as above): call below 19 114.7, liquidatable below
    # EQ < MM ⇔ 1 000 + (P − 20 000) < 0.004·P ⇔ P < 19 076.3
    open_long_btc(driver)
    open_long_btc(driver, account="b", collateral="1000")
    assert gauges() == (0, 0)
    driver.mark("BTC-PERP", "19100.0", T + 1, 2)  # both in the call zone
    assert gauges() == (0, 2)
    driver.positions(balance("b", "5000", 3, T + 2))  # b leaves it: cleared
    assert gauges() == (0, 1)
    driver.mark("BTC-PERP", "19000.0", T + 3, 3)  # acct liquidated (pending, out of the call zone)
    assert gauges() == (1, 0)
    [liquidation] = driver.liquidations()
    driver.positions(position("acct", "BTC-PERP", "0", "0", 3, T + 4, liquidation_id=liquidation["liquidation_id"]))
    assert gauges() == (0, 0) == driver.engine.recount_scopes()


def test_engine_counters_are_a_counter_whose_item_assignment_is_dict_s_own():
    # worker/core/engine.py `Counts`: Counter's Python __delitem__ would route every `+= 1` through a
    # Python-level slot; both item names bound to dict's keep the C slot, and Counter's reading stays
    from collections import Counter

    counters = Engine(make_params()).counters
    assert isinstance(counters, Counter) and counters["never counted"] == 0 and "never counted" not in counters
    counters["position_events"] += 2
    counters["position_events"] += 1
    assert counters == Counter(position_events=3) and counters.most_common(1) == [("position_events", 3)]
    assert type(counters).__setitem__ is dict.__setitem__ and type(counters).__delitem__ is dict.__delitem__
