"""Topic catalog and JSON Schemas (SPEC §6) checked against the code, the golden output and the examples."""
from __future__ import annotations

import ast
import copy
import inspect
import json
import re
import subprocess
import sys

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures import EXAMPLES, GOLDEN, ROOT, Driver, balance, make_params, position
from topics.catalog import (
    CATALOG_VERSION, TopicSpec, all_topics, event_types, get_topic, topic_for_event, topic_name, topic_specs,
)
from topics.schemas import UnknownEventType, load_schema, schema_event_types, validate_event
from worker.core.outputs import Output, Source
from worker.core.params import Params, parse_params
from worker.replay import replay_lines

T = 1_700_000_000_000
OUT_TYPES = {t for spec in all_topics() if spec.direction == "out" for t in spec.event_types}
QUOTE_REASONS = {"penalty_liquidator", "penalty_protocol", "penalty_insurance_fund", "insurance_cover",
                 "socialized_loss"}
# how each catalog key is read from an event of its topic
KEY_OF = {
    "account_id": lambda value: value["account_id"],
    "asset": lambda value: value["asset"],
    "symbol": lambda value: value["symbol"],
    "source topic": lambda value: value["source"]["topic"],
    "account_id (haircut rounds: symbol; repayment rounds: asset)": lambda value: (
        value["symbol"] if value["type"] == "haircut_round"
        else value["asset"] if value["type"] == "repayment_round" else value["account_id"]),
}


def golden_lines() -> list[dict]:
    return [json.loads(line) for line in (GOLDEN / "crash.out.jsonl").read_text().splitlines()]


def example_params() -> Params:
    return parse_params((EXAMPLES / "params.toml").read_bytes())


def decimals(text: str) -> int:
    return len(text.partition(".")[2])


def check_scales(value: dict, params: Params) -> None:
    """SPEC §6: amounts, prices and sizes carry exactly their scale's number of decimals."""
    q = params.quote_decimals

    def price(symbol: str, text: str | None) -> None:
        if text is not None:
            assert decimals(text) == params.symbols[symbol].price_decimals, (symbol, text)

    def size(symbol: str, text: str) -> None:
        assert decimals(text) == params.symbols[symbol].size_decimals, (symbol, text)

    def quote(*texts: str) -> None:
        for text in texts:
            assert decimals(text) == q, text

    kind = value["type"]
    if "trigger" in value and value["trigger"]["symbol"] is not None:
        price(value["trigger"]["symbol"], value["trigger"]["price"])
    if kind == "liquidation":
        quote(*(value[f] for f in ("equity_before", "maintenance_before", "equity_after", "maintenance_after",
                                   "collateral_before", "collateral_after")))
        quote(*value["totals"].values(), *(t["amount"] for t in value["transfers"]))
        for close in value["closes"]:
            quote(close["realized_pnl"], close["penalty"])
            size(close["symbol"], close["closed_size"])
            size(close["symbol"], close["remaining_size"])
            for field in ("mark_price", "execution_price", "entry_price"):
                price(close["symbol"], close[field])
    elif kind in ("margin_call", "margin_call_cleared"):
        quote(value["equity"], value["maintenance"], value["call_level"])
    elif kind == "insurance_fund_entry":
        quote(value["delta"], value["balance_after"])
    elif kind == "socialized_loss":
        quote(value["amount"])
    elif kind == "risk_snapshot":
        price(value["symbol"], value["mark_price"])
        size(value["symbol"], value["open_interest_long"])
        size(value["symbol"], value["open_interest_short"])
        quote(value["notional_at_risk"])


def check_output(topic: str, key: str | None, value: dict, params: Params | None = None) -> None:
    """An output message: schema-valid, on the catalog topic of its type, keyed as the catalog says."""
    validate_event(value)
    spec = topic_for_event(value["type"])
    assert spec.direction == "out", value["type"]
    assert topic == spec.name, (value["type"], topic)
    assert key == KEY_OF[spec.key](value), (topic, key)
    if params is not None:
        check_scales(value, params)


# --------------------------------------------------------------------------- (a) golden output
@pytest.mark.parametrize("line", golden_lines(), ids=lambda line: f"{line['topic']}:{line['value']['type']}")
def test_every_golden_output_is_valid_on_its_catalog_topic_with_its_key(line):
    check_output(line["topic"], line["key"], line["value"], example_params())


def test_the_golden_output_uses_only_catalog_output_topics():
    outs = {spec.name for spec in all_topics() if spec.direction == "out"}
    assert {line["topic"] for line in golden_lines()} <= outs


