"""Fuzz benchmark: push generated hostile messages through one live worker (SPEC §8).

Each message is an entry of the hostile corpus (worker/hostile.py) or a mutation of one (bytes
flipped, inserted or cut, a field replaced by a random JSON value, a batch of mutations, nesting,
huge numbers and strings), produced to `positions` / `mark-prices` on the embedded broker. The
worker must consume every message, stay up, and never retry a publish. Reports messages/s,
dead letters by code (the worker's counters), crashes (must be 0), publish retries (must be 0),
unpublishable outputs, and the worker's RSS before and after.

Usage: python bench/fuzz.py [--messages 1000000] [--seed 7]
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from topics.catalog import topic_specs  # noqa: E402
from worker.broker import EmbeddedBroker, create_topics  # noqa: E402
from worker.harness import WorkerGroup, fetch_stats, wait_for  # noqa: E402
from worker.hostile import AFTER, CORPUS, SETUP  # noqa: E402

PARAMS = ROOT / "examples" / "params.toml"
JSON_VALUES = [None, True, 0, -1, 2**63, 2**64, 10**30, 1.5e308, "", "x" * 300, "-0", "0.0000001",
               "1" * 40, "NaN", [], {}, [[[[]]]], {"a": {"b": {"c": []}}}]


def _random_json(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.6:
        return rng.choice(JSON_VALUES)
    if roll < 0.8:
        value: object = rng.choice(JSON_VALUES)
        for _ in range(rng.randint(1, 300)):  # nesting an encoder might refuse
            value = [value]
        return value
    return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 64)))


def mutate(rng: random.Random, raw: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind == 0 and raw:  # flip bytes
        data = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 1 and raw:  # cut
        return raw[: rng.randrange(len(raw))]
    if kind == 2:  # insert garbage
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + raw[at:]
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if kind == 3 and isinstance(value, dict) and value:  # replace a field
        value[rng.choice(list(value))] = _random_json(rng)
    elif kind == 4:  # a batch of several
        value = [value] * rng.randint(2, 20)
    else:  # add a field
        value = {"extra": _random_json(rng), "inner": value}
    try:
        return orjson.dumps(value)
    except TypeError:
        return raw


def generate(rng: random.Random, count: int) -> list[tuple[str, bytes | None, bytes]]:
    small = [h for h in CORPUS if len(h.value) < 100_000 and len(h.key or b"") < 10_000]
    large = [h for h in CORPUS if h not in small]
    out = []
    for _ in range(count):
        if rng.random() < 0.0002:  # the near-1 MiB ones, rarely (they cost the broker most)
            entry = rng.choice(large)
            out.append((entry.topic, entry.key, entry.value))
            continue
        entry = rng.choice(small)
        value = entry.value if rng.random() < 0.2 else mutate(rng, entry.value)
        out.append((entry.topic, entry.key, value))
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def produce_all(bootstrap: str, prefix: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1_048_576,
                                max_request_size=4_000_000)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(prefix + topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def run(messages: int, seed: int, chunk: int = 100_000) -> int:
    rng = random.Random(seed)
    prefix = "fuzz-"
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as log_dir:
        create_topics(broker.bootstrap, topic_specs(prefix, 4))
        with WorkerGroup(broker.bootstrap, PARAMS, app_id=prefix + "w", prefix=prefix, log_dir=log_dir) as group:
            group.start(1)
            await group.wait_ready()
            await produce_all(broker.bootstrap, prefix, SETUP)
            pid = group.procs[0].pid
            rss_start = rss_kib(pid)
            rss_peak = rss_start
            sent = 0
            started = time.perf_counter()
            port = group.ports[0]

            def consumed() -> int:
                stats = fetch_stats(port) or {"counters": {}}
                c = stats["counters"]
                return c.get("messages:positions", 0) + c.get("messages:mark-prices", 0)

            base = len(SETUP)
            while sent < messages:
                batch = generate(rng, min(chunk, messages - sent))
                await produce_all(broker.bootstrap, prefix, batch)
                sent += len(batch)
                await wait_for(lambda: consumed() >= base + sent, 1800, f"{sent} fuzz messages consumed", 0.5)
                rss_peak = max(rss_peak, rss_kib(pid))
                elapsed = time.perf_counter() - started
                print(f"  {sent:>9,} messages  {sent / elapsed:8,.0f} msg/s  RSS {rss_kib(pid) / 1024:6.1f} MiB",
                      flush=True)
            elapsed = time.perf_counter() - started
            # a valid tick after all that still liquidates account "a"
            await produce_all(broker.bootstrap, prefix, [AFTER])
            await wait_for(lambda: (fetch_stats(port) or {"counters": {}})["counters"].get("liquidations", 0) >= 1,
                           120, "the liquidation after the fuzz", 0.2)
            stats = fetch_stats(port) or {"counters": {}}
            alive = group.alive() == [0]
            rss_end = rss_kib(pid)
    counters = Counter(stats["counters"])
    codes = {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("dead_letter:")}
    crashes = 0 if alive else 1
    print(f"\nfuzz: {messages:,} hostile messages (seed {seed}) in {elapsed:.1f} s = {messages / elapsed:,.0f} msg/s")
    print(f"crashes: {crashes}   publish retries: {counters.get('publish_retries', 0)}   "
          f"unpublishable outputs: {codes.get('unpublishable_output', 0)}   "
          f"internal errors: {sum(v for k, v in counters.items() if k.startswith('internal_error'))}")
    print(f"RSS: {rss_start / 1024:.1f} MiB at start, {rss_peak / 1024:.1f} MiB peak, {rss_end / 1024:.1f} MiB at end")
    print(f"liquidation after the fuzz: {counters.get('liquidations', 0)}")
    print("dead letters by code:")
    for code, count in sorted(codes.items(), key=lambda item: -item[1]):
        print(f"  {code:<22} {count:>10,}")
    print(f"  {'in all':<22} {sum(codes.values()):>10,}  (a batch gives one per bad element)")
    ok = crashes == 0 and counters.get("publish_retries", 0) == 0 and codes.get("unpublishable_output", 0) == 0
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    return asyncio.run(run(args.messages, args.seed))


if __name__ == "__main__":
    raise SystemExit(main())
