"""Loss sharing in replay (SPEC §5.1, §5.2, §6.2, §7): haircut rounds, claims, repayments.

One worked book, step by step, with every figure derived in the comments; then the rules one by
one as table tests. Units: USD at 6 decimals (1 USD = 1 000 000 units).
"""
from __future__ import annotations

import functools
import hashlib

import pytest

from tests.fixtures import SHARING, Driver, balance, make_params, position, sharing_book as book
from topics.schemas import validate_event
from worker.core.outputs import Source

T = 1_700_000_000_000


def sha32(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def units(text: str) -> int:
    return int(text.replace(".", ""))


def sharing_events(outputs) -> list[tuple[str, str, dict]]:
    return [(o.topic, o.key, o.value) for o in outputs if o.topic == "loss-sharing"
            or o.value.get("reason") in ("claim_repayment", "repayment_residue")]


def test_the_worked_book_step_by_step():
    d = book()
    # T1, BTC 18 900: alice's LV = 1 000 − 1 100 = −100 → bankrupt, shortfall 100 USD; the fund
    # covers 100 − 40 = 60 (to its floor), 40 USD is socialized on (BTC-PERP, long). No round at the
    # tick that created the deficit.
    out = d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    assert [o.value["type"] for o in out] == ["insurance_fund_entry", "socialized_loss", "liquidation"]
    assert sharing_events(out) == []
    assert d.engine.deficits.deficit("BTC-PERP", "long") == 40_000_000

    # T2, BTC 18 900 again: the deficit was positive before it → round 0 of (BTC-PERP, long).
    # W = 1 100 + 300 + 30 = 1 430 USD; A = min(40, 1 430) = 40 USD.
    # h = floor(40e6 · w / 1 430e6): bob 30 769 230, carol 8 391 608, dan 839 160 (isolated scope);
    # Σ = 39 999 998, so 2 units stay in the deficit.
    out = d.mark("BTC-PERP", "18900.0", T + 2000, 3)
    round0 = sha32("haircut|BTC-PERP|long|0")
    events = sharing_events(out)
    assert [(key, e["type"], e.get("account_id"), e.get("scope"), e.get("amount")) for _, key, e in events] == [
        ("bob", "haircut", "bob", "cross", "30.769230"),
        ("carol", "haircut", "carol", "cross", "8.391608"),
        ("dan", "haircut", "dan", "BTC-PERP", "0.839160"),
        ("BTC-PERP", "haircut_round", None, None, None),
    ]
    bob = events[0][2]
    assert bob["haircut_id"] == sha32(f"{round0}|bob|cross") and bob["round_id"] == round0
    assert (bob["side"], bob["weight"], bob["claim_after"]) == ("short", "1100.000000", "30.769230")
    assert bob["transfers"] == [{"from": "account:bob", "to": "socialized_loss", "amount": "30.769230",
                                 "asset": "USD", "reason": "haircut"}]
    summary = events[-1][2]
    assert {k: summary[k] for k in ("round_id", "loss_side", "mark_seq", "mark_price", "deficit_before",
                                     "eligible_weight", "shared", "paid", "carried", "haircuts")} == {
        "round_id": round0, "loss_side": "long", "mark_seq": 3, "mark_price": "18900.0",
        "deficit_before": "40.000000", "eligible_weight": "1430.000000", "shared": "40.000000",
        "paid": "39.999998", "carried": "0.000002", "haircuts": 3}

    # T2 + 500 ms, BTC: the deficit (2 units) is positive, but round_interval_ms (1 000) has not passed
    assert sharing_events(d.mark("BTC-PERP", "18900.0", T + 2500, 4)) == []

    # T3, ETH 1 480: erin EQ = 250 − 200 = 50 < MM = ceil(14 800 · 0.5 %) = 74 → solvent, full close:
    # penalty floor(14 800 · 0.2 %) = 29.6 USD, half to the liquidator, 14.8 USD to the fund: 54.8.
    # Before T3 the fund held 40 = repay_above (not above it): no repayment at T3. And an ETH tick
    # runs no BTC round.
    out = d.mark("ETH-PERP", "1480.00", T + 3000, 2)
    assert sharing_events(out) == [] and d.engine.fund.balance_units == 54_800_000

    # T4, ETH: before it the fund was above repay_above with claims outstanding → repayment round 0.
    # B = min(54.8 − 40, Σc = 39 999 998 units) = 14.8 USD; r = floor(14.8e6 · c / 39 999 998):
    # bob 11 384 615, carol 3 104 895, dan 310 489; Σ = 14 799 999, residue 1 back to the fund.
    out = d.mark("ETH-PERP", "1480.00", T + 4000, 3)
    repay0 = sha32("repay|USD|0")
    events = sharing_events(out)
    assert [(e["type"], e.get("reason"), e.get("account_id"), e.get("amount") or e.get("delta"))
            for _, _, e in events] == [
        ("insurance_fund_entry", "claim_repayment", None, "-14.800000"),
        ("claim_repayment", None, "bob", "11.384615"),
        ("claim_repayment", None, "carol", "3.104895"),
        ("claim_repayment", None, "dan", "0.310489"),
        ("insurance_fund_entry", "repayment_residue", None, "0.000001"),
        ("repayment_round", None, None, None),
    ]
    assert events[0][2]["balance_after"] == "40.000000" and events[4][2]["balance_after"] == "40.000001"
    assert events[0][2]["round_id"] == repay0 and "liquidation_id" not in events[0][2]
    assert events[1][2]["repayment_id"] == sha32(f"{repay0}|bob")
    assert (events[1][2]["claim_before"], events[1][2]["claim_after"]) == ("30.769230", "19.384615")
    assert {k: events[-1][2][k] for k in ("balance_before", "repay_above", "claims_before", "budget", "paid",
                                          "claimants")} == {
        "balance_before": "54.800000", "repay_above": "40.000000", "claims_before": "39.999998",
        "budget": "14.800000", "paid": "14.799999", "claimants": 3}

    # T5, BTC (+2 000 ms since round 0): round 1 shares the 2 units: floor(2 · 1 100 / 1 430) = 1 to
    # bob, floor(2 · 300 / 1 430) = floor(2 · 30 / 1 430) = 0 (left out); 1 unit carried. The
    # repayment round waits: its interval (1 000 ms since T4) has not passed.
    out = d.mark("BTC-PERP", "18900.0", T + 4000, 5)
    events = sharing_events(out)
    assert [(e["type"], e.get("account_id"), e.get("amount"), e.get("claim_after")) for _, _, e in events] == [
        ("haircut", "bob", "0.000001", "19.384616"), ("haircut_round", None, None, None)]
    assert (events[1][2]["round_id"], events[1][2]["carried"]) == (sha32("haircut|BTC-PERP|long|1"), "0.000001")

    # T6, BTC: round 2 shares 1 unit: every floor(1 · w / 1 430) is 0 → no haircut, 1 unit carried.
    # Repayment round 1: B = min(40.000001 − 40, Σc) = 1 unit; every floor(1 · c / Σc) is 0 → the unit
    # comes back as residue: entries −1 and +1.
    out = d.mark("BTC-PERP", "18900.0", T + 5000, 6)
    assert [(e["type"], e.get("paid"), e.get("carried"), e.get("delta")) for _, _, e in sharing_events(out)] == [
        ("haircut_round", "0.000000", "0.000001", None),
        ("insurance_fund_entry", None, None, "-0.000001"),
        ("insurance_fund_entry", None, None, "0.000001"),
        ("repayment_round", "0.000000", None, None),
    ]
    for output in d.outputs:
        validate_event(output.value)
    # claims = Σ haircuts − Σ repaid, per account
    claims = {a: d.engine.accounts[a].claim_units for a in ("bob", "carol", "dan")}
    assert claims == {"bob": 30_769_230 + 1 - 11_384_615, "carol": 8_391_608 - 3_104_895, "dan": 839_160 - 310_489}
    assert d.engine.claims_units == sum(claims.values())


def test_record_mode_publishes_the_loss_and_never_shares_it():
    d = book(extra="")
    for k in range(2, 8):
        d.mark("BTC-PERP", "18900.0", T + 1000 * k, k)
    assert sharing_events(d.outputs) == []
    assert all(a.claim_units == 0 for a in d.engine.accounts.values())


def test_a_deficit_beyond_the_winners_weight_is_carried():
    # BTC at 19 980 for the round: bob w = 1 · 20 = 20; carol 0.5 · (19 500 − 19 980) < 0 and dan
    # 0.3 · (19 000 − 19 980) < 0 are not winners. W = 20 < deficit 40 → A = 20: bob pays his whole
    # profit (h = floor(20 · 20 / 20) = 20) and 40 − 20 = 20 USD is carried.
    d = book()
    d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    out = d.mark("BTC-PERP", "19980.0", T + 2000, 3)
    [(_, _, haircut), (_, _, summary)] = sharing_events(out)
    assert (haircut["account_id"], haircut["weight"], haircut["amount"]) == ("bob", "20.000000", "20.000000")
    assert (summary["eligible_weight"], summary["shared"], summary["paid"], summary["carried"]) == (
        "20.000000", "20.000000", "20.000000", "20.000000")


def test_no_winner_means_a_summary_with_nothing_shared():
    # BTC back at 20 100: every short is at a loss → W = 0, A = 0: the summary alone, all carried
    d = book()
    d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    out = d.mark("BTC-PERP", "20100.0", T + 2000, 3)
    [(_, key, summary)] = sharing_events(out)
    assert key == "BTC-PERP"
    assert (summary["eligible_weight"], summary["shared"], summary["paid"], summary["carried"], summary["haircuts"]) == (
        "0.000000", "0.000000", "0.000000", "40.000000", 0)


def test_repayments_never_take_the_fund_below_its_floor_nor_run_without_repay_above():
    d = book(extra='[loss_sharing]\nmode = "haircut"\nround_interval_ms = 1000')  # repay_above = "": never
    d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    d.mark("BTC-PERP", "18900.0", T + 2000, 3)
    d.mark("ETH-PERP", "1480.00", T + 3000, 2)
    d.mark("ETH-PERP", "1480.00", T + 4000, 3)
    assert not [e for _, _, e in sharing_events(d.outputs) if e["type"] == "repayment_round"]
    assert d.engine.fund.balance_units == 54_800_000


def test_a_round_waits_for_a_confirmed_mark():
    # max_jump 5 %: 18 900 is a 5.5 % jump from 20 000, unconfirmed: no liquidation; the next tick at
    # 18 900 confirms it and liquidates alice; the round comes at the tick after (deficit before it).
    d = book(max_jump_ppm=50_000)
    assert d.mark("BTC-PERP", "18900.0", T + 1000, 2) == []
    d.mark("BTC-PERP", "18900.0", T + 2000, 3)
    assert d.engine.deficits.deficit("BTC-PERP", "long") == 40_000_000
    # a jump to 17 000 (10 %): unconfirmed → no round on it even though the deficit is positive
    assert sharing_events(d.mark("BTC-PERP", "17000.0", T + 3000, 4)) == []
    assert [e["type"] for _, _, e in sharing_events(d.mark("BTC-PERP", "17000.0", T + 4000, 5))][-1] == "haircut_round"


def test_a_fund_starting_below_its_floor_pays_no_cover():
    # initial 10 < floor 40: alice's 100 USD shortfall is socialized whole; the fund is untouched
    params = make_params(initial_balance="10", floor="40", extra=SHARING)
    d = Driver(params)
    d.mark("BTC-PERP", "20000.0", T, 1)
    d.positions(balance("alice", "1000", 1, T), position("alice", "BTC-PERP", "1.000", "20000.0", 2, T))
    out = d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    [allocation] = [o.value for o in out if o.topic == "liquidations"]
    assert (allocation["totals"]["insurance_cover"], allocation["totals"]["socialized_loss"]) == ("0.000000", "100.000000")
    assert d.engine.fund.balance_units == 10_000_000
    assert [o.value["type"] for o in out if o.topic == "insurance-fund"] == ["socialized_loss"]


def test_both_pairs_at_one_tick_run_long_then_short():
    # deficits of 5 (long) and 7 (short) units at once; x long 1 @ 19 000 and y short 1 @ 21 000
    # both win 1 000 USD at 20 000: the long deficit is shared by y (the short), the short one by x
    params = make_params(mode="full", extra='[loss_sharing]\nmode = "haircut"\nround_interval_ms = 0')
    d = Driver(params)
    src = Source("positions", 0, 0, None, b"")
    d.mark("BTC-PERP", "20000.0", T, 1)
    d.engine.deficits.record("BTC-PERP", "long", 5)
    d.engine.deficits.record("BTC-PERP", "short", 7)
    d.engine.process_positions([balance("x", "10000", 1, T), position("x", "BTC-PERP", "1.000", "19000.0", 2, T),
                                balance("y", "10000", 1, T), position("y", "BTC-PERP", "-1.000", "21000.0", 2, T)], src)
    out = d.mark("BTC-PERP", "20000.0", T + 1, 2)
    assert [(e["type"], e.get("loss_side") or e.get("account_id")) for _, _, e in sharing_events(out)] == [
        ("haircut", "y"), ("haircut_round", "long"), ("haircut", "x"), ("haircut_round", "short")]


@pytest.mark.parametrize("deficit, weights, expected", [
    # A = min(deficit, W); h = floor(A · w / W); Σ h ≤ A; the rest carried
    pytest.param(10, [3, 3, 3], [3, 3, 3], id="a deficit above W takes every weight whole"),
    pytest.param(10, [7, 7, 7], [3, 3, 3], id="three equal winners leave a residue of 1"),
    pytest.param(1, [5, 5], [0, 0], id="a unit shared by two floors to nothing"),
    pytest.param(100, [1, 2, 97], [1, 2, 97], id="the deficit equal to W is shared exactly"),
])
def test_apportionment(deficit, weights, expected):
    from worker.core.sharing import pro_rata_floor, shared_amount

    total = sum(weights)
    shared = shared_amount(deficit, total)
    assert [pro_rata_floor(shared, w, total) for w in weights] == expected
    assert sum(expected) <= shared <= deficit


# ------------------------------------------------------------------------ properties
from collections import Counter  # noqa: E402

from hypothesis import given, strategies as st  # noqa: E402
from hypothesis import event as label  # noqa: E402

from tests.test_properties import SETTINGS, parameter_sets, random_scenario  # noqa: E402


def winning_profit(params, position_event, price_text, loss_side) -> int:
    """w = floor(q · (P − E)) in quote units, from the input's own strings, written out again."""
    sym = params.symbols[position_event["symbol"]]
    q = units(position_event["size"])
    if q == 0 or (q > 0) == (loss_side == "long"):
        return 0
    p, e = units(price_text), units(position_event["entry_price"])
    scale = params.quote_decimals - sym.price_decimals - sym.size_decimals
    numerator = q * (p - e) * 10 ** max(scale, 0)
    return numerator // 10 ** max(-scale, 0)


@given(st.data())
@SETTINGS
def test_loss_sharing_invariants_over_random_crashes(data):
    params = data.draw(parameter_sets(sharing=True))
    lines = random_scenario(data.draw, params)
    lines += [("mark", dict(value, ts=value["ts"] + 5_000 * (k + 1), seq=value["seq"] + 1000 + k))
              for k, (kind, value) in enumerate(lines[-4:]) if kind == "mark"]  # later ticks: rounds
    d = Driver(params)
    positions: dict[tuple[str, str], dict] = {}  # the input's view: (account, symbol) → position event
    balance_floor = params.insurance_floor_units
    fund = params.insurance_initial_units
    social, paid, haircut_sum = Counter(), Counter(), Counter()
    claims = Counter()
    for kind, value in lines:
        if kind == "pos":
            out = d.positions(value)
            if value["type"] == "position":
                positions[(value["account_id"], value["symbol"])] = value
        else:
            out = d.mark(value["symbol"], value["mark_price"], value["ts"], value["seq"])
        for o in out:
            e = o.value
            if e["type"] == "insurance_fund_entry":  # the ledger chains and never goes below its floor
                fund += units(e["delta"])
                assert units(e["balance_after"]) == fund and (fund >= balance_floor or units(e["delta"]) > 0)
            elif e["type"] == "socialized_loss":
                social[(e["symbol"], e["side"])] += units(e["amount"])
            elif e["type"] == "haircut":
                position = positions[(e["account_id"], e["symbol"])]
                loss_side = "long" if e["side"] == "short" else "short"
                weight = winning_profit(params, position, value["mark_price"], loss_side)
                assert units(e["weight"]) == weight and 0 < units(e["amount"]) <= weight
                assert e["scope"] == (e["symbol"] if position.get("margin_mode") == "isolated" else "cross")
                [t] = e["transfers"]  # one balanced transfer: account → socialized_loss
                assert (t["from"], t["to"], t["amount"]) == (f"account:{e['account_id']}", "socialized_loss", e["amount"])
                haircut_sum[e["round_id"]] += units(e["amount"])
                claims[e["account_id"]] += units(e["amount"])
                assert units(e["claim_after"]) == claims[e["account_id"]]
            elif e["type"] == "haircut_round":
                assert units(e["paid"]) == haircut_sum[e["round_id"]] <= units(e["shared"])
                paid[(e["symbol"], e["loss_side"])] += units(e["paid"])
            elif e["type"] == "claim_repayment":
                [t] = e["transfers"]
                assert (t["from"], t["to"]) == ("insurance_fund", f"account:{e['account_id']}")
                assert units(e["claim_before"]) == claims[e["account_id"]] >= units(e["amount"]) > 0
                claims[e["account_id"]] -= units(e["amount"])
    label("haircuts" if paid else "no haircut")
    label("repayments" if any(o.value["type"] == "claim_repayment" for o in d.outputs) else "no repayment")
    # Σ haircuts + deficit carried = Σ socialized loss recorded, per (symbol, side)
    for pair in set(social) | set(paid):
        assert paid[pair] + d.engine.deficits.deficit(*pair) == social[pair]
    # claims = Σ haircuts − Σ repaid ≥ 0, as the engine holds them
    assert {a: c for a, c in claims.items() if c} == {
        a: acct.claim_units for a, acct in d.engine.accounts.items() if acct.claim_units}
    assert all(c >= 0 for c in claims.values()) and d.engine.claims_units == sum(claims.values())
    assert d.engine.fund.balance_units == fund


def test_a_round_s_snapshot_rows_group_winners_and_claimants_by_partition_in_ascending_order():
    # the book's winners at 18 900 (its docstring): bob w = 1 100, carol 300, dan (isolated) 30 USD;
    # a hand-made partition map puts bob and dan in 1, carol in 0, everyone else in 2
    from worker.core.sharing import snapshot_rows_by_partition, snapshot_total

    d = book()
    accounts, params = d.engine.accounts, d.engine.params
    partition_of = {a: {"bob": 1, "dan": 1, "carol": 0}.get(a, 2) for a in accounts}
    rows = snapshot_rows_by_partition(params, accounts, "haircut", "BTC-PERP", "long", 189_000, partition_of)
    assert rows == {0: [["carol", "cross", "300000000"]],
                    1: [["bob", "cross", "1100000000"], ["dan", "BTC-PERP", "30000000"]]}
    assert snapshot_total(rows[1]) == units("1130.000000") and snapshot_total(rows[0]) == units("300.000000")
    # claimants: accounts with a claim, [account, c]; none of partition 0 holds one
    accounts["dan"].claim_units, accounts["gina"].claim_units, accounts["bob"].claim_units = 7, 5, 0
    claims = snapshot_rows_by_partition(params, accounts, "repay", None, None, None, partition_of)
    assert claims == {1: [["dan", "7"]], 2: [["gina", "5"]]} and snapshot_total(claims[1] + claims[2]) == 12


# ------------------------------------------------ haircut events rendered without their dicts
# The streaming pay renders each haircut's JSON text directly (sharing.pay_haircuts_rendered): it must
# be, byte for byte, what encoding the event gives (topics.codec.encode, the wire's encoder), and
# keep the dict wherever JSON would escape a string.
PLAIN = st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\')


@functools.lru_cache(maxsize=1)
def sharing_params():  # noqa: ANN201
    return book().engine.params


@pytest.mark.parametrize("account_id, scope, rendered", [
    ("alice", "cross", True),
    ("carol-42_x.y:z/w", "BTC-PERP", True),
    ('quo"te', "cross", False),
    ("back\\slash", "cross", False),
    ("tab\there", "cross", False),
    ("del\x7f", "cross", False),
    ("café", "cross", False),
    ("alice", 'BTC"PERP', False),
], ids=["a plain id is rendered", "every printable ASCII sign but the two is copied as it is",
        "a quote in the id keeps the dict", "a backslash keeps the dict", "a control character keeps the dict",
        "DEL keeps the dict", "non-ASCII keeps the dict", "a quote in the scope keeps the dict"])
def test_a_haircut_is_rendered_as_its_encoding_or_left_to_the_encoder(account_id, scope, rendered):
    from topics.codec import encode
    from worker.core.sharing import haircut_event, haircut_text

    params = sharing_params()
    # w = 1 100 USD, h = 33.333333, claim after 40.000001 (any amounts: they are formatted as the event's)
    fields = dict(round_id=sha32("haircut|BTC-PERP|long|0"), ts=T, account_id=account_id, scope=scope,
                  symbol="BTC-PERP", side="short", weight_units=1_100_000_000, amount_units=33_333_333,
                  claim_after_units=40_000_001)
    text = haircut_text(params, **fields)
    assert (text is not None) == rendered
    if rendered:
        assert text.encode() == encode(haircut_event(params, **fields))


def test_every_character_is_rendered_as_json_writes_it_or_left_to_the_encoder():
    # each character of ASCII and beyond (surrogates aside: no UTF-8) in an account id, a scope and a
    # symbol: rendered exactly when it is printable ASCII other than '"' and '\\' (0x20–0x7E less
    # 0x22, 0x5C), and then byte for byte the encoding
    from topics.codec import encode
    from worker.core.sharing import haircut_event, haircut_text

    params = sharing_params()
    for code in [*range(0x300), 0x2028, 0xFFFF, 0x10FFFF]:
        char = chr(code)
        for place in ("account_id", "scope", "symbol"):
            fields = dict(round_id=sha32("haircut|BTC-PERP|long|0"), ts=T, account_id="alice", scope="cross",
                          symbol="BTC-PERP", side="short", weight_units=7, amount_units=3, claim_after_units=3)
            fields[place] = f"a{char}b"
            text = haircut_text(params, **fields)
            assert (text is not None) == (0x20 <= code <= 0x7E and char not in '"\\'), (place, hex(code))
            if text is not None:
                assert text.encode() == encode(haircut_event(params, **fields)), (place, hex(code))


@pytest.mark.parametrize("ts, rendered", [(-(1 << 63) - 1, False), (-(1 << 63), True), (0, True),
                                          ((1 << 64) - 1, True), (1 << 64, False)],
                         ids=["below a signed 64-bit integer is left to the encoder", "the least signed one is rendered",
                              "zero is rendered", "the largest unsigned one is rendered",
                              "beyond an unsigned 64-bit integer is left to the encoder"])
def test_a_ts_is_rendered_where_json_writes_it(ts, rendered):
    from topics.codec import encode
    from worker.core.sharing import haircut_event, haircut_text

    params = sharing_params()
    fields = dict(round_id=sha32("haircut|BTC-PERP|long|0"), ts=ts, account_id="alice", scope="cross",
                  symbol="BTC-PERP", side="short", weight_units=7, amount_units=3, claim_after_units=3)
    text = haircut_text(params, **fields)
    assert (text is not None) == rendered
    if rendered:
        assert text.encode() == encode(haircut_event(params, **fields))


# characters on both sides of the line: plain ones, the two signs and the control characters JSON
# escapes, DEL, non-ASCII (U+2028 too: JSON, unlike JavaScript, need not escape it), any other
EDGY = st.one_of(PLAIN, st.sampled_from('"\\\x00\n\x1f\x7f\x80é\u2028'), PLAIN,
                 st.characters(blacklist_categories=("Cs",)))  # (no lone surrogate: not UTF-8, refused on input)
JSON_INT_EDGES = [-(1 << 63) - 1, -(1 << 63), (1 << 64) - 1, 1 << 64]  # orjson: 64-bit signed or unsigned


@given(account_id=st.text(EDGY, max_size=20), scope=st.one_of(st.just("cross"), st.text(EDGY, max_size=12)),
       symbol=st.one_of(st.just("BTC-PERP"), st.text(EDGY, min_size=1, max_size=12)),
       ts=st.one_of(st.integers(-(1 << 70), 1 << 70), st.sampled_from(JSON_INT_EDGES)),
       weight=st.integers(1, 10 ** 30), data=st.data())
@SETTINGS
def test_a_rendered_haircut_is_byte_for_byte_its_encoding(account_id, scope, symbol, ts, weight, data):
    from topics.codec import encode
    from worker.core.sharing import haircut_event, haircut_text

    params = sharing_params()
    amount = data.draw(st.integers(1, weight), label="h ≤ w")
    fields = dict(round_id=sha32(f"haircut|{symbol}|long|0"), ts=ts, account_id=account_id, scope=scope,
                  symbol=symbol, side="short", weight_units=weight, amount_units=amount,
                  claim_after_units=data.draw(st.integers(amount, 10 ** 30), label="claim after ≥ h"))
    text = haircut_text(params, **fields)
    plain = all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in account_id + scope + symbol)
    label(f"rendered: {text is not None}")
    if text is None:  # only where a string needs escaping, or JSON's integers end
        assert not plain or not -(1 << 63) <= ts < 1 << 64
    else:
        assert text.encode() == encode(haircut_event(params, **fields))


