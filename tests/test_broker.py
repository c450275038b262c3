"""Real-broker tier (embedded Tansu): parity with replay, failover, hostile input, schemas (SPEC §6–§8).

Nothing is mocked: an embedded Kafka-protocol broker, worker processes started with
`python -m worker worker`, and an independent aiokafka client reading the topics back.
"""
from __future__ import annotations

import asyncio
import json
import threading

import orjson
import pytest

from tests.fixtures import EXAMPLES, cascade_scenario, params_toml
from topics.schemas import validate_event
from worker.core.engine import Engine
from worker.core.params import parse_params
from worker.hostile import AFTER, CORPUS, SETUP
from worker.harness import WorkerGroup, feed_lockstep, feed_phase, produce, read_topics, scenario_records
from worker.replay import replay_lines

pytestmark = pytest.mark.broker
OUTPUT_TOPICS = ["liquidations", "margin-calls", "insurance-fund", "risk-snapshots", "dead-letters"]




def replay_outputs(params_text: bytes, lines: list[bytes]):
    return list(replay_lines(lines, Engine(parse_params(params_text))))


def read(broker, prefix, until, timeout_s=60.0):
    names = [prefix + t for t in OUTPUT_TOPICS]
    found = asyncio.run(read_topics(broker.bootstrap, names, until=lambda f: until(
        {t: f[prefix + t] for t in OUTPUT_TOPICS}), timeout_s=timeout_s))
    return {t: found[prefix + t] for t in OUTPUT_TOPICS}


def test_parity_with_replay_on_the_example_scenario(broker, prefix, tmp_path):
    params_path = EXAMPLES / "params.toml"
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    expected = [o for o in replay_outputs(params_path.read_bytes(), lines) if o.topic == "liquidations"]
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(1)
        asyncio.run(group.wait_ready())
        asyncio.run(feed_lockstep(broker.bootstrap, scenario_records(lines, prefix), group.ports, prefix))
        found = read(broker, prefix, lambda f: len(f["liquidations"]) >= len(expected))
        assert group.recovery_errors() == []
        scraped = scrape(group.ports[0])
    got = [value for _, value in found["liquidations"]]
    assert sorted(got) == sorted(orjson.dumps(o.value) for o in expected)
    # every event on every output topic validates against its schema (SPEC §6)
    for topic, records in found.items():
        for _, value in records:
            validate_event(json.loads(value))
    assert [json.loads(v)["error"]["code"] for _, v in found["dead-letters"]] == ["non_positive_price"]
    # the worker's /metrics moved with the scenario (SPEC §1; metrics/__init__.py)
    samples = scraped
    allocations = [json.loads(v) for v in got]
    assert samples[("risk_liquidations_total", ())] == len(allocations)
    assert samples[("risk_liquidations_total", (("outcome", "bankrupt"), ("scope", "cross")))] == sum(
        1 for a in allocations if a["bankrupt"] and a["scope"] == "cross")
    fund_entries = [json.loads(v) for _, v in found["insurance-fund"] if json.loads(v)["type"] == "insurance_fund_entry"]
    assert samples[("risk_insurance_fund_balance_units", (("asset", "USD"),))] == int(
        fund_entries[-1]["balance_after"].replace(".", ""))
    assert samples[("risk_dead_letters_total", (("reason", "non_positive_price"),))] == 1
    assert samples[("risk_penalty_units_total", (("destination", "liquidator"),))] == sum(
        int(a["totals"]["liquidator"].replace(".", "")) for a in allocations)


