"""Failover benchmark on the embedded broker (Tansu): kill -9 one of three workers, then time how
long its partitions stay unevaluated.

One trial: 100 000 accounts (1 BTC each) over the `positions` partitions, loaded in SPEC §6 arrays;
1 % of them (spread over every partition) are liquidatable, and solvent, below 15 517, the rest
healthy down to ~8 040. Three workers start and load them; once the `accounts` changelog holds every account and
the group has settled, the worker that owns `positions` partition 0 (and the fund) is killed with
SIGKILL and a tick at 15 500 is published at once. The survivors liquidate their own accounts on
the tick; the dead worker's ("orphaned") partitions are evaluated only when a survivor has taken
them over. Measured from the kill, by an independent reader of `liquidations`:

  first   kill → the first liquidation of an orphaned-partition account (first evaluation)
  all     kill → the last expected liquidation of the orphaned partitions

and, from the taking-over worker's /stats (`rebalance`, wall-clock marks):

  detect  kill → the survivor's revocation (the group noticed the death)
  join    revocation → new assignment (JoinGroup + SyncGroup)
  table   assignment → `accounts` table recovered (changelog replay: Faust's recovery)
  load    rebuilding the engine's accounts from the table (AccountState.from_record + index)

Each configuration runs `--trials` times in the same broker, interleaved (A B A B ...), so
baseline and candidate see the same machine load; medians and ranges are printed.
Usage: python bench/failover_bench.py [--quick] [--trials N] [--configs baseline,new]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402

from topics.catalog import topic_specs  # noqa: E402
from worker.app import partition_for  # noqa: E402
from worker.broker import EmbeddedBroker, create_topics  # noqa: E402
from worker.faust_compat import true_end_offsets  # noqa: E402
from worker.harness import WorkerGroup, wait_for  # noqa: E402
from worker.kafka_security import KafkaSecurity  # noqa: E402
from worker.settings import SETTINGS  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from stream_bench import batched, produce  # noqa: E402  (one loader for the benches)

PARAMS = ROOT / "bench" / "bench_params.toml"
T0 = 1_700_000_000_000
DEFAULTS = {s.env: str(s.default) for s in SETTINGS}

# the settings before this benchmark (session 10 s, no standby) and the new defaults
CONFIGS: dict[str, dict[str, str]] = {
    "baseline": {"RISK_SESSION_TIMEOUT_S": "10", "RISK_HEARTBEAT_S": "1", "RISK_REBALANCE_TIMEOUT_S": "6",
                 "RISK_STANDBY_REPLICAS": "0", "RISK_TABLE_STORE": "memory://",
                 "RISK_FETCH_MAX_WAIT_MS": "1500"},
    "new": {},  # worker/settings.py and worker/harness.py defaults
}


def mark(price_tenths: int, seq: int, ts: int) -> bytes:
    return orjson.dumps({"symbol": "BTC-PERP", "mark_price": f"{price_tenths // 10}.{price_tenths % 10}",
                         "ts": ts, "seq": seq})


def account_events(account: str, collateral_usd: int) -> list[dict]:
    return [{"type": "balance", "account_id": account, "asset": "USD", "collateral": str(collateral_usd),
             "seq": 1, "ts": T0},
            {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": "1.000",
             "entry_price": "20000.0", "seq": 2, "ts": T0}]


def rss(pid: int) -> int:
    """Resident memory of a process in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


def counter(stats: list, name: str) -> int:
    return sum((s or {"counters": {}})["counters"].get(name, 0) for s in stats)


