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
