"""`python -m worker backtest` (SPEC §7): one input under several parameter sets, compared.

The table's figures are recomputed here from `worker.replay`'s own output for each parameter file, with
an independent reading (JSON parsed here, amounts added as `Decimal`s: exact for decimal strings), not
with the code under test.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from decimal import Decimal

import pytest

from tests.fixtures import EXAMPLES, ROOT
from worker.core.params import load_params
from worker.replay import run_replay
from worker.tools.backtest import CHARTS, Progress, format_table, labels_for, run_backtest

CASCADE = EXAMPLES / "cascade.jsonl"
PARAMS = [EXAMPLES / "params.toml", EXAMPLES / "params-gentle.toml"]
PNG = b"\x89PNG\r\n\x1a\n"


def backtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "backtest", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def parse_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column labels, row label → values) of the printed table (rows until the first `chart:` line)."""
    lines = text.splitlines()
    assert lines[0].startswith("Backtest: ")
    header = lines[1].split()
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        if line.startswith(("chart:", "summary:")):
            break
        label, values = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        values = values.split()
        assert len(values) == len(header), line
        assert label not in rows, f"ambiguous row {label!r}"
        rows[label] = values
    return header, rows


def expected_figures(input_path, params_path) -> dict[str, str]:
    """The table's figures, recomputed from the replay output (decimal strings as Decimals)."""
    params = load_params(str(params_path))
    out = io.BytesIO()
    with open(input_path, "rb") as handle:
        run_replay(handle, out, params)
    events = [json.loads(line)["value"] for line in out.getvalue().splitlines()]
    kinds = Counter(e["type"] for e in events)
    liquidations = [e for e in events if e["type"] == "liquidation"]

    def total(name):
        return sum((Decimal(e["totals"][name]) for e in liquidations), Decimal(0))

    def amounts(kind, field):
        return sum((Decimal(e[field]) for e in events if e["type"] == kind), Decimal(0))

    opening = Decimal(tomllib_value(params_path, "insurance_fund", "initial_balance"))
    balances = [Decimal(e["balance_after"]) for e in events if e["type"] == "insurance_fund_entry"]
    claims = {}
    for e in events:
        if e["type"] in ("haircut", "claim_repayment"):
            claims[e["account_id"]] = Decimal(e["claim_after"])
    socialized = total("socialized_loss")
    haircut_amount = amounts("haircut", "amount")
    scale = Decimal(1).scaleb(-params.quote_decimals)
    return {
        "params_version": params.params_version,
        "settlement asset": params.asset,
        "liquidations": str(len(liquidations)),
        "solvent": str(sum(not e["bankrupt"] for e in liquidations)),
        "bankrupt": str(sum(e["bankrupt"] for e in liquidations)),
        "penalty paid by traders": total("penalty"),
        "to liquidator": total("liquidator"),
        "to insurance fund": total("insurance_fund"),
        "to protocol": total("protocol"),
        "shortfall": total("shortfall"),
        "insurance cover": total("insurance_cover"),
        "socialized loss": socialized,
        "insurance fund opening": opening,
        "low point": min([opening, *balances]),
        "end": balances[-1] if balances else opening,
        "ledger entries": str(len(balances)),
        "haircut rounds": str(kinds["haircut_round"]),
        "haircuts": str(kinds["haircut"]),
        "haircut amount": haircut_amount,
        "deficit unshared": socialized - haircut_amount,
        "repayment rounds": str(kinds["repayment_round"]),
        "repayments": str(kinds["claim_repayment"]),
        "repaid": amounts("claim_repayment", "amount"),
        "claims outstanding": sum(claims.values(), Decimal(0)),
        "margin calls": str(kinds["margin_call"]),
        "dead letters": str(kinds["dead_letter"]),
        "output events": str(len(events)),
    } | {"_scale": scale}


