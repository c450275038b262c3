"""The rounds' coordinator as a state machine (worker/rounds.py), without a broker: tick markers,
reports applied once, phases, conservation, atomicity. The broker tier runs the same code
(tests/test_broker_sharing.py)."""
from __future__ import annotations

import pytest

from tests.fixtures import make_params
from worker.core.fund import FundLedger
from worker.core.sharing import haircut_round_id, repayment_round_id, tick_marker
from worker.rounds import RoundCoordinator, report_item

PARAMS = make_params(initial_balance="100", floor="40",
                     extra='[loss_sharing]\nmode = "haircut"\nrepay_above = "40"\nround_interval_ms = 1000')
T = 1_700_000_000_000


def coordinator(deficit: int = 0, partitions: int = 2) -> RoundCoordinator:
    ledger = FundLedger(PARAMS)
    ledger.deficits.record("BTC-PERP", "long", deficit)
    return RoundCoordinator(PARAMS, ledger, partitions)


def tick(c: RoundCoordinator, seq: int, ts: int, usable: bool = True) -> list:
    return (c.apply(tick_marker("begin", "BTC-PERP", seq, ts, 189_000))
            + c.apply(tick_marker("end", "BTC-PERP", seq, ts, 189_000, usable)))


def kinds(outputs) -> list[tuple[str, str]]:
    return [(o.topic, o.value.get("phase") or o.value["type"]) for o in outputs]


def test_a_haircut_round_in_two_phases_with_reports_applied_once():
    c = coordinator(deficit=40_000_000)
    out = tick(c, 2, T)
    rid = haircut_round_id("BTC-PERP", "long", 0)
    assert kinds(out) == [("loss-rounds", "announce")] and out[0].key == rid
    # W = 1 100 + 330 USD from two partitions; a duplicate report of partition 0 is ignored
    assert c.apply(report_item(rid, 0, "announce", 1_100_000_000, 1)) == []
    assert c.apply(report_item(rid, 0, "announce", 999, 9)) == []
    out = c.apply(report_item(rid, 1, "announce", 330_000_000, 2))
    assert kinds(out) == [("loss-rounds", "allocate")]
    assert (out[0].value["total"], out[0].value["amount"]) == ("1430000000", "40000000")  # A = min(40, 1 430) USD
    # a late announce report, or one for the wrong phase, changes nothing
    assert c.apply(report_item(rid, 1, "announce", 5, 5)) == []
    assert c.apply(report_item(rid, 0, "allocate", 30_769_230, 1)) == []
    out = c.apply(report_item(rid, 1, "allocate", 9_230_768, 2))
    assert kinds(out) == [("loss-sharing", "haircut_round"), ("loss-rounds", "done")]
    summary = out[0].value
    assert (summary["paid"], summary["carried"], summary["haircuts"]) == ("39.999998", "0.000002", 3)
    assert c.book.deficit("BTC-PERP", "long") == 2 and c.claims_units == 39_999_998
    assert c.inflight == {} and c.apply(report_item(rid, 1, "allocate", 1, 1)) == []  # done: nothing more


def test_the_deficit_before_the_tick_decides_and_a_duplicate_marker_starts_nothing():
    c = coordinator(deficit=0)
    c.apply(tick_marker("begin", "BTC-PERP", 2, T, 189_000))
    c.book.record("BTC-PERP", "long", 7)  # the tick's own bankruptcy: no round at this tick
    assert c.apply(tick_marker("end", "BTC-PERP", 2, T, 189_000)) == []
    assert kinds(tick(c, 3, T + 1000)) == [("loss-rounds", "announce")]  # the next tick
    assert tick(c, 3, T + 1000) == []  # the same tick from a second emitter
    assert tick(c, 4, T + 5000) == []  # a round of the pair is in flight


def test_an_unusable_tick_and_the_round_interval_hold_rounds_back():
    c = coordinator(deficit=5)
    assert tick(c, 2, T, usable=False) == []  # a jumped, unconfirmed mark
    rid = haircut_round_id("BTC-PERP", "long", 0)
    assert kinds(tick(c, 3, T)) == [("loss-rounds", "announce")]
    c.apply(report_item(rid, 0, "announce", 0, 0))
    out = c.apply(report_item(rid, 1, "announce", 0, 0))  # W = 0: A = 0, done at once
    assert kinds(out) == [("loss-sharing", "haircut_round"), ("loss-rounds", "done")]
    assert out[0].value["carried"] == "0.000005"
    assert tick(c, 4, T + 999) == []  # 999 ms < round_interval_ms
    assert kinds(tick(c, 5, T + 1000)) == [("loss-rounds", "announce")]


