"""`python -m worker verify` (SPEC §5.3): the independent checker passes every replay and catches
every tampered or mis-computed field, with the event id, the field, what it expected and what it got.
"""
from __future__ import annotations

import ast
import copy
import io
import json
import re
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from tests.fixtures import EXAMPLES, GOLDEN, ROOT, cascade_scenario, make_params, sharing_scenario
from tests.test_properties import parameter_sets, random_scenario, run
from tests.test_topics_contract import SCENARIOS
from worker.core.engine import Engine
from worker.core.params import load_params, parse_params
from worker.replay import replay_lines
from worker.tools.verify import BROKER_TOPICS, main_verify, records_from_lines, records_from_topics, summary, verify
from worker.tools.verify_common import Context

EXAMPLE_PARAMS = EXAMPLES / "params.toml"


# ----------------------------------------------------------------------------------- helpers
def as_records(outputs) -> list[dict]:
    return [{"topic": o.topic, "key": o.key, "value": o.value} for o in outputs]


def replayed(params, lines) -> list[dict]:
    return as_records(replay_lines(lines, Engine(params)))


def check(params, records: list[dict], ordered: bool = True) -> Context:
    ctx = Context(params, ordered=ordered)
    verify(params, records_from_lines([json.dumps(r) for r in records], ctx), ctx)
    return ctx


def as_read_back(params, records: list[dict], partitions: int = 4) -> Context:
    """The records as a broker would give them back: topic by topic, each key on one partition,
    each partition in order (the order across topics and partitions is lost)."""
    found: dict[str, list] = {t: [] for t in BROKER_TOPICS}
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        if r["topic"] not in found:
            continue
        partition = zlib.crc32(str(r["key"]).encode()) % partitions
        offset = offsets[(r["topic"], partition)] = offsets.get((r["topic"], partition), -1) + 1
        found[r["topic"]].append((partition, offset, str(r["key"]).encode(), json.dumps(r["value"]).encode()))
    for entries in found.values():
        entries.sort(key=lambda e: (e[0], e[1]))
    ctx = Context(params, ordered=False)
    verify(params, records_from_topics(found, ctx), ctx)
    return ctx


def text_of(ctx: Context) -> str:
    out = io.StringIO()
    summary(ctx, "test", out)
    return out.getvalue()


def golden() -> tuple:
    params = load_params(str(EXAMPLE_PARAMS))
    records = [json.loads(line) for line in (GOLDEN / "crash.out.jsonl").read_text().splitlines()]
    return params, records


def sharing() -> tuple:
    text, lines = sharing_scenario()
    params = parse_params(text.encode())
    return params, replayed(params, lines)


def bankruptcy() -> tuple:
    """Fund 100 above a floor of 40: a 100 USD shortfall → cover 60, socialized 40 on BTC-PERP/long."""
    params, outputs = SCENARIOS["bankruptcy with cover and socialized loss"]()
    return params, as_records(outputs)


def two_symbols() -> tuple:
    params, outputs = SCENARIOS["short bankruptcy on two symbols"]()
    return params, as_records(outputs)


SOURCES = {"golden": golden, "sharing": sharing, "bankruptcy": bankruptcy, "two symbols": two_symbols}


def first(records: list[dict], kind: str, **fields) -> dict:
    return next(r["value"] for r in records
                if r["value"]["type"] == kind and all(r["value"].get(k) == v for k, v in fields.items()))


def found(ctx: Context, kind: str, field: str, expected_part: str, got: str) -> bool:
    return any(m.kind == kind and m.field == field and expected_part in m.expected and m.got == got
               for m in ctx.mismatches)


# ------------------------------------------------------------------------ no false alarms
def test_the_golden_output_verifies_from_the_command_line(capsys):
    assert main_verify([str(GOLDEN / "crash.out.jsonl"), "--params", str(EXAMPLE_PARAMS)]) == 0
    out = capsys.readouterr().out
    assert "OK: no mismatch" in out
    assert "liquidation                   8" in out  # the table: events checked by type