@given(ids=st.lists(st.one_of(st.text(PLAIN, min_size=1, max_size=10), st.text(min_size=1, max_size=10)),
                    min_size=1, max_size=30, unique=True),
       weights=st.lists(st.integers(1, 10 ** 12), min_size=30, max_size=30), data=st.data())
@SETTINGS
def test_the_rendered_pay_is_the_pay_encoded(ids, weights, data):
    # the same snapshot paid both ways on copies of the same accounts: the same claims, memory and
    # dirty accounts, and each event (rendered, or a dict where it could not be) encodes the same
    from topics.codec import encode
    from worker.core.engine import AccountState
    from worker.core.sharing import pay_haircuts, pay_haircuts_rendered

    params = sharing_params()
    snapshot = sorted((a, "cross", w) for a, w in zip(ids, weights))
    total = sum(w for _, _, w in snapshot)
    shared = data.draw(st.integers(0, total), label="A ≤ W")
    claims = {a: data.draw(st.integers(0, 10 ** 9), label="claim before") for a, _, _ in snapshot}

    def accounts() -> dict:
        fresh = {a: AccountState(a) for a in claims}
        for a, account in fresh.items():
            account.claim_units = claims[a]
        return fresh

    both = []
    for pay in (pay_haircuts, pay_haircuts_rendered):
        mine, dirty = accounts(), set()
        events, paid = pay(params, mine, snapshot, round_id=sha32("haircut|BTC-PERP|long|0"), ts=T,
                           symbol="BTC-PERP", loss_side="long", shared_units=shared, total_weight_units=total,
                           dirty=dirty)
        encoded = [(a, event.encode() if isinstance(event, str) else encode(event)) for a, event in events]
        both.append((encoded, paid, dirty, {a: (s.claim_units, dict(s.rounds)) for a, s in mine.items()}))
    assert both[0] == both[1]
    rendered = [event for _, event in pay_haircuts_rendered(
        params, accounts(), snapshot, round_id=sha32("haircut|BTC-PERP|long|0"), ts=T,
        symbol="BTC-PERP", loss_side="long", shared_units=shared, total_weight_units=total, dirty=set())[0]]
    assert [isinstance(e, str) for e in rendered] == [
        all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in a) for a, _ in both[1][0]]


