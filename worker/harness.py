"""Process and topic helpers shared by the demo, the broker tests and the benchmarks."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from aiokafka.structs import TopicPartition

from topics.codec import decode, encode

from .broker import free_port
from .kafka_security import KafkaSecurity, new_consumer, new_producer
from .settings import SETTINGS

GROUP_SETTINGS = ("RISK_SESSION_TIMEOUT_S", "RISK_HEARTBEAT_S", "RISK_REBALANCE_TIMEOUT_S", "RISK_STANDBY_REPLICAS")

ROOT = Path(__file__).resolve().parent.parent


def worker_env(bootstrap: str, params: str, *, app_id: str, web_port: int, partitions: int = 4,
               prefix: str = "", extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RISK_BOOTSTRAP": bootstrap, "RISK_PARAMS": str(params), "RISK_APP_ID": app_id,
        "RISK_WEB_PORT": str(web_port), "RISK_PARTITIONS": str(partitions), "RISK_TOPIC_PREFIX": prefix,
        # the group settings of worker/settings.py, whatever the caller's environment says
        **{s.env: str(s.default) for s in SETTINGS if s.env in GROUP_SETTINGS},
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra or {})
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "worker", "worker"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]], interval_s: float = 0.0,
                  security: KafkaSecurity | None = None, **kwargs: Any) -> int:
    """Send (topic, key, value) in order, optionally spaced; ordered per partition (acks=all)."""
    producer = new_producer(bootstrap, security, acks="all", linger_ms=5, **kwargs)
    await producer.start()
    count = 0
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            count += 1
            if interval_s:
                await producer.flush()
                await asyncio.sleep(interval_s)
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()
    return count


def scenario_records(lines: Iterable[bytes], prefix: str = "") -> list[tuple[str, bytes | None, bytes]]:
    """Replay JSON Lines → (topic, key, value bytes) to produce; unparseable lines are skipped."""
    records = []
    for line in lines:
        try:
            record = decode(line)
        except Exception:
            continue
        if not isinstance(record, dict) or record.get("topic") not in ("mark-prices", "positions"):
            continue
        key = record.get("key")
        records.append((prefix + record["topic"], None if key is None else str(key).encode(), encode(record["value"])))
    return records


async def read_topics(bootstrap: str, topics: list[str], *, until: Callable[[dict[str, list]], bool],
                      timeout_s: float = 60.0, security: KafkaSecurity | None = None,
                      ) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """Read whole topics from the beginning (no group) until ``until(found)`` or the timeout."""
    consumer = new_consumer(bootstrap, security=security, group_id=None, enable_auto_commit=False,
                            auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, list[tuple[bytes | None, bytes]]] = {t: [] for t in topics}
    try:
        deadline = time.monotonic() + timeout_s
        assigned: set[str] = set()
        while time.monotonic() < deadline:
            missing = [t for t in topics if t not in assigned]
            if missing:
                await consumer.topics()
                tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
                if tps:
                    consumer.assign(tps)
                    await consumer.seek_to_beginning(*tps)
                    assigned = {tp.topic for tp in tps}
                    for t in topics:
                        found[t] = []
                else:
                    await asyncio.sleep(0.2)
                    continue
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                found[tp.topic].extend((r.key, r.value) for r in records)
            if until(found):
                break
        return found
    finally:
        await consumer.stop()


def fetch_stats(port: int, token: str = "") -> dict[str, Any] | None:
    """A worker's /stats (with the bearer token, if it has one), or None."""
    from .web import fetch

    status, stats = fetch(f"http://127.0.0.1:{port}/stats", token, timeout_s=2)
    return stats if status == 200 and isinstance(stats, dict) else None


def consumed(web_ports: list[int]) -> tuple[list[int], int]:
    """Mark messages read by each worker (each reads all), and positions messages read by all."""
    stats = [fetch_stats(port) or {"counters": {}} for port in web_ports]
    return ([s["counters"].get("messages:mark-prices", 0) for s in stats],
            sum(s["counters"].get("messages:positions", 0) for s in stats))


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def feed_phase(bootstrap: str, records: list[tuple[str, bytes | None, bytes]], web_ports: list[int],
                     prefix: str = "", timeout_s: float = 120.0) -> None:
    """Produce a phase at once, then wait until the workers consumed all of it."""
    marks_before, positions_before = consumed(web_ports)
    marks = sum(1 for topic, _, _ in records if topic == prefix + "mark-prices")
    positions = len(records) - marks
    await produce(bootstrap, records)

    def done() -> bool:
        mark_counts, position_count = consumed(web_ports)
        return (all(m >= b + marks for m, b in zip(mark_counts, marks_before))
                and position_count >= positions_before + positions)

    await wait_for(done, timeout_s, "phase consumed", interval_s=0.1)


