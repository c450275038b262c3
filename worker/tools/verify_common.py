"""Shared pieces of ``verify``: mismatches, field parsing at the right scale, the check context."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.core.fixed import DecimalFormatError, format_units, parse_decimal
from worker.core.params import Params

from .verify_math import Sym, symbols_of


@dataclass(frozen=True)
class Mismatch:
    kind: str  # event type ("liquidation", "haircut_round", …) or "input"
    event_id: str  # the event's own id (liquidation_id, round_id, …), or where it is
    field: str
    expected: str
    got: str

    def line(self) -> str:
        return f"{self.kind} {self.event_id}  {self.field}: expected {self.expected}, got {self.got}"


class Malformed(Exception):
    """A field that cannot be read at its scale: reported once, the event's other checks skipped."""

    def __init__(self, field_name: str, expected: str, got: Any) -> None:
        super().__init__(field_name)
        self.field = field_name
        self.expected = expected
        self.got = got


def show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return repr(value)


def decimal_at(value: Any, decimals: int, name: str, *, positive: bool = False, non_negative: bool = False) -> int:
    """A decimal string written with exactly ``decimals`` decimals (SPEC §6), as integer units."""
    try:
        units = parse_decimal(value, decimals)
    except DecimalFormatError:
        raise Malformed(name, f"a decimal string at {decimals} decimals", value) from None
    if format_units(units, decimals) != value:
        raise Malformed(name, f"a decimal string with exactly {decimals} decimals", value)
    if positive and units <= 0:
        raise Malformed(name, "a positive amount", value)
    if non_negative and units < 0:
        raise Malformed(name, "a non-negative amount", value)
    return units


def integer(value: Any, name: str, *, low: int | None = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        raise Malformed(name, "an integer" + (f" ≥ {low}" if low is not None else ""), value)
    return value


def text(value: Any, name: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value or (choices is not None and value not in choices):
        raise Malformed(name, "one of " + "/".join(choices) if choices else "a non-empty string", value)
    return value


@dataclass
class Context:
    """What every check needs: parameters, their arithmetic, the mismatches found, counters."""

    params: Params
    ordered: bool = True  # the records are in emission order (replay output), not topic by topic
    mismatches: list[Mismatch] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # event type → events checked
    failed: dict[str, set] = field(default_factory=dict)  # event type → ids with a mismatch
    bounded: int = 0  # liquidations some of whose checks are bounds (positions the event does not list)
    notes: list[str] = field(default_factory=list)
    marks: dict[tuple[str, int], tuple[Any, str]] = field(default_factory=dict)  # (symbol, seq) → price, where
    syms: dict[str, Sym] = field(init=False)

    def __post_init__(self) -> None:
        self.syms = symbols_of(self.params)

    @property
    def q(self) -> int:
        return self.params.quote_decimals

    def amount(self, value: Any, name: str, **kw: bool) -> int:
        return decimal_at(value, self.q, name, **kw)

    def fmt(self, units: int) -> str:
        return format_units(units, self.q)

    def count(self, kind: str) -> None:
        self.checked[kind] = self.checked.get(kind, 0) + 1

    def report(self, kind: str, event_id: str, field_name: str, expected: Any, got: Any) -> None:
        self.mismatches.append(Mismatch(kind, event_id, field_name, show(expected), show(got)))
        self.failed.setdefault(kind, set()).add(event_id)

    def mark_seen(self, event: "Event", field_name: str, symbol: str, seq: int, price: Any) -> None:
        """Every event that names a mark tick (symbol, seq) must give it the same price."""
        first = self.marks.setdefault((symbol, seq), (price, f"{event.kind} {event.id}"))
        if first[0] != price:
            event.report(field_name, f"{first[0]} (the price of {symbol} tick {seq} in {first[1]})", price)


class Event:
    """One event under check: reports its mismatches under its type and id."""

    def __init__(self, ctx: Context, kind: str, event_id: str) -> None:
        self.ctx, self.kind, self.id = ctx, kind, event_id
        self.found = 0

    def report(self, field_name: str, expected: Any, got: Any) -> None:
        self.found += 1
        self.ctx.report(self.kind, self.id, field_name, expected, got)

    def same(self, field_name: str, expected: Any, got: Any) -> bool:
        if expected != got:
            self.report(field_name, expected, got)
            return False
        return True

    def same_amount(self, field_name: str, expected: int, got: int, why: str = "") -> bool:
        if expected != got:
            self.report(field_name, self.ctx.fmt(expected) + (f" ({why})" if why else ""), self.ctx.fmt(got))
            return False
        return True

    def malformed(self, exc: Malformed) -> None:
        self.report(exc.field, exc.expected, exc.got)
