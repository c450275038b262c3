"""The fund agent settles a `fund_request` message in one pass (worker/app.py ``on_fund_request``):
per message one ledger write — its settled records, then its balance record — and its outputs
after; each liquidation id applied once whatever is delivered again, with identical bytes."""
from __future__ import annotations

import asyncio
import types

import orjson

import worker.app as app_module
from tests.fixtures import EXAMPLES, FakeProducer
from topics.codec import decode
from worker.core.engine import Engine, fund_request
from worker.core.params import load_params
from worker.replay import replay_lines
from worker.settings import resolve

CHANGELOG = "fund-ledger-changelog"


class Table:
    """Stands in for the `fund-ledger` table: its memory, and its changelog topic's name."""

    name = "fund-ledger"

    def __init__(self, data: dict | None = None) -> None:
        self.data = dict(data or {})
        self.changelog_topic = types.SimpleNamespace(get_topic_name=lambda: CHANGELOG)

    def get(self, key, default=None):  # noqa: ANN001
        return self.data.get(key, default)


def runtime_with(table: Table) -> tuple[app_module.Runtime, FakeProducer]:
    producer = FakeProducer()
    runtime = app_module.Runtime(resolve(environ={}), load_params(EXAMPLES / "params.toml"),
                                 types.SimpleNamespace(producer=producer))
    runtime.fund_table = table
    return runtime, producer


def request_messages() -> list[types.SimpleNamespace]:
    """The example crash's liquidations, as two `insurance-requests` messages (offsets 0 and 1)."""
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    engine = Engine(load_params(EXAMPLES / "params.toml"), remote_settlement=True)
    items = [i for o in replay_lines(lines, engine) if o.topic == "insurance-requests" for i in o.value["items"]]
    assert len(items) >= 2
    half = len(items) // 2
    return [types.SimpleNamespace(partition=0, offset=offset, key=b"USD", value=orjson.dumps(fund_request(part)))
            for offset, part in enumerate((items[:half], items[half:]))]


def deliver(runtime: app_module.Runtime, producer: FakeProducer, message) -> tuple[list, list]:  # noqa: ANN001
    """(changelog records, outputs) that delivering ``message`` sent."""
    before = len(producer.sent)
    asyncio.run(runtime.on_fund_request(message))
    sent = producer.sent[before:]
    return [s for s in sent if s[0] == CHANGELOG], [s for s in sent if s[0] != CHANGELOG]


def test_one_ledger_write_per_message_and_a_message_delivered_again_moves_nothing():
    messages = request_messages()
    runtime, producer = runtime_with(Table())
    first = [deliver(runtime, producer, m) for m in messages]
    balance = runtime.ledger.fund.balance_units
    for message, (ledger, outputs) in zip(messages, first):
        items = decode(message.value)["items"]
        # one settled record per liquidation, then the balance record, last: len(items) + 1 records
        assert [orjson.loads(k) for _, k, _ in ledger] == [f"settled:{i['liquidation_id']}" for i in items] + [
            "balance:USD"]
        record = orjson.loads(ledger[-1][2])
        assert (record["offset"], record["done"]) == (message.offset, len(items))
        assert outputs  # each liquidation publishes at least its allocation or a fund entry
    assert orjson.loads(first[-1][0][-1][2])["balance"] == str(balance)  # (an integer string)
    assert runtime.fund_table.data["balance:USD"]["offset"] == 1
    # both messages delivered again (uncommitted offsets after a rebalance): the ledger is not
    # written (its position never goes back), the fund does not move, the same bytes go out again
    again = [deliver(runtime, producer, m) for m in messages]
    assert [ledger for ledger, _ in again] == [[], []]
    assert [outputs for _, outputs in again] == [outputs for _, outputs in first]
    assert runtime.ledger.fund.balance_units == balance
    assert runtime.fund_table.data["balance:USD"]["offset"] == 1 and runtime.fund_table.data[
        "balance:USD"]["done"] == len(decode(messages[1].value)["items"])


def test_a_crash_between_the_settled_records_and_the_balance_record_gives_the_same_outputs():
    messages = request_messages()
    runtime, producer = runtime_with(Table())
    deliver(runtime, producer, messages[0])
    after_first = dict(runtime.fund_table.data)
    ledger, outputs = deliver(runtime, producer, messages[1])
    balance = runtime.ledger.fund.balance_units
    # recovery sees the first message's ledger and the second's settled records, not its balance
    # record (the last record of its write): the second message is applied again at its positions
    recovered = dict(after_first)
    for _, key, value in ledger[:-1]:
        recovered[orjson.loads(key)] = orjson.loads(value)
    taker, taker_producer = runtime_with(Table(recovered))
    ledger_again, outputs_again = deliver(taker, taker_producer, messages[1])
    assert outputs_again == outputs
    assert ledger_again == ledger
    assert taker.ledger.fund.balance_units == balance
