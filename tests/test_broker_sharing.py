"""Loss sharing on the embedded broker (SPEC §5.1, §5.2): one worker in lockstep equals replay on
`loss-sharing`; several workers with a kill -9 in the middle of a round stay exact and conserved.

Nothing is mocked: worker processes, the embedded broker, a separate client reading the topics.
The kill tests hold each worker for a few seconds the first time it acts on a round in a phase
(`RISK_TEST_ROUND_PAUSE`), so that the kill lands between an announcement and its reports, or
between an allocation and its payments, every time.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import orjson
import pytest

from tests.fixtures import sharing_scenario
from topics.schemas import validate_event
from worker.core.engine import Engine
from worker.core.params import parse_params
from worker.harness import WorkerGroup, feed_lockstep, feed_phase, fetch_stats, read_topics, scenario_records, wait_for
from worker.replay import replay_lines
from tests.test_broker import scrape

pytestmark = pytest.mark.broker
TOPICS = ["loss-sharing", "insurance-fund", "liquidations", "loss-rounds"]




def read(broker, prefix, until, timeout_s=90.0):
    names = [prefix + t for t in TOPICS]
    found = asyncio.run(read_topics(broker.bootstrap, names, until=lambda f: until(
        {t: f[prefix + t] for t in TOPICS}), timeout_s=timeout_s))
    return {t: [json.loads(v) for _, v in found[prefix + t]] for t in TOPICS}


def units(text: str) -> int:
    return int(text.replace(".", ""))


def test_one_worker_in_lockstep_publishes_exactly_replays_loss_sharing_events(broker, prefix, tmp_path):
    params_text, lines = sharing_scenario()
    params_path = tmp_path / "params.toml"
    params_path.write_text(params_text)
    engine = Engine(parse_params(params_text.encode()))
    replayed = list(replay_lines(lines, engine))
    expected = sorted(orjson.dumps(o.value) for o in replayed if o.topic == "loss-sharing")
    expected_fund = sorted(orjson.dumps(o.value) for o in replayed if o.topic == "insurance-fund")
    kinds = Counter(orjson.loads(v)["type"] for v in expected)
    assert kinds["haircut"] and kinds["claim_repayment"] and kinds["repayment_round"]  # the scenario shares
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(1)
        asyncio.run(group.wait_ready())
        asyncio.run(feed_lockstep(broker.bootstrap, scenario_records(lines, prefix), group.ports, prefix, rounds=True))
        found = read(broker, prefix, lambda f: len(f["loss-sharing"]) >= len(expected))
        assert group.recovery_errors() == []
        samples = scrape(group.ports[0])
    got = sorted(orjson.dumps(v) for v in found["loss-sharing"])
    assert got == expected  # byte for byte, event for event
    assert sorted(orjson.dumps(v) for v in found["insurance-fund"]) == expected_fund
    for value in found["loss-sharing"]:
        validate_event(value)
    # the coordinator's metrics move with the rounds (metrics/__init__.py)
    summaries = [orjson.loads(v) for v in expected if orjson.loads(v)["type"].endswith("_round")]
    for kind, event_type in (("haircut", "haircut_round"), ("repay", "repayment_round")):
        ours = [e for e in summaries if e["type"] == event_type]
        assert samples[("risk_loss_rounds_total", (("kind", kind),))] == len(ours)
        assert samples[("risk_loss_shared_units_total", (("kind", kind),))] == sum(units(e["paid"]) for e in ours)
    assert samples[("risk_loss_claims_units", ())] == engine.claims_units
    assert samples[("risk_loss_deficit_units", (("side", "long"), ("symbol", "BTC-PERP")))] == \
        engine.deficits.deficit("BTC-PERP", "long")
    assert samples[("risk_loss_rounds_in_flight", ())] == 0


def every_round_summarized(found: dict) -> bool:
    announced = {json.loads(v)["round_id"] for _, v in found["loss-rounds"]}
    summarized = {json.loads(v)["round_id"] for _, v in found["loss-sharing"]
                  if json.loads(v)["type"] in ("haircut_round", "repayment_round")}
    return bool(announced) and announced <= summarized


def check_rounds(found: dict, deficit_recorded: Counter) -> dict:
    """Every haircut/repayment id with one content; each round's paid = Σ its events; claims
    = Σ haircuts − Σ repaid, never lost or counted twice; conservation per (symbol, side)."""
    by_id: dict[str, bytes] = {}
    for value in found["loss-sharing"]:
        ident = value.get("haircut_id") or value.get("repayment_id") or value["round_id"] + value["type"]
        encoded = orjson.dumps(value)
        assert by_id.setdefault(ident, encoded) == encoded, f"{ident} published with two contents"
    events = [orjson.loads(v) for v in by_id.values()]
    paid_by_round: Counter = Counter()
    claims: Counter = Counter()
    for e in sorted(events, key=lambda e: e["ts"]):
        if e["type"] == "haircut":
            paid_by_round[e["round_id"]] += units(e["amount"])
            claims[e["account_id"]] += units(e["amount"])
        elif e["type"] == "claim_repayment":
            paid_by_round[e["round_id"]] += units(e["amount"])
            claims[e["account_id"]] -= units(e["amount"])
    shared: Counter = Counter()
    summaries = [e for e in events if e["type"] in ("haircut_round", "repayment_round")]
    for summary in summaries:
        assert units(summary["paid"]) == paid_by_round[summary["round_id"]], summary
        if summary["type"] == "haircut_round":
            shared[(summary["symbol"], summary["loss_side"])] += units(summary["paid"])
            assert units(summary["carried"]) == units(summary["deficit_before"]) - units(summary["paid"])
    for pair, paid in shared.items():  # Σ haircuts ≤ Σ socialized loss of the pair
        assert paid <= deficit_recorded[pair]
    # each account's last claim figure is Σ its haircuts − Σ its repayments
    last: dict[str, int] = {}
    for e in sorted(events, key=lambda e: (e["ts"], e["type"] != "haircut")):
        if e["type"] == "haircut":
            last[e["account_id"]] = units(e["claim_after"])
        elif e["type"] == "claim_repayment":
            last[e["account_id"]] = units(e["claim_after"])
    for account, claim in last.items():
        assert claim == claims[account] >= 0, account
    return {"summaries": len(summaries), "haircuts": sum(1 for e in events if e["type"] == "haircut"),
            "claims": {account: claim for account, claim in claims.items() if claim}}


def stored_claims(broker, topic: str) -> dict[str, int]:
    """Each account's claim in its last `accounts` changelog record (those with one), read to the end."""
    from worker.app import account_from_stored

    seen = {"records": -1, "quiet": 0}

    def read_out(found: dict) -> bool:  # ~1 s with nothing new
        records = len(found[topic])
        seen["quiet"] = seen["quiet"] + 1 if records == seen["records"] and records else 0
        seen["records"] = records
        return seen["quiet"] >= 5

    last: dict[str, bytes | None] = {}
    for key, value in asyncio.run(read_topics(broker.bootstrap, [topic], until=read_out, timeout_s=30))[topic]:
        last[json.loads(key)] = value
    claims = {account: account_from_stored(value).claim_units for account, value in last.items() if value}
    return {account: claim for account, claim in claims.items() if claim}


