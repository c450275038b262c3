"""Validation of decoded input events (SPEC §6, §8) into small typed values.

Input here is already-decoded JSON (dicts, lists, str, int); bytes → JSON lives in the codec
adapter. Every refusal raises ``BadInput`` with a stable error code for dead letters and metrics.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .fixed import DecimalFormatError, iabs, parse_decimal
from .margin import value_ceil
from .params import Params

MAX_ACCOUNT_ID_CHARS: Final = 128
# Bounds a risk team expects (docs/methodology.md, "Bounds"): every price, size and amount at its
# scale, and a position's notional at its entry price, below 10^18 units. 10^18 < 2^63, so
# every integer the state and the outputs hold fits the 64-bit integers of any JSON encoder;
# larger values are refused as `out_of_range`. (At 6 quote decimals 10^18 units = 10^12 USD.)
MAX_UNITS: Final = 10**18 - 1
MAX_NOTIONAL_UNITS: Final = 10**18 - 1


MISSING: object = object()  # a field absent from the event (None would be JSON null)


class BadInput(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True, init=False)
class MarkTick:
    symbol: str
    mark_ticks: int
    ts: int
    seq: int

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, symbol: str, mark_ticks: int, ts: int, seq: int) -> None:
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "mark_ticks", mark_ticks)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "seq", seq)


@dataclass(frozen=True, slots=True, init=False)
class PositionUpdate:
    account_id: str
    symbol: str
    size_lots: int
    entry_ticks: int
    seq: int
    ts: int
    isolated: bool
    isolated_margin_units: int
    liquidation_id: str | None

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, account_id: str, symbol: str, size_lots: int, entry_ticks: int, seq: int, ts: int, isolated: bool, isolated_margin_units: int, liquidation_id: str | None) -> None:
        object.__setattr__(self, "account_id", account_id)
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "size_lots", size_lots)
        object.__setattr__(self, "entry_ticks", entry_ticks)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "isolated", isolated)
        object.__setattr__(self, "isolated_margin_units", isolated_margin_units)
        object.__setattr__(self, "liquidation_id", liquidation_id)


@dataclass(frozen=True, slots=True, init=False)
class BalanceUpdate:
    account_id: str
    collateral_units: int
    seq: int
    ts: int
    liquidation_id: str | None

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, account_id: str, collateral_units: int, seq: int, ts: int, liquidation_id: str | None) -> None:
        object.__setattr__(self, "account_id", account_id)
        object.__setattr__(self, "collateral_units", collateral_units)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "liquidation_id", liquidation_id)


def _require(event: dict, field: str) -> object:
    if field not in event:
        raise BadInput("missing_field", f"missing field {field!r}")
    return event[field]


def _int_field(event: dict, field: str) -> int:
    value = _require(event, field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput("wrong_type", f"{field!r} must be an integer")
    if value < 0 or value >= 2**63:
        raise BadInput("bad_value", f"{field!r} must be in [0, 2^63)")
    return value


def _str_field(event: dict, field: str, max_chars: int = MAX_ACCOUNT_ID_CHARS) -> str:
    value = _require(event, field)
    if not isinstance(value, str):
        raise BadInput("wrong_type", f"{field!r} must be a string")
    if not value or len(value) > max_chars:
        raise BadInput("bad_value", f"{field!r} must have 1..{max_chars} characters")
    return value


def _decimal_field(event: dict, field: str, decimals: int, rounding: str = "exact") -> int:
    return _decimal_value(event.get(field, MISSING), field, decimals, rounding)


def _decimal_value(value: object, field: str, decimals: int, rounding: str = "exact") -> int:
    """A decimal string's units at ``decimals``, bounded; ``MISSING``: the field is absent."""
    if value is MISSING:
        raise BadInput("missing_field", f"missing field {field!r}")
    try:
        units = parse_decimal(value, decimals, rounding)
    except DecimalFormatError as exc:
        raise BadInput(exc.code, f"{field!r}: {exc}") from None
    if not -MAX_UNITS <= units <= MAX_UNITS:
        raise BadInput("out_of_range", f"{field!r} is beyond 10^18 units at its scale")
    return units


def _optional_id(event: dict) -> str | None:
    value = event.get("liquidation_id")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise BadInput("wrong_type", "'liquidation_id' must be a string of at most 64 characters")
    return value


def decode_mark(event: object, params: Params) -> MarkTick:
    if not isinstance(event, dict):
        raise BadInput("not_object", "a mark-prices event must be a JSON object")
    kind = event.get("type", "mark_price")
    if kind != "mark_price":
        raise BadInput("unknown_type", f"unknown mark-prices event type {str(kind)[:40]!r}")
    symbol, mark_ticks = mark_terms(params, _str_field(event, "symbol"), event.get("mark_price", MISSING))
    return MarkTick(symbol, mark_ticks, _int_field(event, "ts"), _int_field(event, "seq"))


def mark_terms(params: Params, symbol: str, mark_price: object) -> tuple[str, int]:
    """(symbol, mark in ticks): the symbol is known, the price a positive decimal (the checks after
    the field types, in the order ``decode_mark`` makes them; typed decoders share them). The symbol
    returned is the params' own key object, so that marks and positions share one string per symbol."""
    sym = params.symbols.get(symbol)
    if sym is None:
        raise BadInput("unknown_symbol", f"unknown symbol {symbol[:40]!r}")
    # mark prices are rounded half-even to price_decimals (SPEC §2)
    mark_ticks = _decimal_value(mark_price, "mark_price", sym.price_decimals, "half_even")
    if mark_ticks <= 0:
        raise BadInput("non_positive_price", "'mark_price' must be positive at the symbol's scale")
    return sym.symbol, mark_ticks  # the params' own key object: one string per symbol


