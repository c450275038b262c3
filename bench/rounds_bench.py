"""Loss-sharing round benchmark (SPEC §5.1): one haircut round over N eligible positions.

Scenario (per configuration, fresh topics): N winning BTC shorts (1 BTC @ 20 000, 5 000 USD), a
group of 4 large BTC longs per round (100 BTC @ 20 000) whose collateral makes them bankrupt by
200 USD/BTC at that round's crash price (15 000, 14 000, …), an ETH ladder (10 ETH @ 1 500, account
j liquidatable at tick j only) and an insurance fund of 1 000 USD. Each round: ETH ticks alone
(the baseline), then the crash tick (the group goes bankrupt, the fund cannot cover it, the deficit
is recorded), then the next BTC tick starts the round over the N shorts while ETH ticks go on.

Measured, with one worker and with two (4 partitions), on the embedded broker:
  * tick → the round's `haircut_round` summary and all N `haircut`s read back from `loss-sharing`
    by a separate consumer process;
  * the phases, from the record timestamps of the `loss-rounds` broadcasts and of the partition
    owners' reports on `insurance-requests` (all on this machine's clock);
  * tick → liquidation latency of ETH ticks (open loop, one every 50 ms) without a round (the
    baseline, same run), while the round runs, and in the 3 s after its summary;
and, in process, the replay core's time for the same rounds (`run_rounds_locally`) as a floor.

Usage: python bench/rounds_bench.py [--quick] [--accounts N] [--rounds R] [--workers 1,2]
                                    [--py-spy DIR]   (record the 1-worker run with py-spy)
Each round also prints the workers' CPU from the round's tick to its summary read back;
BENCH_PERF=FILE records a flat `perf record` of the first worker during round 0;
BENCH_PY_SPY_ROUND=PREFIX a raw py-spy record of it during each round (PREFIX.<round>).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from stream_bench import batched, cpu_seconds, produce, py_spy_record  # noqa: E402
from topics.catalog import topic_specs  # noqa: E402
from worker.app import partition_for  # noqa: E402
from worker.broker import EmbeddedBroker, create_topics  # noqa: E402
from worker.core.engine import Engine  # noqa: E402
from worker.core.outputs import Source  # noqa: E402
from worker.core.params import parse_params  # noqa: E402
from worker.core.sharing import haircut_round_id  # noqa: E402
from worker.gc_tuning import tune_collector  # noqa: E402
from worker.harness import WorkerGroup, fetch_stats, wait_for  # noqa: E402
from worker.wire import encode_output  # noqa: E402

T0 = 1_700_000_000_000
PARTITIONS = 4
GROUP = 4  # bankrupt longs per round
TICK_EVERY_S = 0.05  # ETH ticks, open loop
AFTER_S = 3.0  # ETH ticks measured after the summary (the sweep and the account write-back); --quick: 2


def bench_params() -> str:
    """bench/bench_params.toml with a 1 000 USD fund (floor 0), full liquidations, haircut rounds."""
    text = (ROOT / "bench" / "bench_params.toml").read_text()
    for old, new in (('initial_balance = "100000000"', 'initial_balance = "1000"'), ('floor = "100"', 'floor = "0"'),
                     ('mode = "partial"', 'mode = "full"')):
        assert old in text, old
        text = text.replace(old, new)
    return text + '\n[loss_sharing]\nmode = "haircut"\nrepay_above = ""\nround_interval_ms = 60000\n'


# ------------------------------------------------------------------ scenario
def crash_price(r: int) -> int:
    """Round r's BTC crash price, USD."""
    return 15_000 - 1_000 * r


def btc_mark(price_usd: int, seq: int, ts: int = T0) -> dict:
    return {"symbol": "BTC-PERP", "mark_price": f"{price_usd}.0", "ts": ts, "seq": seq}


def crash_tick(r: int) -> dict:
    """Round r's crash: 10 s (event time) after round r − 1, within round_interval_ms (60 s) of it, so
    that the residue round r − 1 carried is not shared at this tick but with the new deficit."""
    return btc_mark(crash_price(r), 2 + 2 * r, T0 + 100_000 * r + 10_000)


def round_tick(r: int) -> dict:
    """The tick that starts round r: 100 s (event time) after round r − 1."""
    return btc_mark(crash_price(r), 3 + 2 * r, T0 + 100_000 * (r + 1))


