"""An in-memory table store that knows which changelog offset it holds, so a takeover is fast.

Faust's ``memory://`` store answers "no persisted offset" for every partition and, after each
recovery, drops every key that is not in an active partition. A worker that keeps a partition
over a rebalance therefore reads that partition's whole changelog again, and a standby replica
is useless: its keys are dropped, and a promoted standby is recovered from offset 0 anyway.

``TrackedMemoryStore`` (URL ``tracked-memory://``) is the same dictionary, plus per changelog
partition the highest offset its contents reflect:

* changelog records applied by recovery or by a standby replica advance it;
* the worker's own writes advance it when the broker acknowledges them (``track_send``; Faust's
  own table writes report through ``set_persisted_offset``);
* it keeps the keys of standby partitions as well as active ones, and forgets a partition —
  its keys and its offset — only when it is neither;
* ``replayed`` names the partitions that changelog records were applied to (recovery, standby);
* with a ``builder``, values applied from the changelog are also built into the owner's objects
  as they arrive (``take_built``), so a promoted standby needs no rebuilding.

Faust's recovery then starts each partition after that offset: a kept partition reads nothing,
a promoted standby only the records it had not fetched yet, a partition new to this worker from
the beginning. The contents are never behind the offset (a key is written before its record is
sent), so reading from there on yields the same table as reading from 0.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Set

from faust.stores import STORES
from faust.stores.memory import Store as MemoryStore
from faust.types import TP, EventT

SCHEME = "tracked-memory"


class TrackedMemoryStore(MemoryStore):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}
        # partitions that changelog records were applied to since the owner last cleared this
        # (the worker keeps its in-memory accounts of a partition over a rebalance only if none were)
        self.replayed: set[int] = set()
        # ``builder`` (set by the owner) turns a value into the object the owner works on; values
        # applied from the changelog (standby copies) are built as they arrive, so that a takeover
        # finds them ready: key → (the value it was built from, the object)
        self.builder: Callable[[Any], Any] | None = None
        self.built: dict[Any, tuple[Any, Any]] = {}

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        tp = TP(tp.topic, tp.partition)
        if offset > self._offsets.get(tp, -1):
            self._offsets[tp] = offset

    def track_send(self, tp: TP, future: Any) -> None:
        """Advance the partition's offset when this record, sent by the worker itself, is acknowledged."""
        def delivered(done: Any) -> None:
            if not done.cancelled() and done.exception() is None:
                self.set_persisted_offset(tp, done.result().offset)
        future.add_done_callback(delivered)

    def offsets(self) -> dict[int, int]:
        """Highest changelog offset held, by partition (for /stats)."""
        return {tp.partition: offset for tp, offset in sorted(self._offsets.items())}

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        for event in events:
            message = event.message
            self.set_persisted_offset(message.tp, message.offset)
            self.replayed.add(message.partition)
        if self.builder is not None:
            for key in {to_key(event.key) for event in events}:
                value = self.data.get(key)
                try:
                    self.built[key] = (value, self.builder(value))
                except Exception:  # never fail a recovery for it: the owner builds it again when needed
                    self.built.pop(key, None)

    def take_built(self, key: Any, value: Any) -> Any:
        """The object built from this very value, if any (and forget it); else None."""
        entry = self.built.pop(key, None)
        return entry[1] if entry is not None and entry[0] is value else None

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        kept = {tp.partition for tp in active_tps} | {tp.partition for tp in standby_tps}
        dropped = [key for key, partition in self._key_partition.items() if partition not in kept]
        for key in dropped:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)
            self.built.pop(key, None)
        for tp in [tp for tp in self._offsets if tp.partition not in kept]:
            del self._offsets[tp]

    def reset_state(self) -> None:
        super().reset_state()
        self._offsets.clear()
        self.built.clear()


def register() -> str:
    """Make ``tracked-memory://`` a Faust store URL; returns it."""
    STORES.aliases.setdefault(SCHEME, f"{__name__}:TrackedMemoryStore")
    return f"{SCHEME}://"
