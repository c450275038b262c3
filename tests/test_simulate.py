"""`python -m worker simulate`: its settings, and short real runs against the embedded broker.

The broker-tier runs start the command as a subprocess (no workers: nothing to acknowledge), read back
what it produced with an independent aiokafka consumer, compare it with its `--record` file, check the
traders and the crash tick by tick, and replay the recorded file offline (SPEC §7).
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from tests.fixtures import EXAMPLES, ROOT
from topics.codec import encode
from worker.app import partition_for
from worker.core.engine import Engine
from worker.core.params import load_params
from worker.replay import replay_lines
from worker.simulator import CONNECTION_SETTINGS, SIM_SETTINGS, Market, SimSettings, connection, main_simulate

OPENING = {"BTC-PERP": 650_000, "ETH-PERP": 320_000}  # mark ticks at tick 0 (worker/simulator.py)
TS0 = 1_700_000_000_000
SUMMARY = re.compile(r"^simulator: (?P<accounts>\d+) accounts, (?P<ticks>\d+) ticks, (?P<acks>\d+) acknowledgements, "
                     r"(?P<sent>\d+) messages(, recorded in (?P<record>.+))?$")


def simulate(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "simulate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kwargs)


def summary_of(stdout: str) -> dict[str, str]:
    match = SUMMARY.match(stdout.splitlines()[-1])
    assert match, stdout
    return match.groupdict()


# ---------------------------------------------------------------------------------------- settings
def test_help_lists_every_setting_with_its_variable():
    done = simulate("--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for setting in (*CONNECTION_SETTINGS, *SIM_SETTINGS):
        assert f"--{setting.name.replace('_', '-')}" in text and setting.env in text, setting
    assert {s.name for s in CONNECTION_SETTINGS} == {
        "bootstrap", "topic_prefix", "partitions", "security_protocol", "sasl_mechanism", "sasl_username",
        "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"}


def test_flag_then_variable_then_default():
    import argparse

    from worker.settings import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, CONNECTION_SETTINGS)
    add_arguments(parser, SIM_SETTINGS)
    args = parser.parse_args(["--accounts", "7", "--crash-at", "2.5", "--partitions", "8"])
    environ = {"RISK_SIM_ACCOUNTS": "99", "RISK_SIM_TICKS": "12", "RISK_PARTITIONS": "3", "RISK_BOOTSTRAP": "k:1",
               "RISK_WEB_PORT": "not a port"}  # a worker-only setting: not read
    sim = SimSettings.resolve(args, environ)
    assert (sim.accounts, sim.crash_at, sim.ticks, sim.duration, sim.record) == (7, 2.5, 12, 0.0, "")
    conn = connection(args, environ)
    assert (conn.partitions, conn.bootstrap, conn.topic_prefix, conn.web_port) == (8, "k:1", "", 6066)


@pytest.mark.parametrize("argv, message", [
    (["--tick-hz", "0"], "error: --tick-hz must be > 0"),
    (["--crash-pct", "100"], "error: --crash-pct must be in [0, 100)"),
    (["--crash-pct", "3", "--crash-gap-pct", "4"], "error: --crash-gap-pct must be in [0, --crash-pct]"),
    (["--ticks", "-1"], "error: --ticks must be ≥ 0"),
    (["--accounts", "many"], "error: RISK_SIM_ACCOUNTS='many' is not a valid int"),
])
def test_bad_settings_are_refused(argv, message):
    with pytest.raises(SystemExit) as refused:
        main_simulate(argv)
    assert str(refused.value) == message


def crash_steps(**settings) -> list[float]:
    """Each symbol's move at ticks 1..30 (the larger of the two), without a broker."""
    market = Market({}, accounts=0, tick_hz=10, crash_at_s=1.5, crash_s=0.5, crash_pct=5.0, **settings)
    steps = []
    for tick in range(1, 31):
        market.tick = tick
        before = dict(market.marks)
        market.step_marks()
        steps.append(max(market.marks[s] / before[s] - 1 for s in before))
    return steps


def test_crash_starts_and_ends_at_its_ticks():
    """--tick-hz 10 --crash-at 1.5 --crash-s 0.5 --crash-pct 5 --crash-gap-pct 0: -1 % at each of ticks 15..19."""
    steps = crash_steps(crash_gap_pct=0.0)
    crash = [tick for tick, step in enumerate(steps, start=1) if step < -0.005]  # -1 % a tick vs noise 0.04 %
    assert crash == [15, 16, 17, 18, 19]
    assert all(abs(step) < 0.003 for tick, step in enumerate(steps, start=1) if tick not in crash)


def test_the_crash_opens_with_its_gap():
    """--crash-gap-pct 3 of the 5 %: tick 15 falls 3 % plus its share of the other 2 % (0.4 % a tick)."""
    steps = crash_steps(crash_gap_pct=3.0)
    assert -0.036 < steps[15 - 1] < -0.032
    assert all(-0.006 < steps[tick - 1] < -0.002 for tick in range(16, 20))
    assert all(abs(step) < 0.002 for tick, step in enumerate(steps, start=1) if not 15 <= tick < 20)


# ------------------------------------------------------------------------------------ broker tier




