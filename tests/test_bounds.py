"""Bad input is data, not a crash (SPEC §8): the hostile corpus, the bounds, and every output and
state record encodable by construction (issue: poison outputs, out-of-range integers)."""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures import EXAMPLES, balance, make_params, mark, position
from topics.codec import MAX_OUTPUT_BYTES, DecodeError, decode, encode_bounded
from topics.schemas import validate_event
from worker.core.engine import AccountState, Engine
from worker.core.fund import FundLedger
from worker.core.inputs import MAX_NOTIONAL_UNITS, MAX_UNITS
from worker.core.outputs import MAX_DEAD_LETTER_KEY_BYTES, MAX_DEAD_LETTER_VALUE_BYTES, Output, Source
from worker.core.params import load_params
from worker.hostile import CORPUS, SETUP
from worker.replay import run_replay
from worker.wire import encode_output

PARAMS = load_params(str(EXAMPLES / "params.toml"))


def drive(engine: Engine, topic: str, key: bytes | None, raw: bytes) -> list[Output]:
    """What the worker does with one message (worker/app.py): decode, then the engine."""
    source = Source(topic, 0, 0, key, raw)
    try:
        value = decode(raw)
    except DecodeError as exc:
        return [engine.dead_letter(source, exc.code, str(exc))]
    if topic == "positions":
        return engine.process_positions(value, source)
    return engine.process_mark(value, source)


@pytest.mark.parametrize("hostile", CORPUS, ids=[h.name for h in CORPUS])
def test_each_hostile_message_becomes_one_publishable_dead_letter_with_its_code(hostile):
    engine = Engine(PARAMS)
    for topic, key, value in SETUP:
        assert all(o.topic != "dead-letters" for o in drive(engine, topic, key, value))
    outputs = drive(engine, hostile.topic, hostile.key, hostile.value)
    assert [(o.topic, o.value["error"]["code"]) for o in outputs] == [("dead-letters", hostile.code)]
    sent, key, value = encode_output(engine, outputs[0])
    assert sent is outputs[0]  # encodable as it is: no stub needed
    assert len(key) + len(value) <= MAX_OUTPUT_BYTES
    event = json.loads(value)
    validate_event(event)
    assert len(key) <= len(hostile.topic)  # a dead letter is keyed by its source topic
    if event["key"] is not None:
        assert len(event["key"].encode()) <= MAX_DEAD_LETTER_KEY_BYTES * 2  # base64 of 1 KiB at most
    assert event["value_encoding"] == "json" or len(str(event["value"])) <= 2 * MAX_DEAD_LETTER_VALUE_BYTES


def test_an_element_no_encoder_copies_falls_back_to_the_message_bytes_with_its_index():
    # one good balance, then a 1 000-deep array: orjson writes at most ~254 levels
    raw = b'[{"type":"balance","account_id":"a","asset":"USD","collateral":"5","seq":1,"ts":1},' + b"[" * 1000 + b"]" * 1000 + b"]"
    engine = Engine(PARAMS)
    [dead] = drive(engine, "positions", b"a", raw)
    assert dead.value["source"]["index"] == 1  # the element's place in the batch
    assert dead.value["value_encoding"] == "utf-8" and dead.value["value"] == raw.decode()
    assert dead.value["error"]["message"].endswith("[element not copied (depth): value is the whole message]")
    assert engine.accounts["a"].collateral_units == 5_000_000  # the good element was applied


def test_a_long_key_keeps_its_first_kibibyte_and_says_so():
    engine = Engine(PARAMS)
    [dead] = drive(engine, "positions", b"\xe2\x82\xac" * 1000, b"{}")  # 3 000 bytes of "€"
    # 1 024 bytes would cut the 342nd "€" in two: the cut goes back to 1 023 bytes = 341 characters
    assert dead.value["key"] == "€" * 341
    assert "key of 3000 bytes truncated" in dead.value["error"]["message"]