def scrape(port: int) -> dict:
    """Prometheus text → {(name, sorted labels): value}, plus a label-less sum per counter."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            if sample.name.endswith("_total"):
                samples[(sample.name, ())] = samples.get((sample.name, ()), 0) + sample.value
    return samples


def fund_ledger_is_consistent(entries: list[dict], initial: int, floor: int) -> None:
    balance = initial
    for entry in entries:
        delta = int(entry["delta"].replace(".", ""))
        after = int(entry["balance_after"].replace(".", ""))
        assert after == balance + delta, entry
        assert after >= floor
        balance = after


def test_failover_kill_9_in_the_middle_of_a_cascade(broker, prefix, tmp_path):
    # no pending timeout: each account is liquidated at most once per seq, so the expected ids are exact
    params_text = params_toml(pending_timeout_ms=0, initial_balance="5000", floor="1000",
                              btc_penalty='{model = "flat", min_ppm = 1000}', liquidator_ppm=400_000).encode()
    params_path = tmp_path / "params.toml"
    params_path.write_bytes(params_text)
    setup, cascade = cascade_scenario(accounts=300, ticks=40)
    expected_ids = {o.value["liquidation_id"] for o in replay_outputs(params_text, setup + cascade)
                    if o.topic == "liquidations"}
    assert len(expected_ids) > 100
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(2)
        asyncio.run(group.wait_ready())
        assert all(s["owned_partitions"] for s in group.stats())  # both workers own partitions
        records = scenario_records(setup, prefix)
        asyncio.run(feed_lockstep(broker.bootstrap, records[:2], group.ports, prefix))  # first marks
        asyncio.run(feed_phase(broker.bootstrap, records[2:], group.ports, prefix))  # then positions
        # the sell-off arrives over ~8 s; kill -9 the worker owning the fund once a quarter is out
        feeder = threading.Thread(target=asyncio.run, args=(
            produce(broker.bootstrap, scenario_records(cascade, prefix), interval_s=0.2),))
        feeder.start()
        read(broker, prefix, lambda f: len(f["liquidations"]) >= len(expected_ids) // 4)
        victim = next(i for i, s in enumerate(group.stats()) if 0 in s["owned_partitions"])
        group.kill(victim)
        killed_at = len(read(broker, prefix, lambda f: True, timeout_s=5)["liquidations"])
        feeder.join()
        found = read(broker, prefix, lambda f: {json.loads(v)["liquidation_id"] for _, v in f["liquidations"]}
                     >= expected_ids, timeout_s=120)
        assert group.recovery_errors() == []
        survivor = group.stats()[0]
        assert survivor["owned_partitions"] == [0, 1, 2, 3]
        assert killed_at < len(expected_ids)  # the kill did land in the middle of the cascade
    by_id: dict[str, set[bytes]] = {}
    for _, value in found["liquidations"]:
        by_id.setdefault(json.loads(value)["liquidation_id"], set()).add(value)
    assert set(by_id) >= expected_ids  # every liquidation replay expects appears
    assert set(by_id) == expected_ids  # and nothing else
    assert [lid for lid, values in by_id.items() if len(values) > 1] == []  # no id with different bytes
    entries = [json.loads(v) for _, v in found["insurance-fund"] if json.loads(v)["type"] == "insurance_fund_entry"]
    unique = list({(e["liquidation_id"], e["reason"]): e for e in entries}.values())
    assert len(unique) == len({(e["liquidation_id"], e["reason"]) for e in entries})
    fund_ledger_is_consistent(sorted_by_first_seen(unique, entries), 5_000_000_000, 1_000_000_000)


def sorted_by_first_seen(unique: list[dict], entries: list[dict]) -> list[dict]:
    order = {}
    for index, entry in enumerate(entries):
        order.setdefault((entry["liquidation_id"], entry["reason"]), index)
    return sorted(unique, key=lambda e: order[(e["liquidation_id"], e["reason"])])


def test_the_whole_hostile_corpus_against_a_live_worker(broker, prefix, tmp_path):
    """Each message of worker/hostile.py (decode errors, shapes, values, bounds, batches whose bad
    element no encoder copies, a 100 KiB key, a stale seq) becomes one published dead letter with
    its code; the worker stays up, never retries a publish, and the valid tick after them all
    still liquidates."""
    params_path = EXAMPLES / "params.toml"
    records = [(prefix + t, k, v) for t, k, v in SETUP]
    records += [(prefix + h.topic, h.key, h.value) for h in CORPUS]
    records.append((prefix + AFTER[0], AFTER[1], AFTER[2]))
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(1)
        asyncio.run(group.wait_ready())
        asyncio.run(produce(broker.bootstrap, records, max_request_size=4_000_000))
        found = read(broker, prefix, lambda f: len(f["dead-letters"]) >= len(CORPUS) and f["liquidations"])
        counters = group.stats()[0]["counters"]
        assert group.alive() == [0]
        assert group.recovery_errors() == []
    codes = sorted(json.loads(v)["error"]["code"] for _, v in found["dead-letters"])
    assert codes == sorted(h.code for h in CORPUS)
    for code in set(codes):
        assert counters[f"dead_letter:{code}"] == codes.count(code)
    assert counters.get("publish_retries", 0) == 0 and counters.get("dead_letter:unpublishable_output", 0) == 0
    for _, value in found["dead-letters"]:
        validate_event(json.loads(value))
    [liquidation] = [json.loads(v) for _, v in found["liquidations"]]
    assert liquidation["account_id"] == "a"  # the valid events around the garbage were applied
    [not_utf8] = [json.loads(v) for _, v in found["dead-letters"] if json.loads(v)["error"]["code"] == "not_utf8"]
    assert not_utf8["value_encoding"] == "base64"
