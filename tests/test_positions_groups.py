"""The positions agent takes messages in groups (``RISK_POSITIONS_GROUP_MS``, Faust's take_events):
a group must give what its messages give one at a time — the same outputs in the same order, the
same dead letters, the same account state written — with one publish and one metrics update; and a
graceful stop that cancels the agent in the middle of that publish must not cut it short."""
from __future__ import annotations

import asyncio
import types

import orjson
import pytest
from prometheus_client import CollectorRegistry

import worker.app as app_module
from metrics import WorkerMetrics
from tests.fixtures import EXAMPLES, FakeProducer
from tests.test_state_writes import CHANGELOG, Table
from worker.core.outputs import Source
from worker.core.params import load_params
from worker.settings import SettingsError, resolve

T0 = 1_700_000_000_000


def position(account: str, size: str, seq: int, entry: str = "20000.0") -> dict:
    return {"type": "position", "account_id": account, "symbol": "BTC-PERP", "size": size,
            "entry_price": entry, "seq": seq, "ts": T0 + seq}


def balance(account: str, collateral: str, seq: int) -> dict:
    return {"type": "balance", "account_id": account, "asset": "USD", "collateral": collateral, "seq": seq,
            "ts": T0 + seq}


def on_partition(zero: bool, stem: str, count: int) -> list[str]:
    """``count`` account ids of positions partition 0 of 4 (``zero``), or of another one."""
    names = (f"{stem}-{k:02d}" for k in range(1_000))
    return [a for a in names if (app_module.partition_for(a.encode(), 4) == 0) == zero][:count]


def messages() -> list[types.SimpleNamespace]:
    """Partition 0's messages (of 4): healthy accounts, one that is liquidatable as soon as its
    position arrives (a liquidation and its fund request), an array, and hostile ones."""
    ours, theirs, (thin,) = on_partition(True, "acct", 8), on_partition(False, "acct", 2), on_partition(True, "thin", 1)
    values: list[bytes] = []
    for account in ours + theirs:
        values.append(orjson.dumps(balance(account, "5000", 1)))
        values.append(orjson.dumps(position(account, "1.000", 2)))
    # 100 USD behind a 2 BTC position at 20 000: maintenance margin far above equity
    values.append(orjson.dumps([balance(thin, "100", 1), position(thin, "2.000", 2)]))
    values.append(b'{"type": "position", "account_id": "acct-00"')  # not JSON
    values.append(orjson.dumps(position(ours[1], "0.500", 2)))  # an applied seq again: stale
    values.append(b'{"type":"balance","account_id":"%s","asset":"USD","collateral":"4\\u0030","seq":3,'
                  b'"ts":1}' % ours[2].encode())  # an escape: the typed decoder declines it, the validating way takes it
    values.append(orjson.dumps(position(ours[3], "1.00000000000", 3)))  # too many decimals
    values.append(orjson.dumps(position(ours[4], "0.800", 3)))
    return [types.SimpleNamespace(partition=0, offset=offset, key=b"k", value=value)
            for offset, value in enumerate(values)]


