"""The streaming worker: a Faust app around the pure core (SPEC §1, §4, §5, §6, §8).

* `positions` (partitioned by account) → the positions agent (concurrency 1) → the engine;
  account state lives in the changelog-backed `accounts` table.
* `mark-prices` → every worker reads all partitions with its own aiokafka consumer (no group),
  catches up to the end before it evaluates, then applies ticks as they come.
* fund movements → the internal single-partition `insurance-requests` topic → the fund agent, the
  single writer of the insurance-fund ledger (tables `fund-ledger`, `fund-settled`).

Agents only decode, call the core, persist what changed, then publish. State is written (and, when
money moves, delivered) before the outputs that depend on it; a pending liquidation keeps what it
published so a takeover publishes it again with identical bytes (at-least-once, SPEC §8).
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from typing import Any, Awaitable, Callable

import faust
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from topics.codec import DecodeError, EncodeError, decode, encode, encode_bounded, encode_kept, fragment

from .core.engine import AccountState, Engine, fund_request
from .core.fund import FundLedger
from .core.outputs import Output, Source
from .core.params import Params, load_params
from .core.sharing import SharingError, forget_rounds_except, restore_round_claims, snapshot_total
from .faust_compat import flush_now, patch_fetch_max_wait, patch_recovery_highwaters
from .faust_monitor import LeanMonitor
from .kafka_security import new_consumer
from .rounds import BROADCAST, RoundCoordinator, RoundParticipant, hold_accounts, item_key
from .settings import WorkerSettings
from .gc_tuning import freeze_after_full_collections, tune_collector
from .store import register as register_store
from .typed_input import position_updates, record_elements
from .wire import encode_output

log = logging.getLogger("worker")
MONEY_TOPICS = frozenset({"liquidations", "insurance-requests", "insurance-fund", "loss-sharing"})
ACCOUNT_SHARING_EVENTS = frozenset({"haircut", "claim_repayment"})  # loss-sharing events about one account
DEFER_MAX_ACCOUNTS = 10_000  # changed accounts held back from the changelog at most
PERSIST_CHUNK_ACCOUNTS = 1_000  # accounts written per hold of the state lock (persist_dirty)
# The fund requests of one publish are sent in messages of REQUEST_MAX_ITEMS items, fewer where that
# would make a message larger than REQUEST_MAX_BYTES (far below the 1 MiB an input message may have).
REQUEST_MAX_ITEMS = 640
REQUEST_MAX_BYTES = 512 * 1024
# request messages whose fund writes (ledger, then outputs) may be under way at once: one message's
# ledger is delivered beside the previous one's outputs while the agent applies the next messages
# (a cascade's 10 000 liquidations, median of 5: 1.10 s with two, 1.01 s with three; docs/benchmarks.md)
FUND_MESSAGES_IN_FLIGHT = 3


def accounts_named(outputs: list[Output]) -> set[str] | None:
    """The accounts the money outputs among ``outputs`` are about (a liquidation's key, a fund
    request's liquidation items, a haircut's or a claim repayment's key: the account whose claim it
    changed); None when one of them names none (a round's summary, a request carrying a tick marker
    or a partition's report): then every changed account goes first. Total on any shape: it runs
    inside the publish retry, where an exception would retry forever."""
    named: set[str] = set()
    for output in outputs:
        if output.topic == "liquidations":
            named.add(output.key)
        elif output.topic == "loss-sharing" and isinstance(output.value, dict) and \
                output.value.get("type") in ACCOUNT_SHARING_EVENTS:
            named.add(output.key)  # keyed by its account_id (SPEC §6)
        elif output.topic == "insurance-requests":
            items = output.value.get("items") if isinstance(output.value, dict) else None
            if not isinstance(items, list):
                return None
            for item in items:
                account_id = item.get("account_id") if isinstance(item, dict) else None
                if not isinstance(account_id, str) or item.get("kind", "liquidation") != "liquidation":
                    return None
                named.add(account_id)
        elif output.topic in MONEY_TOPICS:
            return None
    return named or None  # no money output at all (a round's empty chunk): every changed account



_NO_HEADERS: list[tuple[str, bytes]] = []  # (read, never changed, by the record builder)


def fill_batch(batch: Any, items: list[tuple[bytes, bytes | None]], start: int) -> int:
    """Append ``items[start:]`` to an aiokafka ``BatchBuilder`` until it is full (then closed, as its
    ``append`` closes it); returns the index of the first item not appended. The same records as
    ``batch.append(key=, value=, timestamp=None)`` one by one, but through the record builder the
    batch wraps (its C ``append``), without the wrapper's checks and serializer calls per record:
    ~1 540 instructions (0.27 µs) less a record, of a round's 200 000 (tests/test_batch_fill.py
    compares the batches built both ways). A batch of another shape (a serializer set, no builder)
    goes through ``append``. (It reads the batch's private ``_builder``, ``_relative_offset``:
    aiokafka ~=0.14, pinned in pyproject.toml.)"""
    builder = getattr(batch, "_builder", None)
    offset = getattr(batch, "_relative_offset", None)
    if builder is None or type(offset) is not int or getattr(batch, "_closed", True) or \
            getattr(batch, "_key_serializer", None) is not None or getattr(batch, "_value_serializer", None) is not None:
        for index in range(start, len(items)):
            key, value = items[index]
            if batch.append(key=key, value=value, timestamp=None) is None:
                return index
        return len(items)
    append = builder.append
    index, end = start, len(items)
    try:
        while index < end:
            key, value = items[index]
            if append(offset, None, key=key, value=value, headers=_NO_HEADERS) is None:
                batch.close()
                break
            offset += 1
            index += 1
    finally:
        batch._relative_offset = offset
    return index


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: murmur2(key) & 0x7fffffff mod partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class PartitionCache(dict):
    """account → its positions partition (murmur2 is pure Python): ``cache[account]`` computes it on
    the first lookup and keeps it, a hit costing one dict lookup on the hot paths (a round's 200 000
    records); ``get`` looks without computing."""

    def __init__(self, partitions: int) -> None:
        super().__init__()
        self.partitions = partitions
        self._acceptors: dict[int, Callable[[str], bool]] = {}

    def __missing__(self, account_id: str) -> int:
        partition = self[account_id] = partition_for(account_id.encode(), self.partitions)
        return partition

    def holds(self, account_id: str, partition: int) -> bool:
        """Whether the account belongs to ``partition``; cached only if it does (an account of
        another worker's partition is computed each time, not kept)."""
        known = self.get(account_id)
        if known is not None:
            return known == partition
        if partition_for(account_id.encode(), self.partitions) != partition:
            return False
        self[account_id] = partition
        return True

    def acceptor(self, partition: int) -> Callable[[str], bool]:
        """``holds(·, partition)`` as one function, made once per partition: a known account (the
        common case) costs one interpreted call and a dict lookup."""
        accept = self._acceptors.get(partition)
        if accept is None:
            get, holds = self.get, self.holds

            def accept(account_id: str) -> bool:
                known = get(account_id)
                return known == partition if known is not None else holds(account_id, partition)

            self._acceptors[partition] = accept
        return accept


class Runtime:
    """Everything one worker process holds besides the Faust machinery."""

    def __init__(self, settings: WorkerSettings, params: Params, app: faust.App) -> None:
        self.settings = settings
        self.params = params
        self.app = app
        self.engine = Engine(params, remote_settlement=True)
        self.ledger: FundLedger | None = None
        self.marks_ready = asyncio.Event()
        self.owned: set[int] = set()  # positions partitions this worker owns now
        self.counters = self.engine.counters
        self.accounts_table: Any = None
        self.fund_table: Any = None
        self.metrics: Any = None  # set by metrics.install
        # one publisher at a time: the mark reader, the positions agent and a revocation must not
        # interleave their state writes and sends (a revocation waits for a publish in flight)
        self.publish_lock = asyncio.Lock()
        # one writer of account state at a time (persist_dirty), from the commit's flush too
        self.state_lock = asyncio.Lock()
        self._mark_task: asyncio.Future | None = None
        self.assigned = False  # the current assignment is recovered (cleared by a revocation)
        # loss sharing across partitions (SPEC §5.1, §5.2; worker/rounds.py): the coordinator runs
        # where the fund agent runs; every worker is a participant for the partitions it owns
        self.sharing = params.loss_sharing_mode == "haircut"
        self.coordinator: RoundCoordinator | None = None
        self.participant = RoundParticipant(self) if self.sharing else None
        self.snapshots_table: Any = None
        self.fund_next_offset = 0  # the fund agent applied `insurance-requests` up to here
        # request messages' ledger writes and outputs being delivered, oldest first: per message, the
        # future of its ledger's delivery and the task delivering both (``settle_fund_writes``)
        self._fund_writes: list[tuple[asyncio.Future[None], asyncio.Future[None]]] = []
        self._positions_publish: asyncio.Future[None] | None = None  # the positions agent's publish in flight
        self._partition_of = PartitionCache(settings.partitions)  # account → positions partition
        self.mark_progress_at: float | None = None  # monotonic time the mark reader last completed a poll
        # wall-clock marks (time.time()) of the last rebalance and the takeover's cost, in /stats
        self.rebalance: dict[str, Any] = {}
        # partitions and accounts held when a rebalance revoked them, to keep what stays ours
        self._kept: tuple[set[int], dict[str, AccountState]] = (set(), {})

    def stats(self) -> dict[str, Any]:
        """Progress and counters, for operators, the demo and the lockstep test feeder."""
        return {
            "counters": dict(self.counters),
            "owned_partitions": sorted(self.owned),
            "marks_ready": self.marks_ready.is_set(),
            "accounts": len(self.engine.accounts),
            "fund_balance_units": None if self.ledger is None else self.ledger.fund.balance_units,
            "ready": self.readiness()["ready"],
            "coordinator": None if self.coordinator is None else {**self.coordinator.stats(),
                                                                  "next_offset": self.fund_next_offset},
            "participant": None if self.participant is None else self.participant.stats(),
            "rebalance": dict(self.rebalance),
            # changelog offset the local `accounts` store holds, by partition (active and standby)
            "table_offsets": self._table_offsets(),
        }

    def readiness(self, now: float | None = None) -> dict[str, Any]:
        """/ready: marks caught up, partitions assigned and recovered, and the mark reader completed a
        poll within ``ready_stall_s`` (a reader retrying a publish forever does not)."""
        now = time.monotonic() if now is None else now
        idle = None if self.mark_progress_at is None else max(0.0, now - self.mark_progress_at)
        checks = {
            "marks_caught_up": self.marks_ready.is_set(),
            "partitions_assigned": self.assigned,
            "mark_reader_progressing": idle is not None and idle <= self.settings.ready_stall_s,
        }
        return {"ready": all(checks.values()), **checks,
                "mark_reader_idle_s": None if idle is None else round(idle, 3)}

    def _table_offsets(self) -> dict[int, int]:
        """Changelog offset this worker holds or has fetched (a standby applies in batches; a
        rebalance applies what was fetched first), by partition, for active and standby partitions."""
        store = None if self.accounts_table is None else self.accounts_table.data
        if not hasattr(store, "offsets"):
            return {}
        held = store.offsets()
        topic = self.accounts_table.changelog_topic.get_topic_name()
        for tp, offset in getattr(self.app.tables.recovery, "standby_offsets", {}).items():
            if tp.topic == topic and offset is not None and tp.partition in held:
                held[tp.partition] = max(held[tp.partition], offset)
        return held

    # ----------------------------------------------------------------- publish
    async def publish(self, outputs: list[Output], first_emission: bool = True) -> None:
        """Publish outputs. When money moves, the changed accounts are written and delivered first;
        otherwise their changelog writes are coalesced until the next money move, the producer
        flush that precedes every offset commit, a rebalance, or DEFER_MAX_ACCOUNTS.
        ``first_emission=False`` (re-publication after a takeover) is not counted again in metrics."""
        async with self.publish_lock:
            sent = await self._publish(outputs)
        if self.metrics is not None and first_emission:
            self.metrics.observe_outputs(sent)

    async def _publish(self, outputs: list[Output]) -> list[Output]:
        if any(o.topic in MONEY_TOPICS for o in outputs):
            # the changed accounts delivered, then the outputs delivered (a liquidation does not
            # wait for the producer's linger), each in producer batches: one wait each per message
            return await self._publish_batched(outputs)
        if len(self.engine.dirty) >= DEFER_MAX_ACCOUNTS:
            await self.persist_dirty()
        return await self._send(outputs)

    async def _send(self, outputs: list[Output]) -> list[Output]:
        """Send each output as encoded by ``encode_output`` (an unpublishable one becomes its stub
        dead letter); returns what was sent."""
        sent = []
        for output in outputs:
            output, key, value = encode_output(self.engine, output)
            await self.app.producer.send(self.settings.topic(output.topic), key, value, None, None, None)
            sent.append(output)
        return sent

    async def publish_retrying(self, outputs: list[Output]) -> None:
        """Publish, retrying transient broker errors with backoff. Content errors cannot reach
        here (``encode_output`` stubs them), so a retry is only ever waiting for the broker; the
        engine already recorded these outputs (pending liquidations), so they are not given up."""
        await self.retrying(lambda: self.publish(outputs), "publishing")

    async def retrying(self, attempt: Callable[[], Awaitable[Any]], what: str) -> Any:
        """``await attempt()`` until it does not raise, with backoff (0.1 s doubling to 5 s)."""
        delay = 0.1
        while True:
            try:
                return await attempt()
            except Exception:
                log.exception("%s failed; retrying in %.1f s", what, delay)
                self.counters["publish_retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def persist_dirty(self, only: set[str] | None = None) -> int:
        """Write every changed account (of ``only`` if given; the others stay changed) to the
        `accounts` changelog, in producer batches, delivered when it returns; returns how many.
        One writer at a time (``state_lock``, from taking the changed accounts to their delivery):
        a later write is never older than an earlier one.

        Every changed account (the commit's flush, a rebalance): in chunks of PERSIST_CHUNK_ACCOUNTS,
        the lock released between them. Building a record holds the event loop (~10 µs an
        account), so one flush of thousands of deferred accounts would hold a tick's liquidation
        (and the mark reader) for tens of milliseconds; between chunks a waiting writer goes first
        (asyncio.Lock is first come, first served). The accounts of a money move (``only``) go in
        one hold: a cascade's are all needed before its outputs."""
        chunk = PERSIST_CHUNK_ACCOUNTS if only is None else 0
        wanted: list[str] | None = None
        written = 0
        while wanted is None or wanted:
            async with self.state_lock:
                if wanted is None:
                    # taken under the lock: an account another writer took and failed to deliver is
                    # back among the changed ones by then (else a commit could pass it by)
                    wanted = sorted(self.engine.dirty if only is None else only)
                taken, wanted = (wanted[:chunk], wanted[chunk:]) if chunk else (wanted, [])
                written += await self._write_accounts(taken)
        return written

    async def _write_accounts(self, account_ids: list[str]) -> int:
        """``persist_dirty``'s write of these accounts (those still changed), the state lock held."""
        dirty, accounts = self.engine.dirty, self.engine.accounts
        taken = [a for a in account_ids if a in dirty]
        dirty.difference_update(taken)
        changed = [accounts[a] for a in taken if a in accounts]
        if not changed:
            return 0
        try:
            records = self._account_records(changed)
            offsets = await self.send_batched(records)
        except BaseException:  # a broker error: all of them stay dirty for the retry (a rewrite is harmless)
            dirty.update(a.account_id for a in changed)
            raise
        self._track_offsets(self.accounts_table, offsets)
        return len(changed)

    persist_dirty_batched = persist_dirty  # (the loss-sharing rounds' name for it)

    @staticmethod
    def _track_offsets(table: Any, offsets: dict[tuple[str, int], int]) -> None:
        """The table's store learns which changelog offset it holds (as Faust's own writes report it)."""
        store = table.data
        if not hasattr(store, "set_persisted_offset"):
            return
        topic = table.changelog_topic.get_topic_name()
        for (record_topic, partition), offset in offsets.items():
            if record_topic == topic:
                store.set_persisted_offset(TopicPartition(topic, partition), offset)

    def _account_records(self, accounts: list[AccountState]) -> list[tuple[str, int, bytes, bytes]]:
        """The accounts' changelog records (topic, partition, key, value), with the table's in-memory
        copy updated (the record's bytes, as recovery reads them: ``account_from_stored``); an
        account whose state cannot be encoded is left out (logged, counted)."""
        table = self.accounts_table
        memory = _memory(table)
        key_partition = getattr(table.data, "_key_partition", {})
        topic = table.changelog_topic.get_topic_name()
        partition_of = self._partition_of
        records = []
        for account in accounts:
            key = account.account_id
            value = account.to_record()  # the compact format (from_record reads both)
            try:
                data = encode_bounded(value)
            except EncodeError:  # cannot happen for bounded inputs (tests/test_bounds.py); never a retry loop
                log.critical("account %.80r: state not encodable; not written to the changelog", key)
                self.counters["internal_error:state_encode"] += 1
                continue
            partition = partition_of[key]
            memory[key] = data  # (at its exact size: encode_bounded)
            key_partition[key] = partition
            # the table's key serializer is JSON (Faust's default), as its own writes and recovery use
            records.append((topic, partition, encode_kept(key), data))
        return records

    # ------------------------------------------------------------- batched sends
    async def send_batched(self, records: list[tuple[str, int, bytes, bytes | None]]) -> dict[tuple[str, int], int]:
        """Send (topic, partition, key, value) records and wait until they are delivered: the same
        records ``producer.send`` would write, in the same order per partition, but appended to a
        few producer batches per partition instead of one send (and one future) per record.
        Returns the offset of the last record delivered by (topic, partition) (none from a stand-in)."""
        faust_producer = self.app.producer
        producer = getattr(faust_producer, "_ensure_producer", None)
        if producer is None:  # not Faust's aiokafka producer (a stand-in): one send per record
            for topic, partition, key, value in records:
                await faust_producer.send(topic, key, value, partition, None, None)
            await flush_now(faust_producer)
            return {}
        producer = producer()
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for topic, partition, key, value in records:
            by_partition.setdefault((topic, partition), []).append((key, value))
        offsets: dict[tuple[str, int], int] = {}

        async def send_partition(topic: str, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
            # the producer queues one batch per partition at a time: send_batch waits for the previous
            # one (or a lingering batch of single sends) to drain, which keeps the partition's order
            futures = []
            batch = producer.create_batch()
            done = fill_batch(batch, items, 0)
            while done < len(items):  # the batch is full
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                start, done = done, fill_batch(batch, items, done)
                if done == start:
                    raise ValueError(f"a record of {len(items[start][1] or b'')} bytes does not fit in a batch")
            batch.close()  # a closed batch is sent now, without the producer's linger
            last_count = batch.record_count()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            delivered = await asyncio.gather(*futures)
            base_offset = getattr(delivered[-1], "offset", None)  # the last batch's first record
            if base_offset is not None and base_offset >= 0:
                offsets[(topic, partition)] = base_offset + last_count - 1

        await asyncio.gather(*(send_partition(t, p, items) for (t, p), items in by_partition.items()))
        return offsets

    async def _publish_batched(self, outputs: list[Output]) -> list[Output]:
        """``_publish`` when money moves (and a round's chunk): the changed accounts (with the
        pending liquidations' outputs) written and delivered first, then the outputs, each in
        producer batches; returns what was sent.

        Only the accounts the liquidations are about must be in the changelog before their outputs
        (a takeover then re-publishes the same ids and bytes); the others changed since the last
        write stay deferred as any account change is, to the flush before the offset commit. So a
        tick's liquidation does not wait for the thousands of accounts a steady flow of position
        events changed since then (the tail of tick → liquidation). Outputs that name no account
        (a round's) write every changed account first, as before."""
        await self.persist_dirty(accounts_named(outputs))
        return await self.send_encoded_batched(self._pack_requests(outputs))

    def _pack_requests(self, outputs: list[Output]) -> list[tuple[Output, bytes, bytes]]:
        """``outputs`` encoded (``encode_output``), their `fund_request`s' items packed again, in
        order, into messages of REQUEST_MAX_ITEMS (fewer where a message would exceed
        REQUEST_MAX_BYTES), where the first request was. The fund agent applies each item once by
        its liquidation id whatever message carries it, so how items are grouped changes nothing
        but the number of messages (and of ledger writes): a cascade's 10 000 liquidations go in
        16 messages instead of the core's 50 (FUND_REQUEST_ITEMS)."""
        topic = "insurance-requests"
        requests = [o for o in outputs if o.topic == topic]
        if len(requests) < 2 or any(r.key != requests[0].key or r.value.get("type") != "fund_request"
                                    for r in requests):
            return [encode_output(self.engine, o) for o in outputs]
        items = [item for request in requests for item in request.value["items"]]
        chunks = [items[i:i + REQUEST_MAX_ITEMS] for i in range(0, len(items), REQUEST_MAX_ITEMS)]
        packed: list[tuple[Output, bytes, bytes]] = []
        while chunks:
            chunk = chunks.pop(0)
            output = Output(topic, requests[0].key, fund_request(chunk))
            encoded = encode_output(self.engine, output)  # (an item beyond the output limit: a stub)
            if len(chunk) > 1 and (encoded[0] is not output or len(encoded[2]) > REQUEST_MAX_BYTES):
                chunks[:0] = [chunk[:len(chunk) // 2], chunk[len(chunk) // 2:]]  # halves, in order
                continue
            packed.append(encoded)
        first = outputs.index(requests[0])
        rest = [encode_output(self.engine, o) for o in outputs if o.topic != topic]
        return rest[:first] + packed + rest[first:]

    async def send_outputs_batched(self, outputs: list[Output]) -> list[Output]:
        """Send outputs (as ``_send``: encoded by ``encode_output``, to the partition the producer's
        default partitioner picks) in producer batches; delivered when it returns."""
        return await self.send_encoded_batched([encode_output(self.engine, output) for output in outputs])

    async def send_encoded_batched(self, encoded: list[tuple[Output, bytes, bytes]]) -> list[Output]:
        """``send_outputs_batched`` for outputs already encoded by ``encode_output``."""
        records = await self._output_records(encoded)
        if records:
            await self.send_batched(records)
        return [output for output, _, _ in encoded]

    async def _output_records(self, encoded: list[tuple[Output, bytes, bytes]]) -> list[tuple[str, int, bytes, bytes]]:
        """(topic, partition, key, value) of encoded outputs: the partition the producer's default
        partitioner picks (murmur2 of the key over all the topic's partitions)."""
        records = []
        topics: dict[str, tuple[str, list[int]]] = {}  # output topic → (topic name, its partitions)
        partition_of, partitions = self._partition_of, self.settings.partitions
        for output, key, value in encoded:
            found = topics.get(output.topic)
            if found is None:
                topic = self.settings.topic(output.topic)
                found = topics[output.topic] = (topic, sorted(await self._topic_partitions(topic)))
            topic, known = found
            n = len(known)  # an account's partition is cached for the positions' partition count
            records.append((topic, known[partition_of[output.key] if n == partitions else partition_for(key, n)],
                            key, value))
        return records

    async def _topic_partitions(self, topic: str) -> set[int]:
        producer = getattr(self.app.producer, "_ensure_producer", None)
        if producer is None:
            return set(range(self.settings.partitions))
        return await producer().partitions_for(topic)

    # --------------------------------------------------------------- positions
    async def on_positions_message(self, message: Any) -> None:
        """One `positions` message (``on_positions_messages`` of one)."""
        await self.on_positions_messages([message])

    async def on_positions_messages(self, messages: list[Any]) -> None:
        """`positions` messages the agent took together (``RISK_POSITIONS_GROUP_MAX`` at most), in
        order: each through the core as if alone (its own source, dead letters and fund requests);
        their outputs published in one go, the metrics updated once (a worker's single-event
        messages: 72 → 80 % of a bare Faust agent's rate, docs/benchmarks.md)."""
        started = time.perf_counter()
        self.counters["messages:positions"] += len(messages)
        outputs: list[Output] = []
        events = 0
        for message in messages:
            events += self._apply_positions_message(message, outputs)
        if outputs or len(self.engine.dirty) >= DEFER_MAX_ACCOUNTS:  # else publish() would do nothing
            # A task of its own, shielded: a graceful stop cancels the agent before Faust's last
            # offset commit, and that commit's flush waits for the task (settle_positions_publish),
            # so the messages whose offsets it commits have all their outputs handed to the producer.
            publish = self._positions_publish = asyncio.ensure_future(self.publish_retrying(outputs))
            await asyncio.shield(publish)
        if self.metrics is not None:
            self.metrics.observe_inputs("positions", events, len(messages), time.perf_counter() - started)

    async def settle_positions_publish(self) -> None:
        """Wait until the positions agent's publish in flight, if any, is done: before every offset
        commit (``flush_with_state``), whether or not the agent is still there to wait for it."""
        publish = self._positions_publish
        if publish is not None and not publish.done():
            await asyncio.shield(publish)

    def _apply_positions_message(self, message: Any, outputs: list[Output]) -> int:
        """One message through the core, its outputs appended to ``outputs``; returns how many events
        it had (a message that does not decode: 0, its dead letter appended)."""
        partition = message.partition
        source = Source(self.settings.topic("positions"), partition, message.offset, message.key, message.value)
        # murmur2 is pure Python (15 % of a batched message's time): an account of this partition
        # is computed once and cached here, where it arrives (not later, in a burst, when the
        # commit's flush writes it); another partition's is computed, not cached
        accept = self._partition_of.acceptor(partition)
        # the typed decoder first (one C pass, worker/typed_input.py); what it declines, the validating way
        try:
            updates = position_updates(message.value, self.params)
        except Exception:  # noqa: BLE001 - a bug there must not cost the message: the validating way decides
            log.exception("typed decoding failed")
            updates = None
        value: Any = updates
        if updates is None:
            try:
                value = decode(message.value)
            except DecodeError as exc:
                outputs.append(self.engine.dead_letter(source, exc.code, str(exc)))
                return 0
        try:
            if updates is not None:
                outputs += self.engine.process_position_updates(updates, source, record_elements(message.value),
                                                                accept)
            else:
                outputs += self.engine.process_positions(value, source, accept_account=accept)
        except Exception as exc:  # a bug must not ack silently: dead-letter, count, log
            log.exception("positions message failed")
            outputs.append(self.engine.dead_letter(source, "internal_error", f"{type(exc).__name__}: {exc}"[:300]))
        return len(value) if isinstance(value, list) else 1  # (a list of (index, update): one per event)

    # ------------------------------------------------------------------- marks
    def ensure_mark_consumer(self) -> None:
        """Start the mark reader once, from whichever starts first (recovery waits for it)."""
        if self._mark_task is None:
            self._mark_task = asyncio.ensure_future(self.run_mark_consumer())
            self._mark_task.add_done_callback(self._mark_task_done)

    def _mark_task_done(self, task: asyncio.Future) -> None:
        """Without marks the worker must not sit there looking healthy: crash it (a restart or
        another worker of the group takes over)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.critical("the mark reader died: %r", exc)
            asyncio.ensure_future(self.app.crash(exc))

    async def run_mark_consumer(self) -> None:
        topic = self.settings.topic("mark-prices")
        consumer = new_consumer(self.settings.bootstrap, security=self.settings.security, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                # a tick must not wait for a long poll (docs/streaming.md)
                                fetch_max_wait_ms=self.settings.mark_fetch_max_wait_ms)
        await consumer.start()
        try:
            partitions = None
            while not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if self.sharing:  # the rounds' broadcast rides on the same reader (one partition)
                rounds_topic = self.settings.topic(BROADCAST)
                while not consumer.partitions_for_topic(rounds_topic):
                    await asyncio.sleep(0.5)
                    await consumer.topics()
                tps.append(TopicPartition(rounds_topic, 0))
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            next_offset = {tp: 0 for tp in tps}
            while True:
                try:
                    await self._mark_batch(consumer, tps, next_offset)
                    self.mark_progress_at = time.monotonic()  # /ready: the reader is not wedged
                except Exception:  # never let the mark reader die: log, count, go on
                    log.exception("mark batch failed")
                    self.counters["internal_error:marks"] += 1
        finally:
            await consumer.stop()

    async def _mark_batch(self, consumer: Any, tps: list[TopicPartition],
                          next_offset: dict[TopicPartition, int]) -> None:
        """One poll of the mark reader: apply the ticks, publish, track catch-up and lag."""
        batch = await consumer.getmany(timeout_ms=50, max_records=10_000)
        outputs: list[Output] = []
        started = time.perf_counter()
        for tp, records in batch.items():
            for record in records:
                next_offset[tp] = record.offset + 1
                if self.participant is not None and tp.topic == self.settings.topic(BROADCAST):
                    try:  # our own coordinator's output (an internal topic)
                        self.participant.on_message(decode(record.value))
                    except Exception:
                        log.exception("unreadable round broadcast at offset %d", record.offset)
                        self.counters["internal_error:rounds"] += 1
                    continue
                outputs.extend(self._on_mark_record(record))
        if not self.marks_ready.is_set():
            if all(consumer.highwater(tp) is not None and next_offset[tp] >= consumer.highwater(tp) for tp in tps):
                log.info("mark prices caught up: %d symbols", len(self.engine.marks))
                self.marks_ready.set()
            outputs = [o for o in outputs if o.topic != "dead-letters"]
        elif 0 not in self.owned:  # one worker dead-letters bad marks: the owner of positions/0
            outputs = [o for o in outputs if o.topic != "dead-letters"]
        if outputs or self.engine.dirty:
            await self.publish_retrying(outputs)
        if self.metrics is not None and batch:
            self.metrics.latency.observe(time.perf_counter() - started)
            for tp in tps:
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    self.metrics.observe_lag(tp.topic, tp.partition, highwater - next_offset[tp])

    def _on_mark_record(self, record: Any) -> list[Output]:
        source = Source(self.settings.topic("mark-prices"), record.partition, record.offset, record.key, record.value)
        self.counters["messages:mark-prices"] += 1
        try:
            value = decode(record.value)
        except DecodeError as exc:
            return [self.engine.dead_letter(source, exc.code, str(exc))]
        try:
            before = self.counters["evaluations"]
            outputs = self.engine.process_mark(value, source)
            if self.metrics is not None:
                self.metrics.observe_tick_evaluations(self.counters["evaluations"] - before)
                self.metrics.count_events("mark-prices", value)
            return outputs
        except Exception as exc:
            log.exception("mark message failed")
            return [self.engine.dead_letter(source, "internal_error", f"{type(exc).__name__}: {exc}"[:300])]

    # -------------------------------------------------------------- rebalance
    async def on_partitions_revoked(self) -> None:
        """Write back what changed, then stop evaluating accounts we may no longer own until
        recovery hands them back."""
        self.rebalance = {"revoked_at": time.time()}
        async with self.publish_lock:
            await self.settle_fund_writes()
            if self.participant is not None:  # a round's chunks under way: their claims, then their events
                await self.participant.settle()
            await flush_now(self.app.producer)
            # The write-back, until nothing is left changed: the mark reader evaluates ticks outside
            # this lock (it waits here only to publish), so a tick applied during an await of the
            # write-back changes accounts after it took them; written too, or its outputs would go
            # out without their state. No await between the last check and the drop.
            while self.engine.dirty:
                await self.persist_dirty()
            if self.owned:  # (not again when a rebalance interrupts the recovery of the last one)
                self._kept = (self.owned, self.engine.accounts)
                replayed = getattr(self.accounts_table.data, "replayed", None)
                if replayed is not None:
                    replayed.clear()
            self.owned = set()
            self.assigned = False
            self.engine.tick_markers = False
            self.engine.load_accounts({})
            self.engine.partitions = []

    async def on_accounts_recovered(self) -> None:
        self.rebalance["table_recovered_at"] = time.time()
        self.ensure_mark_consumer()
        await self.marks_ready.wait()
        started = time.perf_counter()
        topic = self.settings.topic("positions")
        owned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        accounts, new = self._owned_accounts(owned)
        if self.sharing:  # the claims of rounds in flight recorded with their snapshots
            restored, cleared = self.restore_round_claims(accounts, owned)
            self.rebalance.update(round_claims_restored=restored, round_memories_cleared=cleared)
        self.owned = owned
        self.engine.partitions = sorted(owned)
        self.engine.tick_markers = self.sharing and 0 in owned  # one worker brackets ticks for the rounds
        self.rebalance.update(loaded_at=time.time(), load_s=time.perf_counter() - started,
                              accounts=len(accounts), new_accounts=len(new), owned=sorted(owned))
        log.info("accounts recovered: %d accounts on partitions %s (%d new to this worker)",
                 len(accounts), sorted(owned), len(new))
        # First the accounts new to this worker, unevaluated since their owner died or left; then
        # the rest (unevaluated during the rebalance only). Each: publish again what its pending
        # liquidations published (identical bytes), evaluate against current marks, publish.
        # A tick read in between evaluates those taken over; the rest are evaluated after it.
        self.engine.load_accounts({})
        for group in (new, accounts.keys() - new):
            if not group:
                continue
            republish, outputs = self.engine.take_over({key: accounts[key] for key in group})
            await self.publish(republish, first_emission=False)
            if outputs or self.engine.dirty:
                await self.publish(outputs)
            if group is new:
                self.rebalance["evaluated_at"] = time.time()
        self.assigned = True  # (after the takeover: rounds read the engine's accounts of these partitions)
        if self.participant is not None:  # answer the rounds in flight for the partitions now owned
            self.participant.catch_up()
            self.participant.start()

    def _owned_accounts(self, owned: set[int]) -> tuple[dict[str, AccountState], set[str]]:
        """The accounts of the owned partitions from the table, and the ids of those new to this
        worker. A partition it held before the rebalance and that recovery did not touch keeps the
        engine's objects; a standby copy comes already built (store.take_built); the rest are
        rebuilt from their records (~7 µs an account)."""
        store = self.accounts_table.data
        kept_owned, kept_accounts = self._kept
        self._kept = (set(), {})
        replayed = getattr(store, "replayed", None)
        reusable = set() if replayed is None else (kept_owned & owned) - replayed
        key_partition = getattr(store, "_key_partition", {})  # the memory stores track it per key
        take_built = getattr(store, "take_built", lambda key, value: None)  # standby copies, built
        n = self.settings.partitions
        accounts: dict[str, AccountState] = {}
        new: set[str] = set()
        for key, value in list(store.items()):
            partition = key_partition.get(key)
            if partition is None:
                partition = partition_for(key.encode(), n)
            if partition not in owned:
                continue
            account = kept_accounts.get(key) if partition in reusable else None
            if account is None:
                account = take_built(key, value) or account_from_stored(value)
            accounts[key] = account
            if partition not in kept_owned:
                new.add(key)
        return accounts, new

    def owns_fund(self) -> bool:
        """This worker holds the fund agent's partition (and so the live coordinator)."""
        topic = self.settings.topic("insurance-requests")
        return any(tp.topic == topic for tp in self.app.consumer.assignment())

    # ------------------------------------------------- loss-sharing snapshots
    # A partition's snapshot for a round lives in the `round-snapshots` table, in the changelog
    # partition of that positions partition: chunks "<round>|<p>|<i>", then the commit "<round>|<p>"
    # = {total, count, chunks}; a snapshot without its commit is incomplete and taken again.
    @property
    def partition_of(self) -> PartitionCache:
        """account → its positions partition (computed on a first lookup, then kept)."""
        return self._partition_of

    def snapshot_commit(self, round_id: str, partition: int) -> dict[str, Any] | None:
        return self.snapshots_table.data.get(f"{round_id}|{partition}")

    def snapshot_rows(self, round_id: str, partition: int, commit: dict[str, Any]) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for chunk in range(commit["chunks"]):
            rows.extend(self.snapshots_table.data[f"{round_id}|{partition}|{chunk}"])
        return rows

    def snapshots_owned(self, owned: set[int] | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        """(round, partition, commit) of the snapshots of the partitions owned (``owned``, else ``self.owned``)."""
        owned = self.owned if owned is None else owned
        found = []
        for key, value in list(self.snapshots_table.data.items()):
            parts = key.split("|")
            if len(parts) == 2 and int(parts[1]) in owned:
                found.append((parts[0], int(parts[1]), value))
        return found

    async def write_snapshot(self, round_id: str, partition: int, rows: list[list[Any]], kind: str) -> None:
        size = RoundParticipant.SNAPSHOT_CHUNK
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        for index, chunk in enumerate(chunks):
            await self._table_write(self.snapshots_table, f"{round_id}|{partition}|{index}", chunk, partition)
        total = snapshot_total(rows)  # Σ w, or Σ c
        await self._table_write(self.snapshots_table, f"{round_id}|{partition}",
                                {"kind": kind, "total": str(total), "count": len(rows), "chunks": len(chunks)},
                                partition)

    async def drop_snapshot(self, round_id: str, partition: int, commit: dict[str, Any]) -> None:
        await self._table_write(self.snapshots_table, f"{round_id}|{partition}", None, partition)
        for chunk in range(commit["chunks"]):
            await self._table_write(self.snapshots_table, f"{round_id}|{partition}|{chunk}", None, partition)
        for key in self.paid_keys(round_id, partition):
            await self._table_write(self.snapshots_table, key, None, partition)

    # A pay chunk's record "<round>|<p>|paid|<i>" = [[account, amount, claim figure]] (the round's memory
    # in each account it paid: sharing.round_memory_rows) makes the chunk's claims durable; the accounts
    # themselves are written once, at the round's sweep (worker/rounds.py).
    def paid_keys(self, round_id: str, partition: int) -> list[str]:
        prefix = f"{round_id}|{partition}|paid|"
        return [key for key in list(self.snapshots_table.data) if key.startswith(prefix)]

    async def write_paid(self, round_id: str, partition: int, index: int, rows: list[list[str]]) -> None:
        """A pay chunk's record, delivered when it returns."""
        key = f"{round_id}|{partition}|paid|{index}"
        self.snapshots_table.data[key] = rows
        await self.send_batched([(self.snapshots_table.changelog_topic.get_topic_name(), partition, encode(key),
                                  encode_bounded(rows))])

    def restore_round_claims(self, accounts: dict[str, AccountState], owned: set[int]) -> tuple[int, int]:
        """After a recovery, before the accounts are taken over: the claims of the pay chunks recorded
        (``write_paid``) applied again to the accounts recovered without them (an account that was never
        written is created: its own events come again), and the memory of rounds swept already (kept by
        a record written during their sweep) dropped. Returns (accounts restored, accounts cleared)."""
        live: set[str] = set()
        chunks: list[tuple[bool, str, str, str]] = []  # (a repayment, round, kind, record key)
        for round_id, partition, commit in self.snapshots_owned(owned):
            live.add(round_id)
            chunks += [(commit["kind"] != "haircut", round_id, commit["kind"], key)
                       for key in self.paid_keys(round_id, partition)]
        restored = 0
        for _, round_id, kind, key in sorted(chunks):  # haircuts first (restore_round_claims)
            rows = self.snapshots_table.data[key]
            hold_accounts(accounts, rows)
            try:
                restored += restore_round_claims(accounts, round_id, kind, rows)
            except SharingError:  # never, by construction: logged, counted (/stats), the recovery goes on
                log.critical("round %s: pay record %s not restored", round_id, key, exc_info=True)
                self.counters["internal_error:rounds"] += 1
        return restored, forget_rounds_except(accounts, live)

    async def _table_write(self, table: Any, key: str, value: Any, partition: int) -> None:
        """A changelog record of ``table`` in ``partition`` (None: a tombstone), as Faust writes them."""
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        await self.app.producer.send(table.changelog_topic.get_topic_name(), encode(key),
                                     None if value is None else encode_bounded(value), partition, None, None)

    async def flush(self) -> None:
        await flush_now(self.app.producer)

    async def publish_round_chunk(self, round_id: str, partition: int, index: int, paid: list[list[str]],
                                  events: list[tuple[str, Any]]) -> None:
        """Publish a round's pay chunk ``index`` (the participant pays it under the publish lock and
        publishes it in a task, which a revocation waits for: ``RoundParticipant.settle``): its claims
        delivered (``paid``, the chunk's record: ``write_paid``), then its events, in producer batches.
        Each event is keyed by its account on `loss-sharing` (SPEC §6): one rendered already (JSON
        text, ``pay_haircuts_rendered``) is sent as its bytes, with no Output or encoding of its own; a
        dict goes through ``encode_output``."""
        if paid:
            await self.write_paid(round_id, partition, index, paid)
        topic = self.settings.topic("loss-sharing")
        known = sorted(await self._topic_partitions(topic))
        partition_of, same = self._partition_of, len(known) == self.settings.partitions
        records: list[tuple[str, int, bytes, bytes]] = []
        encoded: list[Output] = []  # (what the metrics count: a dict event, or its stub dead letter)
        for account_id, event in events:
            if type(event) is str:
                key = account_id.encode()
                records.append((topic, known[partition_of[account_id]] if same else partition_for(key, len(known)),
                                key, event.encode()))
            else:
                encoded_event = encode_output(self.engine, Output("loss-sharing", account_id, event))
                records += await self._output_records([encoded_event])
                encoded.append(encoded_event[0])
        if records:
            await self.send_batched(records)
        if self.metrics is not None and encoded:
            self.metrics.observe_outputs(encoded)

    async def send_reports(self, items: list[dict[str, Any]]) -> None:
        await self.publish_retrying([Output("insurance-requests", self.params.asset, fund_request(items))])

    # ------------------------------------------------------------------ fund
    async def on_fund_recovered(self) -> None:
        state = self.fund_table.data.get(self._balance_key())
        balance = None if state is None else int(state["balance"])
        self.ledger = FundLedger(self.params, balance, settled=_Prefixed(self.fund_table, "settled:"))
        if self.sharing:
            self.coordinator = RoundCoordinator(self.params, self.ledger, self.settings.partitions,
                                                None if state is None else state.get("sharing"))

    def _balance_key(self) -> str:
        return f"balance:{self.params.asset}"

    async def on_fund_request(self, message: Any) -> None:
        """Apply a `fund_request` in one pass. One table holds the ledger: `settled:<id>` per
        liquidation and `balance:<asset>` = {balance, offset, done}. Once per message, the settled
        records and then the balance record are written and delivered (producer batches, one
        partition, in that order), then the outputs: recovery sees a prefix, so either the balance
        record still points before this message (its items are applied again at the same positions,
        from the same balance: the same outputs) or past it (they are duplicates: their stored
        outputs are published again)."""
        if self.ledger is None:
            await self.on_fund_recovered()
        assert self.ledger is not None
        if isinstance(self.ledger.settled, _Prefixed):
            self.ledger.settled.refresh()
        source = Source(self.settings.topic("insurance-requests"), message.partition, message.offset,
                        message.key, message.value)
        try:
            items = decode(message.value)["items"]
            if not isinstance(items, list):
                raise TypeError("items is not an array")
        except (DecodeError, KeyError, TypeError) as exc:
            await self.publish_retrying([self.engine.dead_letter(source, "decode_error", str(exc)[:300])])
            return
        state = self.fund_table.data.get(self._balance_key()) or {"offset": -1, "done": 0}
        outputs: list[Output] = []
        fresh: list[Output] = []
        applied = 0  # items not applied by an earlier delivery
        for index, item in enumerate(items):
            if (message.offset, index) < (state["offset"], state["done"]):  # applied by an earlier delivery
                outputs.extend(self.ledger.stored_outputs(item_key(item)) or [])
                continue
            applied += 1
            try:
                if item.get("kind", "liquidation") == "liquidation":
                    item_outputs, moved = self.ledger.apply(item, at=[message.offset, index])
                else:  # a tick marker or a partition's report: the rounds' coordinator
                    if self.coordinator is None:
                        raise ValueError("loss-sharing item while loss_sharing.mode is not 'haircut'")
                    item_outputs, moved = self.coordinator.apply(item), True
                    self.ledger.remember(item_key(item), [message.offset, index], item_outputs)
            except Exception as exc:  # a bad item must not stop the fund: dead-letter it alone
                log.exception("fund request item failed")
                self.counters["internal_error:fund"] += 1
                outputs.append(self.engine.dead_letter(source, "internal_error",
                                                       f"{type(exc).__name__}: {exc}"[:300], index, item))
                moved = False
                item_outputs = []
            outputs.extend(item_outputs)
            if moved:
                fresh.extend(item_outputs)
        # each output encoded once: the same bytes are published and embedded in its settled record
        encoded = [encode_output(self.engine, output) for output in outputs]
        # (the partitions: a metadata request, retried as the sends are)
        records = await self.retrying(lambda: self._output_records(encoded), "publishing the fund's outputs")
        # (a message applied before leaves the ledger as it is: its position never goes back)
        ledger = self._ledger_records(message.offset, len(items), message.partition, {
            id(o.value): value for (o, _, value), sent in zip(encoded, outputs) if o is sent}) if applied else []
        # FUND_MESSAGES_IN_FLIGHT messages' writes under way at most, each stream in order: a
        # message's ledger is sent once the previous message's ledger is delivered, its outputs once
        # its own ledger and the previous message's outputs are. With Faust's producer they are
        # delivered while the next request messages are applied (one message's ledger beside the
        # other's outputs): their offsets are committed only after they are (``settle_fund_writes``
        # runs before every commit and on revocation).
        await self._settle_fund_writes(keep=FUND_MESSAGES_IN_FLIGHT - 1)
        previous = self._fund_writes[-1] if self._fund_writes else None
        ledger_delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        writes = asyncio.ensure_future(self._deliver_fund_writes(ledger, records, ledger_delivered, previous))
        self._fund_writes.append((ledger_delivered, writes))
        if getattr(self.app.producer, "_ensure_producer", None) is None:  # a stand-in producer (tests):
            await self.settle_fund_writes()  # delivered when this returns
        self.fund_next_offset = message.offset + 1
        if self.metrics is not None:
            self.metrics.observe_fund(self.params.asset, self.ledger.fund.balance_units, fresh)

    async def settle_fund_writes(self) -> None:
        """Wait until the fund agent's writes in flight (request messages' ledgers, then their
        outputs) are delivered."""
        await self._settle_fund_writes(keep=0)

    async def _settle_fund_writes(self, keep: int) -> None:
        """Wait until at most ``keep`` request messages' writes are under way (the oldest first)."""
        while len(self._fund_writes) > keep:
            _, writes = self._fund_writes[0]
            await asyncio.shield(writes)
            if self._fund_writes and self._fund_writes[0][1] is writes:
                self._fund_writes.pop(0)

    async def _deliver_fund_writes(self, ledger: list[tuple[str, int, bytes, bytes]],
                                   outputs: list[tuple[str, int, bytes, bytes]], ledger_delivered: asyncio.Future[None],
                                   previous: tuple[asyncio.Future[None], asyncio.Future[None]] | None) -> None:
        """One request message's writes: its ledger written and delivered before anything depends on
        it, after the previous message's ledger (``previous``: that one's ledger delivery and task);
        then its outputs, after the previous message's outputs. A broker error is retried (the
        records are built: sending them again writes the same values). A task of its own: the
        table's memory already holds the ledger, so it reaches the changelog even if the agent is
        cancelled."""
        try:
            if previous is not None:
                await asyncio.shield(previous[0])
            if ledger:
                offsets = await self.retrying(lambda: self.send_batched(ledger), "writing the fund ledger")
                self._track_offsets(self.fund_table, offsets)
        except BaseException:
            ledger_delivered.cancel()  # (the next message's ledger does not go before it)
            raise
        ledger_delivered.set_result(None)
        if previous is not None:
            await asyncio.shield(previous[1])
        if outputs:
            await self.retrying(lambda: self.send_batched(outputs), "publishing the fund's outputs")

    def _ledger_records(self, offset: int, done: int, partition: int,
                        encoded: dict[int, bytes] | None = None) -> list[tuple[str, int, bytes, bytes]]:
        """The settled records of a request message, then its balance record, set in the table's
        memory; their changelog records (topic, partition, key, value), in that order. ``encoded``:
        the bytes of output values already encoded (by ``id`` of the value, alive meanwhile),
        embedded as they are in the settled records instead of being encoded again."""
        assert self.ledger is not None
        # the balance as an integer string: a sum of penalties is not bounded by 64 bits
        record = {"balance": str(self.ledger.fund.balance_units), "offset": offset, "done": done}
        if self.coordinator is not None:  # deficits and rounds in flight, consistent with the balance
            record["sharing"] = self.coordinator.to_dict()
        writes = self.ledger.settled.take() if isinstance(self.ledger.settled, _Prefixed) else []
        settled = len(writes)
        writes.append((self._balance_key(), record))
        table = self.fund_table
        memory = _memory(table)
        key_partition = getattr(table.data, "_key_partition", {})
        topic = table.changelog_topic.get_topic_name()
        records = []
        for index, (key, value) in enumerate(writes):
            key_partition[key] = partition
            try:
                data = encode_bounded(_with_encoded_outputs(value, encoded) if encoded else value)
            except EncodeError:
                memory[key] = value
                log.critical("table %s key %.80r: not encodable; not written to the changelog", table.name, key)
                self.counters["internal_error:state_encode"] += 1
                continue
            # a settled record stays in memory as its bytes (~1.4 KiB against ~4.4 KiB of decoded
            # outputs; at their exact size: encode_bounded); the balance record as the dict
            memory[key] = data if index < settled else value
            records.append((topic, partition, encode_kept(key), data))
        return records


def account_from_stored(value: Any) -> AccountState:
    """The account an `accounts` table value holds: the changelog record's bytes (any record
    format, ``AccountState.from_record``); a value already decoded is read as it is."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = decode(bytes(value))
    return AccountState.from_record(value)


def _memory(table: Any) -> Any:
    """A table's in-memory contents: the store's own dict when it has one (Faust's memory stores;
    their ``get`` raises and catches a KeyError for each missing key), else the store."""
    store = table.data
    inner = getattr(store, "data", None)
    return inner if isinstance(inner, dict) else store


def _with_encoded_outputs(value: Any, encoded: dict[int, bytes]) -> Any:
    """A settled record (``{"at": .., "outputs": [[topic, key, value], ...]}``) with its output
    values replaced by their bytes in ``encoded`` (by ``id``), embedded as they are: the same JSON.
    The value as it is if it holds an output not found there (or is another record)."""
    try:
        return {**value, "outputs": [[topic, key, fragment(encoded[id(output)])]
                                     for topic, key, output in value["outputs"]]}
    except (KeyError, TypeError, ValueError):
        return value


class _Prefixed:
    """A key-prefixed view of a table: the fund's settled records live beside its balance. A write
    goes to the table's memory at once (``Runtime._ledger_records`` replaces it with the record's
    bytes) and waits in ``pending`` until the fund agent sends the message's records together
    (``take``). A value read back is decoded if it is bytes (a record written by this worker) and
    read as it is otherwise (one applied by recovery: the table's JSON serializer decoded it)."""

    def __init__(self, table: Any, prefix: str) -> None:
        self.table, self.prefix = table, prefix
        self.pending: list[tuple[str, Any]] = []
        self.memory: Any = None  # the table's memory (``_memory``), looked up again by ``refresh``

    def refresh(self) -> None:
        self.memory = _memory(self.table)

    def get(self, key: str, default: Any = None) -> Any:
        if self.memory is None:
            self.refresh()
        value = self.memory.get(self.prefix + key, default)
        return decode(value) if isinstance(value, bytes) else value

    def __setitem__(self, key: str, value: Any) -> None:
        if self.memory is None:
            self.refresh()
        self.memory[self.prefix + key] = value
        self.pending.append((self.prefix + key, value))

    def take(self) -> list[tuple[str, Any]]:
        pending, self.pending = self.pending, []
        return pending


def create_app(settings: WorkerSettings, params: Params | None = None) -> tuple[faust.App, Runtime]:
    """The worker's Faust app. Every Faust setting that matters is given here, and Faust reads none
    from the environment (``env``): stray WEB_BIND, BROKER_URL, PROCESSING_GUARANTEE… change nothing."""
    from .web import FAUST_ENV, WEB_SETTINGS, auth_middleware, install_endpoints

    params = params or load_params(settings.params)
    security = settings.security.check()
    token = settings.bearer_token()
    register_store()
    patch_recovery_highwaters(settings.bootstrap, security)
    patch_fetch_max_wait(settings.fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        env=FAUST_ENV,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        broker_credentials=security.faust_credentials(),
        store=settings.table_store,  # tracked-memory://: worker/store.py
        datadir=settings.data_dir or tempfile.mkdtemp(prefix="risk-worker-"),
        web_port=settings.web_port,
        web_bind=settings.web_bind,  # the listening address (web_host is only the advertised name)
        web_host=settings.web_host,
        web_application_options={"middlewares": [auth_middleware(token)]} if token else {},
        **WEB_SETTINGS,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        table_standby_replicas=settings.standby_replicas,
        producer_linger_ms=settings.linger_ms,
        producer_max_batch_size=settings.max_batch_bytes,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        Monitor=LeanMonitor,  # Faust's sensor, kept to its stall check's input (worker/faust_monitor.py)
    )
    runtime = Runtime(settings, params, app)
    flush_producer = app.producer.flush

    async def flush_with_state() -> None:
        """Faust flushes the producer before every offset commit: the positions agent's publish and
        the fund agent's writes in flight and the coalesced account writes first."""
        await runtime.settle_positions_publish()
        await runtime.settle_fund_writes()
        await runtime.persist_dirty()
        await flush_producer()

    app.producer.flush = flush_with_state  # type: ignore[method-assign]
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    positions_topic = app.topic(settings.topic("positions"), partitions=settings.partitions, **raw)
    requests_topic = app.topic(settings.topic("insurance-requests"), partitions=1, **raw)
    # (keys: JSON, what the tables' own writes, recovery and ``send_batched``'s records use)
    json_values = faust.Schema(key_type=str, key_serializer="json", value_serializer="json")
    # the accounts' table holds each record's bytes (what its changelog holds), not a decoded copy:
    # one untracked object per account instead of ~10 lists the garbage collector walks
    bytes_values = faust.Schema(key_type=str, key_serializer="json", value_type=bytes, value_serializer="raw")
    runtime.accounts_table = app.Table("accounts", partitions=settings.partitions, schema=bytes_values,
                                      value_type=bytes)  # (without it Faust makes the changelog JSON again)
    if hasattr(runtime.accounts_table.data, "builder"):  # standby copies are built as they arrive
        runtime.accounts_table.data.builder = account_from_stored  # either changelog format
    runtime.fund_table = app.Table("fund-ledger", partitions=1, schema=json_values)
    if runtime.sharing:
        runtime.snapshots_table = app.Table("round-snapshots", partitions=settings.partitions, schema=json_values)

    @app.agent(positions_topic, concurrency=1, name="positions-agent")
    async def positions_agent(stream):  # noqa: ANN001
        runtime.ensure_mark_consumer()
        await runtime.marks_ready.wait()
        if not settings.positions_group_ms:
            async for event in stream.events():
                await runtime.on_positions_message(event.message)
            return
        # in groups (Faust's take_events): what arrives within positions_group_ms of the last group,
        # up to positions_group_max messages; acked (committable) once the handler returns
        async for events in stream.take_events(settings.positions_group_max, settings.positions_group_ms / 1000):
            await runtime.on_positions_messages([event.message for event in events])

    @app.agent(requests_topic, concurrency=1, name="fund-agent")
    async def fund_agent(stream):  # noqa: ANN001
        async for event in stream.events():
            await runtime.on_fund_request(event.message)

    @app.task
    async def mark_prices() -> None:
        runtime.ensure_mark_consumer()

    install_endpoints(app, runtime)  # /stats, /live, /ready; no Faust view

    @runtime.accounts_table.on_recover
    async def accounts_recovered() -> None:
        await runtime.on_accounts_recovered()

    @runtime.fund_table.on_recover
    async def fund_recovered() -> None:
        await runtime.on_fund_recovered()

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        await runtime.on_partitions_revoked()

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        runtime.rebalance["assigned_at"] = time.time()

    try:
        from metrics import install

        install(app, runtime)
    except ImportError:  # metrics are optional until installed
        pass
    return app, runtime


def main_worker(argv: list[str]) -> int:
    """``python -m worker worker [flags]``: run one worker until SIGTERM/SIGINT."""
    import argparse

    from .settings import SettingsError, add_arguments, resolve
    from .web import faust_setting_variables, refuse_faust_import_variables

    parser = argparse.ArgumentParser(prog="python -m worker worker")
    add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        settings = resolve(args)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None
    refuse_faust_import_variables(os.environ)
    ignored = faust_setting_variables(os.environ)
    if ignored:
        log.warning("ignoring %s: the worker's Faust settings come from RISK_* only", ", ".join(ignored))
    tune_collector()
    try:
        app, _ = create_app(settings)
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None
    freeze_after_full_collections()  # no full-heap collection stalls the loop in a cascade
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
    return 0