def eth_price_cents(j: int) -> int:
    """Just below ladder account j's liquidation price (14 900 − j)/9.95 USD, above j+1's."""
    return (14_900 - j) * 10_000 // 995 - 1


def eth_mark(j: int) -> dict:
    cents = eth_price_cents(j)
    return {"symbol": "ETH-PERP", "mark_price": f"{cents // 100}.{cents % 100:02d}", "ts": T0 + 10 * (j + 2),
            "seq": j + 2}


def bankrupt_accounts(r: int) -> list[str]:
    """Round r's bankrupt longs, all in positions partition 0. With several workers the fund's
    coordinator can apply another worker's liquidation items of the crash tick before that tick's
    `begin` marker (the owner of partition 0 brackets only its own items): it would then see the
    deficit as "before the tick" and start the round at the crash tick itself. Accounts of
    partition 0 keep the round at the next tick, as in replay."""
    found: list[str] = []
    n = 0
    while len(found) < GROUP:
        account = f"x{r}-{n}"
        if partition_for(account.encode(), PARTITIONS) == 0:
            found.append(account)
        n += 1
    return found


def events_of(account: str, collateral_usd: int, symbol: str, size: str, entry: str) -> list[dict]:
    return [{"type": "balance", "account_id": account, "asset": "USD", "collateral": str(collateral_usd),
             "seq": 1, "ts": T0},
            {"type": "position", "account_id": account, "symbol": symbol, "size": size, "entry_price": entry,
             "seq": 2, "ts": T0}]


def scenario_events(accounts: int, rounds: int, ladder: int) -> list[dict]:
    events: list[dict] = []
    for i in range(accounts):  # winners of every crash: w = 20 000 − P per short
        events += events_of(f"s{i:06d}", 5_000, "BTC-PERP", "-1.000", "20000.0")
    for r in range(rounds):  # bankrupt by 200 USD/BTC at crash_price(r), healthy at crash_price(r − 1)
        for account in bankrupt_accounts(r):
            events += events_of(account, 100 * (19_800 - crash_price(r)), "BTC-PERP", "100.000", "20000.0")
    for j in range(ladder):  # ETH: liquidatable below (14 900 − j)/9.95 only
        events += events_of(f"e{j:05d}", 100 + j, "ETH-PERP", "10.00", "1500.00")
    return events


def first_marks() -> list[dict]:
    return [btc_mark(20_000, 1), {"symbol": "ETH-PERP", "mark_price": "1500.00", "ts": T0, "seq": 1}]


# ---------------------------------------------------------------- replay floor
def replay_floor(params_text: str, accounts: int, rounds: int) -> list[dict]:
    """The in-process core: the same rounds, each at its tick (``run_rounds_locally``), with the
    collector settings of `replay` and the worker (worker/gc_tuning.py; CPython's defaults made
    this floor 2.1–2.7 s instead of 0.7–0.9 s at 100 000 winners)."""
    saved = gc.get_threshold()
    tune_collector()
    try:
        return _replay_floor(params_text, accounts, rounds)
    finally:
        gc.set_threshold(*saved)


def _replay_floor(params_text: str, accounts: int, rounds: int) -> list[dict]:
    engine = Engine(parse_params(params_text.encode()))
    source = Source("bench", 0, 0, None, b"")
    for value in first_marks():
        engine.process_mark(value, source)
    events = scenario_events(accounts, rounds, 0)
    for start in range(0, len(events), 500):
        engine.process_positions(events[start:start + 500], source)
    results = []
    for r in range(rounds):
        crash = engine.process_mark(crash_tick(r), source)
        assert sum(1 for o in crash if o.topic == "liquidations") == GROUP, "the group is not liquidated"
        assert not any(o.topic == "loss-sharing" for o in crash), "a round ran at the crash tick"
        started = time.perf_counter()
        outputs = engine.process_mark(round_tick(r), source)
        core_s = time.perf_counter() - started
        started = time.perf_counter()
        for output in outputs:
            encode_output(engine, output)
        encode_s = time.perf_counter() - started
        haircuts = sum(1 for o in outputs if o.value["type"] == "haircut")
        summary = next(o.value for o in outputs if o.value["type"] == "haircut_round")
        assert haircuts == accounts == summary["haircuts"], (haircuts, summary)
        results.append({"core_s": core_s, "encode_s": encode_s, "haircuts": haircuts, "shared": summary["shared"]})
    return results