@pytest.mark.parametrize("name", [*SCENARIOS, "sharing scenario", "cascade scenario"])
def test_every_replay_of_the_test_suite_verifies(name):
    if name == "sharing scenario":
        params, records = sharing()
    elif name == "cascade scenario":
        params = make_params(pending_timeout_ms=0, initial_balance="5000", floor="1000",
                             btc_penalty='{model = "flat", min_ppm = 1000}', liquidator_ppm=400_000)
        setup, cascade = cascade_scenario(accounts=120, ticks=25)
        records = replayed(params, setup + cascade)
    else:
        params, outputs = SCENARIOS[name]()
        records = as_records(outputs)
    ctx = check(params, records)
    assert ctx.mismatches == [], text_of(ctx)
    read_back = as_read_back(params, records)
    assert read_back.mismatches == [], text_of(read_back)


def test_the_scenarios_exercise_every_checked_event_type():
    checked: set[str] = set()
    for source in (golden, sharing, bankruptcy):
        params, records = source()
        checked |= {k for k, v in check(params, records).checked.items() if v}
    assert checked >= {"liquidation", "insurance_fund_entry", "socialized_loss", "haircut", "haircut_round",
                       "claim_repayment", "repayment_round", "margin_call", "margin_call_cleared"}


@given(st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_verify_finds_no_mismatch_on_any_random_replay(data):
    params = data.draw(parameter_sets(sharing=data.draw(st.booleans())))
    lines = random_scenario(data.draw, params)
    # later ticks of the same symbols, so that haircut and repayment rounds get to run
    lines += [("mark", dict(value, ts=value["ts"] + 5_000 * (k + 1), seq=value["seq"] + 1000 + k))
              for k, (kind, value) in enumerate(lines[-4:]) if kind == "mark"]
    records = as_records(run(params, lines).outputs)
    ctx = check(params, records)
    assert ctx.mismatches == [], text_of(ctx)
    read_back = as_read_back(params, records)
    assert read_back.mismatches == [], text_of(read_back)


# ----------------------------------------------------------------------- tampered outputs
def set_close(field: str, value: str, **where):
    def change(records):
        first(records, "liquidation", **where)["closes"][0][field] = value
    return change


def set_field(kind: str, field: str, value, **where):
    def change(records):
        first(records, kind, **where)[field] = value
    return change


def swap_split(records):
    event = first(records, "liquidation", account_id="erin")
    totals = event["totals"]
    totals["liquidator"], totals["insurance_fund"] = totals["insurance_fund"], totals["liquidator"]
    transfers = event["transfers"]
    transfers[0]["amount"], transfers[2]["amount"] = transfers[2]["amount"], transfers[0]["amount"]


def cover_above_the_fund(records):
    # the fund holds 100 above a floor of 40: it can cover 60 of the 100 shortfall, not 70
    event = first(records, "liquidation")
    event["totals"].update(insurance_cover="70.000000", socialized_loss="30.000000")
    event["transfers"] = [dict(t, amount="70.000000" if t["reason"] == "insurance_cover" else "30.000000")
                          for t in event["transfers"]]
    first(records, "insurance_fund_entry").update(delta="-70.000000", balance_after="30.000000")
    first(records, "socialized_loss")["amount"] = "30.000000"


def transfer_off_its_total(records):
    first(records, "liquidation", account_id="erin")["transfers"][0]["amount"] = "35.150001"


def haircut_above_its_weight(records):
    haircut = first(records, "haircut", account_id="S-0002")
    haircut.update(amount="2062.800001", claim_after="2062.800001")
    haircut["transfers"][0]["amount"] = "2062.800001"


def repayment_above_its_share(records):
    repayment = first(records, "claim_repayment", account_id="S-0002")
    repayment.update(amount="30.035491", claim_after="128.045870")
    repayment["transfers"][0]["amount"] = "30.035491"


def deficit_forgetting_what_is_left(records):
    # round 1 of BTC-PERP/long starts from the 9 units round 0 carried, not from nothing
    summary_ = [r["value"] for r in records if r["value"]["type"] == "haircut_round"][1]
    summary_.update(deficit_before="0.000000", shared="0.000000", carried="0.000000")


def closes_out_of_order(records):
    closes = first(records, "liquidation")["closes"]
    closes[0], closes[1] = closes[1], closes[0]


def socialized_on_the_wrong_side(records):
    first(records, "socialized_loss")["side"] = "short"


def orphan_fund_entry(records):
    first(records, "insurance_fund_entry")["liquidation_id"] = "f" * 32


def repeated_with_other_content(records):
    again = copy.deepcopy(next(r for r in records if r["value"]["type"] == "liquidation"))
    again["value"]["severity_ppm"] += 1
    records.append(again)


TAMPERED = [
    pytest.param("golden", set_close("penalty", "35.757491", account_id="alice", bankrupt=False),
                 ("liquidation", "closes[0].penalty", "35.757490", "35.757491"),
                 id="a penalty off by one unit is caught at its close"),
    pytest.param("golden", swap_split, ("liquidation", "totals.liquidator", "35.150000", "28.120000"),
                 id="a split with the liquidator's and the fund's shares swapped is caught"),
    pytest.param("bankruptcy", cover_above_the_fund,
                 ("liquidation", "totals.insurance_cover", "60.000000 (min(shortfall, max(0, balance 100.000000 "
                  "− floor 40.000000)))", "70.000000"),
                 id="a cover above what the fund holds over its floor is caught"),
    pytest.param("bankruptcy", cover_above_the_fund,
                 ("insurance_fund_entry", "balance_after", "at least the floor 40.000000", "30.000000"),
                 id="a fund paying below its floor is caught"),
    pytest.param("golden", set_field("insurance_fund_entry", "balance_after", "1028.120001"),
                 ("insurance_fund_entry", "balance_after", "1028.120000 (previous balance_after 1000.000000 + delta "
                  "28.120000)", "1028.120001"),
                 id="a broken balance chain is caught at the entry that breaks it"),
    pytest.param("golden", set_close("execution_price", "19040.5", account_id="bob"),
                 ("liquidation", "closes[0].execution_price", "19040.4 (mark 19050.0, slippage 500 ppm)", "19040.5"),
                 id="a wrong execution price is caught"),
    pytest.param("golden", set_close("realized_pnl", "-629.699999", account_id="erin"),
                 ("liquidation", "closes[0].realized_pnl", "-629.700000", "-629.699999"),
                 id="a realized PnL off by one unit is caught"),
    pytest.param("golden", transfer_off_its_total,
                 ("liquidation", "transfers[0]", "account:erin → liquidator 35.150000",
                  "account:erin → liquidator 35.150001 (penalty_liquidator)"),
                 id="a transfer that does not match its total is caught"),
    pytest.param("golden", transfer_off_its_total,
                 ("liquidation", "collateral_after", "journal", "0.000000"),
                 id="a transfer list that does not balance the account's journal is caught"),
    pytest.param("golden", set_field("liquidation", "liquidation_id", "0" * 32, account_id="erin"),
                 ("liquidation", "liquidation_id", 'sha256("erin|cross|seq|n")', "0" * 32),
                 id="a wrong liquidation id is caught"),
    pytest.param("golden", set_field("liquidation", "severity_ppm", 595142, account_id="erin"),
                 ("liquidation", "severity_ppm", "595141", "595142"),
                 id="a severity off by one ppm is caught"),
    pytest.param("golden", set_close("penalty_rate_ppm", 2393, account_id="erin"),
                 ("liquidation", "closes[0].penalty_rate_ppm", "2392", "2393"),
                 id="a penalty rate off the severity scale is caught"),
    pytest.param("golden", set_field("liquidation", "bankrupt", False, account_id="carol"),
                 ("liquidation", "bankrupt", "true (LV before = -4.850000)", "false"),
                 id="a bankruptcy reported as solvent is caught"),
    pytest.param("golden", set_field("liquidation", "equity_after", "5.295311", account_id="alice"),
                 ("liquidation", "equity_after", "5.295310", "5.295311"),
                 id="an equity after the closes off by one unit is caught"),
    pytest.param("golden", set_close("mark_price", "19050.1", account_id="bob"),
                 ("liquidation", "closes[0].mark_price", "19050.0 (the trigger's mark)", "19050.1"),
                 id="a close at another mark than its trigger's is caught"),
    pytest.param("golden", set_field("liquidation", "params_version", "0" * 16, account_id="erin"),
                 ("liquidation", "params_version", "28548173e0bf7269", "0" * 16),
                 id="an output of other parameters is caught"),
    pytest.param("golden", orphan_fund_entry,
                 ("insurance_fund_entry", "liquidation_id", "the id of a liquidation event", "f" * 32),
                 id="a fund entry that belongs to no liquidation is caught"),
    pytest.param("golden", repeated_with_other_content,
                 ("liquidation", "content", "the same content as its first delivery", "other content at line 30"),
                 id="an id delivered twice with different content is caught"),
    pytest.param("two symbols", closes_out_of_order,
                 ("liquidation", "closes[0].symbol", "BTC-PERP (every position is closed whole, in descending MM_i)",
                  "ETH-PERP"),
                 id="closes out of the descending maintenance order are caught"),
    pytest.param("bankruptcy", socialized_on_the_wrong_side,
                 ("liquidation", "socialized_loss events", "BTC-PERP/long 40.000000", "BTC-PERP/short 40.000000"),
                 id="a socialized loss attributed to the wrong side is caught"),
    pytest.param("sharing", haircut_above_its_weight,
                 ("haircut", "amount", "at most the weight 2062.800000", "2062.800001"),
                 id="a haircut above its weight is caught"),
    pytest.param("sharing", haircut_above_its_weight,
                 ("haircut", "amount", "158.081361 (floor(shared 1964.200000 · weight 2062.800000 / eligible_weight "
                  "25630.800000))", "2062.800001"),
                 id="a haircut off its pro-rata share of the round is caught"),
    pytest.param("sharing", set_field("haircut", "haircut_id", "1" * 32, account_id="S-0002"),
                 ("haircut", "haircut_id", "5ec16d19e2e2cffdd9ca01eede07e112", "1" * 32),
                 id="a wrong haircut id is caught"),
    pytest.param("sharing", set_field("haircut_round", "carried", "0.000010"),
                 ("haircut_round", "carried", "0.000009 (deficit_before − paid)", "0.000010"),
                 id="a wrong haircut round carry is caught"),
    pytest.param("sharing", set_field("haircut_round", "round_id", "2" * 32),
                 ("haircut_round", "round_id", "aa2e211a9f11b63a627618dd1e7cfca1 (round 0 of BTC-PERP/long)", "2" * 32),
                 id="a wrong haircut round id is caught"),
    pytest.param("sharing", deficit_forgetting_what_is_left,
                 ("haircut_round", "deficit_before", "0.000009", "0.000000"),
                 id="a round that forgets the deficit the previous round carried is caught"),
    pytest.param("sharing", set_field("haircut", "claim_after", "158.081362", account_id="S-0002"),
                 ("haircut", "claim_after", "158.081361", "158.081362"),
                 id="a claim that does not add up the account's haircuts is caught"),
    pytest.param("sharing", repayment_above_its_share,
                 ("claim_repayment", "amount", "30.035490 (floor(budget 373.198400 · claim_before 158.081361 / "
                  "claims_before 1964.199991))", "30.035491"),
                 id="a repayment above its share is caught"),
    pytest.param("sharing", set_field("repayment_round", "balance_before", "383.198401"),
                 ("repayment_round", "balance_before", "383.198400", "383.198401"),
                 id="a repayment round that misstates the fund's balance is caught"),
    pytest.param("sharing", set_field("repayment_round", "claims_before", "1964.199992"),
                 ("repayment_round", "claims_before", "1964.199991", "1964.199992"),
                 id="a repayment round that misstates the outstanding claims is caught"),
]


@pytest.mark.parametrize("source, change, expected", TAMPERED)
def test_a_tampered_output_is_caught(source, change, expected):
    params, records = SOURCES[source]()
    assert check(params, records).mismatches == []
    change(records)
    ctx = check(params, records)
    assert found(ctx, *expected), text_of(ctx)


def test_a_mismatch_prints_the_event_id_field_expected_and_got_and_exits_non_zero(tmp_path, capsys):
    params, records = golden()
    set_close("penalty", "35.757491", account_id="alice", bankrupt=False)(records)
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main_verify([str(path), "--params", str(EXAMPLE_PARAMS)]) == 1
    out = capsys.readouterr().out
    assert ("liquidation be1297c8da5c455c079d71a3da1b6ee9  closes[0].penalty: expected 35.757490 "
            "(min(floor(Nc·f/10^6) = 35.757490, max(0, LV1 = 40.400000))), got 35.757491") in out
    assert "FAILED: 2 mismatch(es) in 1 event(s)" in out  # the close, and totals.penalty ≠ Σ close penalties


def test_read_back_topic_by_topic_a_forgotten_deficit_is_still_caught():
    params, records = sharing()
    deficit_forgetting_what_is_left(records)
    ctx = as_read_back(params, records)
    assert any(m.kind == "haircut_round" and m.field == "deficit_before" and m.got == "0.000000"
               for m in ctx.mismatches), text_of(ctx)


def test_unreadable_input_and_missing_files():
    params, _ = golden()
    ctx = Context(params)
    assert records_from_lines([b"not json\n", b"[1, 2]\n", b"\n"], ctx) == []
    assert [(m.kind, m.event_id) for m in ctx.mismatches] == [("input", "line 1"), ("input", "line 2")]
    assert main_verify(["/nonexistent/out.jsonl", "--params", str(EXAMPLE_PARAMS)]) == 2


def test_a_file_read_as_topic_dumps_or_from_stdin_still_verifies(monkeypatch, capsys):
    golden_path = GOLDEN / "crash.out.jsonl"
    assert main_verify([str(golden_path), "--params", str(EXAMPLE_PARAMS), "--unordered"]) == 0
    assert "topic by topic" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(golden_path.read_bytes())))
    assert main_verify(["-", "--params", str(EXAMPLE_PARAMS)]) == 0
    assert "from stdin (emission order)" in capsys.readouterr().out


