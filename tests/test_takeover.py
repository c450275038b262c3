"""A takeover in two steps (Engine.take_over: the accounts new to the worker, then the kept ones)
decides exactly what load_accounts + evaluate_all decided, and leaves an index that finds the same
accounts on the ticks that follow."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace

import orjson

from tests.fixtures import cascade_scenario, make_params
from worker.app import partition_for
from worker.core.engine import AccountState, Engine
from worker.replay import replay_lines


def outputs_key(outputs: list) -> Counter:
    """Outputs as a multiset; fund requests as their items (two steps batch them in two messages)."""
    found: Counter = Counter()
    for o in outputs:
        if o.topic == "insurance-requests":
            found.update((o.topic, o.key, orjson.dumps(item)) for item in o.value["items"])
        else:
            found[(o.topic, o.key, orjson.dumps(o.value))] += 1
    return found


def fresh(params, source: Engine) -> Engine:
    engine = Engine(params, remote_settlement=True)
    engine.marks = {symbol: replace(state) for symbol, state in source.marks.items()}
    engine.newest_ts = source.newest_ts
    return engine


def copies(accounts: dict[str, AccountState]) -> dict[str, AccountState]:
    return {key: AccountState.from_record(orjson.loads(orjson.dumps(a.to_record()))) for key, a in accounts.items()}


def test_take_over_in_two_steps_matches_load_and_evaluate_all():
    params = make_params(initial_balance="1000000", pending_timeout_ms=30_000)
    setup, cascade = cascade_scenario(accounts=400, ticks=40)
    before = Engine(params, remote_settlement=True)
    list(replay_lines(setup + cascade[:15], before))  # a worker dies here, liquidations pending
    after_kill = cascade[15:]
    source = fresh(params, before)  # marks only: the ticks its accounts missed while nobody owned them
    list(replay_lines(after_kill[:3], source))
    assert any(a.pending for a in before.accounts.values())

    reference = fresh(params, source)
    reference.load_accounts(copies(before.accounts))
    expected_republish = reference.pending_outputs()
    expected = reference.evaluate_all()

    taker = fresh(params, source)
    accounts = copies(before.accounts)
    new = {k: a for k, a in accounts.items() if partition_for(k.encode(), 4) in (0, 3)}
    kept = {k: a for k, a in accounts.items() if k not in new}
    assert new and kept
    republish_new, out_new = taker.take_over(new)
    republish_kept, out_kept = taker.take_over(kept)

    assert outputs_key(republish_new + republish_kept) == outputs_key(expected_republish)
    assert outputs_key(out_new + out_kept) == outputs_key(expected)
    assert expected  # the missed ticks did liquidate someone
    assert {o.key for o in out_new if o.topic == "liquidations"} <= set(new)
    # the index built by take_over finds what the reference finds, tick after tick
    later_reference = list(replay_lines(after_kill[3:], reference))
    later_taker = list(replay_lines(after_kill[3:], taker))
    assert outputs_key(later_taker) == outputs_key(later_reference)
    assert len(later_reference) > 0
    assert taker.open_long == reference.open_long and taker.open_short == reference.open_short
