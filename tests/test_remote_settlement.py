"""The streaming split (account engine + single-writer fund agent) gives replay's events (SPEC §5, §7)."""
import orjson

from tests.fixtures import EXAMPLES
from worker.core.engine import Engine
from worker.core.fund import FundLedger
from worker.core.liquidation import plan_to_list
from worker.core.params import load_params
from worker.replay import format_output, replay_lines


def run_split(lines):
    params = load_params(str(EXAMPLES / "params.toml"))
    engine = Engine(params, remote_settlement=True)
    ledger = FundLedger(params)
    published = []
    for output in replay_lines(lines, engine):
        if output.topic == "insurance-requests":
            for item in output.value["items"]:
                published.extend(ledger.apply(item)[0])
        else:
            published.append(output)
    return engine, ledger, published


def test_split_settlement_publishes_the_same_liquidations_and_fund_entries_as_replay():
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    local = list(replay_lines(lines, Engine(load_params(str(EXAMPLES / "params.toml")))))
    _, _, split = run_split(lines)
    for topic in ("liquidations", "insurance-fund"):
        expected = sorted(format_output(o) for o in local if o.topic == topic)
        assert expected and sorted(format_output(o) for o in split if o.topic == topic) == expected


def test_a_redelivered_request_moves_the_fund_once_and_republishes_identical_bytes():
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    engine, ledger, _ = run_split(lines)
    balance = ledger.fund.balance_units
    [request] = [o for o in engine.pending_outputs() if o.topic == "insurance-requests"]
    for item in request.value["items"]:
        again, moved = ledger.apply(item)
        assert moved is False
        assert [o.value for o in again] == [v for _, _, v in ledger.settled[item["liquidation_id"]]["outputs"]]
    assert ledger.fund.balance_units == balance


