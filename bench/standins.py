"""Stand-ins for the in-process benches (bench/round_pay_bench.py, fund_agent_bench.py, single_event_bench.py): a
Faust table and Faust's aiokafka producer as the worker's ``Runtime`` uses them, without a broker;
and what those benches share: their arguments and their measured region."""
from __future__ import annotations

import argparse
import asyncio
import gc
import operator
import time
import types
from pathlib import Path
from typing import Any, Coroutine

from aiokafka.producer.message_accumulator import BatchBuilder


class Store:
    """A table's store: its memory (``data``) and each key's partition."""

    def __init__(self) -> None:
        self.data: dict = {}
        self._key_partition: dict = {}

    def get(self, key, default=None):  # noqa: ANN001, ANN201
        return self.data.get(key, default)


class Table:
    """A Faust table as the runtime writes it: its store and its changelog topic's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data = Store()
        self.changelog_topic = types.SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")


class BatchProducer:
    """Faust's aiokafka producer as ``Runtime.send_batched`` uses it (``create_batch``, ``send_batch``):
    every batch is built, checksum and all, as the sender would, and delivered at once. Counts the
    records and the bytes of the built batches by topic."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.records = 0
        self.bytes: dict[str, int] = {}

    def _ensure_producer(self):  # noqa: ANN202
        return self

    async def partitions_for(self, topic):  # noqa: ANN001, ANN202
        return set(range(self.partitions))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(262_144, 0)

    async def send_batch(self, batch, topic, partition):  # noqa: ANN001, ANN202
        self.records += batch.record_count()
        self.bytes[topic] = self.bytes.get(topic, 0) + len(batch._build())
        future = asyncio.get_running_loop().create_future()
        future.set_result(types.SimpleNamespace(offset=0))
        return future


def bench_arguments(accounts: int, here: Path) -> argparse.ArgumentParser:
    """The in-process benches' common arguments: --accounts, --repeat, --root (a checkout whose
    worker is measured, compiled in place there: a baseline beside this tree)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=accounts)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", type=Path, default=here)
    return parser


def measured_seconds(work: Coroutine[Any, Any, Any]) -> float:
    """Seconds of ``asyncio.run(work)``: the collector run before and off during (its runs come at
    points that move with any change of the allocations), inside ``operator.call`` — the region
    bench/instructions.py counts the instructions of."""
    gc.collect()
    started = time.perf_counter()
    gc.disable()
    try:
        operator.call(asyncio.run, work)
    finally:
        gc.enable()
    return time.perf_counter() - started