@pytest.mark.parametrize("units, accepted", [
    (MAX_UNITS, True),          # 10^18 − 1 units: the largest amount
    (MAX_UNITS + 1, False),     # 10^18: out of range
    (-MAX_UNITS, True),
])
def test_collateral_bound_is_ten_to_the_eighteen_units(units, accepted):
    engine = Engine(PARAMS)
    whole, frac = divmod(abs(units), 10**6)
    text = ("-" if units < 0 else "") + f"{whole}.{frac:06d}"
    outputs = engine.process_positions(balance("a", text, 1, 1), Source("positions", 0, 0, b"a", b""))
    if accepted:
        assert outputs == [] and engine.accounts["a"].collateral_units == units
    else:
        assert [o.value["error"]["code"] for o in outputs] == ["out_of_range"]


def test_notional_bound_at_the_entry_price():
    # BTC-PERP: 3 size decimals, 1 price decimal, quote at 6: N = ceil(lots · ticks · 10^6 / 10^4)
    # 10^9 lots (10^6 BTC) at 10^10 ticks (10^9 USD) → N = 10^19 · 100 = 10^21 units > 10^18 − 1
    engine = Engine(PARAMS)
    outputs = engine.process_positions(position("a", "BTC-PERP", "1000000.000", "1000000000.0", 1, 1),
                                       Source("positions", 0, 0, b"a", b""))
    assert [o.value["error"]["code"] for o in outputs] == ["out_of_range"]
    # 10^7 lots at 10^9 ticks → 10^16 · 100 = 10^18 units: one unit beyond the bound
    outputs = engine.process_positions(position("a", "BTC-PERP", "10000.000", "100000000.0", 2, 2),
                                       Source("positions", 0, 0, b"a", b""))
    assert [o.value["error"]["code"] for o in outputs] == ["out_of_range"]
    # 10^7 lots at 10^9 − 1 ticks → (10^16 − 10^7) · 100 = 10^18 − 10^9 units: accepted
    outputs = engine.process_positions(position("a", "BTC-PERP", "10000.000", "99999999.9", 3, 3),
                                       Source("positions", 0, 0, b"a", b""))
    assert outputs == [] and MAX_NOTIONAL_UNITS >= 10**18 - 10**9


def test_an_output_no_encoder_writes_becomes_a_counted_stub_dead_letter():
    engine = Engine(PARAMS)
    for bad, why in (({"type": "x", "n": 2**70}, "cannot encode"),
                     ({"type": "x", "pad": "y" * (MAX_OUTPUT_BYTES + 1)}, "output limit")):
        sent, key, value = encode_output(engine, Output("liquidations", "acct-1", bad))
        assert sent.topic == "dead-letters" and key == b"liquidations"
        event = json.loads(value)
        validate_event(event)
        assert event["error"]["code"] == "unpublishable_output" and why in event["error"]["message"]
        assert event["source"]["topic"] == "liquidations" and event["key"] == "acct-1"
    assert engine.counters["dead_letter:unpublishable_output"] == 2


def test_a_ratio_beyond_64_bits_saturates():
    # 1 lot of BTC-PERP (0.001) at 1 tick (0.1 USD): N = ceil(1 · 1 · 10^6 / 10^4) = 100 units,
    # MM = ceil(100 · 4000 / 10^6) = 1 unit; call level = ceil(1 · 1.5) = 2 units.
    # Collateral 1 unit: MM ≤ EQ = 1 < 2 → margin call, ratio = 1 · 10^6 / 1 = 10^6 ppm.
    # Collateral 10^18 − 1 units: cleared, ratio = (10^18 − 1) · 10^6 ≈ 10^24 ppm → written 10^18 − 1.
    engine = Engine(make_params(btc_brackets='[{mmr_ppm = 4000}]'))
    source = Source("positions", 0, 0, b"a", b"")
    engine.process_mark(mark("BTC-PERP", "0.1", 1, 1), source)
    outputs = engine.process_positions([balance("a", "0.000001", 1, 1),
                                        position("a", "BTC-PERP", "0.001", "0.1", 2, 1)], source)
    outputs += engine.process_positions(balance("a", "999999999999.999999", 3, 3), source)
    assert [(o.value["type"], o.value["ratio_ppm"]) for o in outputs] == [
        ("margin_call", 1_000_000), ("margin_call_cleared", 10**18 - 1)]
    for output in outputs:
        validate_event(output.value)