def check_ladder(params_text: str, ladder: int = 50) -> None:
    """Each ETH tick liquidates its own ladder account, and only it."""
    engine = Engine(parse_params(params_text.encode()))
    source = Source("bench", 0, 0, None, b"")
    for value in first_marks():
        engine.process_mark(value, source)
    engine.process_positions(scenario_events(0, 0, ladder), source)
    for j in range(ladder - 1):
        found = [o.value["account_id"] for o in engine.process_mark(eth_mark(j), source) if o.topic == "liquidations"]
        assert found == [f"e{j:05d}"], (j, found)


# ------------------------------------------------------ loss-sharing reader
def read_round(bootstrap: str, topic: str, round_id: str, expected: int, ready: Any, result: Any) -> None:
    """Child process: read `loss-sharing` from its current end; report when the round's summary and
    `expected` other records (the haircuts, keyed by account) are there (wall-clock times)."""
    async def run() -> dict:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    max_partition_fetch_bytes=16_000_000, fetch_max_bytes=64_000_000,
                                    fetch_max_wait_ms=10)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                await consumer.topics()
                tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
            ready.set()
            haircuts = 0
            rid = round_id.encode()
            summary_at = last_haircut_at = None
            summary = None
            deadline = time.time() + 300
            while (summary_at is None or haircuts < expected) and time.time() < deadline:
                batch = await consumer.getmany(timeout_ms=100, max_records=50_000)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        if rid not in record.value:
                            continue  # an earlier round's (the broker's end offset may lag)
                        if record.key == b"BTC-PERP":
                            summary_at, summary = now, orjson.loads(record.value)
                        else:
                            haircuts += 1
                            if haircuts == expected:
                                last_haircut_at = now
            return {"summary_at": summary_at, "last_haircut_at": last_haircut_at, "haircuts": haircuts,
                    "summary": summary}
        finally:
            await consumer.stop()

    result.put(asyncio.run(run()))