def test_pending_liquidations_are_republished_with_identical_bytes():
    from tests.fixtures import balance, make_params, mark, position
    from worker.core.outputs import Source

    # solvent partial liquidation (flat 0.1 %), never acknowledged: still pending
    engine = Engine(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'), remote_settlement=True)
    src = Source("x", 0, 0, None, b"")
    engine.process_mark(mark("BTC-PERP", "20000.0", 1, 1), src)
    engine.process_positions([balance("a", "1000", 1, 1), position("a", "BTC-PERP", "1.000", "20000.0", 2, 1)], src)
    published = engine.process_mark(mark("BTC-PERP", "19050.0", 2, 2), src)
    assert [o.topic for o in published] == ["liquidations", "insurance-requests"]
    again = engine.pending_outputs()
    assert sorted(format_output(o) for o in again) == sorted(format_output(o) for o in published)


def test_a_cascade_sends_its_fund_requests_in_messages_of_at_most_200_liquidations():
    from tests.fixtures import balance, make_params, mark, position
    from worker.core.engine import FUND_REQUEST_ITEMS
    from worker.core.outputs import Source

    # 450 identical accounts (wallet 1 000, long 1 BTC at 20 000, flat 0.1 %) all liquidated at 19 050
    engine = Engine(make_params(btc_penalty='{model = "flat", min_ppm = 1000}'), remote_settlement=True)
    src = Source("x", 0, 0, None, b"")
    engine.process_mark(mark("BTC-PERP", "20000.0", 1, 1), src)
    for i in range(450):
        engine.process_positions([balance(f"a{i}", "1000", 1, 1), position(f"a{i}", "BTC-PERP", "1.000", "20000.0", 2, 1)],
                                 src)
    published = engine.process_mark(mark("BTC-PERP", "19050.0", 2, 2), src)
    requests = [o.value["items"] for o in published if o.topic == "insurance-requests"]
    assert FUND_REQUEST_ITEMS == 200
    assert [len(items) for items in requests] == [200, 200, 50]
    assert len({item["liquidation_id"] for items in requests for item in items}) == 450
    assert sum(o.topic == "liquidations" for o in published) == 450


def test_a_plan_survives_its_json_form_unchanged():
    import dataclasses

    from worker.core.liquidation import plan_from_dict, plan_from_json, plan_to_dict, plan_to_list

    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    engine = Engine(load_params(str(EXAMPLES / "params.toml")), remote_settlement=True)
    items = [item for o in replay_lines(lines, engine) if o.topic == "insurance-requests" for item in o.value["items"]]
    assert items
    for item in items:
        plan = plan_from_json(item["plan"])
        reference = dataclasses.asdict(plan)
        # a tuple in the dataclass, an array in JSON; amounts (*_units) as integer strings, since a
        # product of bounded inputs may exceed the 64-bit integers of JSON encoders
        reference["closes"] = [{k: str(v) if k.endswith("_units") else v for k, v in c.items()}
                               for c in reference["closes"]]
        reference.update({k: str(v) for k, v in reference.items() if k.endswith("_units")})
        # the dict form: the fields in their order, closes last; the compact form requests carry:
        # the dict form's values in that order, closes as arrays of their fields' values
        names = [f.name for f in dataclasses.fields(plan) if f.name != "closes"]
        assert list(plan_to_dict(plan)) == names + ["closes"]
        compact = [reference[name] for name in names] + [[list(c.values()) for c in reference["closes"]]]
        assert plan_to_list(plan) == item["plan"] == compact
        assert plan_to_dict(plan) == reference
        assert plan_from_dict(reference) == plan_from_json(reference) == plan_from_json(compact) == plan


def test_an_interrupted_attempt_is_applied_again_at_its_position_and_a_duplicate_elsewhere_is_not():
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    params = load_params(str(EXAMPLES / "params.toml"))
    engine = Engine(params, remote_settlement=True)
    items = [i for o in replay_lines(lines, engine) if o.topic == "insurance-requests" for i in o.value["items"]]
    bankrupt = next(i for i in items if i["plan"][0])  # (the compact plan's first field: bankrupt)
    ledger = FundLedger(params)
    first, moved = ledger.apply(bankrupt, at=[7, 0])
    balance = ledger.fund.balance_units
    assert moved and balance < params.insurance_initial_units  # the cover was paid
    # a crash after the settled record but before the balance record: the balance is restored from
    # the older record, and the same position is applied afresh, identically
    ledger.fund.balance_units = params.insurance_initial_units
    again, moved_again = ledger.apply(bankrupt, at=[7, 0])
    assert moved_again and [o.value for o in again] == [o.value for o in first]
    assert ledger.fund.balance_units == balance
    # the same liquidation re-published in a later request message is a duplicate
    duplicate, moved_dup = ledger.apply(bankrupt, at=[9, 3])
    assert not moved_dup and [o.value for o in duplicate] == [o.value for o in first]
    assert ledger.fund.balance_units == balance


def test_requests_of_the_older_dict_form_settle_as_the_compact_form_does():
    """Requests written before the compact plan (an object per plan) may still be in the topic or in
    a pending state: the fund agent applies them with the same outputs, byte for byte."""
    from worker.core.liquidation import plan_from_json, plan_to_dict

    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    params = load_params(str(EXAMPLES / "params.toml"))
    engine = Engine(params, remote_settlement=True)
    items = [i for o in replay_lines(lines, engine) if o.topic == "insurance-requests" for i in o.value["items"]]
    assert any(i["plan"][0] for i in items) and not all(i["plan"][0] for i in items)  # bankrupt and solvent
    older = [{**i, "plan": plan_to_dict(plan_from_json(i["plan"]))} for i in items]
    assert all(isinstance(i["plan"], dict) for i in older)
    compact_ledger, dict_ledger, mixed_ledger = FundLedger(params), FundLedger(params), FundLedger(params)
    for index, (item, old) in enumerate(zip(items, older)):
        at = [0, index]
        compact, _ = compact_ledger.apply(item, at=at)
        as_dict, _ = dict_ledger.apply(old, at=at)
        mixed, _ = mixed_ledger.apply(old if index % 2 else item, at=at)
        assert [format_output(o) for o in compact] == [format_output(o) for o in as_dict] == [
            format_output(o) for o in mixed]
    assert compact_ledger.fund.balance_units == dict_ledger.fund.balance_units == mixed_ledger.fund.balance_units


def test_a_pending_state_written_with_the_older_dict_plan_is_taken_over_and_settled():
    """An `accounts` record written before the compact plan holds its pending request with the plan
    as an object: a takeover republishes it as it is and the fund agent settles it as it would have."""
    from worker.core.engine import AccountState
    from worker.core.liquidation import plan_from_json, plan_to_dict

    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    params = load_params(str(EXAMPLES / "params.toml"))
    engine = Engine(params, remote_settlement=True)
    list(replay_lines(lines, engine))
    records = {}
    for account_id, account in engine.accounts.items():
        record = account.to_record()
        # pending entries [scope, seq, n, ts, outputs] (format 3; [scope, id, ts, outputs] before):
        # the outputs last, their plans written as dicts
        for entry in record[6] if len(record) > 6 else ():
            for topic, _, value in entry[-1]:
                if topic == "insurance-requests":
                    value["items"] = [{**i, "plan": plan_to_dict(plan_from_json(i["plan"]))} for i in value["items"]]
        records[account_id] = orjson.loads(orjson.dumps(record))  # (as the changelog carries it)
    older = {account_id: AccountState.from_record(r) for account_id, r in records.items()}
    taker = Engine(params, remote_settlement=True)
    republished, _ = taker.take_over(older)
    items = [i for o in republished if o.topic == "insurance-requests" for i in o.value["items"]]
    assert items and all(isinstance(i["plan"], dict) for i in items)
    expected = FundLedger(params)
    settled = FundLedger(params)
    for index, item in enumerate(items):
        compact = {**item, "plan": plan_to_list(plan_from_json(item["plan"]))}
        assert [format_output(o) for o in settled.apply(item, at=[0, index])[0]] == [
            format_output(o) for o in expected.apply(compact, at=[0, index])[0]]