# --------------------------------------- a pay chunk's record: the claims it paid, applied again
def test_a_pay_chunk_s_record_restores_the_claims_of_accounts_recovered_without_them():
    # the worked book's winners paid in round R (pay_haircuts: bob h = 33.333333 on a claim of 0, carol
    # h = 9.090909 on 5): the chunk's record holds [account, h, claim after] from their memory
    from worker.core.engine import AccountState
    from worker.core.sharing import pay_haircuts, restore_round_claims, round_memory_rows

    params = sharing_params()
    round_id = sha32("haircut|BTC-PERP|long|0")
    accounts = {"bob": AccountState("bob"), "carol": AccountState("carol", claim_units=5_000_000)}
    snapshot = [("bob", "cross", 1_100_000_000), ("carol", "cross", 300_000_000)]
    # W = 1 400 USD, A = 42.424242: bob ⌊A · 1100/1400⌋ = 33.333333, carol ⌊A · 300/1400⌋ = 9.090909
    pay_haircuts(params, accounts, snapshot, round_id=round_id, ts=T, symbol="BTC-PERP", loss_side="long",
                 shared_units=42_424_242, total_weight_units=1_400_000_000, dirty=set())
    rows = round_memory_rows(accounts, round_id, ["bob", "carol"])
    assert rows == [["bob", "33333333", "33333333"], ["carol", "9090909", "14090909"]]
    # recovered: bob from a record before the round, carol from one written since (memory and all),
    # dan never written (his own events come again)
    recovered = {"bob": AccountState("bob"),
                 "carol": AccountState("carol", claim_units=14_090_909, rounds={round_id: ["9090909", "14090909"]}),
                 "dan": AccountState("dan")}
    rows.append(["dan", "1", "1"])
    assert restore_round_claims(recovered, round_id, "haircut", rows) == 2  # bob and dan; carol holds it
    assert {a: (s.claim_units, s.round_memory(round_id)) for a, s in recovered.items()} == {
        "bob": (33_333_333, ["33333333", "33333333"]), "carol": (14_090_909, ["9090909", "14090909"]),
        "dan": (1, ["1", "1"])}
    assert restore_round_claims(recovered, round_id, "haircut", rows) == 0  # applied once


