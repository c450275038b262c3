"""Garbage-collector settings for processes that hold many long-lived objects (replay, backtest, the worker).

CPython collects its youngest generation every 700 allocations and, as the heap grows, the whole
heap each time it grew by a quarter: a replay of 100 000 accounts made 16 full collections, and the
collector took 15–20 % of the replay's CPU time (bench: the same replay with ``gc.disable()``). None
of those full collections found garbage — the engine builds no reference cycles; what cycles there
are (an exception and its traceback) are few — so collecting 70× less often costs almost no memory.
Reference counting still frees everything else at once. In the worker a full collection with
100 000 accounts in memory paused every tick for 0.5–0.85 s, about four times per loss-sharing
round (docs/benchmarks.md); a young collection of 50 000 objects takes a few milliseconds.
"""
from __future__ import annotations

import gc

GEN0_ALLOCATIONS = 50_000  # default 700
GEN1_EVERY = 50  # young collections per middle one (default 10)
GEN2_EVERY = 100  # middle collections per full one (default 10), besides CPython's 25 %-growth rule


def tune_collector() -> None:
    gc.set_threshold(GEN0_ALLOCATIONS, GEN1_EVERY, GEN2_EVERY)