def test_the_progress_of_a_long_read_is_shown_on_stderr():
    from worker.tools.verify import Progress

    stream = io.StringIO()  # not a terminal: a line per tenth
    progress = Progress(True, stream)
    for done in range(0, 5_001, 500):
        progress.update(done, 5_000)
    progress.update(5_000, 5_000, final=True)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "reading topics:   0% 0/5,000 records" and lines[-1].endswith("100% 5,000/5,000 records")
    quiet = io.StringIO()
    Progress(True, quiet).update(10, 100)  # a short read shows nothing
    Progress(False, quiet).update(5_000, 50_000)
    assert quiet.getvalue() == ""


# ------------------------------------------------------------------ engine bugs it catches
def smallest_plus_one(original):
    def patched(*args, **kwargs):
        delta = original(*args, **kwargs)
        return None if delta is None else delta + 1
    return patched


def smallest_minus_one(original):
    def patched(*args, **kwargs):
        delta = original(*args, **kwargs)
        return None if delta is None or delta <= 1 else delta - 1
    return patched


def liquidator_rounded_up(original):
    def patched(*args, **kwargs):
        plan = original(*args, **kwargs)
        if plan.insurance_fund_units:
            plan = replace(plan, liquidator_units=plan.liquidator_units + 1,
                           insurance_fund_units=plan.insurance_fund_units - 1)
        return plan
    return patched


