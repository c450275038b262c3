"""worker/store.py: the in-memory table store that knows which changelog offsets it holds."""
from __future__ import annotations

from types import SimpleNamespace

import faust
from faust.types import TP

from worker.store import TrackedMemoryStore, register

TOPIC = "app-accounts-changelog"


def store() -> TrackedMemoryStore:
    register()
    app = faust.App("store-test", store="tracked-memory://")
    table = app.Table("accounts", partitions=4)
    assert isinstance(table.data, TrackedMemoryStore)
    return table.data


def event(partition: int, offset: int, key: str, value: dict | None) -> SimpleNamespace:
    message = SimpleNamespace(tp=TP(TOPIC, partition), partition=partition, offset=offset,
                              value=None if value is None else b"x")
    return SimpleNamespace(key=key, value=value, message=message)


def same(x):
    return x


def test_applied_records_advance_the_offset_and_are_built():
    s = store()
    s.builder = lambda value: ("built", value["n"])
    assert s.persisted_offset(TP(TOPIC, 1)) is None
    s.apply_changelog_batch([event(1, 5, "a", {"n": 1}), event(1, 6, "a", {"n": 2}), event(2, 3, "b", {"n": 3})],
                            same, same)
    assert s.persisted_offset(TP(TOPIC, 1)) == 6 and s.persisted_offset(TP(TOPIC, 2)) == 3
    assert s.offsets() == {1: 6, 2: 3}
    assert s.replayed == {1, 2}
    assert s.take_built("a", s.data["a"]) == ("built", 2)  # built from the latest value
    assert s.take_built("a", s.data["a"]) is None  # taken once
    assert s.take_built("b", {"n": 3}) is None  # an equal but other value (written since): not used


def test_own_writes_advance_the_offset_when_acknowledged():
    import asyncio

    async def scenario() -> None:
        s = store()
        future = asyncio.get_running_loop().create_future()
        s.track_send(TP(TOPIC, 0), future)
        assert s.persisted_offset(TP(TOPIC, 0)) is None
        future.set_result(SimpleNamespace(offset=41))
        await asyncio.sleep(0)
        assert s.persisted_offset(TP(TOPIC, 0)) == 41
        failed = asyncio.get_running_loop().create_future()
        s.track_send(TP(TOPIC, 0), failed)
        failed.set_exception(RuntimeError("not delivered"))
        await asyncio.sleep(0)
        assert s.persisted_offset(TP(TOPIC, 0)) == 41
        failed.exception()  # retrieved

    asyncio.run(scenario())


def test_recovery_keeps_active_and_standby_partitions_and_forgets_the_others():
    import asyncio

    s = store()
    s.builder = lambda value: value
    s.apply_changelog_batch([event(p, 10 + p, f"k{p}", {"p": p}) for p in range(4)], same, same)
    asyncio.run(s.on_recovery_completed({TP(TOPIC, 0)}, {TP(TOPIC, 2)}))
    assert sorted(s.data) == ["k0", "k2"]
    assert s.offsets() == {0: 10, 2: 12}  # a partition dropped here is read from 0 if it comes back
    assert set(s.built) == {"k0", "k2"}


# ------------------------------------------------------------ the `accounts` changelog values
# A record of the first format, byte for byte as the worker wrote it before the compact format
# (AccountState.to_dict, orjson): a cross BTC long and an isolated ETH short in the margin-call
# zone, a pending liquidation of the cross scope with what it published, one haircut round.
OLD_FORMAT_RECORD = (
    b'{"account_id":"alice","seq":7,"collateral":1250000000,'
    b'"positions":{"BTC-PERP":[1000,200000,false,0],"ETH-PERP":[-500,150000,true,300000000]},'
    b'"pending":{"cross":["0123456789abcdef0123456789abcdef",1700000000500,'
    b'[["liquidations","alice",{"type":"liquidation","n":1}]]]},'
    b'"emitted":{"cross":[7,1]},"in_call":["ETH-PERP"],"claim":"18446744073709551617",'
    b'"rounds":{"r-1":["25000000","18446744073709551617"]}}'
)


