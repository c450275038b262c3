"""A corpus of hostile input messages (SPEC §8), each with the dead-letter code it must produce.

Used by the tests (through the engine, and against a live worker on the embedded broker) and by
`bench/fuzz.py`, which mutates and mixes them. Every entry is one message that yields exactly
one dead letter when sent alone to a worker that already applied ``SETUP`` (so a stale seq is
stale); ``account "a"`` is the only account, on whichever partition its key hashes to.
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

T0 = 1_700_000_000_000


@dataclass(frozen=True)
class Hostile:
    name: str
    topic: str  # "positions" | "mark-prices"
    key: bytes | None
    value: bytes
    code: str  # the dead-letter code it must produce


def _j(value: object) -> bytes:
    return orjson.dumps(value)


def _pos(**fields: object) -> dict:
    event = {"type": "position", "account_id": "a", "symbol": "BTC-PERP", "size": "1.000",
             "entry_price": "20000.0", "seq": 100, "ts": T0 + 100}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not _DROP}


def _bal(**fields: object) -> dict:
    event = {"type": "balance", "account_id": "a", "asset": "USD", "collateral": "1000", "seq": 100,
             "ts": T0 + 100}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not _DROP}


def _mark(**fields: object) -> dict:
    event = {"symbol": "BTC-PERP", "mark_price": "20000.0", "ts": T0 + 100, "seq": 100}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()
DEEP = b"[" * 1000 + b"]" * 1000  # orjson reads 1 000 levels; no encoder writes more than ~254
DEEP_IN_FIELD = b'{"type":"position","account_id":"a","symbol":"BTC-PERP","size":' + b"[" * 900 + b"]" * 900 + b"}"
NEAR_MAX = b'[{"type":"balance","account_id":"' + b"x" * 1_000_000 + b'"}]'  # < 1 MiB, refused as too long

SETUP: list[tuple[str, bytes, bytes]] = [
    ("mark-prices", b"BTC-PERP", _j(_mark(mark_price="20000.0", ts=T0, seq=1))),
    ("positions", b"a", _j([_bal(collateral="1000", seq=1, ts=T0 + 1),
                            _pos(size="1.000", entry_price="20000.0", seq=2, ts=T0 + 1)])),
]
# after the corpus: a tick that makes "a" liquidatable (1 BTC long, 1 000 USD, mmr 0.4 %: P_liq ≈ 19 076)
AFTER = ("mark-prices", b"BTC-PERP", _j(_mark(mark_price="18000.0", ts=T0 + 200, seq=200)))

CORPUS: list[Hostile] = [
    # bytes that are not a JSON event
    Hostile("truncated JSON", "positions", b"a", b'{"type":"balance","account_id":"a","collateral":"10', "decode_error"),
    Hostile("NaN literal", "positions", b"a", b'{"type":"position","size":NaN}', "decode_error"),
    Hostile("empty value", "positions", b"a", b"", "decode_error"),
    Hostile("not UTF-8", "positions", b"a", b"\xff\xfe\x00garbage", "not_utf8"),
    Hostile("lone surrogate escape", "positions", b"a", b'{"type":"balance","account_id":"\\ud800"}', "decode_error"),
    Hostile("over 1 MiB", "positions", b"a", b'{"pad":"' + b"x" * 1_100_000 + b'"}', "oversized"),
    Hostile("nesting beyond the decoder", "positions", b"a", b"[" * 2000 + b"]" * 2000, "decode_error"),
    Hostile("a JSON string", "positions", b"a", b'"hello"', "not_object"),
    Hostile("a JSON number", "mark-prices", b"BTC-PERP", b"42", "not_object"),
    Hostile("null", "positions", b"a", b"null", "not_object"),
    # shapes
    Hostile("no type", "positions", b"a", _j({k: v for k, v in _pos().items() if k != "type"}), "missing_field"),
    Hostile("no size", "positions", b"a", _j(_pos(size=_DROP)), "missing_field"),
    Hostile("mark without symbol", "mark-prices", b"BTC-PERP", _j(_mark(symbol=_DROP)), "missing_field"),
    Hostile("unknown positions type", "positions", b"a", _j({"type": "withdrawal", "account_id": "a", "seq": 3, "ts": 2}), "unknown_type"),
    Hostile("unknown mark type", "mark-prices", b"BTC-PERP", _j(_mark(type="trade")), "unknown_type"),
    Hostile("type not a string", "positions", b"a", _j(_pos(type=5)), "wrong_type"),
    Hostile("size as a float", "positions", b"a", _j(_pos(size=1.5)), "wrong_type"),
    Hostile("seq as a string", "positions", b"a", _j(_bal(seq="7")), "wrong_type"),
    Hostile("seq true", "positions", b"a", _j(_bal(seq=True)), "wrong_type"),
    Hostile("ts a float", "mark-prices", b"BTC-PERP", _j(_mark(ts=1.5)), "wrong_type"),
    Hostile("seq of 31 digits (a float to the decoder)", "positions", b"a", _j(_bal())[:-1].replace(b'"seq":100', b'"seq":1' + b"0" * 30) + b"}", "wrong_type"),
    Hostile("account id a number", "positions", b"a", _j(_bal(account_id=7)), "wrong_type"),
    Hostile("symbol an array", "mark-prices", b"BTC-PERP", _j(_mark(symbol=["BTC-PERP"])), "wrong_type"),
    Hostile("liquidation id of 65 characters", "positions", b"a", _j(_bal(liquidation_id="f" * 65)), "wrong_type"),
    Hostile("deep array in a field", "positions", b"a", DEEP_IN_FIELD, "wrong_type"),
    # values
    Hostile("negative seq", "positions", b"a", _j(_bal(seq=-1)), "bad_value"),
    Hostile("seq 2^63", "positions", b"a", _j(_bal(seq=2**63)), "bad_value"),
    Hostile("seq 2^64 − 1", "mark-prices", b"BTC-PERP", _j(_mark(seq=2**64 - 1)), "bad_value"),
    Hostile("empty account id", "positions", b"a", _j(_bal(account_id="")), "bad_value"),
    Hostile("account id of 129 characters", "positions", b"a", _j(_bal(account_id="a" * 129)), "bad_value"),
    Hostile("unknown margin mode", "positions", b"a", _j(_pos(margin_mode="portfolio")), "bad_value"),
    Hostile("negative isolated margin", "positions", b"a", _j(_pos(margin_mode="isolated", isolated_margin="-1")), "bad_value"),
    Hostile("size with an exponent", "positions", b"a", _j(_pos(size="1e3")), "bad_decimal"),
    Hostile("size with a plus sign", "positions", b"a", _j(_pos(size="+1")), "bad_decimal"),
    Hostile("size with a space", "positions", b"a", _j(_pos(size=" 1")), "bad_decimal"),
    Hostile("size of 41 characters", "positions", b"a", _j(_pos(size="1" * 41)), "bad_decimal"),
    Hostile("mark NaN", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="NaN")), "bad_decimal"),
    Hostile("mark Infinity", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="Infinity")), "bad_decimal"),
    Hostile("size with 4 decimals at 3", "positions", b"a", _j(_pos(size="1.0001")), "too_many_decimals"),
    Hostile("collateral with 7 decimals at 6", "positions", b"a", _j(_bal(collateral="1.0000001")), "too_many_decimals"),
    Hostile("negative mark", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="-20000.0")), "non_positive_price"),
    Hostile("zero mark", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="0")), "non_positive_price"),
    Hostile("mark that rounds to zero", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="0.04")), "non_positive_price"),
    Hostile("zero entry of an open position", "positions", b"a", _j(_pos(entry_price="0")), "non_positive_price"),
    Hostile("unknown symbol (position)", "positions", b"a", _j(_pos(symbol="DOGE-PERP")), "unknown_symbol"),
    Hostile("unknown symbol (mark)", "mark-prices", b"DOGE", _j(_mark(symbol="DOGE-PERP")), "unknown_symbol"),
    Hostile("unknown asset", "positions", b"a", _j(_bal(asset="EUR")), "unknown_asset"),
    # bounds (docs/methodology.md, "Bounds")
    Hostile("collateral of 2^64 units", "positions", b"a", _j(_bal(collateral="18446744073709.551616")), "out_of_range"),
    Hostile("a position of 10^20 lots", "positions", b"a", _j(_pos(size="1" + "0" * 17)), "out_of_range"),
    Hostile("an entry of 10^19 ticks", "positions", b"a", _j(_pos(entry_price="1" + "0" * 18 + ".0")), "out_of_range"),
    Hostile("a notional beyond 10^12 USD", "positions", b"a", _j(_pos(size="1000000000.000", entry_price="10000000000.0")), "out_of_range"),
    Hostile("a mark of 10^19 ticks", "mark-prices", b"BTC-PERP", _j(_mark(mark_price="1" + "0" * 18 + ".0")), "out_of_range"),
    Hostile("isolated margin of 10^40 units", "positions", b"a", _j(_pos(margin_mode="isolated", isolated_margin="1" + "0" * 34)), "out_of_range"),
    # batches whose bad element no encoder copies (SPEC §6 arrays; the dead letter falls back to the bytes)
    Hostile("a 1 000-deep array in a positions batch", "positions", b"a", b"[" + DEEP + b"]", "not_object"),
    Hostile("a 1 000-deep array in a mark batch", "mark-prices", b"BTC-PERP", b"[" + DEEP + b"]", "not_object"),
    Hostile("a deep field in a batch", "positions", b"a", b"[" + DEEP_IN_FIELD + b"]", "wrong_type"),
    Hostile("a batch element near the message size", "positions", b"a", NEAR_MAX, "bad_value"),
    Hostile("a key of 100 KiB", "positions", b"k" * 102_400, b"{}", "missing_field"),
    # order
    Hostile("stale seq", "positions", b"a", _j(_bal(collateral="999999", seq=1, ts=T0 + 2)), "stale_seq"),
]