# ------------------------------------------------------- (b) code ↔ catalog ↔ schema files
def source(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def core_source() -> str:
    """Every module of the pure core (the builders live in outputs.py, engine.py and fund.py)."""
    return "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "worker" / "core").glob("*.py")))


def test_every_event_type_built_by_the_code_has_a_catalog_topic_and_a_schema():
    text = core_source() + source("worker/rounds.py")  # the rounds' broadcast is built by the coordinator
    built = set(re.findall(r'"type":\s*"([a-z_]+)"', text))
    built |= set(re.findall(r'_margin_call\(\s*"([a-z_]+)"', text))  # margin_call_event(kind=...)
    assert OUT_TYPES <= built  # the scan sees every output builder
    assert built == {t for spec in all_topics() if spec.direction != "in" for t in spec.event_types}
    for event_type in built:
        assert load_schema(event_type)["properties"]["type"] == {"const": event_type}


def test_every_topic_the_core_publishes_to_is_a_catalog_output_or_internal_topic():
    published = set(re.findall(r'Output\(\s*"([a-z-]+)"', core_source()))
    assert {spec.name for spec in all_topics() if spec.direction == "out"} <= published
    assert published <= {spec.name for spec in all_topics() if spec.direction != "in"}


def test_schema_files_and_catalog_event_types_are_the_same_set():
    assert sorted(schema_event_types()) == sorted(event_types())


@pytest.mark.parametrize("event_type", sorted(event_types()))
def test_each_schema_is_a_valid_draft_2020_12_schema_for_its_type(event_type):
    schema = load_schema(event_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f":{event_type}:v1")
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["type"] == {"const": event_type}
    if event_type in OUT_TYPES:  # outputs are closed: every property named and required
        assert schema["additionalProperties"] is False
        # ... or required in exactly one alternative (a fund entry names its liquidation or its round)
        alternatives = [set(branch["required"]) for branch in schema.get("oneOf", [])]
        assert all(len(a) == 1 for a in alternatives) and len(set().union(*alternatives)) == len(alternatives)
        assert set(schema["required"]) | set().union(*alternatives) == set(schema["properties"])
        assert {"type", "schema_version", "ts"} <= set(schema["required"])
        assert schema["properties"]["schema_version"] == {"const": 1}


def test_input_schemas_name_every_field_the_decoder_reads():
    text = source("worker/core/inputs.py")
    read = set(re.findall(r'(?:_require|_str_field|_int_field|_decimal_field)\(event, "([a-z_]+)"', text))
    read |= set(re.findall(r'event\.get\("([a-z_]+)"', text))
    read |= set(re.findall(r'"([a-z_]+)" in event', text))
    documented = {f for t in ("mark_price", "position", "balance") for f in load_schema(t)["properties"]}
    assert read and read <= documented
    mark_body = text[text.index("def decode_mark"):text.index("def decode_position_event")]
    mark_read = set(re.findall(r'(?:_str_field|_int_field|_decimal_field)\(event, "([a-z_]+)"', mark_body))
    mark_read |= set(re.findall(r'event\.get\("([a-z_]+)", MISSING\)', mark_body))  # required: absent → missing_field
    assert mark_read == set(load_schema("mark_price")["required"])


def test_dead_letter_error_codes_are_exactly_the_codes_the_code_raises():
    text = "".join(source(p) for p in ("worker/core/inputs.py", "worker/core/fixed.py", "worker/core/engine.py",
                                       "worker/replay.py", "topics/codec.py", "worker/core/outputs.py"))
    raised = set(re.findall(r'(?:BadInput|DecodeError|DecimalFormatError)\(\s*"([a-z0-9_]+)"', text))
    raised |= set(re.findall(r'dead_letter_event\([^()]*code="([a-z0-9_]+)"', text))
    raised |= set(re.findall(r'dead_letter\((?:Source\([^()]*\)|[^,()]+),\s*"([a-z0-9_]+)"', text))
    assert {"stale_seq", "unknown_topic", "wrong_partition", "not_utf8"} <= raised  # the scan works
    enum = load_schema("dead_letter")["properties"]["error"]["properties"]["code"]["enum"]
    assert set(enum) == raised


def test_transfer_reasons_in_the_builder_are_the_schema_enum():
    reasons = set(re.findall(r'"(penalty_[a-z_]+|insurance_cover|socialized_loss)"\),?\s*$',
                             source("worker/core/outputs.py"), re.M))
    enum = load_schema("liquidation")["properties"]["transfers"]["items"]["properties"]["reason"]["enum"]
    assert reasons == set(enum) == QUOTE_REASONS


# ------------------------------------------------------------------------- engine scenarios
def run_scenario(name: str) -> tuple[Params, list[Output]]:
    return SCENARIOS[name]()


def _call_then_cleared_with_snapshots():
    # wallet 1 000, long 1 BTC @ 20 000, MM 0.4 %, call level 1.5 · MM. 19 100: EQ 100 ∈ [MM 76.4, 114.6) → call;
    # 19 500: EQ 500 → healthy (cleared). Snapshots every second of event time.
    params = make_params(snapshot_interval_ms=1_000)
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions(balance("alice", "1000", 1, T), position("alice", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.positions(position("bob", "BTC-PERP", "-0.500", "20000.0", 1, T))
    driver.mark("BTC-PERP", "19100.0", T + 1_000, 2)
    driver.mark("BTC-PERP", "19500.0", T + 2_000, 3)
    snapshots = driver.values("risk-snapshots")
    assert [s["accounts_in_margin_call"] for s in snapshots] == [0, 1, 0]
    assert (snapshots[1]["open_interest_long"], snapshots[1]["open_interest_short"]) == ("1.000", "0.500")
    assert [(e["type"], e["zone"]) for e in driver.values("margin-calls")] == [
        ("margin_call", "call"), ("margin_call_cleared", "healthy")]
    return params, driver.outputs


def _solvent_liquidation_with_every_penalty_share():
    params = make_params(mode="full", protocol_ppm=200_000, btc_penalty='{model = "flat", min_ppm = 1000}')
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions(balance("alice", "1000", 1, T), position("alice", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.mark("BTC-PERP", "19050.0", T + 1, 2)
    [event] = driver.liquidations()
    assert {t["reason"] for t in event["transfers"]} == {"penalty_liquidator", "penalty_protocol",
                                                         "penalty_insurance_fund"}
    return params, driver.outputs


def _bankruptcy_with_cover_and_socialized_loss():
    # fund 100, floor 40: shortfall 100 → cover 60, socialized 40 (cf. test_liquidation)
    params = make_params(initial_balance="100", floor="40")
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.positions(balance("acct", "1000", 1, T), position("acct", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.mark("BTC-PERP", "18900.0", T + 1, 2)
    assert [o.value["type"] for o in driver.outputs] == ["insurance_fund_entry", "socialized_loss", "liquidation"]
    return params, driver.outputs


def _short_bankruptcy_on_two_symbols():
    # wallet 500, short 1 BTC @ 20 000 and short 10 ETH @ 1 500; ETH 1 520: EQ 300, still healthy;
    # BTC 20 400: EQ −100 → bankrupt, empty fund: 100 socialized over both losing closes (400 and 200)
    params = make_params(mode="full")
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    driver.positions(balance("dave", "500", 1, T), position("dave", "BTC-PERP", "-1.000", "20000.0", 2, T),
                     position("dave", "ETH-PERP", "-10.00", "1500.00", 3, T))
    driver.mark("ETH-PERP", "1520.00", T + 1, 2)
    assert driver.liquidations() == []
    driver.mark("BTC-PERP", "20400.0", T + 2, 2)
    losses = driver.values("insurance-fund", "socialized_loss")
    assert {(e["symbol"], e["side"]) for e in losses} == {("BTC-PERP", "short"), ("ETH-PERP", "short")}
    return params, driver.outputs


def _balance_and_position_triggers_and_isolated_scope():
    params = make_params()
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    driver.positions(balance("erin", "1000", 1, T), position("erin", "BTC-PERP", "1.000", "20000.0", 2, T))
    driver.positions(balance("erin", "50", 3, T + 1))  # balance trigger: symbol and price null
    driver.positions(balance("frank", "100", 1, T), position("frank", "ETH-PERP", "10.00", "1500.00", 2, T))
    driver.positions(position("frank", "ETH-PERP", "40.00", "1500.00", 3, T + 2))  # position trigger
    driver.positions(balance("carol", "5000", 1, T),
                     position("carol", "BTC-PERP", "0.500", "20000.0", 2, T, margin_mode="isolated",
                              isolated_margin="300"))
    driver.mark("BTC-PERP", "19000.0", T + 3, 2)
    triggers = [(e["account_id"], e["scope"], e["trigger"]["source"], e["trigger"]["symbol"], e["trigger"]["price"])
                for e in driver.liquidations()]
    assert ("erin", "cross", "balance", None, None) in triggers
    assert ("carol", "BTC-PERP", "mark", "BTC-PERP", "19000.0") in triggers
    assert any(t[0] == "frank" and t[2] == "position" for t in triggers)
    return params, driver.outputs


def _dead_letters_of_every_encoding():
    params = make_params()
    driver = Driver(params)
    engine = driver.engine
    driver.mark("BTC-PERP", "20000.0", T, 1)
    # a batch with bad elements: each dead-lettered alone with its index, the element as JSON
    driver.positions(balance("a", "1000", 1, T), position("a", "DOGE-PERP", "1", "1", 2, T), None)
    driver.mark("BTC-PERP", "19999.0", T, 1)  # stale seq
    mark_batch = [{"symbol": "BTC-PERP", "mark_price": 1.5, "ts": T, "seq": 5}, 42]
    driver.outputs.extend(engine.process_mark(mark_batch, Source("mark-prices", 2, 7, b"BTC-PERP", b"[...]")))
    driver.outputs.extend(engine.process_positions(balance("b", "1", 1, T), Source("positions", 1, 3, b"b", b"{}"),
                                                   accept_account=lambda account: False))
    # a message that is not UTF-8 (base64), one without key or value, and two bad replay lines
    driver.outputs.extend([
        engine.dead_letter(Source("positions", 0, 9, b"\xff\xfe", b"\x80\x81"), "not_utf8", "not UTF-8"),
        engine.dead_letter(Source("positions", None, None, None, None), "decode_error", "empty message"),
        *replay_lines([b"not json\n", b'{"topic":"orders","key":"x","value":{}}\n'], engine),
    ])
    dead = driver.values("dead-letters")
    assert {d["value_encoding"] for d in dead} == {"utf-8", "base64", "json", "none"}
    assert {d["key_encoding"] for d in dead} == {"utf-8", "base64", "none"}
    assert {d["source"]["index"] for d in dead} >= {1, 2, 0, None}
    assert {d["error"]["code"] for d in dead} >= {"unknown_symbol", "stale_seq", "wrong_type", "not_object",
                                                  "wrong_partition", "not_utf8", "decode_error", "unknown_topic"}
    return params, driver.outputs


def _haircut_and_repayment_rounds():
    # the worked book of tests/test_sharing.py: a bankruptcy, a haircut round, a penalty credit,
    # a repayment round with its residue
    from tests.fixtures import SHARING_T0 as T0, sharing_book

    driver = sharing_book()
    for k, (symbol, price, seq) in enumerate([("BTC-PERP", "18900.0", 2), ("BTC-PERP", "18900.0", 3),
                                              ("ETH-PERP", "1480.00", 2), ("ETH-PERP", "1480.00", 3)], start=1):
        driver.mark(symbol, price, T0 + 1000 * k, seq)
    kinds = {o.value["type"] for o in driver.outputs}
    assert {"haircut", "haircut_round", "claim_repayment", "repayment_round"} <= kinds
    return driver.engine.params, driver.outputs


SCENARIOS = {
    "haircut and repayment rounds": _haircut_and_repayment_rounds,
    "margin call then cleared, with snapshots": _call_then_cleared_with_snapshots,
    "solvent liquidation with every penalty share": _solvent_liquidation_with_every_penalty_share,
    "bankruptcy with cover and socialized loss": _bankruptcy_with_cover_and_socialized_loss,
    "short bankruptcy on two symbols": _short_bankruptcy_on_two_symbols,
    "balance and position triggers, isolated scope": _balance_and_position_triggers_and_isolated_scope,
    "dead letters of every encoding": _dead_letters_of_every_encoding,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_output_of_an_engine_scenario_is_valid_on_its_catalog_topic(name):
    params, outputs = run_scenario(name)
    assert outputs
    for output in outputs:
        check_output(output.topic, output.key, output.value, params)


def test_the_scenarios_and_the_golden_output_cover_every_output_type_zone_trigger_and_reason():
    values = [line["value"] for line in golden_lines()]
    for name in SCENARIOS:
        values += [o.value for o in run_scenario(name)[1]]
    assert {v["type"] for v in values} == OUT_TYPES
    assert {v["zone"] for v in values if v["type"].startswith("margin_call")} == {"call", "healthy", "liquidatable"}
    assert {v["trigger"]["source"] for v in values if "trigger" in v} == {"mark", "position", "balance"}
    assert {t["reason"] for v in values if v["type"] == "liquidation" for t in v["transfers"]} == QUOTE_REASONS
    assert {v["reason"] for v in values if v["type"] == "insurance_fund_entry"} == {
        "penalty_insurance_fund", "insurance_cover", "claim_repayment", "repayment_residue"}


def test_streaming_settlement_requests_and_the_fund_agent_outputs_are_valid():
    """remote settlement: the engine sends `fund_request`s on the internal topic (key: the asset),
    the single-writer fund agent turns them into insurance-fund events and the bankrupt allocation."""
    engine_module = pytest.importorskip("worker.core.engine")
    fund_module = pytest.importorskip("worker.core.fund")
    if "remote_settlement" not in inspect.signature(engine_module.Engine).parameters or not hasattr(
            fund_module, "FundLedger"):
        pytest.skip("no remote settlement in this engine")
    params = make_params(initial_balance="100", floor="40", protocol_ppm=100_000,
                         btc_penalty='{model = "flat", min_ppm = 1000}')
    engine = engine_module.Engine(params, remote_settlement=True)
    src = Source("positions", 0, 0, None, b"")
    outputs = engine.process_mark({"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T, "seq": 1}, src)
    outputs += engine.process_positions([balance("a", "1000", 1, T), position("a", "BTC-PERP", "1.000", "20000.0", 2, T),
                                         balance("b", "1000", 1, T), position("b", "BTC-PERP", "0.500", "20000.0", 2, T)],
                                        src)
    outputs += engine.process_mark({"symbol": "BTC-PERP", "mark_price": "18900.0", "ts": T + 1, "seq": 2}, src)
    requests = [o for o in outputs if o.topic == "insurance-requests"]
    assert requests
    ledger = fund_module.FundLedger(params)
    for request in requests:
        assert get_topic(request.topic).direction == "internal" and request.key == params.asset
        validate_event(json.loads(json.dumps(request.value)))  # as it travels: JSON
        for item in request.value["items"]:
            outputs += ledger.apply(item)[0]
    published = [o for o in outputs if o.topic != "insurance-requests"]
    assert {o.value["type"] for o in published} >= {"liquidation", "insurance_fund_entry", "socialized_loss"}
    for output in published:
        check_output(output.topic, output.key, output.value, params)


@st.composite
def random_runs(draw):
    params = make_params(
        mode=draw(st.sampled_from(["partial", "full"])), protocol_ppm=draw(st.sampled_from([0, 100_000])),
        initial_balance="50", floor=draw(st.sampled_from(["0", "50"])), snapshot_interval_ms=1_000,
        btc_penalty=f'{{model = "severity", min_ppm = 1000, max_ppm = {draw(st.integers(1000, 3000))}}}',
        btc_slippage_ppm=draw(st.integers(0, 1000)), eth_penalty='{model = "flat", min_ppm = 2000}')
    driver = Driver(params)
    driver.mark("BTC-PERP", "20000.0", T, 1)
    driver.mark("ETH-PERP", "1500.00", T, 1)
    for i in range(draw(st.integers(1, 4))):
        events = [balance(f"acct-{i}", str(draw(st.integers(-50, 3000))), 1, T)]
        if draw(st.booleans()):
            events.append(position(f"acct-{i}", "BTC-PERP", f"{draw(st.integers(-2000, 2000)) / 1000:.3f}",
                                   "20000.0", 2, T))
        if draw(st.booleans()):
            extra = {"margin_mode": "isolated", "isolated_margin": "150"} if draw(st.booleans()) else {}
            events.append(position(f"acct-{i}", "ETH-PERP", f"{draw(st.integers(-2000, 2000)) / 100:.2f}",
                                   "1500.00", 3, T, **extra))
        driver.positions(*events)
    prices = {"BTC-PERP": 200_000, "ETH-PERP": 150_000}
    for n in range(draw(st.integers(1, 12))):
        symbol = draw(st.sampled_from(sorted(prices)))
        prices[symbol] = max(1, prices[symbol] * draw(st.integers(950_000, 1_040_000)) // 1_000_000)
        places = params.symbols[symbol].price_decimals
        text = f"{prices[symbol] // 10**places}.{prices[symbol] % 10**places:0{places}d}"
        driver.mark(symbol, text, T + 400 * (n + 1), n + 2)
    return params, driver.outputs


@given(random_runs())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_output_of_a_random_crash_is_valid_on_its_catalog_topic(run):
    params, outputs = run
    for output in outputs:
        check_output(output.topic, output.key, output.value, params)


# -------------------------------------------------------------- (c) schemas reject broken events
SOCIALIZED_LOSS = {"type": "socialized_loss", "schema_version": 1, "ts": T, "asset": "USD", "symbol": "BTC-PERP",
                   "side": "long", "amount": "40.000000", "liquidation_id": "0" * 32, "account_id": "acct"}
MARK = {"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T, "seq": 1}
POSITION = position("alice", "BTC-PERP", "1.000", "20000.0", 2, T)
BALANCE = balance("alice", "1000", 1, T)


def base_event(kind: str) -> tuple[dict, str | None]:
    """A valid event of ``kind`` (from the golden output when it has one) and the type to validate as."""
    if kind == "mark_price":
        return copy.deepcopy(MARK), "mark_price"
    if kind == "position":
        return copy.deepcopy(POSITION), None
    if kind == "balance":
        return copy.deepcopy(BALANCE), None
    if kind == "socialized_loss":
        return copy.deepcopy(SOCIALIZED_LOSS), None
    if kind == "dead_letter_json":
        value = {"type": "dead_letter", "schema_version": 1, "ts": T,
                 "source": {"topic": "positions", "partition": 0, "offset": 5, "index": 1},
                 "key": "a", "key_encoding": "utf-8", "value": {"type": "position"}, "value_encoding": "json",
                 "value_size": 120, "value_truncated": False, "error": {"code": "unknown_symbol", "message": "unknown symbol 'DOGE-PERP'"}}
        return value, None
    if kind == "bankrupt_liquidation":
        return copy.deepcopy(next(l["value"] for l in golden_lines() if l["value"].get("bankrupt") is True)), None
    return copy.deepcopy(next(l["value"] for l in golden_lines() if l["value"]["type"] == kind)), None


MISSING = object()


def mutate(event: dict, path: tuple, new: object) -> dict:
    node = event
    for part in path[:-1]:
        node = node[part]
    if new is MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return event


REJECTED = [
    # (id, base, path, new value)
    ("liquidation: float amount in totals", "liquidation", ("totals", "penalty"), 70.3),
    ("liquidation: amount with an exponent", "liquidation", ("equity_before", ), "1e2"),
    ("liquidation: amount with a leading zero", "liquidation", ("equity_before",), "0100.000000"),
    ("liquidation: amount with a plus sign", "liquidation", ("equity_before",), "+100.000000"),
    ("liquidation: missing closes", "liquidation", ("closes",), MISSING),
    ("liquidation: empty closes", "liquidation", ("closes",), []),
    ("liquidation: extra top-level field", "liquidation", ("wall_clock",), 1),
    ("liquidation: extra field in a close", "liquidation", ("closes", 0, "fee"), "1.000000"),
    ("liquidation: close side buy", "liquidation", ("closes", 0, "side"), "buy"),
    ("liquidation: negative closed size", "liquidation", ("closes", 0, "closed_size"), "-1.000"),
    ("liquidation: penalty rate above 100 %", "liquidation", ("closes", 0, "penalty_rate_ppm"), 1_000_001),
    ("liquidation: negative total", "liquidation", ("totals", "shortfall"), "-1.000000"),
    ("liquidation: missing total", "liquidation", ("totals", "insurance_cover"), MISSING),
    ("liquidation: zero transfer", "liquidation", ("transfers", 0, "amount"), "0.000000"),
    ("liquidation: unknown party", "liquidation", ("transfers", 0, "to"), "treasury"),
    ("liquidation: unknown reason", "liquidation", ("transfers", 0, "reason"), "fee"),
    ("liquidation: reason does not match the parties", "liquidation", ("transfers", 0, "reason"),
     "penalty_protocol"),
    ("liquidation: trigger source timer", "liquidation", ("trigger", "source"), "timer"),
    ("liquidation: mark trigger without price", "liquidation", ("trigger", "price"), None),
    ("liquidation: ts as a string", "liquidation", ("ts",), "1700000001000"),
    ("liquidation: negative ts", "liquidation", ("ts",), -1),
    ("liquidation: schema_version 2", "liquidation", ("schema_version",), 2),
    ("liquidation: bankrupt true as a string", "liquidation", ("bankrupt",), "true"),
    ("liquidation: uppercase liquidation_id", "liquidation", ("liquidation_id",), "38CF677FC9F0B046C156E5217C392094"),
    ("liquidation: negative collateral after", "liquidation", ("collateral_after",), "-0.000001"),
    ("bankrupt liquidation: equity after not 0", "bankrupt_liquidation", ("equity_after",), "1.000000"),
    ("bankrupt liquidation: maintenance after not 0", "bankrupt_liquidation", ("maintenance_after",), "0.000001"),
    ("insurance_fund_entry: zero delta", "insurance_fund_entry", ("delta",), "0.000000"),
    ("insurance_fund_entry: penalty share with a negative delta", "insurance_fund_entry", ("delta",), "-28.120000"),
    ("insurance_fund_entry: unknown reason", "insurance_fund_entry", ("reason",), "top_up"),
    ("insurance_fund_entry: missing liquidation_id", "insurance_fund_entry", ("liquidation_id",), MISSING),
    ("insurance_fund_entry: negative balance", "insurance_fund_entry", ("balance_after",), "-1.000000"),
    ("socialized_loss: float amount", "socialized_loss", ("amount",), 40.0),
    ("socialized_loss: side both", "socialized_loss", ("side",), "both"),
    ("socialized_loss: extra field", "socialized_loss", ("note",), "x"),
    ("margin_call: zone healthy", "margin_call", ("zone",), "healthy"),
    ("margin_call: float ratio", "margin_call", ("ratio_ppm",), 1.5),
    ("margin_call: missing call level", "margin_call", ("call_level",), MISSING),
    ("margin_call_cleared: zone call", "margin_call_cleared", ("zone",), "call"),
    ("margin_call_cleared: balance trigger with a symbol", "margin_call_cleared", ("trigger", "source"), "balance"),
    ("risk_snapshot: negative open interest", "risk_snapshot", ("open_interest_short",), "-1.000"),
    ("risk_snapshot: negative count", "risk_snapshot", ("accounts_in_margin_call",), -1),
    ("risk_snapshot: zero mark", "risk_snapshot", ("mark_price",), "0.0"),
    ("risk_snapshot: short params_version", "risk_snapshot", ("params_version",), "2854"),
    ("dead_letter: value encoding latin-1", "dead_letter", ("value_encoding",), "latin-1"),
    ("dead_letter: unknown error code", "dead_letter", ("error", "code"), "oops"),
    ("dead_letter: key null with utf-8 encoding", "dead_letter", ("key",), None),
    ("dead_letter: value not a string for utf-8", "dead_letter", ("value",), {"symbol": "BTC-PERP"}),
    ("dead_letter: negative index", "dead_letter", ("source", "index"), -1),
    ("dead_letter: missing source offset", "dead_letter", ("source", "offset"), MISSING),
    ("dead_letter: base64 key that is not base64", "dead_letter", ("key_encoding",), "base64"),
    ("dead_letter: json element without its index", "dead_letter_json", ("source", "index"), None),
    ("mark_price: float price", "mark_price", ("mark_price",), 20000.0),
    ("mark_price: negative price", "mark_price", ("mark_price",), "-1"),
    ("mark_price: zero price", "mark_price", ("mark_price",), "0.0"),
    ("mark_price: seq as a string", "mark_price", ("seq",), "1"),
    ("mark_price: seq beyond 2^63", "mark_price", ("seq",), 2**63),
    ("mark_price: wrong type", "mark_price", ("type",), "position"),
    ("mark_price: missing symbol", "mark_price", ("symbol",), MISSING),
    ("mark_price: price longer than 40 characters", "mark_price", ("mark_price",), "1" * 41),
    ("position: margin mode portfolio", "position", ("margin_mode",), "portfolio"),
    ("position: open with entry 0", "position", ("entry_price",), "0"),
    ("position: negative isolated margin", "position", ("isolated_margin",), "-1"),
    ("position: empty account id", "position", ("account_id",), ""),
    ("position: liquidation_id as a number", "position", ("liquidation_id",), 7),
    ("balance: missing asset", "balance", ("asset",), MISSING),
    ("balance: float collateral", "balance", ("collateral",), 1000.0),
    ("balance: negative ts", "balance", ("ts",), -5),
]


@pytest.mark.parametrize("kind, path, new", [pytest.param(b, p, n, id=i) for i, b, p, n in REJECTED])
def test_a_schema_rejects_a_broken_event(kind, path, new):
    event, as_type = base_event(kind)
    validate_event(event, as_type)  # the base is valid
    with pytest.raises(jsonschema.ValidationError):
        validate_event(mutate(event, path, new), as_type)


ACCEPTED = [
    ("mark_price: with type mark_price", "mark_price", ("type",), "mark_price"),
    ("mark_price: more decimals than the scale (rounded by the engine)", "mark_price", ("mark_price",), "20000.05"),
    ("mark_price: an unknown extra field (ignored by the engine)", "mark_price", ("venue",), "x"),
    ("position: closing snapshot with entry 0", "position", ("size",), "0.000"),
    ("position: short", "position", ("size",), "-1.000"),
    ("position: isolated", "position", ("margin_mode",), "isolated"),
    ("position: acknowledgement", "position", ("liquidation_id",), "38cf677fc9f0b046c156e5217c392094"),
    ("position: null liquidation_id", "position", ("liquidation_id",), None),
    ("balance: negative collateral", "balance", ("collateral",), "-12.5"),
    ("margin_call_cleared: no maintenance, null ratio", "margin_call_cleared", ("ratio_ppm",), None),
    ("margin_call_cleared: to healthy", "margin_call_cleared", ("zone",), "healthy"),
    ("dead_letter: element null in a batch", "dead_letter_json", ("value",), None),
    ("dead_letter: element a number in a batch", "dead_letter_json", ("value",), 42),
    ("dead_letter: no partition or offset", "dead_letter", ("source", "partition"), None),
]


@pytest.mark.parametrize("kind, path, new", [pytest.param(b, p, n, id=i) for i, b, p, n in ACCEPTED])
def test_a_schema_accepts_a_legitimate_variant(kind, path, new):
    event, as_type = base_event(kind)
    if kind == "position" and path == ("size",) and new == "0.000":
        event["entry_price"] = "0"
    validate_event(mutate(event, path, new), as_type)


@pytest.mark.parametrize("value", [
    pytest.param({"type": "order"}, id="unknown type"),
    pytest.param({"schema_version": 1}, id="no type"),
    pytest.param({"type": 7}, id="type not a string"),
    pytest.param({"type": "../catalog"}, id="type that is a path"),
    pytest.param([], id="not an object"),
])
def test_validate_event_refuses_an_event_without_a_known_type(value):
    with pytest.raises(ValueError):
        validate_event(value)


def test_load_schema_returns_a_fresh_copy():
    load_schema("liquidation")["properties"].clear()
    assert "closes" in load_schema("liquidation")["properties"]
    with pytest.raises(UnknownEventType):
        load_schema("order")


# ---------------------------------------------------------------- (d) the example input file
def example_input_problems() -> dict[int, str]:
    """line number → why it is not a valid input message (decoding, or the field its schema refuses)."""
    problems = {}
    for number, raw in enumerate((EXAMPLES / "crash.jsonl").read_bytes().splitlines(), start=1):
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            problems[number] = "json"
            continue
        spec = get_topic(record["topic"])
        assert spec.direction == "in" and record["key"] is not None
        elements = record["value"] if isinstance(record["value"], list) else [record["value"]]
        for element in elements:
            as_type = "mark_price" if spec.name == "mark-prices" else element.get("type")
            assert as_type in spec.event_types
            assert record["key"] == element["symbol" if spec.key == "symbol" else "account_id"]
            try:
                validate_event(element, as_type)
            except jsonschema.ValidationError as exc:
                problems[number] = "/".join(map(str, exc.absolute_path)) + f" ({exc.validator})"
    return problems


def test_every_example_input_is_valid_except_the_intentionally_bad_lines():
    # line 24: a mark at "-1" (refused by the positive-decimal pattern); line 38: truncated JSON
    assert example_input_problems() == {24: "mark_price (pattern)", 38: "json"}


def test_the_bad_example_lines_are_the_dead_letters_of_the_golden_output():
    offsets = {line["value"]["source"]["offset"] for line in golden_lines() if line["topic"] == "dead-letters"}
    assert {n - 1 for n in example_input_problems()} == offsets


# ------------------------------------------------------------------------------ (e) catalog
def test_catalog_topics_keys_directions_and_events():
    assert CATALOG_VERSION == 1
    table = {s.name: (s.key, s.direction, s.cleanup_policy, s.event_types) for s in all_topics()}
    assert table == {
        "mark-prices": ("symbol", "in", "compact", ("mark_price",)),
        "positions": ("account_id", "in", "delete", ("position", "balance")),
        "liquidations": ("account_id", "out", "delete", ("liquidation",)),
        "margin-calls": ("account_id", "out", "delete", ("margin_call", "margin_call_cleared")),
        "insurance-fund": ("asset", "out", "delete", ("insurance_fund_entry", "socialized_loss")),
        "risk-snapshots": ("symbol", "out", "delete", ("risk_snapshot",)),
        "loss-sharing": ("account_id (haircut rounds: symbol; repayment rounds: asset)", "out", "delete",
                         ("haircut", "haircut_round", "claim_repayment", "repayment_round")),
        "dead-letters": ("source topic", "out", "delete", ("dead_letter",)),
        "insurance-requests": ("asset", "internal", "delete", ("fund_request",)),
        "loss-rounds": ("round_id", "internal", "compact", ("round",)),
    }
    assert get_topic("insurance-requests").partitions == 1
    assert all(s.description for s in all_topics())


def test_topic_specs_with_a_prefix():
    specs = topic_specs("acme.", 6)
    assert [name for name, _, _ in specs] == [topic_name(s.name, "acme.") for s in all_topics()]
    assert all(name.startswith("acme.") for name, _, _ in specs)
    by_name = {name: (partitions, config) for name, partitions, config in specs}
    assert by_name["acme.mark-prices"] == (6, {"cleanup.policy": "compact"})
    assert by_name["acme.positions"] == (6, {"cleanup.policy": "delete"})
    assert by_name["acme.insurance-requests"] == (1, {"cleanup.policy": "delete"})
    assert topic_name("liquidations") == "liquidations"
    assert [n for n, _, _ in topic_specs()] == [s.name for s in all_topics()]
    with pytest.raises(ValueError):
        topic_specs("x.", 0)


def test_topic_spec_is_frozen_and_checked():
    with pytest.raises(AttributeError):
        get_topic("mark-prices").cleanup_policy = "delete"  # type: ignore[misc]
    with pytest.raises(ValueError):
        TopicSpec("x", "k", "sideways")
    with pytest.raises(ValueError):
        TopicSpec("x", "k", "out", cleanup_policy="archive")


def test_the_catalog_is_stdlib_only_and_jsonschema_is_imported_only_to_validate():
    tree = ast.parse(source("topics/catalog.py"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
    probe = ("import sys; sys.modules['jsonschema'] = None\n"
             "import topics.catalog, topics.schemas\n"
             "assert topics.schemas.load_schema('liquidation')['type'] == 'object'\n"
             "try:\n    topics.schemas.validate_event({'type': 'liquidation'})\nexcept ImportError:\n    print('lazy')")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "lazy"
