"""`python -m worker methodology` (SPEC §5.3): the disclosure generated from a parameter file.

Golden files: tests/golden/methodology.md and .json are the output for examples/params.toml; regenerate
them with `python -m worker methodology --params examples/params.toml [--format json] > tests/golden/…`
when the wording changes on purpose (a change of parameters changes params_version, and the test says so).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from decimal import Decimal

import pytest

from tests.fixtures import EXAMPLES, GOLDEN, ROOT, SHARING, params_toml
from worker.core.fixed import PPM
from worker.core.params import load_params
from worker.replay import run_replay
from worker.tools.methodology import disclosure, render_json, render_markdown

PARAM_FILES = [EXAMPLES / "params.toml", EXAMPLES / "params-gentle.toml"]
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def methodology(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "methodology", *args], cwd=ROOT, capture_output=True,
                          timeout=120)


# ------------------------------------------------------------------------------------------ golden
@pytest.mark.parametrize("fmt, golden", [("markdown", "methodology.md"), ("json", "methodology.json")])
def test_the_example_disclosure_matches_the_golden_file_byte_for_byte(fmt, golden):
    done = methodology("--params", str(EXAMPLES / "params.toml"), "--format", fmt)
    assert done.returncode == 0, done.stderr
    expected = (GOLDEN / golden).read_bytes()
    assert load_params(str(EXAMPLES / "params.toml")).params_version.encode() in expected, \
        "examples/params.toml changed: regenerate the golden files (see this module's docstring)"
    assert done.stdout == expected


def test_markdown_is_the_default_and_both_formats_render_the_same_document():
    data = (EXAMPLES / "params.toml").read_bytes()
    doc = disclosure(data)
    assert methodology("--params", str(EXAMPLES / "params.toml")).stdout == render_markdown(doc).encode()
    assert json.loads(render_json(doc)) == doc
    # every sentence and every table cell of the JSON is in the markdown
    markdown = render_markdown(doc)
    for section in doc["sections"]:
        assert f"## {section['title']}" in markdown
        for rule in section["rules"]:
            assert f"- {rule}\n" in markdown
        for table in section["tables"]:
            assert f"**{table['title']}**" in markdown
            for row in table["rows"]:
                assert "| " + " | ".join(row) + " |" in markdown


# ------------------------------------------------------------------------------ every number shown
def toml_numbers(path) -> list[tuple[str, Decimal]]:
    """(dotted key, value) of every number of a parameter file: integers and decimal strings."""
    found: list[tuple[str, Decimal]] = []

    def walk(node, key):
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else name)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{key}[{index}]")
        elif isinstance(node, bool):
            pass
        elif isinstance(node, int):
            found.append((key, Decimal(node)))
        elif isinstance(node, str) and re.fullmatch(r"-?\d+(\.\d+)?", node):
            found.append((key, Decimal(node)))

    walk(tomllib.loads(path.read_text()), "")
    return found


def json_leaves(node) -> list:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in json_leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in json_leaves(value)]
    return [node]


def decimals_of(values) -> set[Decimal]:
    out = set()
    for value in values:
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value)):
            out.add(Decimal(value))
    return out


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_number_of_the_parameter_file_appears(path):
    numbers = toml_numbers(path)
    assert len(numbers) > 25
    doc = disclosure(path.read_bytes())
    markdown = render_markdown(doc)
    body, _, appendix = markdown.partition("\n## Parameter file\n")
    in_body = {Decimal(token) for token in NUMBER.findall(body)}
    in_values = decimals_of(json_leaves([s["values"] for s in doc["sections"]]))
    by_key = {row["key"]: row for row in doc["parameters"]}
    for key, value in numbers:
        assert value in in_body, f"{key} = {value} is not in the rules or tables"
        assert value in in_values, f"{key} = {value} is not in the JSON values"
        shown = by_key[key]["value"]
        assert Decimal(str(shown)) == value and not by_key[key]["default"], key
        assert re.search(rf"^\| `{re.escape(key)}` \| {re.escape(str(shown))} \|  \|$", appendix, re.M), key
    assert load_params(str(path)).params_version in body


def test_defaults_are_shown_and_marked():
    doc = disclosure((EXAMPLES / "params.toml").read_bytes())  # no [loss_sharing] table
    rows = {row["key"]: row for row in doc["parameters"]}
    assert (rows["loss_sharing.mode"]["value"], rows["loss_sharing.mode"]["default"]) == ("record", True)
    assert (rows["loss_sharing.round_interval_ms"]["value"], rows["loss_sharing.round_interval_ms"]["default"]) \
        == (1000, True)
    assert rows["symbols.ETH-PERP.penalty.max_ppm"] == {"key": "symbols.ETH-PERP.penalty.max_ppm", "value": 2000,
                                                        "default": True}
    assert "| `loss_sharing.repay_above` | `\"\"` (never) | default |" in render_markdown(doc)


def test_the_rules_follow_the_modes():
    full = render_markdown(disclosure(params_toml(mode="full", max_jump_ppm=50_000, max_mark_age_ms=0).encode()))
    assert "Mode full (liquidation.mode)" in full and "Mode partial" not in full
    assert "Jump: a mark more than 5 % (engine.max_jump_ppm = 50000)" in full
    assert "Stale mark guard: off (engine.max_mark_age_ms = 0)." in full
    sharing = render_markdown(disclosure(params_toml(floor="40", initial_balance="100", extra=SHARING).encode()))
    assert "Mode haircut (loss_sharing.mode)" in sharing
    assert "Claims are repaid from the insurance fund above 40 USD (loss_sharing.repay_above)" in sharing
    assert "at least 1000 ms of event time (loss_sharing.round_interval_ms)" in sharing
    never = render_markdown(disclosure(params_toml(extra='[loss_sharing]\nmode = "haircut"').encode()))
    assert "Claims are not repaid from the insurance fund (loss_sharing.repay_above is empty)." in never


# --------------------------------------------------------------------------- the worked examples
def test_the_btc_example_derived_by_hand():
    # long 1 BTC @ 10 000, wallet 500 (1/20); mark 9 534: EQ 34, MM ceil(9 534 · 0.4 %) = 38.136.
    # sev = floor(4.136/38.136 · 10^6) = 108 453; f = 1 500 + floor(1 500 · 0.108453) = 1 662 ppm;
    # X = floor(9 534 · 0.9995) = 9 529.2. Closing δ: EQ = 34 − 4.8δ − 15.8375δ (slippage, penalty),
    # bar 1.02 · 38.136 · (1 − δ) = 38.89872 (1 − δ) → δ ≥ 4.89872 / 18.26122 = 0.26826 → 0.269.
    # F = floor(0.269 · 9 529.2 · 0.001662) = floor(4.2602957) = 4.260295; liquidator 50 % 2.130147,
    # protocol 10 % 0.426029, fund the rest 1.704119.
    doc = disclosure((EXAMPLES / "params.toml").read_bytes())
    [examples] = [s["values"]["examples"] for s in doc["sections"] if s["id"] == "examples"]
    btc = examples[0]
    assert btc["position"]["collateral"] == "500.000000" and btc["position"]["liquidation_price"] == "9538.1"
    sol = btc["solvent"]
    assert (sol["mark_price"], sol["equity"], sol["maintenance"], sol["severity_ppm"]) == \
        ("9534.0", "34.000000", "38.136000", 108_453)
    [close] = sol["closes"]
    assert (close["closed_size"], close["execution_price"], close["penalty_rate_ppm"], close["penalty"]) == \
        ("0.269", "9529.2", 1_662, "4.260295")
    assert (sol["liquidator"], sol["protocol"], sol["insurance_fund"]) == ("2.130147", "0.426029", "1.704119")
    # bankrupt 1 % below 9 500: mark 9 405, X = floor(9 405 · 0.9995) = 9 400.2; LV = 500 − 599.8 = −99.8,
    # covered by the fund (1 000, floor 100)
    bk = btc["bankrupt"]
    assert (bk["mark_price"], bk["shortfall"], bk["insurance_cover"], bk["socialized_loss"], bk["fund_after"]) == \
        ("9405.0", "99.800000", "99.800000", "0.000000", "900.200000")


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_the_worked_examples_are_what_the_engine_emits(path):
    """Replay each example (open at the entry price, then the example's mark) and compare the allocation."""
    import io

    params = load_params(str(path))
    doc = disclosure(path.read_bytes())
    [examples] = [s["values"]["examples"] for s in doc["sections"] if s["id"] == "examples"]
    assert [e["symbol"] for e in examples] == sorted(params.symbols)
    for example in examples:
        symbol, pos = example["symbol"], example["position"]
        for case in ("solvent", "bankrupt"):
            outcome = example[case]
            lines = []
            for s, sym in params.symbols.items():  # every symbol needs a mark before the account is evaluated
                price = pos["entry_price"] if s == symbol else "1" + "0" * 4
                lines.append({"topic": "mark-prices", "key": s, "value": {"symbol": s, "mark_price": price,
                                                                           "ts": 1, "seq": 1}})
            lines.append({"topic": "positions", "key": "x", "value": [
                {"type": "balance", "account_id": "x", "asset": params.asset, "collateral": pos["collateral"],
                 "seq": 1, "ts": 2},
                {"type": "position", "account_id": "x", "symbol": symbol, "size": pos["size"],
                 "entry_price": pos["entry_price"], "seq": 2, "ts": 2}]})
            lines.append({"topic": "mark-prices", "key": symbol, "value": {
                "symbol": symbol, "mark_price": outcome["mark_price"], "ts": 3, "seq": 2}})
            out = io.BytesIO()
            run_replay(io.BytesIO(b"\n".join(json.dumps(line).encode() for line in lines)), out, params)
            events = [json.loads(line)["value"] for line in out.getvalue().splitlines()]
            [liquidation] = [e for e in events if e["type"] == "liquidation"]
            totals = liquidation["totals"]
            assert liquidation["bankrupt"] == outcome["bankrupt"] == (case == "bankrupt")
            if case == "solvent":
                assert liquidation["severity_ppm"] == outcome["severity_ppm"]
                assert (liquidation["equity_before"], liquidation["maintenance_before"]) == \
                    (outcome["equity"], outcome["maintenance"])
                assert [{k: c[k] for k in ("closed_size", "remaining_size", "execution_price", "realized_pnl",
                                           "penalty_rate_ppm", "penalty")} for c in liquidation["closes"]] == \
                    [{k: c[k] for k in ("closed_size", "remaining_size", "execution_price", "realized_pnl",
                                        "penalty_rate_ppm", "penalty")} for c in outcome["closes"]]
                for name in ("penalty", "liquidator", "protocol", "insurance_fund"):
                    assert totals[name] == outcome[name], name
                assert (liquidation["equity_after"], liquidation["maintenance_after"],
                        liquidation["collateral_after"]) == \
                    (outcome["equity_after"], outcome["maintenance_after"], outcome["collateral_after"])
                assert outcome["closes"][0]["penalty_rate_ppm"] < PPM
            else:
                for name in ("penalty", "shortfall", "insurance_cover", "socialized_loss"):
                    assert totals[name] == outcome[name], name
                [close] = liquidation["closes"]
                assert (close["execution_price"], close["realized_pnl"]) == \
                    (outcome["execution_price"], outcome["realized_pnl"])


# ------------------------------------------------------------------------------------------- CLI
def test_a_bad_parameter_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(params_toml(liquidator_ppm=900_000, protocol_ppm=200_000))
    done = methodology("--params", str(bad))
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode() == f"error: {bad}: split.protocol_ppm: liquidator_ppm + protocol_ppm exceeds 1000000\n"
    missing = methodology("--params", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and missing.stderr.startswith(b"error: cannot read parameters:")


def test_methodology_needs_no_extra(tmp_path):
    from tests.test_extras import run_hidden

    done = run_hidden(tmp_path, "-m", "worker", "methodology", "--params", str(EXAMPLES / "params.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / "methodology.md").read_text(encoding="utf-8")
