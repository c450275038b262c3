"""Work-arounds for running Faust's table recovery on brokers whose ListOffsets is imprecise.

Tansu 0.6 answers ListOffsets(latest) with the base offset of the last record batch + 1, not
the log end, when that batch holds several records. Faust reads the changelog only up to that
"highwater" and silently drops the tail of every batched changelog partition. Fetch responses
carry the true high watermark, so we ask for it with one short fetch per partition. On Apache
Kafka both agree and this costs one fetch per changelog partition at recovery.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

from aiokafka.structs import TopicPartition

from .kafka_security import KafkaSecurity, new_consumer

log = logging.getLogger(__name__)


async def true_end_offsets(bootstrap: str, security: KafkaSecurity, tps: Iterable[Any],
                           timeout_s: float = 10.0) -> dict:
    """Log-end offset per partition, from the high watermark of a fetch response."""
    tps = list(tps)
    if not tps:
        return {}
    consumer = new_consumer(bootstrap, security=security, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        ktps = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        consumer.assign(ktps)
        listed = await consumer.end_offsets(ktps)
        result = {}
        waiting = []
        for tp, ktp in zip(tps, ktps):
            if listed[ktp] == 0:
                result[tp] = 0
            else:
                consumer.seek(ktp, listed[ktp] - 1)
                waiting.append((tp, ktp))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while waiting and asyncio.get_running_loop().time() < deadline:
            await consumer.getmany(*[k for _, k in waiting], timeout_ms=200, max_records=1)
            still = []
            for tp, ktp in waiting:
                highwater = consumer.highwater(ktp)
                if highwater is None:
                    still.append((tp, ktp))
                else:
                    result[tp] = max(highwater, listed[ktp])
            waiting = still
        for tp, ktp in waiting:  # no answer in time: fall back to what ListOffsets said
            log.warning("no fetch high watermark for %s; using ListOffsets %s", ktp, listed[ktp])
            result[tp] = listed[ktp]
        return result
    finally:
        await consumer.stop()


def patch_recovery_highwaters(bootstrap: str, security: KafkaSecurity) -> None:
    """Make Faust's recovery read changelogs to their true end."""
    from faust.tables import recovery

    async def _build_highwaters(self, consumer, tps, destination, title):  # noqa: ANN001
        ends = await true_end_offsets(bootstrap, security, tps)
        highwaters = {tp: value - 1 for tp, value in ends.items()}  # Faust keeps "last offset"
        self.log.info("Highwater for %s changelog partitions (fetch HW): %s", title, dict(highwaters))
        destination.clear()
        destination.update(highwaters)

    recovery.Recovery._build_highwaters = _build_highwaters


def patch_fetch_max_wait(max_wait_ms: int) -> None:
    """Cap the long poll of Faust's group consumer (Faust hard-codes 1 500 ms).

    A request the consumer sends to the broker (ListOffsets, ...) waits behind a fetch in flight on
    the same connection, so each step of a takeover's table recovery could wait up to a whole
    long poll; a fetch still returns as soon as data arrives, so a short poll only costs a few
    empty fetches a second when idle."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    original = getattr(thread, "_risk_original_create_worker_consumer", thread._create_worker_consumer)

    def _create_worker_consumer(self, transport):  # noqa: ANN001, ANN202
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by AIOKafkaConsumer.start() for its Fetcher
        return consumer

    thread._risk_original_create_worker_consumer = original
    thread._create_worker_consumer = _create_worker_consumer


async def flush_now(producer: Any) -> None:
    """Send everything buffered now and wait until it is delivered, without waiting out the
    producer's linger (aiokafka's ``flush`` waits for lingering batches to fill; its
    ``flush_for_commit`` closes them and wakes the sender). Falls back to ``flush``."""
    await producer.buffer.flush()
    accumulator = getattr(getattr(producer, "_producer", None), "_message_accumulator", None)
    if accumulator is not None and hasattr(accumulator, "flush_for_commit"):
        await accumulator.flush_for_commit()
    else:
        await producer.flush()