async def trial(broker: EmbeddedBroker, log_dir: Path, name: str, env: dict[str, str], accounts: int,
                partitions: int, every: int, settle_s: float) -> dict:
    bootstrap = broker.bootstrap
    prefix = f"fo{int(time.time() * 1000) % 10**8}-"
    create_topics(bootstrap, topic_specs(prefix, partitions))
    ids = [f"a{i:06d}" for i in range(accounts)]
    # 4 560 of collateral: at 15 500, equity 60 < maintenance 77.5, solvent (the account's own worker
    # publishes the allocation: no wait for the fund agent); 12 000: healthy down to ~8 040
    doomed = {a for i, a in enumerate(ids) if i % every == 0}
    events = [e for a in ids for e in account_events(a, 4_560 if a in doomed else 12_000)]
    await produce(bootstrap, prefix + "mark-prices", [(None, b"BTC-PERP", mark(200_000, 1, T0))])
    await produce(bootstrap, prefix + "positions", batched(events, partitions=partitions))
    app_id = prefix + "w"
    reader = AIOKafkaConsumer(prefix + "liquidations", bootstrap_servers=bootstrap, group_id=None,
                              auto_offset_reset="earliest", fetch_max_wait_ms=5,
                              max_partition_fetch_bytes=16_000_000, fetch_max_bytes=64_000_000)
    with WorkerGroup(bootstrap, PARAMS, app_id=app_id, prefix=prefix, partitions=partitions, log_dir=log_dir,
                     extra_env=env) as group:
        group.start(3)
        await group.wait_ready(timeout_s=300)
        await wait_for(lambda: counter(group.stats(), "position_events") >= len(events), 600, "accounts loaded",
                       interval_s=0.2)
        # every account is in the changelog (Faust commits, and so writes the coalesced state, every ~3 s)
        changelog = f"{app_id}-accounts-changelog"

        class TP:  # what true_end_offsets needs of a topic partition
            def __init__(self, p: int) -> None:
                self.topic, self.partition = changelog, p

        async def changelog_ends() -> dict[int, int]:
            ends = await true_end_offsets(bootstrap, KafkaSecurity(), [TP(p) for p in range(partitions)])
            return {tp.partition: end for tp, end in ends.items()}

        def copies(ends: dict[int, int]) -> int:
            """Fewest up-to-date copies of a changelog partition among the workers' stores."""
            held = [s.get("table_offsets", {}) for s in group.stats() if s]
            return min(sum(1 for h in held if h.get(str(p), -1) >= end - 1) for p, end in ends.items())

        replicas = 1 + int(env.get("RISK_STANDBY_REPLICAS", DEFAULTS["RISK_STANDBY_REPLICAS"]))
        if not env.get("RISK_TABLE_STORE", DEFAULTS["RISK_TABLE_STORE"]).startswith("tracked"):
            replicas = 0  # memory:// does not say what it holds
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ends = await changelog_ends()
            if sum(ends.values()) >= accounts and copies(ends) >= replicas:
                break
            await asyncio.sleep(0.5)
        else:
            raise TimeoutError(f"changelog not complete or standbys behind: {ends} "
                               f"{[s.get('table_offsets') for s in group.stats() if s]}")
        await asyncio.sleep(settle_s)  # the group is quiet
        stats = group.stats()
        assert len(stats) == 3 and all(s is not None for s in stats), stats
        victim = next(i for i, s in zip(group.alive(), stats) if 0 in s["owned_partitions"])
        rss_mib = max(rss(group.procs[i].pid) for i in group.alive())
        orphaned = set(stats[group.alive().index(victim)]["owned_partitions"])
        expected = {a for a in doomed if partition_for(a.encode(), partitions) in orphaned}
        await reader.start()
        try:
            await reader.getmany(timeout_ms=200)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
            await producer.start()
            killed = time.time()
            group.procs[victim].kill()  # SIGKILL
            await producer.send_and_wait(prefix + "mark-prices", mark(155_000, 2, T0 + 1_000), key=b"BTC-PERP")
            await producer.stop()
            group.procs[victim].wait(10)
            first = last = first_sent = None
            seen: set[str] = set()
            while seen < expected and time.time() - killed < 180:
                for records in (await reader.getmany(timeout_ms=200, max_records=20_000)).values():
                    for record in records:
                        account = orjson.loads(record.value)["account_id"]
                        if account in expected and account not in seen:
                            seen.add(account)
                            last = time.time()
                            first = first if first is not None else last
                            stamped = record.timestamp / 1000  # CreateTime: when the worker sent it
                            first_sent = stamped if first_sent is None else min(first_sent, stamped)
        finally:
            await reader.stop()
        # the survivor that took over partition 0
        takeover = None
        await wait_for(lambda: any(s and 0 in s["owned_partitions"] for s in group.stats()), 60, "takeover")
        for s in group.stats():
            if s and 0 in s["owned_partitions"]:
                takeover = s["rebalance"]
        errors = group.recovery_errors()
    result = {"config": name, "orphaned": sorted(orphaned), "expected": len(expected), "seen": len(seen),
              "first_s": None if first is None else first - killed, "all_s": None if last is None else last - killed,
              "first_sent_s": None if first_sent is None else first_sent - killed,
              "recovery_errors": len(errors), "worker_rss_mib": rss_mib}
    if takeover:
        marks = takeover
        result.update(
            detect_s=marks.get("revoked_at", 0) - killed,
            join_s=marks.get("assigned_at", 0) - marks.get("revoked_at", 0),
            table_s=marks.get("table_recovered_at", 0) - marks.get("assigned_at", 0),
            load_s=marks.get("load_s"),
            evaluate_s=marks.get("evaluated_at", 0) - marks.get("loaded_at", 0),
            accounts_loaded=marks.get("accounts"))
    return result


def describe(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{statistics.median(values):6.2f} s [{min(values):.2f}–{max(values):.2f}]"


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10 000 accounts, 1 trial: a smoke run")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--configs", default="baseline,new", help="comma-separated names from CONFIGS")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of quiet before the kill")
    parser.add_argument("--set", action="append", default=[], metavar="CONFIG:ENV=VALUE",
                        help="override or add a setting, e.g. new:RISK_SESSION_TIMEOUT_S=4")
    args = parser.parse_args()
    if args.quick:
        args.accounts, args.trials = 10_000, 1
    configs = {name: dict(CONFIGS.get(name, {})) for name in args.configs.split(",")}
    for item in args.set:
        name, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        configs.setdefault(name, {})[key] = value
    log_dir = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    print(f"conditions: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, "
          f"embedded Tansu broker, 3 workers, {args.partitions} partitions, {args.accounts:,} accounts, "
          f"logs in {log_dir}", flush=True)
    for name, env in configs.items():
        print(f"config {name}: {env or 'defaults'}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in configs}
    with EmbeddedBroker(log_dir=str(log_dir)) as broker:
        for round_ in range(args.trials):
            for name, env in configs.items():
                result = await trial(broker, log_dir, name, env, args.accounts, args.partitions, 100, args.settle)
                results[name].append(result)
                print(f"  trial {round_ + 1} {name:>10}: " + "  ".join(
                    f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                    if k != "config"), flush=True)
    print()
    columns = [("first_s", "kill → first orphan liquidation"), ("all_s", "kill → all"), ("detect_s", "detect"),
               ("join_s", "join"), ("table_s", "table recovery"), ("load_s", "load"), ("evaluate_s", "evaluate")]
    print("medians [min–max] over trials; detect … evaluate: the worker that took partition 0 over")
    print(f"{'config':>10} | " + " | ".join(f"{title:>24}" for _, title in columns) + " | worker RSS")
    for name, runs in results.items():
        print(f"{name:>10} | " + " | ".join(f"{describe([r.get(k) for r in runs]):>24}" for k, _ in columns)
              + f" | {max(r['worker_rss_mib'] for r in runs)} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
