"""What the worker writes to the `accounts` changelog, and when (worker/app.py ``persist_dirty``):
a money move writes the accounts its outputs are about before them, and only those; the commit's
flush writes every changed account in chunks, the state lock released between them, so a money
move waiting for the lock goes in between instead of behind thousands of deferred accounts."""
from __future__ import annotations

import asyncio
import types

import orjson
import pytest

import worker.app as app_module
from tests.fixtures import EXAMPLES, FakeProducer
from worker.core.engine import AccountState, fund_request
from worker.core.outputs import Output
from worker.core.params import load_params
from worker.settings import resolve

CHANGELOG = "accounts-changelog"


class Table:
    """Stands in for the `accounts` table: its memory, and its changelog topic's name."""

    def __init__(self) -> None:
        self.data: dict = {}
        self.changelog_topic = types.SimpleNamespace(get_topic_name=lambda: CHANGELOG)


class Store(dict):
    """The table's memory as the tracked store keeps it (worker/store.py): it also knows the keys
    recovery replayed."""

    def __init__(self) -> None:
        super().__init__()
        self.replayed: set = set()


def runtime_with_changed(account_ids: list[str]) -> tuple[app_module.Runtime, FakeProducer]:
    """A runtime whose engine holds these accounts, every one of them changed (dirty)."""
    producer = FakeProducer()
    runtime = app_module.Runtime(resolve(environ={}), load_params(EXAMPLES / "params.toml"),
                                 types.SimpleNamespace(producer=producer))
    runtime.accounts_table = Table()
    for account_id in account_ids:
        runtime.engine.accounts[account_id] = AccountState(account_id, seq=1, collateral_units=1_000)
        runtime.engine.dirty.add(account_id)
    return runtime, producer


def hold_first_write(runtime: app_module.Runtime, fails: bool = False) -> tuple[asyncio.Event, asyncio.Event]:
    """(in_flight, release): the runtime's first ``send_batched`` sets ``in_flight`` and waits for
    ``release``, then is delivered, or fails as a broker outage would (``fails``); later ones go as usual."""
    in_flight, release = asyncio.Event(), asyncio.Event()
    send_batched = runtime.send_batched

    async def held(records):  # noqa: ANN001
        if in_flight.is_set():
            return await send_batched(records)
        in_flight.set()
        await release.wait()
        if fails:
            raise ConnectionError("broker unreachable")
        return await send_batched(records)

    runtime.send_batched = held
    return in_flight, release


def written(producer: FakeProducer, since: int = 0) -> list[str]:
    """The account ids written to the changelog, in order (the key is JSON: a quoted string)."""
    return [orjson.loads(key) for topic, key, _ in producer.sent[since:] if topic == CHANGELOG]


def item(account_id: str) -> dict:
    return {"liquidation_id": f"id-{account_id}", "account_id": account_id, "scope": "cross", "ts": 1,
            "trigger": ["mark", "BTC-PERP", 2, 1], "plan": {}}


@pytest.mark.parametrize("outputs, named", [
    pytest.param([Output("liquidations", "a", {"type": "liquidation"})], {"a"},
                 id="a liquidation names the account it is keyed by"),
    pytest.param([Output("insurance-requests", "USD", fund_request([item("a"), item("b")]))], {"a", "b"},
                 id="a fund request names the account of each of its items"),
    pytest.param([Output("margin-calls", "c", {"type": "margin_call"}),
                  Output("liquidations", "a", {"type": "liquidation"})], {"a"},
                 id="a margin call beside a liquidation is not a money move"),
    pytest.param([Output("loss-sharing", "r1", {"type": "haircut_round"})], None,
                 id="a round's summary names no account: every changed account goes first"),
    pytest.param([Output("loss-sharing", "a", {"type": "haircut"}),
                  Output("loss-sharing", "b", {"type": "claim_repayment"})], {"a", "b"},
                 id="a haircut and a claim repayment name the account whose claim they changed"),
    pytest.param([Output("loss-sharing", "a", {"type": "haircut"}), Output("loss-sharing", "BTC-PERP",
                                                                          {"type": "haircut_round"})], None,
                 id="haircuts beside their round's summary name none: every changed account goes first"),
    pytest.param([Output("insurance-requests", "USD", {"type": "fund_request"})], None,
                 id="a fund request without items names none either"),
    pytest.param([], None, id="no money output at all (a round's empty chunk) names none: every account goes"),
    pytest.param([Output("insurance-requests", "USD", fund_request([item("a"), {"kind": "tick", "symbol": "BTC-PERP"}]))],
                 None, id="a fund request carrying a tick marker names none: every changed account goes first"),
    pytest.param([Output("insurance-requests", "USD", fund_request([item("a"), ["not", "an", "item"]]))], None,
                 id="an item of another shape names none rather than raising inside the publish retry"),
])
def test_the_accounts_a_money_move_is_about(outputs, named):
    assert app_module.accounts_named(outputs) == named