def tomllib_value(path, section, key):
    import tomllib

    return tomllib.loads(path.read_text()).get(section, {}).get(key, "0")


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("backtest") / "charts"
    done = backtest(str(CASCADE), "--params", str(PARAMS[0]), "--params", str(PARAMS[1]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, done


def test_the_table_equals_sums_over_each_replays_own_output(example_run):
    _, done = example_run
    header, rows = parse_table(done.stdout)
    assert header == ["params", "params-gentle"]
    for column, params_path in enumerate(PARAMS):
        expected = expected_figures(CASCADE, params_path)
        scale = expected.pop("_scale")
        assert set(rows) == set(expected)
        for label, value in expected.items():
            shown = rows[label][column]
            if isinstance(value, Decimal):
                assert Decimal(shown) == value, (params_path.name, label)
                assert Decimal(shown).as_tuple().exponent == scale.as_tuple().exponent, "amounts at the scale"
            else:
                assert shown == value, (params_path.name, label)
    # the example is interesting: both sets see the same liquidations, and differ in what follows
    assert rows["liquidations"][0] == rows["liquidations"][1] and int(rows["liquidations"][0]) > 500
    assert int(rows["bankrupt"][0]) > 0 and Decimal(rows["socialized loss"][0]) > 0
    assert rows["haircuts"][0] == "0" and int(rows["haircuts"][1]) > 0
    assert Decimal(rows["repaid"][1]) > 0 and Decimal(rows["claims outstanding"][1]) > 0
    assert Decimal(rows["penalty paid by traders"][1]) < Decimal(rows["penalty paid by traders"][0])


def test_the_summary_json_carries_the_same_figures(example_run):
    out, done = example_run
    _, rows = parse_table(done.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert [c["label"] for c in summary["columns"]] == ["params", "params-gentle"]
    for index, column in enumerate(summary["columns"]):
        assert column["figures"] == {label: values[index] for label, values in rows.items()}


def test_the_charts_are_written(example_run):
    out, done = example_run
    for name in CHARTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1_000, name
        assert f"chart: {out / name}" in done.stdout


def test_two_identical_parameter_files_give_identical_columns(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(PARAMS[1], tmp_path / name / "params.toml")
    done = backtest(str(EXAMPLES / "crash.jsonl"), "--params", str(tmp_path / "a" / "params.toml"),
                    "--params", str(tmp_path / "b" / "params.toml"), "--out", str(tmp_path / "out"), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    header, rows = parse_table(done.stdout)
    assert header == ["params#1", "params#2"]
    assert rows and all(values[0] == values[1] for values in rows.values())
    assert rows["liquidations"] != ["0", "0"]


def test_in_process_and_process_pool_agree():
    paths = [str(EXAMPLES / "params.toml"), str(PARAMS[1])]
    alone = run_backtest(str(EXAMPLES / "crash.jsonl"), paths, jobs=1)
    pooled = run_backtest(str(EXAMPLES / "crash.jsonl"), paths, jobs=2)
    assert format_table(alone, "t") == format_table(pooled, "t")
    assert alone == pooled


def test_labels_are_the_file_stems_numbered_when_repeated():
    assert labels_for(["x/a.toml", "y/b.toml"]) == ["a", "b"]
    assert labels_for(["x/a.toml", "y/a.toml", "z/b.toml", "w/a.toml"]) == ["a#1", "a#2", "b", "a#3"]


def test_progress_bar_on_stderr():
    stream = io.StringIO()
    bar = Progress(2_000_000, enabled=True, stream=stream, delay_s=0)
    bar.update(500_000)
    bar.update(500_000)  # unchanged: not redrawn
    bar.close()
    assert stream.getvalue() == ("\rbacktest [#######-----------------------]  25%  0.5/2.0 MB"
                                 "\rbacktest [##############################] 100%  2.0/2.0 MB\n")
    quiet = io.StringIO()
    bar = Progress(10, enabled=False, stream=quiet, delay_s=0)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[liquidation]\nmode = \"sideways\"\n")
    done = backtest(str(CASCADE), "--params", str(bad), "--out", str(tmp_path / "out"))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: {bad}: liquidation.mode: expected 'partial' or 'full', got 'sideways'\n"
    done = backtest(str(tmp_path / "missing.jsonl"), "--params", str(PARAMS[0]), "--out", str(tmp_path / "out"))
    assert done.returncode == 1 and done.stderr.startswith(f"error: cannot read {tmp_path / 'missing.jsonl'}")
    assert not (tmp_path / "out").exists()


def test_without_matplotlib_the_one_line_error(tmp_path):
    from tests.test_extras import CHARTS_ERROR, run_hidden

    done = run_hidden(tmp_path, "-m", "worker", "backtest", str(CASCADE), "--params", str(PARAMS[0]),
                      "--out", str(tmp_path / "out"))
    assert (done.returncode, done.stderr, done.stdout) == (1, CHARTS_ERROR + "\n", "")
    assert not (tmp_path / "out").exists()
    imported = run_hidden(tmp_path, "-c", "import worker.tools.backtest, worker.tools.methodology")
    assert imported.returncode == 0, imported.stderr


def test_the_example_scenario_is_reproducible(tmp_path):
    target = tmp_path / "cascade.jsonl"
    done = subprocess.run([sys.executable, str(EXAMPLES / "make_cascade.py"), str(target)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == CASCADE.read_bytes()
    assert CASCADE.stat().st_size < 2_000_000
