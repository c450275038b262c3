"""The `accounts` changelog value: every format written so far is read back (SPEC §4's ids, the
emitted counts), and what is written now round-trips. Core only (no faust: tests/test_store.py
recovers through the table store)."""
import orjson
import pytest

from tests.fixtures import Driver, lid, make_params, position
from worker.core.engine import RECORD_FORMAT, AccountState, Engine, Pending, PositionState

T = 1_700_000_000_000
USD = 10**6  # quote units per USD (6 decimals)

# Written by the format-2 compact record (`[2, ...]`, before RECORD_FORMAT 3), byte for byte: bob
# has a cross long BTC and an isolated short ETH; his cross scope was liquidated twice at seq 9
# (the pending one is n = 1, emitted count 2), his ETH scope once at seq 7 (its count forgotten
# when seq 8 arrived).
FORMAT_2_RECORD = (
    b'[2,"bob",9,1000000000,[["BTC-PERP",1000,200000],["ETH-PERP",-500,150000,true,100000000]],"0",'
    b'[["cross","5df3a390d574d60942c78cc86c1e7bcb",1700000000000,[]],'
    b'["ETH-PERP","6b0a1c0d253be10fa025ace50949a2f3",1700000010000,[]]],'
    b'[["cross",9,2]]]'
)


def bob_as_written() -> AccountState:
    """Bob as the record says, built from ids and counts (the first format's terms)."""
    return AccountState(
        "bob", seq=9, collateral_units=1000 * USD,
        positions={"BTC-PERP": PositionState(1000, 200_000), "ETH-PERP": PositionState(-500, 150_000, True, 100 * USD)},
        pending={"cross": Pending(lid("bob", "cross", 9, 1), T), "ETH-PERP": Pending(lid("bob", "ETH-PERP", 7, 0), T + 10_000)},
        emitted={"cross": [9, 2]})


def test_a_format_2_record_recovers_the_same_ids_and_emitted_counts():
    bob = AccountState.from_record(orjson.loads(FORMAT_2_RECORD))
    assert bob == bob_as_written()
    assert {s: p.liquidation_id for s, p in bob.pending.items()} == {
        "cross": "5df3a390d574d60942c78cc86c1e7bcb", "ETH-PERP": "6b0a1c0d253be10fa025ace50949a2f3"}
    assert bob.emitted == {"cross": [9, 2]}
    assert bob.emitted_count("cross") == 2 and bob.emitted_count("ETH-PERP") == 0


def test_a_format_2_record_is_rewritten_keeping_the_seq_and_n_of_the_ids_it_can_rebuild():
    bob = AccountState.from_record(orjson.loads(FORMAT_2_RECORD))
    record = bob.to_record()
    # cross: its id is liquidation_id(bob, cross, 9, 2 − 1), so [scope, seq, n, ts, outputs] and no
    # count apart; ETH-PERP: its seq is not in the record, so its id is kept as written
    assert record == [RECORD_FORMAT, "bob", 9, 1000 * USD,
                      [["BTC-PERP", 1000, 200_000], ["ETH-PERP", -500, 150_000, True, 100 * USD]], "0",
                      [["cross", 9, 1, T, []], ["ETH-PERP", "6b0a1c0d253be10fa025ace50949a2f3", T + 10_000, []]]]
    again = AccountState.from_record(orjson.loads(orjson.dumps(record)))
    assert again == bob and orjson.dumps(again.to_record()) == orjson.dumps(record)


def test_an_engine_recovered_from_a_format_2_record_counts_on_and_matches_its_acks():
    engine = Engine(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'),  # pending timeout 30 000 ms
                    {"bob": AccountState.from_record(orjson.loads(FORMAT_2_RECORD))})
    driver = Driver(engine.params)
    driver.engine = engine
    # cross: EQ = 1 000 − 950 = 50 < MM 76.2, and its pending liquidation timed out: the next id is n = 2
    driver.mark("BTC-PERP", "19050.0", T + 30_000, 2)
    assert [e["liquidation_id"] for e in driver.liquidations()] == [lid("bob", "cross", 9, 2)]
    assert engine.counters["reliquidations"] == 1
    # the ETH-PERP acknowledgement carries the id of seq 7, which the record held as written
    driver.positions(position("bob", "ETH-PERP", "-5.00", "1500.00", 10, T + 30_001, margin_mode="isolated",
                              isolated_margin="100", liquidation_id=lid("bob", "ETH-PERP", 7, 0)))
    assert engine.counters["acks"] == 1 and engine.counters["unmatched_acks"] == 0
    assert set(engine.accounts["bob"].pending) == {"cross"}
    assert (engine.pending_scopes, engine.call_scopes) == engine.recount_scopes()


def test_a_dict_record_recovers_ids_it_can_rebuild_as_seq_and_n():
    as_dict = bob_as_written().to_dict()
    assert as_dict["pending"]["cross"][0] == lid("bob", "cross", 9, 1) and as_dict["emitted"] == {"cross": [9, 2]}
    bob = AccountState.from_record(orjson.loads(orjson.dumps(as_dict)))
    assert bob == bob_as_written() and bob.to_dict() == as_dict
    assert bob.to_record()[6][0] == ["cross", 9, 1, T, []]


