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


def request_messages(parts: int = 2) -> list[types.SimpleNamespace]:
    """The example crash's liquidations, as ``parts`` `insurance-requests` messages (offsets 0, 1, …)."""
    lines = (EXAMPLES / "crash.jsonl").read_bytes().splitlines()
    engine = Engine(load_params(EXAMPLES / "params.toml"), remote_settlement=True)
    items = [i for o in replay_lines(lines, engine) if o.topic == "insurance-requests" for i in o.value["items"]]
    assert len(items) >= parts
    cuts = [len(items) * k // parts for k in range(parts + 1)]
    return [types.SimpleNamespace(partition=0, offset=k, key=b"USD",
                                  value=orjson.dumps(fund_request(items[cuts[k]:cuts[k + 1]])))
            for k in range(parts)]


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


def test_the_settled_records_stay_in_memory_as_the_bytes_written_and_a_duplicate_reads_them_back():
    """The table's memory keeps each settled record as the bytes of its changelog record (not its
    outputs decoded, ~3× the size), the balance record as a dict; an item met again in a later
    message (a duplicate) re-publishes its stored outputs from those bytes, identical."""
    messages = request_messages()
    runtime, producer = runtime_with(Table())
    ledger, outputs = deliver(runtime, producer, messages[0])
    memory = runtime.fund_table.data
    written = {orjson.loads(key): value for _, key, value in ledger}
    settled = [key for key in written if key.startswith("settled:")]
    assert settled and all(memory[key] == written[key] and type(memory[key]) is bytes for key in settled)
    assert isinstance(memory["balance:USD"], dict)
    # the first message's items again, in a new message at offset 2: duplicates, nothing applied
    balance = runtime.ledger.fund.balance_units
    duplicate = types.SimpleNamespace(partition=0, offset=2, key=b"USD", value=messages[0].value)
    _, outputs_again = deliver(runtime, producer, duplicate)
    assert outputs_again == outputs and runtime.ledger.fund.balance_units == balance


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


class BatchingProducer:
    """Stands in for Faust's aiokafka producer as ``Runtime.send_batched`` uses it (``create_batch``,
    ``send_batch``): each batch's delivery is a future the test resolves (``deliver``) or fails."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []  # (topic, key, value) as batches are handed over
        self.in_flight: list[asyncio.Future] = []

    def _ensure_producer(self):  # noqa: ANN202
        return self

    async def partitions_for(self, topic):  # noqa: ANN001
        return set(range(4))

    def create_batch(self):  # noqa: ANN202
        records: list = []
        return types.SimpleNamespace(records=records, close=lambda: None, record_count=lambda: len(records),
                                     append=lambda key, value, timestamp: records.append((key, value)) or True)

    async def send_batch(self, batch, topic, partition):  # noqa: ANN001
        self.sent.extend((topic, key, value) for key, value in batch.records)
        future = asyncio.get_running_loop().create_future()
        future.topic = topic
        self.in_flight.append(future)
        return future

    def deliver(self, error: Exception | None = None, topic: str | None = None) -> int:
        """Resolve (or fail) every delivery in flight (of ``topic`` only, if given); how many."""
        futures = [f for f in self.in_flight if topic is None or f.topic == topic]
        self.in_flight = [f for f in self.in_flight if f not in futures]
        for future in futures:
            if error is None:
                future.set_result(types.SimpleNamespace(offset=0))
            else:
                future.set_exception(error)
        return len(futures)


def test_with_a_batching_producer_writes_are_delivered_while_the_next_messages_are_applied_in_order():
    """With Faust's producer the fund agent returns once a message's writes are handed to a task;
    FUND_MESSAGES_IN_FLIGHT messages' writes are under way at most (the next message waits). Each
    stream stays in order: a message's ledger is sent once the previous ledger is delivered (beside
    the previous message's outputs), its outputs once its own ledger and the previous outputs are
    delivered; an offset commit (``settle_fund_writes``, Faust's producer flush) waits for all of
    them, and a failed delivery is sent again in its place. What is sent is what the agent sends
    when it waits for each message (``FakeProducer``), in the same order per partition."""
    in_flight = app_module.FUND_MESSAGES_IN_FLIGHT
    assert in_flight >= 2
    messages = request_messages(parts=in_flight + 1)
    waiting, waiting_producer = runtime_with(Table())
    for message in messages:
        deliver(waiting, waiting_producer, message)

    async def scenario() -> list:
        producer = BatchingProducer()
        runtime = app_module.Runtime(resolve(environ={}), load_params(EXAMPLES / "params.toml"),
                                     types.SimpleNamespace(producer=producer))
        runtime.fund_table = Table()

        async def spin() -> None:  # let the tasks in flight run as far as they can
            for _ in range(20):
                await asyncio.sleep(0)

        await runtime.on_fund_request(messages[0])
        await spin()
        # returned with the ledger handed over, not delivered, and the outputs not sent yet
        assert producer.sent and {topic for topic, _, _ in producer.sent} == {CHANGELOG}
        first_ledger = list(producer.sent)
        commit = asyncio.ensure_future(runtime.settle_fund_writes())  # a commit waits for them
        for message in messages[1:in_flight]:
            await runtime.on_fund_request(message)  # applied meanwhile, its writes handed over...
        await spin()
        assert producer.sent == first_ledger  # ...its ledger waiting for the first one's delivery
        waiting_one = asyncio.ensure_future(runtime.on_fund_request(messages[in_flight]))  # the next one waits
        await spin()
        assert not waiting_one.done() and not commit.done()
        producer.deliver()  # the first ledger delivered: its outputs go, the second ledger beside them
        await spin()
        after = producer.sent[len(first_ledger):]
        assert {topic for topic, _, _ in after if topic != CHANGELOG} == {"insurance-fund", "liquidations"}
        second_ledger = [record for record in after if record[0] == CHANGELOG]
        first_outputs = [record for record in after if record[0] != CHANGELOG]
        assert second_ledger and second_ledger[0] not in first_ledger
        assert not waiting_one.done() and not commit.done()
        producer.deliver(topic=CHANGELOG)  # the second ledger delivered before the first outputs...
        await spin()
        assert [r for r in producer.sent[len(first_ledger):] if r[0] != CHANGELOG] == first_outputs  # ...the
        # second outputs wait for them
        producer.deliver(ConnectionError("broker unreachable"))  # the first outputs fail: sent again
        for _ in range(3000):  # (the retry waits its backoff first)
            if commit.done():
                break
            await asyncio.sleep(0.01)
            producer.deliver()
        assert runtime.counters["publish_retries"] >= 1
        assert producer.sent.count(first_outputs[0]) == 2  # the failed ones, again
        await waiting_one
        for _ in range(3000):
            if not producer.in_flight and all(writes.done() for _, writes in runtime._fund_writes):
                break
            producer.deliver()
            await spin()
        await runtime.settle_fund_writes()
        assert not producer.in_flight and not runtime._fund_writes
        return producer.sent

    def by_key(records: list) -> dict:  # (topic, key) → values in order: one partition's order
        grouped: dict = {}
        for topic, key, value in records:
            grouped.setdefault((topic, key), []).append(value)
        return grouped

    def once(records: list, last: bool = False) -> list:  # each record kept where it was first (last) sent
        kept = list(dict.fromkeys(reversed(records) if last else records))
        return kept[::-1] if last else kept

    sent = asyncio.run(scenario())
    # the same records; in the same order per key (so per partition), the ledger's in full, whether a
    # record sent again is counted where it was first sent or where it was sent last
    for records in (once(sent), once(sent, last=True)):
        assert sorted(records) == sorted(waiting_producer.sent)
        assert by_key(records) == by_key(waiting_producer.sent)
        assert [s for s in records if s[0] == CHANGELOG] == [s for s in waiting_producer.sent if s[0] == CHANGELOG]


def test_a_publish_packs_its_fund_requests_in_order_into_fewer_bounded_messages():
    """``Runtime._pack_requests``: the items of a publish's `fund_request`s go out in order, in
    messages of at most REQUEST_MAX_ITEMS items and REQUEST_MAX_BYTES (a larger one is halved), where
    the first request was; the other outputs keep their order; one request goes out as it is."""
    from worker.core.outputs import Output

    runtime, _ = runtime_with(Table())
    items = [{"liquidation_id": f"{i:032x}", "account_id": f"a{i}", "scope": "cross", "ts": i,
              "trigger": ["mark", "BTC-PERP", 1, 100], "plan": [True, 0, "0"] + ["1" * (i % 7)] * 11}
             for i in range(1_500)]
    allocation = Output("liquidations", "a0", {"type": "liquidation", "n": 1})
    call = Output("margin-calls", "a1", {"type": "margin_call", "n": 2})
    outputs = [allocation] + [Output("insurance-requests", "USD", fund_request(items[i:i + 200]))
                              for i in range(0, len(items), 200)] + [call]
    packed = runtime._pack_requests(outputs)
    requests = [(o, value) for o, _, value in packed if o.topic == "insurance-requests"]
    assert [o for o, _, _ in packed] == [allocation] + [o for o, _ in requests] + [call]
    assert [len(o.value["items"]) for o, _ in requests] == [640, 640, 220]  # not 8 of 200
    assert [i for o, _ in requests for i in o.value["items"]] == items
    assert all(key == o.key.encode() and orjson.loads(value) == o.value for o, key, value in packed)
    # a message that would pass REQUEST_MAX_BYTES is halved until it does not
    big = [{**item, "plan": ["x" * 2_000]} for item in items[:640]]  # ~2 KB each: 1.3 MB in 640
    halves = runtime._pack_requests([Output("insurance-requests", "USD", fund_request(big[:320])),
                                     Output("insurance-requests", "USD", fund_request(big[320:]))])
    assert [len(o.value["items"]) for o, _, _ in halves] == [160, 160, 160, 160]
    assert all(len(value) <= app_module.REQUEST_MAX_BYTES for _, _, value in halves)
    assert [i for o, _, _ in halves for i in o.value["items"]] == big
    # a single request (a tick's few liquidations) goes out as the core made it
    [(single, _, value)] = runtime._pack_requests([outputs[1]])
    assert single is outputs[1] and orjson.loads(value) == outputs[1].value