async def read_inputs(bootstrap: str, prefix: str, count: int, timeout_s: float = 60.0) -> list[tuple]:
    """(topic without prefix, partition, key, value) of `mark-prices` and `positions`, until `count` records."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(prefix + topic, p) for topic in ("mark-prices", "positions")
               for p in consumer.partitions_for_topic(prefix + topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[tuple] = []
        deadline = time.monotonic() + timeout_s  # a guard against hanging, not an assertion on timing
        while len(found) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                found.extend((tp.topic[len(prefix):], tp.partition, r.key.decode(), r.value) for r in records)
        return found
    finally:
        await consumer.stop()


def marks_by_tick(lines: list[dict], symbol: str) -> list[dict]:
    marks = [line["value"] for line in lines if line["topic"] == "mark-prices" and line["key"] == symbol]
    assert [m["seq"] for m in marks] == list(range(1, len(marks) + 1))  # seq 1 is tick 0
    return marks


def ticks_of(price: str) -> int:
    return int(price.replace(".", ""))


@pytest.mark.broker
def test_short_run_produces_what_it_records_and_the_record_replays(broker, prefix, tmp_path):
    record = tmp_path / "run.jsonl"
    done = simulate("--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "--partitions", "4",
                    "--accounts", "30", "--seed", "7", "--tick-hz", "50", "--crash-at", "0.4", "--crash-s", "0.4",
                    "--crash-pct", "9", "--crash-gap-pct", "3", "--ticks", "40", "--record", str(record))
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert (summary["accounts"], summary["ticks"], summary["acks"], summary["record"]) == ("30", "40", "0", str(record))
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(lines) == int(summary["sent"])
    assert {tuple(sorted(line)) for line in lines} == {("key", "topic", "value")}

    # the broker holds exactly the recorded messages, in the recorded order per key (one key, one partition)
    found = asyncio.run(read_inputs(broker.bootstrap, prefix, len(lines)))
    assert len(found) == len(lines)
    on_broker: dict[tuple, list[bytes]] = defaultdict(list)
    for topic, partition, key, value in found:
        on_broker[topic, key].append(value)
        if topic == "positions":  # a batch holds accounts of its partition only (SPEC §6)
            assert {partition_for(e["account_id"].encode(), 4) for e in json.loads(value)} == {partition}
    recorded: dict[tuple, list[bytes]] = defaultdict(list)
    for line in lines:
        recorded[line["topic"], line["key"]].append(encode(line["value"]))
    assert dict(on_broker) == dict(recorded)

    # tick 0: both opening marks, then every trader's balance and position
    assert [(line["topic"], line["value"]["seq"]) for line in lines[:2]] == [("mark-prices", 1)] * 2
    opening: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        if line["topic"] == "positions":
            for event in line["value"]:
                opening[event["account_id"]].append(event)
    assert sorted(opening) == [f"trader-{i:06d}" for i in range(30)]
    for events in opening.values():
        assert [(e["type"], e["seq"], e["ts"]) for e in events[:2]] == [("balance", 1, TS0), ("position", 2, TS0)]

    # 41 marks a symbol (ticks 0..40), 20 ms of event time apart; the crash is ticks 20..39: a gap of 3 %
    # at tick 20, then the other 6 % at 0.3 % a tick (each crash tick also takes its 0.3 %)
    for symbol, opening_ticks in OPENING.items():
        marks = marks_by_tick(lines, symbol)
        assert [m["ts"] for m in marks] == [TS0 + 20 * tick for tick in range(41)]
        prices = [ticks_of(m["mark_price"]) for m in marks]
        assert prices[0] == opening_ticks
        steps = {tick: prices[tick] / prices[tick - 1] - 1 for tick in range(1, 41)}
        assert [tick for tick, step in steps.items() if step < -0.03] == [20], (symbol, steps)
        assert [tick for tick, step in steps.items() if step < -0.0015] == list(range(20, 40)), (symbol, steps)
        assert all(abs(steps[tick]) < 0.002 for tick in (*range(1, 20), 40))
        assert 0.89 < prices[39] / prices[19] < 0.93  # about 9 %

    # offline replay of the recorded run: no dead letter, and the crash liquidates
    outputs = list(replay_lines(record.read_bytes().splitlines(), Engine(load_params(EXAMPLES / "params.toml"))))
    assert [o.value for o in outputs if o.topic == "dead-letters"] == []
    assert any(o.topic == "liquidations" for o in outputs)


@pytest.mark.broker
def test_settings_from_the_environment_and_a_duration(broker, prefix):
    done = simulate(env={"RISK_BOOTSTRAP": broker.bootstrap, "RISK_TOPIC_PREFIX": prefix, "RISK_PARTITIONS": "4",
                         "RISK_SIM_ACCOUNTS": "5", "RISK_SIM_TICK_HZ": "20", "RISK_SIM_DURATION": "1"})
    assert done.returncode == 0, done.stderr
    summary = summary_of(done.stdout)
    assert summary["accounts"] == "5" and int(summary["ticks"]) >= 1 and summary["record"] is None
    found = asyncio.run(read_inputs(broker.bootstrap, prefix, int(summary["sent"])))
    assert len(found) == int(summary["sent"])


@pytest.mark.broker
def test_sigterm_stops_it_cleanly(broker, prefix, tmp_path):
    """What `docker compose stop` does: the run ends, the producer is flushed, the record is complete."""
    record = tmp_path / "run.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "worker", "simulate", "--bootstrap", broker.bootstrap,
                             "--topic-prefix", prefix, "--accounts", "5", "--record", str(record)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().startswith("simulator: 5 traders on ")  # signal handlers are in place
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    summary = summary_of(stdout)
    assert len(record.read_text().splitlines()) == int(summary["sent"])
    found = asyncio.run(read_inputs(broker.bootstrap, prefix, int(summary["sent"])))
    assert len(found) == int(summary["sent"])
