"""The engine's candidate index (worker/core/engine.py, CandidateIndex): compact entries in price buckets
(bound · 2^(V + S) + version mod 2^V · 2^S + slot) find exactly the scopes whose band a tick leaves."""
import pytest
from hypothesis import example, given, settings, strategies as st

from worker.core.engine import MIN_SLOT_BITS, VERSION_BITS, CandidateIndex

SYMBOL = "BTC-PERP"


def brute_force(bands: dict[tuple[str, str], tuple[int, int]], mark_ticks: int) -> set[tuple[str, str]]:
    return {key for key, (lo, hi) in bands.items() if not lo <= mark_ticks <= hi}


def test_more_scopes_than_the_slot_field_holds_widen_it_and_the_same_candidates_are_found():
    index = CandidateIndex()
    bands = {}
    for i in range((1 << MIN_SLOT_BITS) + 3):  # one slot beyond the narrowest field, then some
        key = (f"a{i}", "cross")
        bands[key] = (190_000 + i % 5_000, 210_000 - i % 7_000)
        index.put_band(key, SYMBOL, *bands[key])
    for mark_ticks in (194_000, 203_500):
        found = index.candidates(SYMBOL, mark_ticks)
        assert found == brute_force(bands, mark_ticks)
        assert found
        for key in found:  # as the engine does with what it evaluates (and then bands again)
            index.drop(key)
            del bands[key]


def test_a_scope_banded_again_for_a_whole_version_cycle_is_found_by_its_live_band_only():
    index = CandidateIndex()
    for i in range(60_000):  # live bands enough that the superseded ones are not compacted by count
        index.put_band((f"a{i}", "cross"), SYMBOL, 100, 300)
    hot = ("hot", "cross")
    index.put_band(hot, SYMBOL, 150, 250)  # version 0: left at 149 or 251
    for _ in range(1 << VERSION_BITS):  # dropped and banded again 2^V times: version 2^V ≡ 0 (mod 2^V)
        index.drop(hot)
        index.put_band(hot, SYMBOL, 10, 1_000)
    assert index.candidates(SYMBOL, 140) == set()  # inside every live band; version 0's band is gone
    assert index.candidates(SYMBOL, 5) == {hot} | {(f"a{i}", "cross") for i in range(60_000)}


# Operations on a few scopes and two symbols, as the engine makes them: marks that walk (a little,
# a lot, or by more than the rebucketing factor) and bands put around the current mark (mark ±
# move), plus bands anywhere (negative lows, highs far beyond the mark), and drops.
_KEYS = [(f"a{i}", "cross") for i in range(3)] + [("a0", "ETH-PERP")]
_SYMBOLS = st.sampled_from([SYMBOL, SYMBOL, SYMBOL, "ETH-PERP"])
_anywhere = st.integers(-5, 300) | st.integers(-10**20, 10**20)
_operations = st.lists(st.one_of(
    # mark ± move, or one side of it only (a healthy scope: no bound its position's way)
    st.tuples(st.just("put"), st.sampled_from(_KEYS), _SYMBOLS, st.integers(0, 40),
              st.sampled_from(["both", "both", "low only", "high only"])),
    st.tuples(st.just("put anywhere"), st.sampled_from(_KEYS), _SYMBOLS, _anywhere, _anywhere),
    st.tuples(st.just("drop"), st.sampled_from(_KEYS)),
    st.tuples(st.just("tick"), _SYMBOLS, st.integers(-40, 40) | st.integers(-10**6, 10**7))),  # the mark's move
    max_size=60)


@settings(max_examples=400, deadline=None)
@given(_operations)
# a tick finds one scope and keeps another whose band ends exactly at the mark, then a tick of one
# more leaves it: found only if the first tick's bound on what it kept is exact (low, high side)
@example([("put", ("a0", "cross"), SYMBOL, 5, "both"), ("put", ("a1", "cross"), SYMBOL, 10, "both"),
          ("tick", SYMBOL, -10), ("tick", SYMBOL, -1)])
@example([("put", ("a0", "cross"), SYMBOL, 5, "both"), ("put", ("a1", "cross"), SYMBOL, 10, "both"),
          ("tick", SYMBOL, 10), ("tick", SYMBOL, 1)])
def test_a_tick_finds_exactly_the_scopes_whose_band_it_leaves_whatever_the_bands_and_moves(operations):
    # Model: each scope's bands by symbol, as the engine holds them (a scope's bands are dropped
    # together; after a tick the engine drops what it found, as here, and bands it again). A tick at m must
    # find exactly the scopes with a band of that symbol not containing m: lo > m or hi < m.
    index = CandidateIndex()
    model: dict[tuple[str, str], dict[str, tuple[int | None, int | None]]] = {}
    marks = {SYMBOL: 200_000, "ETH-PERP": 150_000}
    for operation in operations:
        if operation[0].startswith("put"):
            key, symbol = operation[1], operation[2]
            lo: int | None
            hi: int | None
            if operation[0] == "put":
                lo, hi = marks[symbol] - operation[3], marks[symbol] + operation[3]
                if operation[4] == "low only":
                    hi = None
                elif operation[4] == "high only":
                    lo = None
            else:
                lo, hi = min(operation[3:]), max(operation[3:])
            if symbol in model.get(key, {}):  # the engine drops a scope before banding it again
                index.drop(key)
                model.pop(key)
            index.put_band(key, symbol, lo, hi)
            model.setdefault(key, {})[symbol] = (lo, hi)
        elif operation[0] == "drop":
            index.drop(operation[1])
            model.pop(operation[1], None)
        else:
            _, symbol, move = operation
            mark_ticks = marks[symbol] = max(1, marks[symbol] + move)
            expected = {key for key, bands in model.items() if symbol in bands and (
                (bands[symbol][0] is not None and mark_ticks < bands[symbol][0])
                or (bands[symbol][1] is not None and mark_ticks > bands[symbol][1]))}
            assert index.candidates(symbol, mark_ticks) == expected
            for key in expected:
                index.drop(key)
                model.pop(key)


def test_a_band_with_no_bound_is_refused():
    # it would count the scope as banded while no tick could ever find it
    with pytest.raises(ValueError):
        CandidateIndex().put_band(("a", "cross"), SYMBOL, None, None)