def budget_ignoring_repay_above(original):
    return lambda balance, repay_above, claims: original(balance, 0, claims)


ENGINE_BUGS = [
    pytest.param("worker.core.liquidation.smallest_restoring_close", smallest_plus_one, "golden",
                 ("liquidation", "closes[0].closed_size", "0.932 (the smallest close that meets the bar", "0.933"),
                 id="an engine that closes one lot more than the smallest restoring close"),
    pytest.param("worker.core.liquidation.smallest_restoring_close", smallest_minus_one, "golden",
                 ("liquidation", "closes[0].closed_size", "0.932 (the smallest close that meets the bar", "0.931"),
                 id="an engine that closes one lot less than the bar needs"),
    pytest.param("worker.core.engine.plan_liquidation", liquidator_rounded_up, "golden",
                 ("liquidation", "totals.liquidator", "35.150000", "35.150001"),
                 id="an engine that rounds the liquidator's share up"),
    pytest.param("worker.core.sharing.repayment_budget", budget_ignoring_repay_above, "sharing",
                 ("repayment_round", "budget", "373.198400", "383.198400"),
                 id="an engine that repays claims from the fund's whole balance, ignoring repay_above"),
]


@pytest.mark.pure_core
@pytest.mark.parametrize("target, bug, source, expected", ENGINE_BUGS)
def test_an_engine_bug_is_caught(monkeypatch, target, bug, source, expected):
    import importlib

    module_name, _, name = target.rpartition(".")
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, name, bug(getattr(module, name)))
    if source == "golden":
        params = load_params(str(EXAMPLE_PARAMS))
        records = replayed(params, (EXAMPLES / "crash.jsonl").read_bytes().splitlines())
    else:
        text, lines = sharing_scenario()
        params = parse_params(text.encode())
        records = replayed(params, lines)
    ctx = check(params, records)
    assert found(ctx, *expected), text_of(ctx)


