"""Streaming benchmark on the embedded broker (Tansu): throughput, latency, cascade, index.

Prints, in one run:
  1. events/s of one worker, single-event messages, next to a bare Faust agent on the same messages;
  2. events/s of one worker, batched messages, next to raw aiokafka consume + orjson decode;
  3. tick → liquidation latency p50/p99 with background position traffic;
  4. time to publish a cascade of 10 k liquidations among 100 k accounts;
  5. scopes evaluated per tick at 10 k and 200 k healthy accounts (the candidate index).
Usage: python bench/stream_bench.py [--quick] [--only cascade] [--workers 1,2] [--repeat N]
                                   [--baseline-root DIR] [--py-spy DIR]
  --only cascade     parts 3 and 4 only (latency and cascade); --only throughput: parts 1 and 2;
  --workers 1,2      run parts 3 and 4 with each of these worker counts;
  --repeat N         run each part N times (alternating with the baseline; parts 1 and 2 in both orders)
                     and print the medians;
  --baseline-root    also run parts 1–4 with the workers started from another checkout (e.g.
                     `git archive <commit> | tar -x -C DIR`), just before this tree's, same broker;
  --py-spy DIR       record this tree's first worker with py-spy during the cascade and each throughput phase.
The cascade also prints when (after the tick) the engine sent its fund requests and the fund agent
its allocations, by record timestamps, and the broker's CPU. Environment, for profiling:
  BENCH_PY_SPY_NATIVE=1   py-spy with --native (compiled frames too; slows the worker down)
  BENCH_PY_SPY_RATE=N     py-spy samples a second (default 250; more: finer, and slower)
  BENCH_PERF=FILE         a flat `perf record` of the first worker during the cascade
  BENCH_CASCADE_TIMELINE=1  every request message's, account write's, ledger write's and
                            allocation's send time during the cascade
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from topics.catalog import topic_specs  # noqa: E402
from worker.app import partition_for  # noqa: E402
from worker.broker import EmbeddedBroker, create_topics, free_port  # noqa: E402
from worker.core.engine import Engine  # noqa: E402
from worker.core.outputs import Source  # noqa: E402
from worker.core.params import load_params  # noqa: E402
from worker import harness  # noqa: E402
from worker.harness import WorkerGroup, fetch_stats, stop_process, wait_for  # noqa: E402

PARAMS = ROOT / "bench" / "bench_params.toml"
T0 = 1_700_000_000_000
PARTITIONS = 4


def mark(price_tenths: int, seq: int, ts: int, symbol: str = "BTC-PERP") -> dict:
    return {"symbol": symbol, "mark_price": f"{price_tenths // 10}.{price_tenths % 10}", "ts": ts, "seq": seq}


def account_events(account: str, collateral_usd: int, lots: int, seq: int = 1) -> list[dict]:
    return [{"type": "balance", "account_id": account, "asset": "USD", "collateral": str(collateral_usd),
             "seq": seq, "ts": T0},
            {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": f"{lots / 1000:.3f}",
             "entry_price": "20000.0", "seq": seq + 1, "ts": T0}]


def py_spy_record(pid: int, out: Path, rate: int) -> subprocess.Popen:
    """py-spy (from this interpreter's venv) recording ``pid`` into ``out``, raw, idle frames too;
    stop it with SIGINT."""
    native = ["--native"] if os.environ.get("BENCH_PY_SPY_NATIVE") else []  # compiled frames too (slower)
    rate = int(os.environ.get("BENCH_PY_SPY_RATE", rate))  # samples a second (more: finer, more overhead)
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                             "--rate", str(rate), "--format", "raw", "--idle", "--nonblocking", *native, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def batched(events: list[dict], size: int = 500, partitions: int = PARTITIONS) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) messages: per-partition arrays of at most `size` events."""
    by_partition: dict[int, list[dict]] = {}
    for event in events:
        by_partition.setdefault(partition_for(event["account_id"].encode(), partitions), []).append(event)
    out = []
    for partition, items in sorted(by_partition.items()):
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            out.append((partition, chunk[0]["account_id"].encode(), orjson.dumps(chunk)))
    return out


async def produce(bootstrap: str, topic: str, messages: list[tuple[int | None, bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=262_144,
                                max_request_size=4_000_000)
    await producer.start()
    started = time.perf_counter()
    try:
        for partition, key, value in messages:
            await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume_decode(bootstrap: str, topic: str, expected: int) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8_000_000, fetch_max_bytes=32_000_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = events = 0
        started = time.perf_counter()
        while seen < expected:
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                for record in records:
                    value = orjson.loads(record.value)
                    events += len(value) if isinstance(value, list) else 1
                    seen += 1
        return time.perf_counter() - started, events
    finally:
        await consumer.stop()


async def record_stamps(bootstrap: str, topic: str, since_ms: float) -> list[int]:
    """The timestamps of a topic's records from ``since_ms`` on (all partitions, read to the end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=16_000_000, fetch_max_bytes=64_000_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await consumer._client._wait_on_metadata(topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        stamps: list[int] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                stamps.extend(r.timestamp for r in records if r.timestamp >= since_ms)
        return stamps
    finally:
        await consumer.stop()


async def timed_consumption(port: int, target: int, pid: int, timeout_s: float = 600,
                            py_spy: Path | None = None) -> tuple[float, float]:
    """Seconds from the first to the target-th positions message, polled from /stats, and the CPU
    seconds process ``pid`` spent meanwhile. ``py_spy``: record the process over them, there."""
    def count() -> int:
        stats = fetch_stats(port) or {"counters": {}}
        return stats["counters"].get("messages:positions", 0)
    await wait_for(lambda: count() > 0, timeout_s, "first message", interval_s=0.01)
    spy = None if py_spy is None else py_spy_record(pid, py_spy, rate=250)
    started, cpu_started = time.perf_counter(), cpu_seconds([pid])
    await wait_for(lambda: count() >= target, timeout_s, f"{target} messages", interval_s=0.01)
    seconds, cpu = time.perf_counter() - started, cpu_seconds([pid]) - cpu_started
    if spy is not None:
        spy.send_signal(subprocess.signal.SIGINT)
        spy.wait(30)
    return seconds, cpu


def start_bare(bootstrap: str, topic: str, log_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, BARE_BOOTSTRAP=bootstrap, BARE_TOPIC=topic, BARE_WEB_PORT=str(port),
               BARE_APP_ID=f"bare-{topic}", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_faust_app.py"), "worker"], env=env,
                            stdout=open(log_dir / f"bare-{topic}.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, port


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pids: list[int], system: bool = False) -> float:
    """User + system CPU time of these processes so far (Linux /proc), in seconds (``system``: the
    system time alone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime (fields 14 and 15), in clock ticks
        total += int(fields[12]) if system else int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def update(k: int, accounts: int) -> dict:
    """The k-th healthy position update: account k mod N, size 0.900–1.099 BTC, next seq."""
    account = f"a{k % accounts:06d}"
    return {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": f"{(900 + k % 200) / 1000:.3f}",
            "entry_price": "20000.0", "seq": 3 + k // accounts, "ts": T0 + 1}


async def worker_seconds(bootstrap: str, prefix: str, log_dir: Path, setup_count: int, measured_count: int,
                         py_spy: Path | None = None) -> tuple[float, float]:
    """Start one worker on pre-produced topics; seconds it takes for the `measured_count` positions
    messages that follow the first `setup_count`, and the worker's CPU seconds meanwhile (steadier
    than the wall clock on a shared machine). ``py_spy``: record the worker over them, there."""
    def consumed() -> int:
        return (fetch_stats(port) or {"counters": {}})["counters"].get("messages:positions", 0)

    with WorkerGroup(bootstrap, PARAMS, app_id=prefix + "w", prefix=prefix, log_dir=log_dir) as group:
        group.start(1)
        port = group.ports[0]
        await wait_for(lambda: consumed() >= setup_count, 600, "setup consumed", interval_s=0.05)
        spy = None if py_spy is None else py_spy_record(group.procs[0].pid, py_spy, rate=250)
        started, cpu_started = time.perf_counter(), cpu_seconds([group.procs[0].pid])
        await wait_for(lambda: consumed() >= setup_count + measured_count, 600, "measured", interval_s=0.01)
        seconds, cpu = time.perf_counter() - started, cpu_seconds([group.procs[0].pid]) - cpu_started
        if spy is not None:
            spy.send_signal(subprocess.signal.SIGINT)
            spy.wait(30)
        return seconds, cpu


async def throughput(broker: EmbeddedBroker, log_dir: Path, accounts: int, singles: int, batch_events: int,
                     name: str = "tp", py_spy: Path | None = None) -> dict:
    """``name``: the topics' and apps' prefix stem (a second run on the same broker uses another);
    ``py_spy``: a directory to record the worker in, over each measured phase (it slows the worker)."""
    results: dict = {}
    bootstrap = broker.bootstrap
    setup_messages = batched([e for i in range(accounts) for e in account_events(f"a{i:06d}", 5_000, 1_000)])
    first_mark = [(None, b"BTC-PERP", orjson.dumps(mark(200_000, 1, T0)))]
    # --- single-event messages: position updates of existing, healthy accounts
    updates = [(None, f"a{k % accounts:06d}".encode(), orjson.dumps(update(k, accounts))) for k in range(singles)]
    create_topics(bootstrap, topic_specs(f"{name}1-", PARTITIONS))
    await produce(bootstrap, f"{name}1-mark-prices", first_mark)
    await produce(bootstrap, f"{name}1-positions", setup_messages + updates)
    seconds, cpu = await worker_seconds(bootstrap, f"{name}1-", log_dir, len(setup_messages), singles,
                                        py_spy and py_spy / f"single-{name}.txt")
    results["worker_single_eps"], results["worker_single_cpu_eps"] = singles / seconds, singles / cpu
    # bare Faust on the same single-event messages
    create_topics(bootstrap, [(f"bare-{name}", PARTITIONS, {})])
    await produce(bootstrap, f"bare-{name}", updates)
    proc, port = start_bare(bootstrap, f"bare-{name}", log_dir)
    try:
        seconds, cpu = await timed_consumption(port, singles, proc.pid,
                                               py_spy=py_spy and py_spy / f"single-bare-{name}.txt")
        results["bare_faust_mps"], results["bare_faust_cpu_mps"] = singles / seconds, singles / cpu
    finally:
        stop_process(proc)
    # --- batched messages: the same kind of updates, 500 events per message
    batch_messages = batched([update(k, accounts) for k in range(batch_events)])
    create_topics(bootstrap, topic_specs(f"{name}2-", PARTITIONS))
    await produce(bootstrap, f"{name}2-mark-prices", first_mark)
    await produce(bootstrap, f"{name}2-positions", setup_messages + batch_messages)
    seconds, cpu = await worker_seconds(bootstrap, f"{name}2-", log_dir, len(setup_messages), len(batch_messages),
                                        py_spy and py_spy / f"batched-{name}.txt")
    # (--quick's batched phase can take less than the one clock tick /proc counts CPU in)
    results["worker_batched_eps"], results["worker_batched_cpu_eps"] = \
        batch_events / seconds, batch_events / max(cpu, 1 / os.sysconf("SC_CLK_TCK"))
    seconds, events = await raw_consume_decode(bootstrap, f"{name}2-positions",
                                               len(setup_messages) + len(batch_messages))
    results["raw_decode_eps"] = events / seconds
    return results


async def background_load(producer: AIOKafkaProducer, topic: str, stop: asyncio.Event) -> None:
    """~2 000 position events/s until ``stop``: 40 of the 2 000 background accounts (b00000…) every
    20 ms, in 40-event messages (the latency part's load; bench/latency_probe.py's too)."""
    seq = 10
    while not stop.is_set():
        seq += 1
        events = [{"type": "position", "account_id": f"b{i:05d}", "symbol": "BTC-PERP",
                   "size": f"{(900 + seq % 100) / 1000:.3f}", "entry_price": "20000.0", "seq": seq,
                   "ts": T0 + 2} for i in range(0, 2_000, 50)]
        for partition, key, value in batched(events, 40):
            await producer.send(topic, value, key=key, partition=partition)
        await asyncio.sleep(0.02)


async def latency_and_cascade(broker: EmbeddedBroker, log_dir: Path, ticks: int, cascade_accounts: int,
                              cascade_size: int, workers: int = 1, prefix: str = "lat-",
                              root: Path | None = None, py_spy: Path | None = None) -> dict:
    """Ladder accounts for latency: account j is liquidatable below (19 000 − 10j)/0.996 only.
    ``root``: start the workers from this checkout instead of this one (a baseline)."""
    results: dict = {}
    bootstrap = broker.bootstrap
    saved_root = harness.ROOT
    harness.ROOT = root or saved_root  # start_worker's cwd and PYTHONPATH
    results["broker_pids"] = [] if broker._proc is None else [broker._proc.pid]  # its CPU during the cascade
    try:
        return await _latency_and_cascade(bootstrap, log_dir, ticks, cascade_accounts, cascade_size, workers,
                                          prefix, py_spy, results)
    finally:
        harness.ROOT = saved_root


async def _latency_and_cascade(bootstrap: str, log_dir: Path, ticks: int, cascade_accounts: int, cascade_size: int,
                               workers: int, prefix: str, py_spy: Path | None, results: dict) -> dict:
    create_topics(bootstrap, topic_specs(prefix, PARTITIONS))
    ladder = [e for j in range(ticks) for e in account_events(f"l{j:05d}", 1_000 + 10 * j, 1_000)]
    background = [e for i in range(2_000) for e in account_events(f"b{i:05d}", 20_000, 1_000)]
    # cascade: `cascade_size` accounts liquidatable below (20 000 − 4 500)/0.996 ≈ 15 562 (under the
    # whole ladder), the rest healthy down to ≈ 8 032
    crowd = []
    for i in range(cascade_accounts):
        collateral = 4_500 if i < cascade_size else 12_000
        crowd.extend(account_events(f"c{i:06d}", collateral, 1_000))
    await produce(bootstrap, prefix + "mark-prices", [(None, b"BTC-PERP", orjson.dumps(mark(200_000, 1, T0)))])
    await produce(bootstrap, prefix + "positions", batched(ladder + background + crowd))
    consumer = AIOKafkaConsumer(prefix + "liquidations", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", fetch_max_wait_ms=5,
                                max_partition_fetch_bytes=16_000_000, fetch_max_bytes=64_000_000)
    with WorkerGroup(bootstrap, PARAMS, app_id=prefix + "w", prefix=prefix, log_dir=log_dir) as group:
        group.start(workers)
        total_events = len(ladder) + len(background) + len(crowd)
        await wait_for(lambda: sum((s or {"counters": {}})["counters"].get("position_events", 0)
                                   for s in group.stats()) >= total_events, 900, "setup applied", interval_s=0.2)
        await group.wait_ready(120)
        results["workers_rss_mib"] = sum(rss_mib(proc.pid) for proc in group.procs)  # all accounts loaded
        await consumer.start()
        await consumer.getmany(timeout_ms=500)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        stop = asyncio.Event()

        load = asyncio.create_task(background_load(producer, prefix + "positions", stop))
        latencies = []
        try:
            for j in range(ticks):
                # just below account j's liquidation price (19 000 − 10j)/0.996, above j+1's
                price = (190_000 - 100 * j) * 1000 // 996 - 1
                sent = time.perf_counter()
                await producer.send_and_wait(prefix + "mark-prices", orjson.dumps(mark(price, j + 2, T0 + 10 + j)),
                                             key=b"BTC-PERP")
                found = False
                while not found:
                    for records in (await consumer.getmany(timeout_ms=1000)).values():
                        for record in records:
                            if orjson.loads(record.value)["account_id"] == f"l{j:05d}":
                                latencies.append(time.perf_counter() - sent)
                                found = True
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await load
        latencies.sort()
        results["latency_p50_ms"] = 1000 * latencies[len(latencies) // 2]
        results["latency_p99_ms"] = 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        results["latency_n"] = len(latencies)
        results["latency_max_ms"] = 1000 * latencies[-1]
        # cascade: one tick at 15 500 liquidates the `cascade_size` accounts with 4 500 of collateral
        await asyncio.sleep(1.0)
        spy = None
        if py_spy is not None:
            spy = py_spy_record(group.procs[0].pid, py_spy / f"cascade-{prefix}worker0.txt", rate=250)
            await asyncio.sleep(1.0)
        perf = None
        if os.environ.get("BENCH_PERF"):  # a flat perf profile of the first worker during the cascade
            perf = subprocess.Popen(["perf", "record", "-F", "2000", "-p", str(group.procs[0].pid), "-o",
                                     os.environ["BENCH_PERF"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(0.5)
        broker_pid = results.pop("broker_pids")
        broker_before = cpu_seconds(broker_pid)
        cpu_before = cpu_seconds([proc.pid for proc in group.procs])
        sys_before = cpu_seconds([proc.pid for proc in group.procs], system=True)
        sent, sent_ms = time.perf_counter(), time.time() * 1000
        await producer.send_and_wait(prefix + "mark-prices", orjson.dumps(mark(155_000, ticks + 10, T0 + 100_000)),
                                     key=b"BTC-PERP")
        crowd_liquidated = 0
        stamps: list[int] = []  # the allocations' record timestamps (the fund agent's send time)
        while crowd_liquidated < cascade_size and time.perf_counter() - sent < 120:
            for records in (await consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                for r in records:
                    if orjson.loads(r.value)["account_id"].startswith("c"):
                        crowd_liquidated += 1
                        stamps.append(r.timestamp)
        results["cascade_s"] = time.perf_counter() - sent
        results["cascade_cpu_s"] = cpu_seconds([proc.pid for proc in group.procs]) - cpu_before
        results["cascade_sys_s"] = cpu_seconds([proc.pid for proc in group.procs], system=True) - sys_before
        results["cascade_broker_cpu_s"] = cpu_seconds(broker_pid) - broker_before
        # phases, by record timestamps (this machine's clock): the requests the engine sent, the
        # allocations the fund agent sent
        requests = await record_stamps(bootstrap, prefix + "insurance-requests", sent_ms)
        results["cascade_phases_ms"] = {
            "requests sent": (min(requests) - sent_ms, max(requests) - sent_ms) if requests else None,
            "allocations sent": (min(stamps) - sent_ms, max(stamps) - sent_ms) if stamps else None,
        }
        if os.environ.get("BENCH_CASCADE_TIMELINE"):  # every request message's and allocation batch's send time
            print("requests (ms):", sorted(round(t - sent_ms) for t in requests), flush=True)
            accounts = await record_stamps(bootstrap, prefix + "w-accounts-changelog", sent_ms)
            print("accounts by stamp (ms: count):", sorted(
                {round(t - sent_ms): accounts.count(t) for t in set(accounts)}.items()), flush=True)
            ledger = await record_stamps(bootstrap, prefix + "w-fund-ledger-changelog", sent_ms)
            print("fund ledger by stamp (ms: count):", sorted(
                {round(t - sent_ms): ledger.count(t) for t in set(ledger)}.items()), flush=True)
            print("allocations by stamp (ms: count):", sorted(
                {round(t - sent_ms): stamps.count(t) for t in set(stamps)}.items()), flush=True)
        results["cascade_liquidations"] = crowd_liquidated
        if perf is not None:
            perf.send_signal(subprocess.signal.SIGINT)
            perf.wait(30)
        if spy is not None:
            await asyncio.sleep(0.5)
            spy.send_signal(subprocess.signal.SIGINT)
            spy.wait(30)
        await producer.stop()
        await consumer.stop()
    return results


def evaluations_per_tick(accounts: int, ticks: int = 200, near: int = 200) -> float:
    """Core only: `near` accounts close to their call level (110–160× leverage) and `accounts` healthy
    ones (2–10×); a ±0.05 % random walk. Mean scopes evaluated per tick: flat in `accounts`."""
    import random

    rng = random.Random(3)
    engine = Engine(load_params(str(PARAMS)))
    source = Source("bench", 0, 0, None, b"")
    engine.process_mark(mark(200_000, 1, T0), source)
    for i in range(near):
        engine.process_positions(account_events(f"n{i:06d}", 20 * 1_000 // rng.randint(110, 160), 1_000), source)
    for i in range(accounts):
        lots = rng.randint(100, 2_000)
        collateral = 20 * lots // rng.randint(2, 10) + 1
        engine.process_positions(account_events(f"h{i:06d}", collateral, lots), source)
    before = engine.counters["evaluations:BTC-PERP"]
    price = 200_000
    for k in range(ticks):
        price += rng.randint(-100, 100)
        engine.process_mark(mark(price, k + 2, T0 + k + 1), source)
    return (engine.counters["evaluations:BTC-PERP"] - before) / ticks


def print_latency_and_cascade(label: str, lc: dict, cascade_accounts: int) -> None:
    print(f"{label}tick → liquidation    : p50 {lc['latency_p50_ms']:.1f} ms  p99 {lc['latency_p99_ms']:.1f} ms  "
          f"max {lc['latency_max_ms']:.1f} ms "
          f"over {lc['latency_n']} ticks, ~2 000 background events/s", flush=True)
    print(f"{label}cascade               : {lc['cascade_liquidations']:,} liquidations among "
          f"{cascade_accounts:,} accounts published in {lc['cascade_s']:.2f} s "
          f"(workers' CPU {lc['cascade_cpu_s']:.2f} s, system {lc['cascade_sys_s']:.2f} s; "
          f"broker's CPU {lc.get('cascade_broker_cpu_s', 0):.2f} s)", flush=True)
    print(f"{label}  workers' RSS with every account loaded: {lc['workers_rss_mib']:.0f} MiB", flush=True)
    phases = lc.get("cascade_phases_ms") or {}
    if phases:
        print(f"{label}  after the tick (ms)  : " + "; ".join(
            f"{name} {span[0]:.0f}–{span[1]:.0f}" for name, span in phases.items() if span), flush=True)


def print_throughput(label: str, tp: dict) -> None:
    print(f"{label}single-event messages : worker {tp['worker_single_eps']:>9,.0f} events/s   "
          f"bare Faust agent {tp['bare_faust_mps']:>9,.0f} msg/s   "
          f"ratio {tp['worker_single_eps'] / tp['bare_faust_mps']:.0%}   per CPU-second: worker "
          f"{tp['worker_single_cpu_eps']:,.0f}, bare {tp['bare_faust_cpu_mps']:,.0f}, ratio "
          f"{tp['worker_single_cpu_eps'] / tp['bare_faust_cpu_mps']:.0%}", flush=True)
    print(f"{label}batched (500/message) : worker {tp['worker_batched_eps']:>9,.0f} events/s   "
          f"raw aiokafka+orjson {tp['raw_decode_eps']:>9,.0f} events/s   "
          f"worker per CPU-second {tp['worker_batched_cpu_eps']:,.0f}", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=["all", "cascade", "throughput"], default="all",
                        help="cascade: the latency and cascade parts only; throughput: parts 1 and 2 only")
    parser.add_argument("--workers", default="1", help="worker counts for latency and cascade, e.g. 1,2")
    parser.add_argument("--baseline-root", type=Path, help="a checkout to run latency and cascade with too")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each part this many times (alternating with the baseline; throughput: the two "
                             "trees' order too), then print the medians: one cascade varies by ±20 %%, one "
                             "single-event share by ±3-5 points from run to run here")
    parser.add_argument("--py-spy", type=Path, help="record this tree's first worker with py-spy here: during the cascade, and "
                             "over each throughput phase (the recorded rates are then lower)")
    args = parser.parse_args()
    sizes = dict(accounts=2_000, singles=5_000, batch_events=20_000, ticks=50, cascade_accounts=10_000,
                 cascade_size=1_000) if args.quick else dict(
        accounts=10_000, singles=30_000, batch_events=200_000, ticks=200, cascade_accounts=100_000,
        cascade_size=10_000)
    worker_counts = [int(n) for n in args.workers.split(",")]
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    print(f"conditions: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, embedded Tansu broker, "
          f"4 partitions, workers {worker_counts}, baseline {args.baseline_root}, logs in {log_dir}", flush=True)
    print(f"sizes: {sizes}", flush=True)
    with EmbeddedBroker(log_dir=str(log_dir)) as broker:
        if args.only in ("all", "throughput"):
            runs = ([("baseline", args.baseline_root)] if args.baseline_root else []) + [("this tree", None)]
            shares: dict[str, list[tuple[float, float]]] = {}
            for repeat in range(args.repeat):
                # the trees' order alternates: a run's position moved its share by several points
                for name, root in runs if repeat % 2 == 0 else runs[::-1]:
                    label = f"[{name}] " if len(runs) > 1 else ""
                    label = f"[{name}, run {repeat + 1}] " if args.repeat > 1 else label
                    saved_root = harness.ROOT
                    harness.ROOT = root or saved_root  # the workers' checkout (the bare agent is this tree's)
                    try:
                        tp = await throughput(broker, log_dir, sizes["accounts"], sizes["singles"],
                                              sizes["batch_events"],
                                              ("tpb" if root else "tp") + (f"{repeat}x" if repeat else ""),
                                              None if root or repeat else args.py_spy)
                    finally:
                        harness.ROOT = saved_root
                    print_throughput(label, tp)
                    shares.setdefault(name, []).append(
                        (tp["worker_single_eps"] / tp["bare_faust_mps"],
                         tp["worker_single_cpu_eps"] / tp["bare_faust_cpu_mps"]))
            if args.repeat > 1:
                for name, found in shares.items():
                    print(f"[{name}] median of {len(found)}: single-event share of bare Faust "
                          f"{statistics.median(s for s, _ in found):.0%} ({min(s for s, _ in found):.0%}–"
                          f"{max(s for s, _ in found):.0%}), per CPU-second "
                          f"{statistics.median(c for _, c in found):.0%}", flush=True)
        for workers in worker_counts if args.only != "throughput" else ():
            runs = ([("baseline", args.baseline_root)] if args.baseline_root else []) + [("this tree", None)]
            found: dict[str, list[dict]] = {}
            for repeat in range(args.repeat):
                for name, root in runs:
                    label = f"[{workers} worker{'s' if workers > 1 else ''}, {name}] " if len(runs) > 1 or \
                        len(worker_counts) > 1 or args.repeat > 1 else ""
                    prefix = f"lat-{workers}w-{'base' if root else 'new'}-" + (f"{repeat}-" if repeat else "")
                    lc = await latency_and_cascade(broker, log_dir, sizes["ticks"], sizes["cascade_accounts"],
                                                   sizes["cascade_size"], workers, prefix, root,
                                                   None if root or repeat else args.py_spy)
                    print_latency_and_cascade(label, lc, sizes["cascade_accounts"])
                    found.setdefault(label, []).append(lc)
            if args.repeat > 1:
                for label, lcs in found.items():
                    print(f"{label}median of {len(lcs)}: " + ", ".join(
                        f"{name} {statistics.median(lc[key] for lc in lcs):.2f}{unit} "
                        f"({min(lc[key] for lc in lcs):.2f}–{max(lc[key] for lc in lcs):.2f})"
                        for name, key, unit in (("cascade", "cascade_s", " s"), ("its CPU", "cascade_cpu_s", " s"),
                                                ("tick p99", "latency_p99_ms", " ms"),
                                                ("tick max", "latency_max_ms", " ms"))), flush=True)
    if args.only == "all":
        for n in (10_000, 200_000) if not args.quick else (2_000, 20_000):
            print(f"evaluations per tick  : {evaluations_per_tick(n):.2f} with {n:,} healthy accounts", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