async def feed_lockstep(bootstrap: str, records: list[tuple[str, bytes | None, bytes]], web_ports: list[int],
                        prefix: str = "", timeout_s: float = 60.0, security: KafkaSecurity | None = None,
                        rounds: bool = False) -> None:
    """Produce one record at a time and wait until the workers consumed it: every worker reads
    every mark message, one worker reads each positions message. Gives replay's interleaving.
    ``rounds``: after each mark message also wait until the fund's coordinator applied every
    request and no loss-sharing round is in flight (replay completes a round at its tick)."""
    producer = new_producer(bootstrap, security, acks="all")
    await producer.start()
    marks = positions = 0

    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
            if topic == prefix + "mark-prices":
                marks += 1
                await wait_for(lambda: min(consumed(web_ports)[0]) >= marks, timeout_s, f"mark message {marks}")
                if rounds:
                    await rounds_settled(bootstrap, web_ports, prefix, timeout_s, security)
            else:
                positions += 1
                await wait_for(lambda: consumed(web_ports)[1] >= positions, timeout_s, f"positions message {positions}")
    finally:
        await producer.stop()


async def rounds_settled(bootstrap: str, web_ports: list[int], prefix: str = "", timeout_s: float = 60.0,
                         security: KafkaSecurity | None = None) -> None:
    """Wait until the coordinator applied `insurance-requests` to its end and no round is in flight."""
    consumer = new_consumer(bootstrap, security=security, group_id=None)
    await consumer.start()
    tp = TopicPartition(prefix + "insurance-requests", 0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            end = (await consumer.end_offsets([tp]))[tp]
            coordinators = [s["coordinator"] for s in (fetch_stats(p) for p in web_ports)
                            if s and s.get("coordinator")]
            if any(c["next_offset"] >= end and c["rounds_in_flight"] == 0 for c in coordinators):
                # the end may have moved while we looked (a report): settled only if it did not
                if (await consumer.end_offsets([tp]))[tp] == end:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"rounds not settled after {timeout_s}s: {coordinators}")
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


class WorkerGroup:
    """N worker processes of one consumer group on one broker, each with its own web port and log."""

    RECOVERY_ERROR = "Error in recovery"

    def __init__(self, bootstrap: str, params: str | Path, *, app_id: str, prefix: str = "", partitions: int = 4,
                 log_dir: Path, extra_env: dict[str, str] | None = None, security: KafkaSecurity | None = None,
                 token: str = "") -> None:
        """``security``: the workers' Kafka security (RISK_* variables; default: inherited from this
        environment); ``token``: the workers' web token (RISK_WEB_TOKEN unless ``extra_env`` gives
        RISK_WEB_TOKEN_FILE), sent to their /stats."""
        self.bootstrap, self.params, self.app_id, self.prefix = bootstrap, str(params), app_id, prefix
        self.partitions, self.log_dir, self.extra_env = partitions, Path(log_dir), dict(extra_env or {})
        if security is not None:
            self.extra_env.update(security.env())
        if token and "RISK_WEB_TOKEN_FILE" not in self.extra_env:
            self.extra_env["RISK_WEB_TOKEN"] = token
        self.token = token
        self.procs: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    def start(self, count: int = 1) -> "WorkerGroup":
        for _ in range(count):
            port = free_port()
            log = self.log_dir / f"{self.app_id}-worker-{len(self.procs)}.log"
            env = worker_env(self.bootstrap, self.params, app_id=self.app_id, web_port=port,
                             partitions=self.partitions, prefix=self.prefix, extra=self.extra_env)
            self.procs.append(start_worker(env, log))
            self.ports.append(port)
            self.logs.append(log)
        return self

    def alive(self) -> list[int]:
        return [i for i, proc in enumerate(self.procs) if proc.poll() is None]

    def stats(self) -> list[dict[str, Any] | None]:
        return [fetch_stats(self.ports[i], self.token) for i in self.alive()]

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Every live worker caught up on marks, and the live workers own all partitions once."""
        def ready() -> bool:
            stats = self.stats()
            if not stats or any(s is None or not s["marks_ready"] for s in stats):
                return False
            owned = sorted(p for s in stats for p in s["owned_partitions"])  # type: ignore[index]
            return owned == list(range(self.partitions))
        await wait_for(ready, timeout_s, "workers ready", interval_s=0.2)

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        self.procs[index].send_signal(sig)
        self.procs[index].wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)

    def recovery_errors(self) -> list[str]:
        found = []
        for log in self.logs:
            if log.exists():
                found.extend(line for line in log.read_text(errors="replace").splitlines()
                             if self.RECOVERY_ERROR in line)
        return found

    def __enter__(self) -> "WorkerGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
