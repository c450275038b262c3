"""The engine's candidate index (worker/core/engine.py, CandidateIndex): compact heap entries
(bound · 2^(V + S) + version mod 2^V · 2^S + slot) find exactly the scopes whose band a tick leaves."""
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