# --------------------------------------------------------------------- written apart
BANNED = {"worker.core.liquidation", "worker.core.engine", "worker.core.fund", "worker.core.sharing",
          "worker.core.margin"}


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_names(name: str, path: Path) -> set[str]:
    """Every module an import statement of ``path`` can load — at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def import_closure(start: list[str]) -> set[str]:
    """The project modules loaded, transitively, by importing ``start`` (packages' __init__ included)."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        name = stack.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        stack.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        stack.extend(imported_names(name, path))
    return seen


def verify_modules() -> list[str]:
    return sorted(f"worker.tools.{p.stem}" for p in (ROOT / "worker" / "tools").glob("verify*.py"))


def test_verify_imports_nothing_of_the_engine_transitively():
    modules = verify_modules()
    assert "worker.tools.verify" in modules and len(modules) >= 4
    closure = import_closure(modules)
    assert closure & BANNED == set()
    assert {"worker.core.fixed", "worker.core.params", "worker.kafka_security"} <= closure  # what it may share


def test_the_import_check_would_catch_an_engine_import_through_another_module():
    closure = import_closure(["worker.replay"])  # replay imports the engine, which imports the rest
    assert BANNED <= closure
    assert "worker.core.engine" in import_closure(["worker.cli"])  # a lazy import inside a function counts


# --------------------------------------------------------------------------- broker tier
@pytest.fixture(scope="module")
def broker():
    from worker.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running


def verify_read_back(broker, prefix: str, params_path: Path, capsys) -> str:
    capsys.readouterr()
    status = main_verify(["--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "--params", str(params_path),
                          "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "topic by topic" in out and "OK: no mismatch" in out
    return out


@pytest.mark.broker
def test_verify_reads_back_the_topics_of_a_worker_fed_in_lockstep(broker, tmp_path, capsys):
    import asyncio

    from topics.catalog import topic_specs
    from worker.broker import create_topics
    from worker.harness import WorkerGroup, feed_lockstep, read_topics, scenario_records

    text, lines = sharing_scenario()
    params_path = tmp_path / "params.toml"
    params_path.write_text(text)
    expected = [r for r in replayed(parse_params(text.encode()), lines) if r["topic"] == "loss-sharing"]
    prefix = "v0-"
    create_topics(broker.bootstrap, topic_specs(prefix, 4))
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(1)
        asyncio.run(group.wait_ready())
        asyncio.run(feed_lockstep(broker.bootstrap, scenario_records(lines, prefix), group.ports, prefix,
                                  rounds=True))
        asyncio.run(read_topics(broker.bootstrap, [prefix + "loss-sharing"],
                                until=lambda f: len(f[prefix + "loss-sharing"]) >= len(expected)))
    out = verify_read_back(broker, prefix, params_path, capsys)
    assert "repayment_round               6" in out and "haircut_round                 8" in out


@pytest.mark.broker
def test_verify_reads_back_the_topics_of_two_workers_in_streaming_order(broker, tmp_path, capsys):
    """Two workers, input produced at once: the topics' order across partitions is the stream's."""
    import asyncio

    from topics.catalog import topic_specs
    from worker.broker import create_topics
    from worker.harness import WorkerGroup, feed_phase, rounds_settled, scenario_records

    text, lines = sharing_scenario(accounts=120, seed=8)
    params_path = tmp_path / "params.toml"
    params_path.write_text(text)
    prefix = "v1-"
    create_topics(broker.bootstrap, topic_specs(prefix, 4))
    records = scenario_records(lines, prefix)
    setup = [r for r in records if r[0] != prefix + "mark-prices"]
    ticks = [r for r in records if r[0] == prefix + "mark-prices"]
    with WorkerGroup(broker.bootstrap, params_path, app_id=prefix + "w", prefix=prefix, log_dir=tmp_path) as group:
        group.start(2)
        asyncio.run(group.wait_ready())
        asyncio.run(feed_phase(broker.bootstrap, ticks[:1] + setup, group.ports, prefix))
        asyncio.run(feed_phase(broker.bootstrap, ticks[1:], group.ports, prefix))
        asyncio.run(rounds_settled(broker.bootstrap, group.ports, prefix, 60))
    out = verify_read_back(broker, prefix, params_path, capsys)
    checked = {m[1]: int(m[2]) for m in re.finditer(r"\n  (\w+) +(\d+)", out)}
    assert checked["liquidation"] > 0 and checked["haircut"] > 0 and checked["haircut_round"] > 0