def runtime() -> tuple[app_module.Runtime, FakeProducer, CollectorRegistry]:
    producer = FakeProducer()
    rt = app_module.Runtime(resolve(environ={"RISK_PARTITIONS": "4"}), load_params(EXAMPLES / "params.toml"),
                            types.SimpleNamespace(producer=producer))
    rt.accounts_table = Table()
    registry = CollectorRegistry()
    rt.metrics = WorkerMetrics(registry)
    rt.engine.process_mark({"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T0, "seq": 1},
                           Source("mark-prices", 0, 0, b"", b""))
    return rt, producer, registry


def outputs_and_state(producer: FakeProducer) -> tuple[list[tuple], list[bytes], dict]:
    """What was published besides the changelog and the fund requests, in order; the fund requests'
    items, in order; and each account's last changelog record. (A publish packs the fund requests it
    carries into as few messages as it can, so a group's requests may share a message where its
    messages' would not: the internal topic's messages may differ, never an item — the fund agent
    applies each item once, by its liquidation id.)"""
    published = [(topic, key, value) for topic, key, value in producer.sent
                 if topic not in (CHANGELOG, "insurance-requests")]
    items = [orjson.dumps(item) for topic, _, value in producer.sent if topic == "insurance-requests"
             for item in orjson.loads(value)["items"]]
    state = {orjson.loads(key): value for topic, key, value in producer.sent if topic == CHANGELOG}
    return published, items, state


async def one_at_a_time(rt: app_module.Runtime, batch: list) -> None:
    for message in batch:
        await rt.on_positions_message(message)
    await rt.persist_dirty()


async def in_groups(rt: app_module.Runtime, batch: list, size: int) -> None:
    for start in range(0, len(batch), size):
        await rt.on_positions_messages(batch[start:start + size])
    await rt.persist_dirty()


@pytest.mark.parametrize("size", [pytest.param(2, id="groups of two"), pytest.param(7, id="groups of seven"),
                                  pytest.param(1_000, id="every message in one group")])
def test_a_group_gives_what_its_messages_give_one_at_a_time(size):
    alone, alone_producer, alone_registry = runtime()
    grouped, grouped_producer, grouped_registry = runtime()
    batch = messages()
    asyncio.run(one_at_a_time(alone, batch))
    asyncio.run(in_groups(grouped, batch, size))

    expected_outputs, expected_items, expected_state = outputs_and_state(alone_producer)
    topics = [topic for topic, _, _ in expected_outputs]
    # the scenario exercises what it should: liquidations with their fund requests (the thin account's
    # position; the escaped balance that cuts an account to 40 USD), dead letters of each kind (not
    # JSON, stale, too many decimals, and accounts of other partitions)
    assert topics.count("liquidations") == 2 and len(expected_items) == 2
    codes = {orjson.loads(value)["error"]["code"] for topic, _, value in expected_outputs if topic == "dead-letters"}
    assert {"decode_error", "stale_seq", "too_many_decimals", "wrong_partition"} <= codes, codes
    assert outputs_and_state(grouped_producer) == (expected_outputs, expected_items, expected_state)
    assert grouped.engine.accounts == alone.engine.accounts
    assert grouped.counters == alone.counters
    # metrics: the same events counted, one latency observation a message either way
    for name, labels in (("risk_events_consumed_total", {"topic": "positions"}),
                         ("risk_input_to_allocation_latency_seconds_count", {})):
        value = alone_registry.get_sample_value(name, labels)
        assert value is not None and value == grouped_registry.get_sample_value(name, labels)
    assert alone_registry.get_sample_value("risk_input_to_allocation_latency_seconds_count") == len(batch)


@pytest.mark.parametrize("environ, message", [
    pytest.param({"RISK_POSITIONS_GROUP_MAX": "0"}, "RISK_POSITIONS_GROUP_MAX", id="a group of no message is refused"),
    pytest.param({"RISK_POSITIONS_GROUP_MS": "-1"}, "RISK_POSITIONS_GROUP_MS", id="a negative window is refused"),
])
def test_group_settings_out_of_range_are_refused(environ, message):
    with pytest.raises(SettingsError, match=message):
        resolve(environ=environ)


def test_by_default_messages_are_grouped_over_a_few_milliseconds():
    settings = resolve(environ={})
    assert settings.positions_group_ms == 5 and settings.positions_group_max == 1_000
    assert resolve(environ={"RISK_POSITIONS_GROUP_MS": "0"}).positions_group_ms == 0  # one at a time


def test_the_worker_refuses_a_group_setting_out_of_range_with_a_message_not_a_traceback(monkeypatch):
    monkeypatch.setenv("RISK_POSITIONS_GROUP_MAX", "0")
    with pytest.raises(SystemExit, match="error: RISK_POSITIONS_GROUP_MAX=0"):
        app_module.main_worker(["worker"])


def test_a_stop_that_cancels_the_agent_mid_publish_leaves_the_publish_for_the_last_commit_to_wait_for():
    # Faust stops its services in reverse order: the agents are cancelled, then the consumer makes
    # its last offset commit, whose flush (flush_with_state) first waits for the positions publish in
    # flight. A cancellation in the middle of a group's publish must not cut it short: the group's
    # offsets are acked (committed by that commit), so every output must still reach the producer.
    reference, reference_producer, _ = runtime()
    asyncio.run(in_groups(reference, messages(), 1_000))
    expected_outputs, expected_items, expected_state = outputs_and_state(reference_producer)
    rt, producer, _ = runtime()
    send = producer.send
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def held(*args):  # noqa: ANN002, ANN202 - the first send waits (a slow broker)
        if not in_flight.is_set():
            in_flight.set()
            await release.wait()
        return await send(*args)

    producer.send = held

    async def scenario() -> None:
        agent = asyncio.ensure_future(rt.on_positions_messages(messages()))
        await in_flight.wait()
        agent.cancel()  # the graceful stop
        with pytest.raises(asyncio.CancelledError):
            await agent
        release.set()
        await rt.settle_positions_publish()  # the last commit's flush, first: every output handed over
        published, items, _ = outputs_and_state(producer)
        assert (published, items) == (expected_outputs, expected_items)
        await rt.persist_dirty()  # then its write-back

    asyncio.run(scenario())
    assert outputs_and_state(producer) == (expected_outputs, expected_items, expected_state)