async def read_until(bootstrap: str, topic: str, done: Any, timeout_s: float = 60) -> list[Any]:
    """Records of a topic (with their timestamps) from the beginning, until ``done(records)``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=16_000_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while not done(found):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not all records of the round found")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


async def phases(bootstrap: str, prefix: str, round_id: str, partitions: int = PARTITIONS) -> dict[str, Any]:
    """Broadcast and report times of one round (epoch ms, the workers' record timestamps)."""
    marks: dict[str, Any] = {}
    rid = round_id.encode()

    def broadcasts(found: list[Any]) -> bool:
        for record in found:
            if rid in record.value:
                marks[orjson.loads(record.value)["phase"]] = record.timestamp
        return {"announce", "allocate", "done"} <= set(marks)

    await read_until(bootstrap, prefix + "loss-rounds", broadcasts)
    reports: dict[str, dict[int, int]] = {}

    def reported(found: list[Any]) -> bool:
        for record in found:
            if rid in record.value:
                for item in orjson.loads(record.value)["items"]:
                    if item.get("kind") == "report" and item["round_id"] == round_id:
                        reports.setdefault(item["phase"], {}).setdefault(item["partition"], record.timestamp)
        return all(len(reports.get(phase, {})) == partitions for phase in ("announce", "allocate"))

    await read_until(bootstrap, prefix + "insurance-requests", reported)
    marks["snapshot_reports"] = sorted(reports["announce"].values())
    marks["pay_reports"] = sorted(reports["allocate"].values())
    return marks


# ------------------------------------------------------------- ETH latency
class Ladder:
    """ETH ticks, one every TICK_EVERY_S (open loop), and the liquidation each one causes."""

    def __init__(self, bootstrap: str, prefix: str, size: int) -> None:
        self.bootstrap, self.prefix, self.size = bootstrap, prefix, size
        self.next = 0
        self.sent: dict[int, float] = {}
        self.latency: dict[int, float] = {}
        self.producer: Any = None
        self.consumer: Any = None
        self._reader: Any = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(self.prefix + "liquidations", bootstrap_servers=self.bootstrap,
                                         group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=5)
        await self.consumer.start()
        await self.consumer.getmany(timeout_ms=500)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for record in records:
                    key = record.key or b""
                    if key.startswith(b"e"):
                        j = int(key[1:])
                        if j in self.sent and j not in self.latency:
                            self.latency[j] = now - self.sent[j]

    async def tick_for(self, seconds: float | None = None, until: asyncio.Event | None = None) -> list[int]:
        """Send ticks for ``seconds`` or until ``until`` is set; returns the ladder indexes sent."""
        sent = []
        started = time.perf_counter()
        while True:
            if seconds is not None and time.perf_counter() - started >= seconds:
                break
            if until is not None and until.is_set():
                break
            if self.next >= self.size - 1:
                raise RuntimeError("ETH ladder exhausted: raise --ladder")
            j = self.next
            self.next += 1
            due = started + len(sent) * TICK_EVERY_S
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            self.sent[j] = time.perf_counter()
            await self.producer.send(self.prefix + "mark-prices", orjson.dumps(eth_mark(j)), key=b"ETH-PERP")
            sent.append(j)
        return sent

    async def settle(self, indexes: list[int], timeout_s: float = 60) -> None:
        await wait_for(lambda: all(j in self.latency for j in indexes), timeout_s, "ETH liquidations")

    async def stop(self) -> None:
        self._reader.cancel()
        await self.producer.stop()
        await self.consumer.stop()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def lat_summary(values: list[float]) -> dict[str, Any]:
    ms = [1000 * v for v in values]
    return {"n": len(ms), "p50": pct(ms, 0.5), "p99": pct(ms, 0.99), "max": max(ms)} if ms else {"n": 0}


# ------------------------------------------------------------------ one config
def coordinator_stats(ports: list[int]) -> dict[str, Any] | None:
    """The fund's coordinator: a worker that held the fund partition before a rebalance keeps a
    stale one, so the one that applied `insurance-requests` furthest."""
    found = [s["coordinator"] for s in (fetch_stats(p) for p in ports) if s and s.get("coordinator")]
    return max(found, key=lambda c: c["next_offset"], default=None)


async def run_config(broker: EmbeddedBroker, params_path: Path, log_dir: Path, workers: int, accounts: int,
                     rounds: int, baseline_s: float, after_s: float, ladder: int, py_spy: Path | None,
                     settle_s: float = 3.0) -> dict[str, Any]:
    bootstrap = broker.bootstrap
    prefix = f"rb{workers}w-"
    create_topics(bootstrap, topic_specs(prefix, PARTITIONS))
    events = scenario_events(accounts, rounds, ladder)
    await produce(bootstrap, prefix + "mark-prices", [(None, v["symbol"].encode(), orjson.dumps(v))
                                                      for v in first_marks()])
    await produce(bootstrap, prefix + "positions", batched(events))
    result: dict[str, Any] = {"workers": workers, "rounds": []}
    ctx = multiprocessing.get_context("spawn")
    with WorkerGroup(bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=log_dir) as group:
        group.start(workers)
        started = time.perf_counter()

        def applied() -> int:
            return sum((s or {"counters": {}})["counters"].get("position_events", 0) for s in group.stats())

        await wait_for(lambda: applied() >= len(events), 900, "setup applied", interval_s=0.2)
        await group.wait_ready(120)
        result["setup_s"] = time.perf_counter() - started
        print(f"  [{workers} worker(s)] {len(events):,} position events applied in {result['setup_s']:.1f} s",
              flush=True)
        spy = None
        if py_spy is not None:
            spy = py_spy_record(group.procs[0].pid, py_spy / f"worker-{workers}w.txt", rate=200)
        ladder_ = Ladder(bootstrap, prefix, ladder)
        await ladder_.start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            await ladder_.settle(await ladder_.tick_for(1.0), 120)  # warm-up, not counted
            for r in range(rounds):
                round_id = haircut_round_id("BTC-PERP", "long", r)
                # baseline: ETH ticks, no round
                baseline = await ladder_.tick_for(baseline_s)
                await ladder_.settle(baseline)
                # crash: the group goes bankrupt; wait until the coordinator records the deficit
                before = int((coordinator_stats(group.ports) or {}).get("deficits", {}).get("BTC-PERP/long", 0))
                await producer.send_and_wait(prefix + "mark-prices", orjson.dumps(crash_tick(r)),
                                             key=b"BTC-PERP")
                await wait_for(lambda: int((coordinator_stats(group.ports) or {}).get("deficits", {})
                                           .get("BTC-PERP/long", 0)) > before, 60, "deficit recorded", 0.05)
                deficit = int(coordinator_stats(group.ports)["deficits"]["BTC-PERP/long"])
                # the round: its reader (another process) first, then ETH ticks and the round's tick
                ready, queue = ctx.Event(), ctx.Queue()
                reader = ctx.Process(target=read_round, args=(bootstrap, prefix + "loss-sharing", round_id,
                                                              accounts, ready, queue))
                reader.start()
                if not await asyncio.get_running_loop().run_in_executor(None, ready.wait, 120):
                    raise RuntimeError("the loss-sharing reader did not start")
                done = asyncio.Event()
                during_task = asyncio.create_task(ladder_.tick_for(until=done))
                await asyncio.sleep(0.2)  # ETH ticks are flowing
                perf = None
                if os.environ.get("BENCH_PERF") and r == 0:  # a flat perf profile of the first worker, round 0
                    perf = subprocess.Popen(["perf", "record", *os.environ.get("BENCH_PERF_ARGS", "").split(), "-F", "1000", "-p", str(group.procs[0].pid), "-o",
                                             os.environ["BENCH_PERF"]], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    await asyncio.sleep(0.5)
                if os.environ.get("BENCH_PY_SPY_ROUND"):  # py-spy (raw) of the first worker, round by round
                    perf = py_spy_record(group.procs[0].pid, Path(f"{os.environ['BENCH_PY_SPY_ROUND']}.{r}"), 500)
                    await asyncio.sleep(0.5)
                cpu_before = cpu_seconds([proc.pid for proc in group.procs])
                tick_at = time.time()
                await producer.send_and_wait(prefix + "mark-prices",
                                             orjson.dumps(round_tick(r)), key=b"BTC-PERP")
                seen = await asyncio.get_running_loop().run_in_executor(None, queue.get, True, 600)
                round_cpu_s = cpu_seconds([proc.pid for proc in group.procs]) - cpu_before  # (≈ to the summary)
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(30)
                done.set()
                during = await during_task
                reader.join(10)
                after = await ladder_.tick_for(after_s)
                await ladder_.settle(during + after, 120)
                await wait_for(lambda: (coordinator_stats(group.ports) or {}).get("rounds_in_flight") == 0, 120,
                               "round settled", 0.1)
                await wait_for(lambda: all(s and s["participant"]["rounds_seen_in_flight"] == 0
                                           and s["participant"]["round_queue"] == 0 for s in group.stats()),
                               120, "participants idle", 0.1)
                marks = await phases(bootstrap, prefix, round_id)
                if seen["summary_at"] is None or seen["last_haircut_at"] is None:
                    raise RuntimeError(f"round {r} not read back in time: {seen['haircuts']} haircuts, "
                                       f"summary {seen['summary']}")
                summary = seen["summary"]
                assert seen["haircuts"] == accounts == summary.get("haircuts"), (seen["haircuts"], summary)
                figures = {
                    "round": r, "deficit_units": deficit, "shared": summary.get("shared"),
                    "summary_s": seen["summary_at"] - tick_at,
                    "all_events_s": max(seen["summary_at"], seen["last_haircut_at"]) - tick_at,
                    "workers_cpu_s": round_cpu_s,
                    "phases_ms": {
                        "tick→announce": marks["announce"] - 1000 * tick_at,
                        "snapshot (announce→last report)": marks["snapshot_reports"][-1] - marks["announce"],
                        "→allocate": marks["allocate"] - marks["snapshot_reports"][-1],
                        "pay (allocate→last report)": marks["pay_reports"][-1] - marks["allocate"],
                        "→done": marks["done"] - marks["pay_reports"][-1],
                        "done→read back": 1000 * seen["summary_at"] - marks["done"],
                    },
                    "report_spread_ms": {"snapshot": marks["snapshot_reports"][-1] - marks["snapshot_reports"][0],
                                         "pay": marks["pay_reports"][-1] - marks["pay_reports"][0]},
                    "eth_baseline": [ladder_.latency[j] for j in baseline],
                    "eth_during": [ladder_.latency[j] for j in during],
                    "eth_after": [ladder_.latency[j] for j in after],
                }
                figures["tick_epoch_s"] = tick_at
                result["rounds"].append(figures)
                print(f"  [{workers} worker(s)] round {r}: summary {figures['summary_s']:.2f} s, all "
                      f"{accounts:,} haircuts + summary {figures['all_events_s']:.2f} s (workers' CPU "
                      f"{figures['workers_cpu_s']:.2f} s); phases (ms) "
                      + ", ".join(f"{k} {v:.0f}" for k, v in figures["phases_ms"].items())
                      + f"; ETH p50/p99/max ms: baseline {fmt_lat(figures['eth_baseline'])}, "
                      f"during {fmt_lat(figures['eth_during'])}, after {fmt_lat(figures['eth_after'])} "
                      f"[tick at {tick_at:.1f}]", flush=True)
                if r + 1 < rounds:
                    await asyncio.sleep(settle_s)  # the next baseline starts on a quiet worker
        finally:
            await producer.stop()
            await ladder_.stop()
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
        result["errors"] = group.recovery_errors()
    return result


def fmt_lat(values: list[float]) -> str:
    s = lat_summary(values)
    return f"{s['p50']:.0f}/{s['p99']:.0f}/{s['max']:.0f} (n={s['n']})" if s["n"] else "-"


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    return (f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f}, "
            f"n={len(values)})")


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="5 000 accounts, 1 round, short baselines")
    parser.add_argument("--accounts", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--baseline-s", type=float)
    parser.add_argument("--ladder", type=int, default=4_000, help="ETH ladder accounts (ticks available)")
    parser.add_argument("--no-replay", action="store_true")
    parser.add_argument("--py-spy", type=Path, help="record the workers (first process) with py-spy here")
    args = parser.parse_args()
    accounts = args.accounts or (5_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    baseline_s = args.baseline_s or (2.0 if args.quick else 6.0)
    assert 1 <= rounds <= 10
    params_text = bench_params()
    check_ladder(params_text)
    log_dir = Path(tempfile.mkdtemp(prefix="rounds-bench-"))
    params_path = log_dir / "params.toml"
    params_path.write_text(params_text)
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    print(f"conditions: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, embedded Tansu broker, "
          f"{PARTITIONS} partitions, {accounts:,} eligible shorts, {rounds} round(s) per configuration, "
          f"ETH tick every {1000 * TICK_EVERY_S:.0f} ms (baseline {baseline_s:.0f} s per round), logs in {log_dir}",
          flush=True)
    if not args.no_replay:
        floor = replay_floor(params_text, accounts, rounds)
        print(f"replay core, run_rounds_locally over {accounts:,} winners: "
              f"{spread([f['core_s'] for f in floor])}; + encoding the {accounts + 1:,} events: "
              f"{spread([f['encode_s'] for f in floor])}", flush=True)
    results = []
    with EmbeddedBroker(log_dir=str(log_dir)) as broker:
        for workers in [int(w) for w in args.workers.split(",")]:
            results.append(await run_config(broker, params_path, log_dir, workers, accounts, rounds, baseline_s,
                                            2.0 if args.quick else AFTER_S, args.ladder, args.py_spy))
    for res in results:
        rs = res["rounds"]
        print(f"{res['workers']} worker(s): workers' CPU tick → summary {spread([r['workers_cpu_s'] for r in rs], 's')}",
              flush=True)
        print(f"{res['workers']} worker(s): tick → summary read back {spread([r['summary_s'] for r in rs])}; "
              f"→ all events read back {spread([r['all_events_s'] for r in rs])}", flush=True)
        for name in rs[0]["phases_ms"]:
            print(f"    {name:<34} {spread([r['phases_ms'][name] for r in rs], 'ms')}", flush=True)
        for window in ("eth_baseline", "eth_during", "eth_after"):
            values = [v for r in rs for v in r[window]]
            per_round_p99 = [lat_summary(r[window])["p99"] for r in rs if r[window]]
            s = lat_summary(values)
            print(f"    ETH tick → liquidation, {window[4:]:<8}: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, "
                  f"max {s['max']:.1f} ms over {s['n']} ticks; p99 per round "
                  + ", ".join(f"{v:.0f}" for v in per_round_p99), flush=True)
        if res["errors"]:
            print(f"    recovery errors: {res['errors'][:3]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
