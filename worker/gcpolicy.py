"""The worker's cyclic garbage collector: every object is scanned by one full collection, not all.

A worker holds ~10 GC-tracked objects per account (the engine's state and the table's copy), a
million at 100 000 accounts. CPython runs a full (generation 2) collection, which scans every
tracked object, whenever the objects promoted since the last one exceed a quarter of those it
kept; a cascade's pending liquidations do that, and the collection then stalls the event loop
for 0.4–0.6 s in the middle of it (py-spy, bench/stream_bench.py; docs/benchmarks.md).

``install`` moves what survives each full collection to the permanent generation
(``gc.freeze``): later full collections scan only what was promoted since, so each stays about
as short as a young one. Objects freed by reference counting (replaced account states, settled
requests) are freed as before; what is given up is collecting a reference *cycle* among objects
that had already survived a full collection. Young cycles (exceptions and their tracebacks,
finished tasks) are collected by the young collections, as before.
"""
from __future__ import annotations

import gc
from typing import Any

_installed = False


def _freeze_after_full_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def install() -> None:
    """Freeze what survives each full collection (idempotent)."""
    global _installed
    if not _installed:
        gc.callbacks.append(_freeze_after_full_collection)
        _installed = True