@pytest.mark.parametrize("claim_before, repaid, restored", [(10, 4, 6), (4, 4, 0)],
                         ids=["a repayment comes off the claim", "a repayment may take the whole claim"])
def test_a_repayment_chunk_s_record_takes_its_repayments_off_again(claim_before, repaid, restored):
    from worker.core.engine import AccountState
    from worker.core.sharing import restore_round_claims

    accounts = {"bob": AccountState("bob", claim_units=claim_before)}
    # [account, r, claim before] (pay_repayments' memory)
    assert restore_round_claims(accounts, "R", "repay", [["bob", str(repaid), str(claim_before)]]) == 1
    assert accounts["bob"].claim_units == restored and accounts["bob"].round_memory("R") == [str(repaid),
                                                                                              str(claim_before)]


def test_restoring_a_repayment_beyond_the_claim_raises_rather_than_clamps_and_applies_nothing():
    from worker.core.engine import AccountState
    from worker.core.sharing import SharingError, restore_round_claims

    accounts = {"alice": AccountState("alice", claim_units=9), "bob": AccountState("bob", claim_units=3)}
    with pytest.raises(SharingError, match="repaid 4 of a claim of 3"):
        restore_round_claims(accounts, "R", "repay", [["alice", "2", "9"], ["bob", "4", "3"]])
    assert [(a.claim_units, a.round_memory("R")) for a in accounts.values()] == [(9, None), (3, None)]


def test_a_recovery_drops_the_memory_of_rounds_swept_and_keeps_those_in_flight():
    # a record written during a round's sweep keeps the round's memory; once its snapshot is gone,
    # nothing needs it
    from worker.core.engine import AccountState
    from worker.core.sharing import forget_rounds_except

    accounts = {"bob": AccountState("bob", rounds={"swept": ["1", "1"], "live": ["2", "3"]}),
                "carol": AccountState("carol", rounds={"swept": ["1", "1"]}),
                "dan": AccountState("dan")}
    assert forget_rounds_except(accounts, {"live"}) == 2
    assert {a: s.remembered_rounds() for a, s in accounts.items()} == {"bob": ["live"], "carol": [], "dan": []}