def test_a_liquidation_writes_only_its_account_before_it_the_others_stay_deferred():
    runtime, producer = runtime_with_changed(["a", "b", "c"])
    liquidation = Output("liquidations", "b", {"type": "liquidation", "account_id": "b"})
    asyncio.run(runtime._publish_batched([liquidation]))
    # b's state, then b's liquidation; a and c are still to be written (the commit's flush)
    assert written(producer) == ["b"]
    assert [topic for topic, _, _ in producer.sent] == [CHANGELOG, runtime.settings.topic("liquidations")]
    assert runtime.engine.dirty == {"a", "c"}
    assert asyncio.run(runtime.persist_dirty()) == 2
    assert written(producer) == ["b", "a", "c"] and not runtime.engine.dirty


def test_the_table_keeps_the_bytes_written_to_the_changelog_and_the_takeover_reads_them_back():
    """The `accounts` table's memory holds each account's changelog record as bytes (no decoded
    copy for the garbage collector to walk); what a takeover rebuilds from it is the account."""
    runtime, producer = runtime_with_changed(["a", "b"])
    runtime.engine.accounts["b"].claim_units = 2**64 + 1  # a claim beyond 64 bits: a string in the record
    assert asyncio.run(runtime.persist_dirty()) == 2
    memory = runtime.accounts_table.data
    assert {orjson.loads(key): value for topic, key, value in producer.sent if topic == CHANGELOG} == memory
    assert all(type(value) is bytes for value in memory.values())
    for account_id, value in memory.items():
        assert app_module.account_from_stored(value) == runtime.engine.accounts[account_id]


def test_the_flush_writes_in_chunks_and_a_money_move_waiting_for_the_lock_goes_in_between(monkeypatch):
    monkeypatch.setattr(app_module, "PERSIST_CHUNK_ACCOUNTS", 2)
    accounts = [f"acct-{i}" for i in range(5)]
    runtime, producer = runtime_with_changed(accounts)
    first_chunk_sent, release = hold_first_write(runtime)
    liquidation = Output("liquidations", "acct-4", {"type": "liquidation", "account_id": "acct-4"})

    async def scenario() -> None:
        flush = asyncio.ensure_future(runtime.persist_dirty())
        await first_chunk_sent.wait()  # the flush holds the lock, its first chunk in flight
        money = asyncio.ensure_future(runtime._publish_batched([liquidation]))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(flush, money)

    asyncio.run(scenario())
    # chunks of 2 in name order; acct-4's liquidation waited for the first chunk only, then wrote
    # acct-4 (which the flush's last chunk no longer finds changed) and published
    topics = [(topic, orjson.loads(key) if topic == CHANGELOG else key.decode()) for topic, key, _ in producer.sent]
    assert topics == [(CHANGELOG, "acct-0"), (CHANGELOG, "acct-1"), (CHANGELOG, "acct-4"),
                      (runtime.settings.topic("liquidations"), "acct-4"),
                      (CHANGELOG, "acct-2"), (CHANGELOG, "acct-3")]
    assert not runtime.engine.dirty


def test_a_failed_chunk_leaves_its_accounts_changed_for_the_retry(monkeypatch):
    monkeypatch.setattr(app_module, "PERSIST_CHUNK_ACCOUNTS", 2)
    runtime, producer = runtime_with_changed(["a", "b", "c"])
    producer.failing = True
    with pytest.raises(ConnectionError):
        asyncio.run(runtime.persist_dirty())
    assert runtime.engine.dirty == {"a", "b", "c"}  # nothing was delivered: nothing is taken as written
    producer.failing = False
    assert asyncio.run(runtime.persist_dirty()) == 3
    assert written(producer) == ["a", "b", "c"]


def test_an_account_a_failed_money_write_gives_back_is_in_the_flush_that_waited_for_it():
    # a tick's write of "a" is in flight (the lock held) when the commit's flush asks for the lock;
    # the write fails and gives "a" back: the flush, taking the changed accounts once it holds the
    # lock, writes "a" too (had it taken them before, the commit would pass "a" by)
    runtime, producer = runtime_with_changed(["a", "b"])
    in_flight, fail = hold_first_write(runtime, fails=True)

    async def scenario() -> None:
        money = asyncio.ensure_future(runtime.persist_dirty({"a"}))
        await in_flight.wait()
        flush = asyncio.ensure_future(runtime.persist_dirty())
        await asyncio.sleep(0)
        fail.set()
        with pytest.raises(ConnectionError):
            await money
        assert await flush == 2

    asyncio.run(scenario())
    assert written(producer) == ["a", "b"] and not runtime.engine.dirty