def expected_alice():
    from worker.core.engine import AccountState, Pending, PositionState

    return AccountState(
        "alice", seq=7, collateral_units=1_250_000_000,
        positions={"BTC-PERP": PositionState(1000, 200_000), "ETH-PERP": PositionState(-500, 150_000, True, 300_000_000)},
        pending={"cross": Pending("0123456789abcdef0123456789abcdef", 1_700_000_000_500,
                                  [["liquidations", "alice", {"type": "liquidation", "n": 1}]])},
        emitted={"cross": [7, 1]}, in_call={"ETH-PERP"}, claim_units=2**64 + 1,  # beyond 64 bits: a string
        rounds={"r-1": ["25000000", "18446744073709551617"]})


def test_an_old_format_changelog_record_still_recovers():
    """Recovery of a changelog written before the compact format: the store builds the account
    from the record's bytes (what the table's raw value serializer gives it) holding the old dict,
    and a rewrite is compact. A value decoded by the JSON serializer that earlier versions of the
    worker declared is read the same."""
    import orjson
    from faust.serializers import codecs

    from worker.app import account_from_stored

    s = store()
    s.builder = account_from_stored  # as the worker sets it
    value = codecs.loads("raw", OLD_FORMAT_RECORD)
    assert value == OLD_FORMAT_RECORD
    s.apply_changelog_batch([event(0, 3, "alice", value)], same, same)
    built = s.take_built("alice", s.data["alice"])
    assert built == expected_alice()
    assert built.to_dict() == orjson.loads(OLD_FORMAT_RECORD)  # the old format is still written exactly by to_dict
    assert isinstance(built.to_record(), list)
    assert account_from_stored(codecs.loads("json", OLD_FORMAT_RECORD)) == built


def test_the_compact_record_round_trips_exactly_through_the_table_serializer():
    """Faust's recovery hangs ("Error in recovery") on a value its serializer does not round-trip:
    the compact record decodes to the same value, the same account and the same bytes again."""
    import orjson
    from faust.serializers import codecs

    from worker.core.engine import AccountState, PositionState
    from worker.wire import encode_bounded

    from worker.app import account_from_stored

    for account in (expected_alice(), AccountState("bob"), AccountState("carol", 2, 5, {}, claim_units=3)):
        record = account.to_record()
        data = encode_bounded(record)  # what the worker writes to the changelog
        assert codecs.loads("json", data) == record == orjson.loads(codecs.dumps("json", record))
        again = AccountState.from_record(codecs.loads("json", data))
        assert again == account and encode_bounded(again.to_record()) == data
        # the table's own serializer (raw: the table holds the record's bytes) and its reader
        assert codecs.loads("raw", codecs.dumps("raw", data)) == data
        assert account_from_stored(codecs.loads("raw", data)) == account
    # compact: an account with one cross position and nothing pending is 4 fields and its positions
    plain = AccountState("acct-0000001", 2, 5_000_000)
    plain.set_position("BTC-PERP", PositionState(1, 2))
    assert plain.to_record() == [3, "acct-0000001", 2, 5_000_000, [["BTC-PERP", 1, 2]]]
    assert len(encode_bounded(plain.to_record())) < len(encode_bounded(plain.to_dict())) // 2


def test_an_unknown_record_format_is_refused():
    import pytest

    from worker.core.engine import AccountState

    with pytest.raises(ValueError):
        AccountState.from_record([99, "x"])


def test_the_worker_s_accounts_changelog_is_read_back_as_the_bytes_written():
    """The worker's `accounts` table: its changelog's value serializer is raw (Faust replaces a
    schema's serializer with the one of the table's value_type unless that is bytes too), so that
    recovery and standby copies hold the record's bytes; its keys stay JSON, as the worker writes them."""
    from faust.serializers import codecs

    from worker.app import create_app
    from worker.core.engine import AccountState
    from worker.settings import resolve
    from worker.wire import encode_bounded

    _, runtime = create_app(resolve(environ={"RISK_BOOTSTRAP": "127.0.0.1:1"}))
    schema = runtime.accounts_table.changelog_topic.schema
    assert (schema.key_serializer, schema.value_serializer) == ("json", "raw")
    data = encode_bounded(AccountState("bob", 2, 5).to_record())
    assert codecs.loads(schema.value_serializer, data) == data
