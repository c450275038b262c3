"""The typed decoder (worker/typed_input.py) is a shortcut, never a second opinion: for any message it
either declines (None: the validating way decides) or gives exactly what the validating way gives —
the same outputs byte for byte (dead letters included) and the same account state."""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures import EXAMPLES, cascade_scenario
from topics.codec import DecodeError, decode
from worker import replay as replay_module
from worker.core.engine import Engine
from worker.core.outputs import Output, Source
from worker.core.params import load_params
from worker.hostile import CORPUS, SETUP, T0
from worker.replay import replay_lines
from worker.typed_input import position_updates, record_elements, replay_position_line
from worker.wire import encode_output

PARAMS = load_params(str(EXAMPLES / "params.toml"))


def validating(engine: Engine, key: bytes | None, raw: bytes, accept=None) -> list[Output]:
    """What the worker did before the typed decoder: decode, then ``process_positions``."""
    source = Source("positions", 0, 7, key, raw)
    try:
        value = decode(raw)
    except DecodeError as exc:
        return [engine.dead_letter(source, exc.code, str(exc))]
    return engine.process_positions(value, source, accept)


def typed(engine: Engine, key: bytes | None, raw: bytes, accept=None) -> tuple[bool, list[Output]]:
    """(taken, outputs): the typed way when it takes the message, else the validating way."""
    updates = position_updates(raw, PARAMS)
    if updates is None:
        return False, validating(engine, key, raw, accept)
    source = Source("positions", 0, 7, key, raw)
    return True, engine.process_position_updates(updates, source, record_elements(raw), accept)


def wire(engine: Engine, outputs: list[Output]) -> list[tuple[str, bytes, bytes]]:
    return [(o.topic, *encode_output(engine, o)[1:]) for o in outputs]


def state(engine: Engine) -> dict:
    return {a: s.to_dict() for a, s in sorted(engine.accounts.items())}


def twin_engines() -> tuple[Engine, Engine]:
    engines = Engine(PARAMS), Engine(PARAMS)
    for engine in engines:
        for topic, key, value in SETUP:
            source = Source(topic, 0, 0, key, value)
            if topic == "positions":
                engine.process_positions(decode(value), source)
            else:
                engine.process_mark(decode(value), source)
    return engines


POSITIONS_CORPUS = [h for h in CORPUS if h.topic == "positions"]


@pytest.mark.parametrize("hostile", POSITIONS_CORPUS, ids=[h.name for h in POSITIONS_CORPUS])
def test_on_every_hostile_positions_message_the_typed_way_gives_the_validating_way_s_dead_letter(hostile):
    slow, fast = twin_engines()
    expected = validating(slow, hostile.key, hostile.value)
    _, got = typed(fast, hostile.key, hostile.value)
    assert wire(fast, got) == wire(slow, expected)
    assert [o.value["error"]["code"] for o in got] == [hostile.code]
    assert state(fast) == state(slow)


def test_ordinary_events_take_the_typed_way_and_odd_ones_are_left_to_the_validating_way():
    position = {"type": "position", "account_id": "a", "symbol": "BTC-PERP", "size": "1.000",
                "entry_price": "20000.0", "seq": 5, "ts": T0}
    balance = {"type": "balance", "account_id": "a", "asset": "USD", "collateral": "10", "seq": 6, "ts": T0}
    [(index, update)] = position_updates(orjson.dumps(position), PARAMS)
    # 1.000 BTC at 3 size decimals = 1 000 lots; 20000.0 at 1 price decimal = 200 000 ticks
    assert (index, update.size_lots, update.entry_ticks, update.isolated) == (None, 1_000, 200_000, False)
    batch = position_updates(orjson.dumps([balance, position]), PARAMS)
    assert [(i, type(u).__name__) for i, u in batch] == [(0, "BalanceUpdate"), (1, "PositionUpdate")]
    assert batch[0][1].collateral_units == 10_000_000  # 10 USD at 6 decimals
    declined = {
        "an escape": orjson.dumps({**balance, "account_id": "\u00e9"}).replace(b"\xc3\xa9", b"\\u00e9"),
        "a bool seq": orjson.dumps({**balance, "seq": True}),
        "a null isolated margin": orjson.dumps({**position, "isolated_margin": None}),
        "an unknown symbol": orjson.dumps({**position, "symbol": "DOGE-PERP"}),
        "one bad element of a batch": orjson.dumps([balance, {**position, "size": "1.0001"}]),
        "a mark on the positions topic": orjson.dumps({"symbol": "BTC-PERP", "mark_price": "1", "ts": 1, "seq": 1}),
        "not JSON": b"{",
        # invalid UTF-8 inside a string: msgspec raises UnicodeDecodeError there, not DecodeError
        "a 0xff byte in a string": orjson.dumps(balance).replace(b'"a"', b'"a\xff"'),
        "an encoded lone surrogate in a string": orjson.dumps(balance).replace(b'"a"', b'"\xed\xa0\x80"'),
        "an overlong encoding in a string": orjson.dumps(balance).replace(b'"a"', b'"\xc0\xaf"'),
    }
    assert {name: position_updates(raw, PARAMS) for name, raw in declined.items()} == dict.fromkeys(declined)