def test_replay_survives_a_line_no_encoder_rewrites(tmp_path):
    import io

    deep = b'{"topic":"positions","key":"a","value":[' + b"[" * 900 + b"]" * 900 + b"]}\n"
    out = io.BytesIO()
    run_replay(io.BytesIO(deep), out, PARAMS)
    [line] = out.getvalue().splitlines()
    event = orjson.loads(line)["value"]
    assert event["error"]["code"] == "not_object" and event["value"] == deep.rstrip(b"\n").decode()


# ----------------------------------------------------------------------------- property
def _decimal(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return sign + (digits if decimals == 0 else f"{digits[:-decimals]}.{digits[-decimals:]}")


# magnitudes from ordinary to far beyond every bound (the decoder reads up to 40 characters)
magnitudes = st.one_of(st.integers(0, 10**7), st.integers(0, 10**12), st.integers(10**17, 10**19),
                       st.integers(0, 10**38))


@st.composite
def hostile_books(draw):
    events: list[tuple[str, dict]] = []
    ts = 1
    for seq in range(1, draw(st.integers(2, 14))):
        ts += draw(st.integers(0, 2_000))
        kind = draw(st.sampled_from(["mark", "mark", "position", "balance"]))
        account = draw(st.sampled_from(["a", "b"]))
        if kind == "mark":
            symbol = draw(st.sampled_from(["BTC-PERP", "ETH-PERP"]))
            decimals = 1 if symbol == "BTC-PERP" else 2
            events.append(("mark-prices", mark(symbol, _decimal(draw(magnitudes) + 1, decimals), ts, seq)))
        elif kind == "position":
            symbol = draw(st.sampled_from(["BTC-PERP", "ETH-PERP"]))
            size_dec, price_dec = (3, 1) if symbol == "BTC-PERP" else (2, 2)
            size = draw(magnitudes) * draw(st.sampled_from([1, -1]))
            extra = {}
            if draw(st.booleans()):
                extra = {"margin_mode": "isolated", "isolated_margin": _decimal(draw(magnitudes), 6)}
            events.append(("positions", position(account, symbol, _decimal(size, size_dec),
                                                 _decimal(draw(magnitudes) + 1, price_dec), seq, ts, **extra)))
        else:
            events.append(("positions", balance(account, _decimal(draw(magnitudes), 6), seq, ts)))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_books(), st.booleans())
def test_any_event_the_decoder_accepts_survives_the_engine_the_state_and_every_encoder(events, remote):
    engine = Engine(PARAMS, remote_settlement=remote)
    ledger = FundLedger(PARAMS)
    for topic, event in events:
        raw = orjson.dumps(event)
        outputs = drive(engine, topic, b"k", raw)
        assert not any(o.value["error"]["code"] == "internal_error" for o in outputs if o.topic == "dead-letters")
        for output in outputs:
            sent, _, _ = encode_output(engine, output)
            assert sent is output, output  # every output is encodable as it is
            if output.topic == "insurance-requests":  # the fund agent's side, and its state
                for item in output.value["items"]:
                    for fund_output in ledger.apply(item)[0]:
                        assert encode_output(engine, fund_output)[0] is fund_output
                    encode_bounded({"balance": str(ledger.fund.balance_units)})
                    encode_bounded(ledger.settled[item["liquidation_id"]])
        for account in engine.accounts.values():  # the changelog round trip is exact
            assert AccountState.from_record(orjson.loads(encode_bounded(account.to_record()))) == account
            assert AccountState.from_dict(orjson.loads(encode_bounded(account.to_dict()))) == account  # first format
