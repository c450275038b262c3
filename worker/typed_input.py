"""Typed decoding of `positions` messages in one C pass (msgspec), in front of the validating decoder.

A `positions` message — an event or a SPEC §6 array of events — is decoded straight into typed
structs: JSON syntax, field types, integer ranges and string lengths are checked in C, without
building a dict per event. The checks that need the parameters (symbol, asset, decimals, bounds)
then run through the core's own ``position_terms`` / ``balance_terms``.

Anything this decoder does not take as is returns None, and the caller goes the validating way
(``topics.codec.decode`` + ``Engine.process_positions``), which writes the dead letter with its code:
a wrong type, a missing field, an unknown event type, a refusal by the core's checks, invalid UTF-8
(msgspec raises UnicodeDecodeError for it inside a string), a backslash anywhere (escapes are left
to the validating decoder), a message over the size limit. So this way
never accepts what the validating way refuses, and where both accept they give the same updates
(tests/test_typed_input.py checks both on the hostile corpus and on generated events).
"""
from __future__ import annotations

from typing import Annotated, Any, Callable, Union

import msgspec

from topics.codec import MAX_MESSAGE_BYTES, DecodeError, decode

from .core.inputs import MAX_ACCOUNT_ID_CHARS, BalanceUpdate, PositionUpdate, typed_updates
from .core.params import Params

Update = Union[PositionUpdate, BalanceUpdate]
Indexed = list[tuple[Union[int, None], Update]]  # (index in the message's array or None, update)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ACCOUNT_ID_CHARS)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # seq and ts: [0, 2^63) like _int_field
_LiquidationId = Annotated[str, msgspec.Meta(max_length=64)]


class _Position(msgspec.Struct, tag_field="type", tag="position"):
    account_id: _Id
    symbol: _Id
    size: str
    entry_price: str
    seq: _Count
    ts: _Count
    margin_mode: str = "cross"
    isolated_margin: Union[str, msgspec.UnsetType] = msgspec.UNSET  # null is not "absent": validating way
    liquidation_id: Union[_LiquidationId, None] = None


class _Balance(msgspec.Struct, tag_field="type", tag="balance"):
    account_id: _Id
    asset: _Id
    collateral: str
    seq: _Count
    ts: _Count
    liquidation_id: Union[_LiquidationId, None] = None


_Event = Union[_Position, _Balance]
_Value = Union[_Event, list[_Event]]


class _PositionsLine(msgspec.Struct, tag_field="topic", tag="positions"):
    """A replay line (SPEC §7) of the `positions` topic."""

    value: _Value
    key: Union[str, None] = None


_UNSET_FIELD = msgspec.UNSET  # an absent isolated margin, as the decoder leaves it
_decode_value = msgspec.json.Decoder(_Value).decode
_decode_line = msgspec.json.Decoder(_PositionsLine).decode


def _takes(raw: bytes | None) -> bool:
    # (bytes.find, not ``in``: CPython 3.11's ``bytes in bytes`` first tries the needle as an int and
    # raises and clears a TypeError each time)
    return raw is not None and len(raw) <= MAX_MESSAGE_BYTES and raw.find(b"\\") < 0


def position_updates(raw: bytes | None, params: Params) -> Indexed | None:
    """The updates of a `positions` record value, or None: decode it the validating way."""
    if not _takes(raw):
        return None
    try:
        value = _decode_value(raw)  # type: ignore[arg-type]  # _takes: not None
    except ValueError:  # msgspec.DecodeError (ValidationError is one), UnicodeDecodeError inside a string
        return None
    return typed_updates(params, value, _Position, _UNSET_FIELD)  # (checks and updates: one compiled call)


def replay_position_line(line: bytes, params: Params) -> tuple[str | None, Indexed] | None:
    """(key, updates) of a replay line of the `positions` topic, or None: decode it the validating way."""
    if line.find(b'"positions"') < 0 or not _takes(line):  # not that topic (without escapes): no need to try
        return None
    try:
        record = _decode_line(line)
    except ValueError:  # as in position_updates
        return None
    updates = typed_updates(params, record.value, _Position, _UNSET_FIELD)
    return None if updates is None else (record.key, updates)


_UNSET: Any = object()  # no value decoded yet (None is one: a record that does not decode)


class HeldRecord:
    """``element_at`` for the engine over a record value ``position_updates`` took (valid JSON by
    then): an event's JSON for a dead letter (the whole value at index None, else the array's
    element), decoded only if asked, once. One object a message: a closure, its cell and a list
    before."""

    __slots__ = ("raw", "decoded")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.decoded: Any = _UNSET

    def value(self) -> Any:
        if self.decoded is _UNSET:
            self.decoded = self._decode()
        return self.decoded

    def _decode(self) -> Any:
        try:
            return decode(self.raw)
        except DecodeError:  # pragma: no cover - msgspec accepted these bytes as JSON
            return None

    def element_at(self, index: int | None) -> Any:
        value = self.value()
        return value if index is None else value[index]


def record_elements(raw: bytes) -> Callable[[int | None], Any]:
    """``element_at`` for a record value ``position_updates`` took (valid JSON by then)."""
    return HeldRecord(raw).element_at