# ------------------------------------------------------------ generated messages, both ways
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
    st.sampled_from(["1", "-1", "0.5", "1.000", "20000.0", "1e3", " 1", "USD", "BTC-PERP", "ETH-PERP", "cross",
                     "isolated", "position", "balance", "a", "b", "é"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
FIELDS = ["type", "account_id", "symbol", "size", "entry_price", "seq", "ts", "margin_mode", "isolated_margin",
          "liquidation_id", "asset", "collateral", "extra"]


@st.composite
def events(draw) -> dict:
    account = draw(st.sampled_from(["a", "b", "c"]))
    if draw(st.booleans()):
        event = {"type": "position", "account_id": account, "symbol": draw(st.sampled_from(["BTC-PERP", "ETH-PERP"])),
                 "size": draw(st.sampled_from(["1.000", "-0.500", "0", "2.5", "0.001"])),
                 "entry_price": draw(st.sampled_from(["20000.0", "1500.00", "19000.5", "0"])),
                 "seq": draw(st.integers(0, 40)), "ts": T0 + draw(st.integers(0, 9))}
        if draw(st.booleans()):
            event["margin_mode"] = draw(st.sampled_from(["cross", "isolated"]))
            event["isolated_margin"] = draw(st.sampled_from(["100", "0.5", "-1"]))
    else:
        event = {"type": "balance", "account_id": account, "asset": "USD",
                 "collateral": draw(st.sampled_from(["1000", "0", "12.5", "-3"])),
                 "seq": draw(st.integers(0, 40)), "ts": T0 + draw(st.integers(0, 9))}
    if draw(st.booleans()):
        event["liquidation_id"] = draw(st.sampled_from([None, "x" * 32, "y" * 65]))
    for _ in range(draw(st.integers(0, 2))):  # mutations: a field replaced, removed or added
        field = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            event[field] = draw(JSON_VALUES)
        else:
            event.pop(field, None)
    return event


@st.composite
def messages(draw) -> bytes:
    payload = draw(st.lists(events(), min_size=0, max_size=3)) if draw(st.booleans()) else draw(events())
    ascii_only = draw(st.booleans())  # escapes (\uXXXX) or raw UTF-8 (lone surrogates: invalid UTF-8)
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0 and raw.startswith(b'{"type":'):  # a duplicate key: the last one wins
        raw = b'{"seq":0,' + raw[1:]
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=8), st.booleans())
def test_any_message_sequence_gives_the_same_outputs_and_state_both_ways(raws, partitioned):
    slow, fast = twin_engines()
    accept = (lambda account_id: account_id != "c") if partitioned else None
    for raw in raws:
        expected = validating(slow, b"k", raw, accept)
        _, got = typed(fast, b"k", raw, accept)
        assert wire(fast, got) == wire(slow, expected)
        assert state(fast) == state(slow)


def test_replay_gives_the_same_bytes_with_the_typed_decoder_and_without(monkeypatch):
    setup, cascade = cascade_scenario(accounts=60, ticks=20)
    stale = orjson.dumps({"topic": "positions", "key": "acct-00000", "value": {
        "type": "balance", "account_id": "acct-00000", "asset": "USD", "collateral": "1", "seq": 0, "ts": 1}})
    lines = setup + cascade + [stale]
    assert replay_position_line(stale, PARAMS) is not None  # the typed way takes the stale line

    def run() -> list[bytes]:
        engine = Engine(PARAMS)
        return [b"".join(encode_output(engine, o)[1:]) for o in replay_lines(lines, engine)]

    with_typed = run()
    monkeypatch.setattr(replay_module, "replay_position_line", lambda line, params: None)
    without = run()
    assert with_typed == without
    assert b"stale_seq" in with_typed[-1]  # the stale line's dead letter carries the re-encoded value


def test_a_line_with_invalid_utf8_in_a_string_is_a_dead_letter_in_replay_not_a_crash():
    line = orjson.dumps({"topic": "positions", "key": "a", "value": {
        "type": "balance", "account_id": "a", "asset": "USD", "collateral": "1", "seq": 1, "ts": 1}})
    bad = line.replace(b'"account_id":"a"', b'"account_id":"a\xff"')
    assert bad != line and replay_position_line(bad, PARAMS) is None
    [dead] = list(replay_lines([bad], Engine(PARAMS)))
    assert (dead.topic, dead.value["error"]["code"]) == ("dead-letters", "not_utf8")
