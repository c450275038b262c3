"""Offline replay (SPEC §7): golden output, byte-identical runs, bad lines as dead letters."""
import json
import subprocess
import sys

from tests.fixtures import EXAMPLES, GOLDEN, ROOT

REPLAY = [sys.executable, "-m", "worker", "replay"]


def replay(path, params=EXAMPLES / "params.toml") -> bytes:
    done = subprocess.run([*REPLAY, str(path), "--params", str(params)], cwd=ROOT, capture_output=True, check=True)
    return done.stdout


def test_example_scenario_matches_the_golden_output():
    assert replay(EXAMPLES / "crash.jsonl") == (GOLDEN / "crash.out.jsonl").read_bytes()


def test_golden_alice_partial_close_derived_by_hand():
    # alice: wallet 1 000, long 1 BTC @ 20 000; BTC mark 19 050: EQ 50, MM 76.2 (0.4 % bracket).
    # sev = floor(26.2/76.2 · 10^6) = 343 832; f = 1 500 + floor(1 500 · 0.343832) = 2 015 ppm;
    # X = floor(19 050 · 0.9995) = 19 040.4. Closing δ BTC: EQ = 50 − 9.6δ − 38.366δ (slippage, penalty),
    # bar = 1.02 · 76.2 · (1 − δ) → 29.758δ ≥ 27.724 → δ ≥ 0.93165 → 0.932.
    # R = −959.6 · 0.932 = −894.3472; F = floor(0.932 · 19 040.4 · 0.002015) = 35.757490
    events = [json.loads(line) for line in (GOLDEN / "crash.out.jsonl").read_text().splitlines()]
    alice = [e["value"] for e in events if e["topic"] == "liquidations" and e["key"] == "alice"][0]
    [close] = alice["closes"]
    assert (alice["severity_ppm"], close["penalty_rate_ppm"], close["execution_price"]) == (343_832, 2_015, "19040.4")
    assert (close["closed_size"], close["realized_pnl"], close["penalty"]) == ("0.932", "-894.347200", "35.757490")
    # split: liquidator 50 % → 17.878745; protocol 10 % → 3.575749; fund the rest 14.302996
    assert alice["totals"]["liquidator"] == "17.878745"
    assert alice["totals"]["protocol"] == "3.575749"
    assert alice["totals"]["insurance_fund"] == "14.302996"


def test_repeated_runs_are_byte_identical():
    first = replay(EXAMPLES / "crash.jsonl")
    assert first and first == replay(EXAMPLES / "crash.jsonl")


def test_bad_lines_are_dead_lettered_and_the_rest_is_processed(tmp_path):
    lines = [
        b'{"topic":"mark-prices","key":"BTC-PERP","value":{"symbol":"BTC-PERP","mark_price":"20000.0","ts":1,"seq":1}}',
        b'\xff\xfe not utf-8',
        b'{"topic":"positions","key":"a","value":{"type":"balance","account_id":"a","asset":"USD","collateral":"1000","seq":1,"ts":2}}',
        b'{"topic":"positions","key":"a","val',
        b'{"topic":"orders","key":"a","value":{}}',
        b'{"topic":"positions","key":"a","value":{"type":"position","account_id":"a","symbol":"BTC-PERP","size":"1.000","entry_price":"20000.0","seq":2,"ts":3}}',
        b'{"topic":"mark-prices","key":"BTC-PERP","value":{"symbol":"BTC-PERP","mark_price":NaN,"ts":4,"seq":2}}',
        b'{"topic":"mark-prices","key":"BTC-PERP","value":{"symbol":"BTC-PERP","mark_price":"18000.0","ts":5,"seq":3}}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = [json.loads(line) for line in replay(path).splitlines()]
    dead = [o["value"] for o in out if o["topic"] == "dead-letters"]
    assert [(d["source"]["offset"], d["error"]["code"]) for d in dead] == [
        (1, "not_utf8"), (3, "decode_error"), (4, "unknown_topic"), (6, "decode_error")]
    assert dead[0]["value_encoding"] == "base64"
    assert [o["value"]["account_id"] for o in out if o["topic"] == "liquidations"] == ["a"]


def test_unknown_params_key_is_refused_at_start_naming_the_key(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text((EXAMPLES / "params.toml").read_text().replace("[split]", "[split]\nliquidator_share = 1"))
    done = subprocess.run([*REPLAY, str(EXAMPLES / "crash.jsonl"), "--params", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "split.liquidator_share: unknown key" in done.stderr


def test_a_replay_line_spliced_around_the_encoded_value_is_the_line_encoded_whole():
    # run_replay writes the value bytes it already encoded for the size check into the line;
    # compact JSON concatenates, so the splice equals encoding {"topic", "key", "value"} at once
    import orjson
    from hypothesis import given, strategies as st

    from worker.core.outputs import Output
    from worker.replay import format_output

    values = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                          max_leaves=8)

    @given(st.text(), st.text(), st.dictionaries(st.text(), values, max_size=4))  # an output's value is an object
    def check(topic, key, value):
        whole = orjson.dumps({"topic": topic, "key": key, "value": value}) + b"\n"
        assert format_output(Output(topic, key, value)) == whole

    check()
