"""``fill_batch`` (worker/app.py) appends through aiokafka's record builder directly: the batches it
builds hold the records ``BatchBuilder.append`` would put there, and it stops where ``append``
stops (a full batch, closed)."""
from __future__ import annotations

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from worker.app import fill_batch


def records(batch: BatchBuilder) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of each record of a built batch (timestamps left out: the time of day)."""
    return [(r.offset, r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]


def by_append(batch: BatchBuilder, items: list, start: int) -> int:
    for index in range(start, len(items)):
        if batch.append(key=items[index][0], value=items[index][1], timestamp=None) is None:
            return index
    return len(items)


# 40 records of 0–299 bytes (a tombstone among them): a 1 000-byte batch holds a few of them
ITEMS = [(f"k{i}".encode(), None if i == 7 else bytes([65 + i % 26]) * (i * 37 % 300)) for i in range(40)]


@pytest.mark.parametrize("batch_bytes", [262_144, 1_000], ids=["all records fit in one batch",
                                                                "a small batch fills and is closed"])
def test_fill_batch_builds_the_batches_append_builds(batch_bytes):
    ours, theirs = [BatchBuilder(batch_bytes, 0)], [BatchBuilder(batch_bytes, 0)]
    done_ours = fill_batch(ours[0], ITEMS, 0)
    done_theirs = by_append(theirs[0], ITEMS, 0)
    while done_theirs < len(ITEMS):  # each full batch followed by a fresh one, as send_batched does
        assert done_ours == done_theirs and ours[-1]._closed and theirs[-1]._closed
        ours.append(BatchBuilder(batch_bytes, 0))
        theirs.append(BatchBuilder(batch_bytes, 0))
        done_ours, done_theirs = fill_batch(ours[-1], ITEMS, done_ours), by_append(theirs[-1], ITEMS, done_theirs)
    assert done_ours == done_theirs == len(ITEMS)
    assert (len(ours) > 1) is (batch_bytes == 1_000)
    assert [records(b) for b in ours] == [records(b) for b in theirs]
    assert [b.record_count() for b in ours] == [b.record_count() for b in theirs]
    assert sum(len(b) for b in map(records, ours)) == len(ITEMS)


def test_a_batch_with_a_serializer_goes_through_append():
    calls = []
    batch = BatchBuilder(262_144, 0, key_serializer=lambda key: calls.append(key) or key)
    assert fill_batch(batch, ITEMS[:5], 0) == 5
    assert calls == [key for key, _ in ITEMS[:5]]
    assert records(batch) == [(i, key, value) for i, (key, value) in enumerate(ITEMS[:5])]
