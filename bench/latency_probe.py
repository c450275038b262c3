"""Tick → liquidation, per tick, with where the time went: the worst ticks of a latency run.

One worker on the embedded broker, a ladder of accounts liquidated one per tick, ~2 000
background position events/s (as `stream_bench.py`'s latency part). For each tick: the total (tick
sent → its liquidation read back), the mark's produce acknowledgement, and the record timestamps
of its fund request and its liquidation (when the worker produced them, relative to the tick sent;
-1000 ms: not read). Prints the slowest eight and the median; the worker's log names the run.
Usage: python bench/latency_probe.py [TICKS]
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from stream_bench import PARAMS, PARTITIONS, T0, account_events, background_load, batched, mark, produce  # noqa: E402
from topics.catalog import topic_specs  # noqa: E402
from worker.broker import EmbeddedBroker, create_topics  # noqa: E402
from worker.harness import WorkerGroup  # noqa: E402

PREFIX = "lp-"


async def probe(bootstrap: str, log_dir: Path, ticks: int) -> list[tuple[float, float, float, float]]:
    create_topics(bootstrap, topic_specs(PREFIX, PARTITIONS))
    ladder = [e for j in range(ticks) for e in account_events(f"l{j:05d}", 1_000 + 10 * j, 1_000)]
    background = [e for i in range(2_000) for e in account_events(f"b{i:05d}", 20_000, 1_000)]
    await produce(bootstrap, PREFIX + "mark-prices", [(None, b"BTC-PERP", orjson.dumps(mark(200_000, 1, T0)))])
    await produce(bootstrap, PREFIX + "positions", batched(ladder + background))
    consumer = AIOKafkaConsumer(PREFIX + "liquidations", PREFIX + "insurance-requests", bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=5)
    rows = []
    with WorkerGroup(bootstrap, PARAMS, app_id=PREFIX + "w", prefix=PREFIX, log_dir=log_dir) as group:
        group.start(1)
        await group.wait_ready(120)
        await asyncio.sleep(2)
        await consumer.start()
        await consumer.getmany(timeout_ms=500)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        stop = asyncio.Event()
        load = asyncio.create_task(background_load(producer, PREFIX + "positions", stop))
        try:
            for j in range(ticks):
                price = (190_000 - 100 * j) * 1000 // 996 - 1  # just below account j's liquidation price
                sent, wall = time.perf_counter(), time.time()
                await producer.send_and_wait(PREFIX + "mark-prices", orjson.dumps(mark(price, j + 2, T0 + 10 + j)),
                                             key=b"BTC-PERP")
                acked = time.perf_counter()
                account = f"l{j:05d}".encode()
                request_at = liquidation_at = -1.0
                read_at = None
                while read_at is None:
                    for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                        for record in records:
                            if account not in record.value:
                                continue
                            if tp.topic.endswith("insurance-requests"):
                                request_at = record.timestamp / 1000 - wall
                            else:
                                read_at, liquidation_at = time.perf_counter(), record.timestamp / 1000 - wall
                rows.append((1000 * (read_at - sent), 1000 * (acked - sent), 1000 * request_at, 1000 * liquidation_at))
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await load
            await producer.stop()
            await consumer.stop()
    return rows


def main() -> int:
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    log_dir = Path(tempfile.mkdtemp(prefix="latency-probe-"))
    with EmbeddedBroker(log_dir=str(log_dir)) as broker:
        rows = sorted(asyncio.run(probe(broker.bootstrap, log_dir, ticks)))
    print(f"{ticks} ticks, logs in {log_dir}")
    for total, acked, request, liquidation in rows[-8:] + [rows[len(rows) // 2]]:
        print(f"total {total:7.1f} ms   mark acked {acked:6.1f}   request produced {request:7.1f}   "
              f"liquidation produced {liquidation:7.1f}")
    print("(the last line is the median tick)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
