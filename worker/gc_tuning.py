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
from typing import Any

GEN0_ALLOCATIONS = 50_000  # default 700
GEN1_EVERY = 50  # young collections per middle one (default 10)
GEN2_EVERY = 100  # middle collections per full one (default 10), besides CPython's 25 %-growth rule


def tune_collector() -> None:
    gc.set_threshold(GEN0_ALLOCATIONS, GEN1_EVERY, GEN2_EVERY)


# ---------------------------------------------------------------- the worker only
# A worker also holds ~10 GC-tracked objects per account (the engine's state and the table's copy):
# a million at 100 000 accounts. A cascade's pending liquidations still trigger the odd full
# collection, which stalled the event loop for 0.4–0.6 s in the middle of it (py-spy,
# bench/stream_bench.py). ``freeze_after_full_collections`` moves what survives each full
# collection to the permanent generation (``gc.freeze``), so that later ones scan only what was
# promoted since and stay about as short as a young one. Objects freed by reference counting
# (replaced account states, settled requests) are freed as before; what is given up is collecting a
# reference *cycle* among objects that already survived a full collection. Young cycles
# (exceptions and their tracebacks, finished tasks) are collected by the young collections.
_freezing = False


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def freeze_after_full_collections() -> None:
    """Freeze what survives each full collection (idempotent)."""
    global _freezing
    if not _freezing:
        gc.callbacks.append(_freeze_after_full_collection)
        _freezing = True