def test_a_pending_liquidation_of_an_earlier_seq_is_written_as_the_seq_and_n_of_its_id():
    driver = Driver(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'))
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions({"type": "balance", "account_id": "acct", "asset": "USD", "collateral": "1000", "seq": 1, "ts": T},
                     position("acct", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)  # liquidated at seq 2, n = 0
    driver.positions(position("acct", "ETH-PERP", "1.00", "1500.00", 3, T + 2))  # seq 3, no ack
    state = driver.engine.accounts["acct"]
    assert state.emitted == {} and state.pending["cross"].liquidation_id == lid("acct", "cross", 2, 0)
    record = state.to_record()
    assert record[0] == RECORD_FORMAT and record[6] == [["cross", 2, 0, T + 1, []]]
    again = AccountState.from_record(orjson.loads(orjson.dumps(record)))
    assert again == state and again.pending["cross"].liquidation_id == lid("acct", "cross", 2, 0)


def test_a_count_a_timeout_leaves_behind_is_written_and_gives_the_next_n():
    driver = Driver(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'))  # timeout 30 000 ms
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions({"type": "balance", "account_id": "acct", "asset": "USD", "collateral": "1000", "seq": 1, "ts": T},
                     position("acct", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)  # n = 0 at seq 2
    driver.mark("BTC-PERP", "20000.0", T + 1 + 30_000, 3)  # timed out, healthy again: nothing pending
    state = driver.engine.accounts["acct"]
    assert state.pending == {} and state.emitted == {"cross": [2, 1]}
    record = state.to_record()
    assert record[6:] == [[], [["cross", 2, 1]]]  # no pending, the count apart
    recovered = Driver(driver.engine.params)
    recovered.engine = Engine(driver.engine.params, {"acct": AccountState.from_record(orjson.loads(orjson.dumps(record)))})
    for d in (driver, recovered):
        d.outputs.clear()
        d.mark("BTC-PERP", "19040.0", T + 30_003, 4)
        assert [e["liquidation_id"] for e in d.liquidations()] == [lid("acct", "cross", 2, 1)]


def test_two_pending_scopes_are_held_and_released_one_by_one():
    account = AccountState("a", seq=4, pending={"cross": Pending(lid("a", "cross", 4, 0), T),
                                                "BTC-PERP": Pending(lid("a", "BTC-PERP", 4, 0), T)},
                           emitted={"cross": [4, 1], "BTC-PERP": [4, 1]})
    assert account.pending_count() == 2 and sorted(account.watched_scopes()) == ["BTC-PERP", "cross"]
    assert account.pop_pending("cross") is not None and account.pending_count() == 1
    assert account.emitted == {"cross": [4, 1], "BTC-PERP": [4, 1]}  # released at seq 4: its count stays
    assert account.pop_pending("BTC-PERP") is not None and account.pending_of("BTC-PERP") is None
    assert account.pending == {} and account.emitted == {"cross": [4, 1], "BTC-PERP": [4, 1]}


def test_a_record_with_a_zero_lot_position_loads_without_moving_the_open_interest():
    # the engine never writes one (a zero size closes the position), but a hand-written or foreign
    # record may hold it: loading it must not fail recovery, and the open interest stays 0
    record = orjson.loads(b'[3,"carol",4,1000000000,[["BTC-PERP",0,200000],["ETH-PERP",200,150000]]]')
    engine = Engine(make_params(), accounts={"carol": AccountState.from_record(record)})
    assert engine.open_long == {"ETH-PERP": 200} and engine.open_short == {}


_ALONE = {  # each field of the record's tail, alone on an account with one cross position
    "claim": dict(claim_units=7 * USD),
    "pending": dict(pending={"cross": Pending(lid("ann", "cross", 4, 0), T)}),
    "emitted": dict(emitted={"cross": [3, 1]}),
    "in_call": dict(in_call={"cross"}),
    "rounds": dict(rounds={"r1": ["5000000", "5000000"]}),
}


@pytest.mark.parametrize("field", [None, *_ALONE], ids=lambda f: (
    "an account with nothing in the tail stops after its positions" if f is None
    else f"an account whose only tail field is {f} writes the tail up to it and reads it back"))
def test_the_record_s_tail_is_written_exactly_when_a_field_of_it_holds_something(field):
    account = AccountState("ann", seq=4, collateral_units=100 * USD,
                           positions={"BTC-PERP": PositionState(1000, 200_000)}, **(_ALONE.get(field) or {}))
    record = account.to_record()
    assert record[:5] == [RECORD_FORMAT, "ann", 4, 100 * USD, [["BTC-PERP", 1000, 200_000]]]
    # the tail: claim, pending, emitted, in_call, rounds; trailing empty ones (and a lone "0" claim) left out
    tail = record[5:]
    if field is None:
        assert tail == []
    else:
        position = list(_ALONE).index(field)  # claim 0, pending 1, emitted 2, in_call 3, rounds 4
        assert len(tail) == position + 1
        assert tail[0] == ("7000000" if field == "claim" else "0")
        assert all(not part for part in tail[1:-1]) and (field == "claim" or tail[-1])
    again = AccountState.from_record(orjson.loads(orjson.dumps(record)))
    assert again.to_record() == record
