"""`worker/report.py`: the exact summary and the PNG chart of replay output or a topic dump.

The expected figures are added up by hand from tests/golden/crash.out.jsonl (the liquidation lines are
listed in the comments), not by the code under test.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.fixtures import GOLDEN, ROOT
from worker.report import PNG_SIGNATURE, Events, fmt_units, main_report, summarize, to_units

GOLDEN_OUT = GOLDEN / "crash.out.jsonl"
ROW = re.compile(r"^\s*(?P<label>\S.*?)\s{2,}(?P<value>\S.*?)\s*$")

# The eight allocations of the golden file (account, scope, ts, bankrupt, totals):
#   erin  cross    1700000001000 solvent  penalty 70.300000 = liq 35.150000 + IF 28.120000 + proto 7.030000
#   carol BTC-PERP 1700000003000 bankrupt shortfall 4.850000, cover 4.850000
#   alice cross    1700000005500 solvent  penalty 35.757490 = 17.878745 + 14.302996 + 3.575749
#   bob   cross    1700000005500 solvent  penalty 27.747822 = 13.873911 + 11.099129 + 2.774782
#   frank cross    1700000007000 solvent  penalty 38.766794 = 19.383397 + 15.506718 + 3.876679
#   alice cross    1700000007500 bankrupt shortfall 5.550690, cover 5.550690
#   alice cross    1700000039000 bankrupt shortfall 73.516690, cover 73.516690
#   carol BTC-PERP 1700000039000 bankrupt shortfall 754.500000, cover 754.500000
# liquidator 35.150000+17.878745+13.873911+19.383397 = 86.286053
# fund share 28.120000+14.302996+11.099129+15.506718 = 69.028843
# protocol    7.030000+ 3.575749+ 2.774782+ 3.876679 = 17.257210
# penalty    70.300000+35.757490+27.747822+38.766794 = 172.572106 (= 86.286053+69.028843+17.257210)
# shortfall = cover = 4.85+5.55069+73.51669+754.5 = 838.417380; socialized 0
# fund: 1 000 (params) + 69.028843 − 838.417380 = 230.611463, its last balance_after and its lowest
# dead letters: non_positive_price (mark -1, offset 23) and decode_error (a truncated line)
GOLDEN_ROWS = {
    "events": "29",
    "unreadable lines": "0",
    "duplicates skipped": "0",
    "first event": "2023-11-14T22:13:20.000Z",  # ts 1700000000000
    "last event": "2023-11-14T22:13:59.000Z",  # ts 1700000039000
    "Liquidations": "8",
    "solvent": "4",
    "bankrupt": "4",
    "Penalty (USD)": "172.572106",
    "liquidator": "86.286053",
    "insurance_fund": "69.028843",
    "protocol": "17.257210",
    "shortfall": "838.417380",
    "insurance_cover": "838.417380",
    "socialized_loss": "0.000000",
    "opening balance": "1000.000000",
    "final balance": "230.611463",
    "lowest balance": "230.611463",
    "ledger entries": "8",
    "Dead letters": "2",
    "decode_error": "1",
    "non_positive_price": "1",
}


def rows(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        match = ROW.match(line)
        if match:
            assert match["label"] not in found, f"ambiguous row {match['label']!r}"
            found[match["label"]] = match["value"]
    return found


@pytest.fixture(scope="module")
def golden_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "crash.png"
    done = subprocess.run([sys.executable, "-m", "worker.report", str(GOLDEN_OUT), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


# ------------------------------------------------------------------------------------ the golden run
@pytest.mark.parametrize("label, value", GOLDEN_ROWS.items(), ids=list(GOLDEN_ROWS))
def test_golden_summary_row(golden_report, label, value):
    _, stdout = golden_report
    assert rows(stdout)[label] == value


def test_golden_summary_has_no_other_dead_letter_codes(golden_report):
    _, stdout = golden_report
    after = stdout.split("Dead letters", 1)[1]
    assert sorted(rows(after)) == ["decode_error", "non_positive_price"]


def test_golden_chart_is_a_png_of_some_size(golden_report):
    out, stdout = golden_report
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000  # four panels of lines and bars, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1300, 850)
    assert f"chart: {out}" in stdout


def test_golden_liquidations_per_second_of_event_time():
    # ts // 1000 − 1700000000: erin 1, carol 3, alice+bob 5, frank+alice 7, alice+carol 39
    summary = summarize(Events.read(GOLDEN_OUT.read_bytes().splitlines()).events)
    per_second: dict[int, int] = {}
    for ts, _ in summary.liquidation_times:
        per_second[ts // 1000 - 1_700_000_000] = per_second.get(ts // 1000 - 1_700_000_000, 0) + 1
    assert per_second == {1: 1, 3: 1, 5: 2, 7: 2, 39: 2}


def test_golden_cumulative_penalty_series_ends_at_the_totals():
    summary = summarize(Events.read(GOLDEN_OUT.read_bytes().splitlines()).events)
    _, last = summary.split_series[-1]
    assert last == {"liquidator": 86_286_053, "insurance_fund": 69_028_843, "protocol": 17_257_210}
    assert [units for _, units in summary.fund_series][:2] == [1_028_120_000, 1_023_270_000]


# ------------------------------------------------------------------------------- a raw topic dump
def liquidation(lid: str, ts: int, bankrupt: bool, **totals: str) -> dict:
    zero = "0.000000"
    values = {name: totals.get(name, zero) for name in ("penalty", "liquidator", "insurance_fund", "protocol",
                                                         "shortfall", "insurance_cover", "socialized_loss")}
    return {"type": "liquidation", "schema_version": 1, "liquidation_id": lid, "account_id": "a", "scope": "cross",
            "ts": ts, "bankrupt": bankrupt, "totals": values,
            "transfers": [{"from": "account:a", "to": "liquidator", "amount": values["liquidator"], "asset": "USD",
                           "reason": "penalty_liquidator"}]}


def fund_entry(lid: str, ts: int, delta: str, balance: str, reason: str) -> dict:
    return {"type": "insurance_fund_entry", "schema_version": 1, "ts": ts, "asset": "USD", "delta": delta,
            "balance_after": balance, "reason": reason, "liquidation_id": lid}


A, B = "a" * 32, "b" * 32
DUMP = [
    json.dumps(fund_entry(A, 1_000, "4.000000", "104.000000", "penalty_insurance_fund")),
    json.dumps(liquidation(A, 1_000, False, penalty="10.000000", liquidator="5.000000", insurance_fund="4.000000",
                           protocol="1.000000")),
    json.dumps(fund_entry(B, 2_500, "-4.000000", "100.000000", "insurance_cover")),
    json.dumps({"type": "socialized_loss", "schema_version": 1, "ts": 2_500, "asset": "USD", "symbol": "BTC-PERP",
                "side": "long", "amount": "6.500000", "liquidation_id": B, "account_id": "a"}),
    json.dumps(liquidation(B, 2_500, True, shortfall="10.500000", insurance_cover="4.000000",
                           socialized_loss="6.500000")),
    json.dumps(liquidation(B, 2_500, True, shortfall="10.500000", insurance_cover="4.000000",
                           socialized_loss="6.500000")),  # redelivered (at-least-once)
    json.dumps({"type": "dead_letter", "schema_version": 1, "ts": 2_600, "error": {"code": "stale_seq", "message": ""},
                "source": {"topic": "positions", "partition": 3, "offset": 17, "index": None}}),
    "not json at all",
    "",
]
DUMP_ROWS = {
    "events": "6", "unreadable lines": "1", "duplicates skipped": "1",
    "Liquidations": "2", "solvent": "1", "bankrupt": "1",
    "Penalty (USD)": "10.000000", "liquidator": "5.000000", "insurance_fund": "4.000000", "protocol": "1.000000",
    "shortfall": "10.500000", "insurance_cover": "4.000000", "socialized_loss": "6.500000",
    "opening balance": "100.000000", "final balance": "100.000000", "lowest balance": "100.000000",
    "ledger entries": "2", "Dead letters": "1", "stale_seq": "1",
}


@pytest.fixture(scope="module")
def dump_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dump")
    path, out = folder / "dump.jsonl", folder / "dump.png"
    path.write_text("\n".join(DUMP) + "\n")
    return path, out


@pytest.mark.parametrize("label, value", DUMP_ROWS.items(), ids=list(DUMP_ROWS))
def test_topic_dump_summary_row(dump_report, capsys, label, value):
    path, out = dump_report
    assert main_report([str(path), "--out", str(out)]) == 0
    assert rows(capsys.readouterr().out)[label] == value
    assert out.read_bytes()[:8] == PNG_SIGNATURE


def test_socialized_loss_events_agree_with_the_allocations():
    summary = summarize(Events.read(DUMP).events)
    assert summary.socialized_events == summary.bankruptcy["socialized_loss"] == 6_500_000
    assert summary.socialized_series == [(1_000, 0), (2_500, 6_500_000)]


def test_conflicting_duplicate_is_counted_and_the_first_kept():
    changed = json.loads(DUMP[1])
    changed["totals"]["penalty"] = "11.000000"
    read = Events.read([DUMP[1], json.dumps(changed)])
    assert (read.duplicates, read.conflicting, len(read.events)) == (1, 1, 1)
    assert read.events[0]["totals"]["penalty"] == "10.000000"


def test_repayment_rounds_fund_entries_are_not_taken_for_duplicates():
    # two repayment rounds debit the fund with the same reason: told apart by their round_id
    from tests.fixtures import SHARING_T0, sharing_book

    book = sharing_book(extra='[loss_sharing]\nmode = "haircut"\nrepay_above = "40"\nround_interval_ms = 0')
    for seq in range(2, 8):
        book.mark("BTC-PERP", "18900.0", SHARING_T0 + 1000 * seq, seq)
        book.mark("ETH-PERP", "1480.00", SHARING_T0 + 1000 * seq, seq)
    lines = [json.dumps(o.value) for o in book.outputs]
    entries = [o.value for o in book.outputs if o.value.get("reason") == "claim_repayment"]
    assert len({e["round_id"] for e in entries}) >= 2
    read = Events.read(lines)
    assert (read.duplicates, read.conflicting) == (0, 0) and len(read.events) == len(lines)


@pytest.mark.parametrize("lines, code, message", [
    ([], 1, "no events"),
    (["garbage", "[1, 2]", '{"topic": "liquidations", "key": "a", "value": 3}'], 1, "3 unreadable lines"),
    ([json.dumps(liquidation(A, 1, False, penalty="1.0000001"))], 1, "malformed event"),
    ([json.dumps({**liquidation(A, 1, False), "totals": {"penalty": 1.5}})], 1, "malformed event"),
], ids=["empty", "only-unreadable", "too-many-decimals", "float-amount"])
def test_refused_input(tmp_path, capsys, lines, code, message):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines))
    assert main_report([str(path), "--out", str(tmp_path / "x.png")]) == code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_missing_input_file_is_an_error_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="cannot read"):
        main_report([str(tmp_path / "absent.jsonl")])


# ------------------------------------------------------------------------------------------- amounts
@pytest.mark.parametrize("text, scale, units", [
    ("1.5", 6, 1_500_000),
    ("-0.000001", 6, -1),
    ("12", 2, 1_200),
    ("0", 6, 0),
    ("9007199254740993.000000", 6, 9_007_199_254_740_993_000_000),  # beyond float precision, exact
], ids=["pad", "negative-one-unit", "integer", "zero", "beyond-2^53"])
def test_to_units_is_exact(text, scale, units):
    assert to_units(text, scale) == units
    assert to_units(fmt_units(units, scale), scale) == units


@pytest.mark.parametrize("text", ["1.2345", "1e5", "+1", "01", " 1", 1.5, None],
                         ids=["too-many-decimals", "exponent", "plus", "leading-zero", "space", "float", "null"])
def test_to_units_refuses(text):
    with pytest.raises(ValueError):
        to_units(text, 2)


def test_replay_wrapper_and_bare_events_read_the_same():
    wrapped = [json.dumps({"topic": "liquidations", "key": "a", "value": json.loads(DUMP[1])})]
    assert Events.read(wrapped).events == Events.read(DUMP[1:2]).events


def test_example_chart_in_docs_is_a_png():
    data = (ROOT / "docs" / "report-example.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 20_000