def test_a_repayment_round_debits_the_budget_first_and_credits_the_residue():
    c = coordinator()
    c.claims_units = 10_000_000
    c.ledger.fund.balance_units = 43_000_000  # 3 USD above repay_above (40)
    out = tick(c, 2, T)
    rid = repayment_round_id("USD", 0)
    assert kinds(out) == [("loss-rounds", "announce")]
    c.apply(report_item(rid, 0, "announce", 6_000_000, 1))
    out = c.apply(report_item(rid, 1, "announce", 4_000_000, 1))
    # B = min(43 − 40, 10) = 3 USD: the fund's −3 entry, then the allocation
    assert kinds(out) == [("insurance-fund", "insurance_fund_entry"), ("loss-rounds", "allocate")]
    assert (out[0].value["delta"], out[0].value["balance_after"], out[0].value["round_id"]) == (
        "-3.000000", "40.000000", rid)
    c.apply(report_item(rid, 0, "allocate", 1_800_000, 1))
    out = c.apply(report_item(rid, 1, "allocate", 1_199_999, 1))
    assert kinds(out) == [("insurance-fund", "insurance_fund_entry"), ("loss-sharing", "repayment_round"),
                          ("loss-rounds", "done")]
    assert (out[0].value["reason"], out[0].value["delta"]) == ("repayment_residue", "0.000001")
    assert c.ledger.fund.balance_units == 40_000_001 and c.claims_units == 10_000_000 - 2_999_999


def test_a_report_that_cannot_apply_leaves_the_state_as_it_was():
    c = coordinator(deficit=40_000_000)
    tick(c, 2, T)
    rid = haircut_round_id("BTC-PERP", "long", 0)
    before = c.to_dict()
    with pytest.raises(ValueError):
        c.apply(report_item(rid, 7, "announce", 1, 1))  # partition 7 of 2
    assert c.to_dict() == before
    # and the state survives its JSON form (it is persisted with the fund's balance)
    again = RoundCoordinator(PARAMS, FundLedger(PARAMS), 2, c.to_dict())
    assert again.to_dict() == before


def test_a_loss_of_the_tick_reaching_the_coordinator_before_its_marker_is_not_before_it():
    # two workers: the owner of partition 1 publishes tick 2's bankruptcy (7 units on BTC long)
    # before the owner of partition 0 publishes tick 2's begin marker. It was recorded by a
    # liquidation that tick 2 triggered, so tick 2 runs no round; tick 3 does (SPEC §5.1).
    c = coordinator(deficit=0)
    c.book.record("BTC-PERP", "long", 7, tick_seq=2)
    assert tick(c, 2, T) == []
    assert kinds(tick(c, 3, T + 1000)) == [("loss-rounds", "announce")]
    assert c.book.by_tick[("BTC-PERP", "long")] == {}  # forgotten once "before"


def test_only_a_tick_of_the_losses_own_symbol_is_remembered():
    from worker.core.fund import record_deficits
    from worker.core.liquidation import Close, LiquidationPlan

    close = Close("BTC-PERP", "long", 1000, 0, 189_000, 189_000, 200_000, -110_000_000, 0, 0, 1_000_000)
    plan = LiquidationPlan(True, 1_000_000, -100_000_000, 756_000, 0, 0, 1_000_000_000, -100_000_000, (close,),
                           0, 0, 0, 0, 100_000_000)
    book = coordinator().book
    record_deficits(book, plan, 40, ["mark", "ETH-PERP", 9, 1])  # an ETH tick: no BTC tick to wait for
    record_deficits(book, plan, 2, ["position", "BTC-PERP", 5, None])  # a position event
    record_deficits(book, plan, 1, ["mark", "BTC-PERP", 4, 189_000])
    assert book.deficit("BTC-PERP", "long") == 43 and book.by_tick == {("BTC-PERP", "long"): {4: 1}}
    assert book.deficit_before("BTC-PERP", "long", 4) == 42 and book.deficit_before("BTC-PERP", "long", 5) == 43


@pytest.mark.parametrize("item", [5, None, "x", [], {"kind": "tick"}, {"kind": "report"}, {"liquidation_id": 7}],
                         ids=["a number", "null", "a string", "an array", "a bare tick", "a bare report",
                              "an id that is not a string"])
def test_the_key_of_a_malformed_item_is_total(item):
    # a re-delivered message looks its items up by key before applying anything: it must not raise
    from worker.rounds import item_key

    assert isinstance(item_key(item), str)