def test_an_account_a_tick_changes_during_the_revocations_write_back_is_written_before_the_drop():
    # the revocation's write-back is in flight when the mark reader applies a tick that liquidates
    # "late" (the reader evaluates outside the publish lock): "late" is written before the worker
    # drops its accounts, so the liquidation it publishes afterwards has its state in the changelog
    runtime, producer = runtime_with_changed(["a"])
    runtime.owned = {0}
    runtime.accounts_table.data = Store()
    in_flight, release = hold_first_write(runtime)

    async def scenario() -> None:
        revoke = asyncio.ensure_future(runtime.on_partitions_revoked())
        await asyncio.wait_for(in_flight.wait(), 5)
        runtime.engine.accounts["late"] = AccountState("late", seq=2, collateral_units=5)  # the tick's change
        runtime.engine.dirty.add("late")
        release.set()
        await revoke

    asyncio.run(scenario())
    assert written(producer) == ["a", "late"] and not runtime.engine.dirty and not runtime.engine.accounts


def test_the_partition_cache_keeps_what_it_computes_but_holds_keeps_only_its_own_partition():
    cache = app_module.PartitionCache(4)
    # murmur2 spreads these over the 4 partitions; the cache agrees with the producer's partitioner
    accounts = [f"a{i:06d}" for i in range(40)]
    expected = {a: app_module.partition_for(a.encode(), 4) for a in accounts}
    mine, theirs = [a for a in accounts if expected[a] == 1], [a for a in accounts if expected[a] != 1]
    assert mine and theirs
    assert [cache.holds(a, 1) for a in accounts] == [expected[a] == 1 for a in accounts]
    assert dict(cache) == {a: 1 for a in mine}  # another partition's accounts were computed, not kept
    assert [cache[a] for a in theirs] == [expected[a] for a in theirs]  # a lookup computes and keeps
    assert dict(cache) == expected
    assert [cache.holds(a, 1) for a in accounts] == [expected[a] == 1 for a in accounts]  # from the cache now


def test_a_partition_s_acceptor_answers_as_holds_and_keeps_the_same_accounts():
    accounts = [f"a{i:06d}" for i in range(40)]
    expected = {a: app_module.partition_for(a.encode(), 4) for a in accounts}
    by_holds, by_acceptor = app_module.PartitionCache(4), app_module.PartitionCache(4)
    accept = by_acceptor.acceptor(2)
    assert by_acceptor.acceptor(2) is accept  # made once per partition
    for _ in range(2):  # computed, then (its own partition's) from the cache
        assert [accept(a) for a in accounts] == [by_holds.holds(a, 2) for a in accounts] == \
            [expected[a] == 2 for a in accounts]
        assert dict(by_acceptor) == dict(by_holds) == {a: 2 for a in accounts if expected[a] == 2}
    by_acceptor["x"] = 3  # an account known in another partition (a lookup kept it) is not this one's
    assert not accept("x") and by_acceptor.acceptor(3)("x")


def test_a_recovery_restores_pay_records_haircuts_first_creates_accounts_and_drops_swept_memory():
    # recovered: bob's record from before two rounds of partition 0 (claim 3, and the memory of a round
    # "old" whose snapshot is gone); pay records: haircut round H paid bob 5 (claim after 8) and dan 2
    # (never written), repayment round R repaid bob 7 of his 8. Applied in the records' order (R first)
    # bob's 3 − 7 would go below 0; haircuts first: 3 + 5 − 7 = 1.
    runtime, _ = runtime_with_changed([])
    runtime.snapshots_table = Table()
    runtime.snapshots_table.data.update({
        "R|0": {"kind": "repay", "total": "8", "count": 1, "chunks": 1}, "R|0|paid|0": [["bob", "7", "8"]],
        "H|0": {"kind": "haircut", "total": "9", "count": 2, "chunks": 1},
        "H|0|paid|0": [["bob", "5", "8"], ["dan", "2", "2"]],
        "X|1": {"kind": "haircut", "total": "1", "count": 1, "chunks": 1}, "X|1|paid|0": [["erin", "1", "1"]]})
    accounts = {"bob": AccountState("bob", claim_units=3, rounds={"old": ["1", "1"]})}
    assert runtime.restore_round_claims(accounts, owned={0}) == (3, 1)  # (partition 1 is not owned)
    assert {a: (s.claim_units, {r: s.round_memory(r) for r in s.remembered_rounds()})
            for a, s in accounts.items()} == {"bob": (1, {"H": ["5", "8"], "R": ["7", "8"]}),
                                              "dan": (2, {"H": ["2", "2"]})}
    assert runtime.restore_round_claims(accounts, owned={0}) == (0, 0)  # applied once