@pytest.mark.parametrize("phase", ["announce", "allocate", "paid", "sweep"],
                         ids=["killed before its snapshot", "killed before it pays",
                              "killed after a pay chunk: claims in the chunk's record, not in the accounts",
                              "killed mid-sweep: some accounts written with the round, the rest in records"])
def test_kill_9_in_the_middle_of_a_round_loses_and_doubles_nothing(broker, prefix, tmp_path, phase):
    """Three workers; the first round is held in `phase` in every worker (paid and swept in chunks of
    3 accounts, so that a partition has several); one worker is killed there; the others (one taking
    its partitions over) finish every round. A claim lost or applied twice by the takeover shows in
    the claim figures of the later rounds' haircuts and repayments (check_rounds)."""
    params_text, lines = sharing_scenario(accounts=120, seed=8)
    params_path = tmp_path / "params.toml"
    params_path.write_text(params_text)
    records = scenario_records(lines, prefix)
    setup = [r for r in records if r[0] != prefix + "mark-prices"]
    ticks = [r for r in records if r[0] == prefix + "mark-prices"]
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path,
                     extra_env={"RISK_TEST_ROUND_PAUSE": f"{phase}:6", "RISK_TEST_PAY_CHUNK": "3"}) as group:
        group.start(3)
        asyncio.run(group.wait_ready())
        asyncio.run(feed_phase(broker.bootstrap, ticks[:1] + setup, group.ports, prefix))
        asyncio.run(feed_phase(broker.bootstrap, ticks[1:3], group.ports, prefix))

        def holding() -> int | None:  # a participant, not the coordinator, holding the round in `phase`
            for i, port in enumerate(group.ports):
                stats = fetch_stats(port) or {}
                if not (stats.get("coordinator") or {}).get("next_offset") and \
                        (stats.get("participant") or {}).get("holding") == phase:
                    return i
            return None

        asyncio.run(wait_for(lambda: holding() is not None, 60, f"a round held in {phase}", 0.05))
        victim = holding()
        assert victim is not None
        group.kill(victim)  # its partitions change owner mid-round
        live = [p for i, p in enumerate(group.ports) if i != victim]

        def taken_over() -> bool:
            stats = [fetch_stats(p) for p in live]
            return all(s and s["ready"] for s in stats) and sorted(
                p for s in stats for p in s["owned_partitions"]) == [0, 1, 2, 3]

        asyncio.run(wait_for(taken_over, 120, "the partitions taken over", 0.1))
        # the held round completes; later ticks run later rounds (one at a time, each settled)
        asyncio.run(feed_lockstep(broker.bootstrap, ticks[3:], live, prefix, timeout_s=120, rounds=True))
        found = read(broker, prefix, every_round_summarized)
        assert group.recovery_errors() == []

        def swept() -> bool:  # every round's snapshot dropped: its accounts written, claims and all
            stats = [fetch_stats(p) for p in live]
            return all(s and s["participant"]["snapshots_kept"] == 0 for s in stats)

        asyncio.run(wait_for(swept, 60, "every round swept", 0.1))
    # (the workers stopped: what they had changed is written)
    recorded: Counter = Counter()
    for value in found["insurance-fund"]:
        if value["type"] == "socialized_loss":
            recorded[(value["symbol"], value["side"])] += units(value["amount"])
    figures = check_rounds(found, recorded)
    assert figures["haircuts"] > 0 and figures["summaries"] >= 2
    # each account's claim as its last record holds it = Σ its haircuts − Σ its repayments
    assert stored_claims(broker, prefix + "w-accounts-changelog") == figures["claims"]