# ------------------------------------------------------- participants: chunks published under way
def paying_participant(monkeypatch, chunks: int, fail: set[int] = frozenset()):  # noqa: ANN201
    """A RoundParticipant paying one partition's snapshot of ``chunks`` one-account chunks, over a
    stand-in runtime whose publish of chunk i waits for ``gates[i]`` (and then fails if i in ``fail``)."""
    import asyncio
    import types

    import worker.rounds as rounds_module

    monkeypatch.setattr(rounds_module, "pay_partition",
                        lambda params, accounts, message, rows, dirty: ([("chunk", rows[0][0])], 1, 1))
    monkeypatch.setattr(rounds_module, "round_memory_rows", lambda accounts, round_id, account_ids: [])
    gates = [asyncio.Event() for _ in range(chunks)]
    reports: list = []

    async def publish_now(round_id, partition, chunk, paid, events):  # noqa: ANN001, ANN202
        index = events[0][1]
        assert chunk == index
        await gates[index].wait()
        if index in fail:
            raise ConnectionError(f"chunk {index} not delivered")

    async def send_reports(items):  # noqa: ANN001, ANN202
        reports.extend(items)

    runtime = types.SimpleNamespace(
        params=None, engine=types.SimpleNamespace(accounts={}, dirty=set()), owned={0}, assigned=True,
        publish_lock=asyncio.Lock(), snapshot_commit=lambda round_id, p: {"chunks": 1},
        snapshot_rows=lambda round_id, p, commit: [[i, "cross", "1"] for i in range(chunks)],
        publish_round_chunk=publish_now, send_reports=send_reports, counters={})
    participant = rounds_module.RoundParticipant(runtime)
    participant.PAY_CHUNK = 1
    participant.messages = {"r": {"round_id": "r", "phase": "allocate", "kind": "haircut"}}
    return participant, runtime, gates, reports


async def _spin() -> None:
    import asyncio

    for _ in range(20):
        await asyncio.sleep(0)


def test_a_revocation_waits_for_every_chunk_still_being_published_the_oldest_too(monkeypatch):
    import asyncio

    async def scenario() -> None:
        participant, runtime, gates, reports = paying_participant(monkeypatch, chunks=3)
        pay = asyncio.ensure_future(participant.act("r"))
        await _spin()  # chunks 0 and 1 paid and under way; the loop waits for chunk 0 before paying 2
        revocation = asyncio.ensure_future(participant.settle())
        gates[1].set()  # the newer one delivered, the oldest not yet
        await _spin()
        assert not revocation.done()  # it waits for chunk 0 as well
        for gate in gates:
            gate.set()
        await _spin()
        await revocation
        await pay
        assert [r["count"] for r in reports] == [3]

    asyncio.run(scenario())


def test_a_chunk_that_failed_under_a_revocations_settle_still_stops_the_report(monkeypatch):
    import asyncio

    async def scenario() -> None:
        participant, runtime, gates, reports = paying_participant(monkeypatch, chunks=3, fail={1})
        pay = asyncio.ensure_future(participant.act("r"))
        await _spin()  # chunks 0 and 1 under way; the pay loop waits for chunk 0
        revocation = asyncio.ensure_future(participant.settle())
        gates[1].set()  # chunk 1 fails first, met by the revocation's settle
        await _spin()
        for gate in gates:
            gate.set()
        await _spin()
        await revocation
        with pytest.raises(ConnectionError, match="chunk 1"):
            await pay
        assert reports == []  # no report for a partition whose chunk was not published

    asyncio.run(scenario())


def test_a_winner_never_written_before_a_takeover_is_paid_into_a_new_account():
    # a snapshot row whose account the new owner does not hold (its record was not yet written when
    # the old owner died; its own events come again): paid, not a KeyError that stalls the round.
    # W = 10, A = 5: h = ⌊5 · 10 / 10⌋ = 5 units, the claim starts there
    from tests.fixtures import sharing_book
    from worker.rounds import pay_partition

    params = sharing_book().engine.params
    accounts: dict = {}
    message = {"kind": "haircut", "round_id": "r", "ts": 1, "symbol": "BTC-PERP", "loss_side": "long",
               "total": "10", "amount": "5"}
    events, paid, count = pay_partition(params, accounts, message, [["zed", "cross", "10"]], set())
    assert (paid, count, [a for a, _ in events]) == (5, 1, ["zed"])
    assert accounts["zed"].claim_units == 5 and accounts["zed"].round_memory("r") == ["5", "5"]