def decode_position_event(event: object, params: Params) -> PositionUpdate | BalanceUpdate:
    if not isinstance(event, dict):
        raise BadInput("not_object", "a positions event must be a JSON object")
    kind = _require(event, "type")
    if kind == "position":
        account_id = _str_field(event, "account_id")
        symbol = _str_field(event, "symbol")
        symbol, size_lots, entry_ticks, isolated, isolated_margin = position_terms(
            params, symbol, event.get("size", MISSING), event.get("entry_price", MISSING),
            event.get("margin_mode", "cross"), event.get("isolated_margin", MISSING))
        return PositionUpdate(
            account_id, symbol, size_lots, entry_ticks, _int_field(event, "seq"), _int_field(event, "ts"),
            isolated, isolated_margin, _optional_id(event),
        )
    if kind == "balance":
        account_id = _str_field(event, "account_id")
        asset = _str_field(event, "asset")
        collateral = balance_terms(params, asset, event.get("collateral", MISSING))
        return BalanceUpdate(account_id, collateral, _int_field(event, "seq"), _int_field(event, "ts"), _optional_id(event))
    if not isinstance(kind, str):
        raise BadInput("wrong_type", "'type' must be a string")
    raise BadInput("unknown_type", f"unknown positions event type {kind[:40]!r}")


def position_terms(params: Params, symbol: str, size: object, entry_price: object, margin_mode: object,
                   isolated_margin: object) -> tuple[str, int, int, bool, int]:
    """(symbol, size_lots, entry_ticks, isolated, isolated_margin_units) of a position event: the
    checks after the field types, in the order ``decode_position_event`` makes them (typed decoders
    share them). The symbol is the params' own key object: one string per symbol, not one per event."""
    sym = params.symbols.get(symbol)
    if sym is None:
        raise BadInput("unknown_symbol", f"unknown symbol {symbol[:40]!r}")
    size_lots = _decimal_value(size, "size", sym.size_decimals)
    entry_ticks = _decimal_value(entry_price, "entry_price", sym.price_decimals)
    if entry_ticks < 0 or (size_lots != 0 and entry_ticks == 0):
        raise BadInput("non_positive_price", "'entry_price' must be positive for an open position")
    # N = ceil(|q| · E) in quote units (SPEC §3), bounded like every amount
    if value_ceil(sym, iabs(size_lots), entry_ticks) > MAX_NOTIONAL_UNITS:
        raise BadInput("out_of_range", "the position's notional at its entry price is beyond 10^18 quote units")
    if margin_mode != "cross" and margin_mode != "isolated":
        raise BadInput("bad_value", "'margin_mode' must be 'cross' or 'isolated'")
    isolated_margin_units = 0
    if isolated_margin is not MISSING:
        isolated_margin_units = _decimal_value(isolated_margin, "isolated_margin", params.quote_decimals)
        if isolated_margin_units < 0:
            raise BadInput("bad_value", "'isolated_margin' must not be negative")
    return sym.symbol, size_lots, entry_ticks, margin_mode == "isolated", isolated_margin_units


def position_update(params: Params, account_id: str, symbol: str, size: object, entry_price: object,
                    margin_mode: object, isolated_margin: object, seq: int, ts: int,
                    liquidation_id: str | None) -> PositionUpdate:
    """The update of a position event whose fields a typed decoder took (types, lengths, ranges):
    ``position_terms``' checks and the update in one compiled call."""
    symbol, size_lots, entry_ticks, isolated, isolated_margin_units = position_terms(
        params, symbol, size, entry_price, margin_mode, isolated_margin)
    return PositionUpdate(account_id, symbol, size_lots, entry_ticks, seq, ts, isolated, isolated_margin_units,
                          liquidation_id)


def balance_update(params: Params, account_id: str, asset: str, collateral: object, seq: int, ts: int,
                   liquidation_id: str | None) -> BalanceUpdate:
    """``position_update`` for a balance event."""
    return BalanceUpdate(account_id, balance_terms(params, asset, collateral), seq, ts, liquidation_id)


def typed_updates(params: Params, value: object, position_type: object,
                  unset: object) -> list[tuple[int | None, PositionUpdate | BalanceUpdate]] | None:
    """The updates of a message a typed decoder took (worker/typed_input.py): an event, or a list of
    them, whose fields are attributes; an event of ``position_type`` is a position, any other a
    balance; ``unset`` is the decoder's value of an absent isolated margin. None when the core's
    checks refuse one of them (the validating way then decides, and dead-letters it). In the core
    (compiled): a worker's single-event message paid two interpreted calls for this."""
    try:
        if isinstance(value, list):
            return [(index, _typed_update(params, event, position_type, unset)) for index, event in enumerate(value)]
        return [(None, _typed_update(params, value, position_type, unset))]
    except BadInput:
        return None


def _typed_update(params: Params, event: Any, position_type: object, unset: object) -> PositionUpdate | BalanceUpdate:
    if type(event) is position_type:
        isolated_margin = event.isolated_margin
        return position_update(params, event.account_id, event.symbol, event.size, event.entry_price,
                               event.margin_mode, MISSING if isolated_margin is unset else isolated_margin,
                               event.seq, event.ts, event.liquidation_id)
    return balance_update(params, event.account_id, event.asset, event.collateral, event.seq, event.ts,
                          event.liquidation_id)


def balance_terms(params: Params, asset: str, collateral: object) -> int:
    """The collateral in quote units: the asset is the settlement asset, the amount a decimal."""
    if asset != params.asset:
        raise BadInput("unknown_asset", f"asset {asset[:40]!r} is not the settlement asset")
    return _decimal_value(collateral, "collateral", params.quote_decimals)
