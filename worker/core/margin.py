"""Margin math (SPEC §3): PnL, notional, tiered maintenance, equity, zones, prices, severity.

Pure functions over ints. Sizes are signed lots, prices are ticks at the symbol's
``price_decimals``, amounts are quote units at ``settlement.decimals``. One lot times one tick
is worth ``value_num / value_den`` quote units.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd

from .fixed import PPM, ceil_div, floor_div, iabs, mul
from .params import Bracket, SymbolParams


@dataclass(frozen=True, slots=True, init=False)
class Leg:
    """One open position of a scope, valued at its symbol's mark."""

    sym: SymbolParams
    size_lots: int  # signed: > 0 long, < 0 short
    entry_ticks: int
    mark_ticks: int

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, sym: SymbolParams, size_lots: int, entry_ticks: int, mark_ticks: int) -> None:
        object.__setattr__(self, "sym", sym)
        object.__setattr__(self, "size_lots", size_lots)
        object.__setattr__(self, "entry_ticks", entry_ticks)
        object.__setattr__(self, "mark_ticks", mark_ticks)


@dataclass(frozen=True, slots=True, init=False)
class MarginState:
    equity_units: int  # EQ = C + Σ U_i
    maintenance_units: int  # MM = Σ MM_i
    # the legs it was computed over, for ``leg_maintenance_units`` (not compared or hashed: two states
    # are equal by EQ and MM, as before; callers hand over legs they no longer change)
    legs: tuple[Leg, ...] | list[Leg] = field(compare=False)

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, equity_units: int, maintenance_units: int, legs: tuple[Leg, ...] | list[Leg]) -> None:
        object.__setattr__(self, "equity_units", equity_units)
        object.__setattr__(self, "maintenance_units", maintenance_units)
        object.__setattr__(self, "legs", legs)

    @property
    def leg_maintenance_units(self) -> tuple[int, ...]:
        """MM_i, in the order of the legs: computed when asked (a liquidation's plan orders its
        closes by it), not with every evaluation's state."""
        return tuple([leg_maintenance(leg) for leg in self.legs])

    def liquidatable(self) -> bool:
        # liquidatable iff MM > 0 and EQ < MM (strict)   (SPEC §3)
        return self.maintenance_units > 0 and self.equity_units < self.maintenance_units


def value_floor(sym: SymbolParams, lots: int, ticks: int) -> int:
    """floor(lots · ticks) in quote units."""
    return floor_div(mul(mul(lots, ticks), sym.value_num), sym.value_den)


def value_ceil(sym: SymbolParams, lots: int, ticks: int) -> int:
    """ceil(lots · ticks) in quote units."""
    return ceil_div(mul(mul(lots, ticks), sym.value_num), sym.value_den)


def unrealized_pnl(sym: SymbolParams, size_lots: int, entry_ticks: int, price_ticks: int) -> int:
    """U = floor(q · (P − E)), quote units."""
    return value_floor(sym, size_lots, price_ticks - entry_ticks)


def notional(sym: SymbolParams, size_lots: int, price_ticks: int) -> int:
    """N = ceil(|q| · P), quote units."""
    return value_ceil(sym, iabs(size_lots), price_ticks)


def bracket_for(sym: SymbolParams, notional_units: int) -> Bracket:
    """The first bracket with N ≤ max_notional; the last has no maximum (SPEC §3.1)."""
    for bracket in sym.brackets:
        if bracket.max_notional_units is None or notional_units <= bracket.max_notional_units:
            return bracket
    return sym.brackets[-1]


def maintenance(sym: SymbolParams, notional_units: int) -> int:
    """MM_i = ceil(N · mmr / 10^6) − cum, quote units."""
    bracket = bracket_for(sym, notional_units)
    return ceil_div(mul(notional_units, bracket.mmr_ppm), PPM) - bracket.cum_units


def leg_maintenance(leg: Leg) -> int:
    """MM_i of one leg at its mark: maintenance of its notional."""
    return maintenance(leg.sym, notional(leg.sym, leg.size_lots, leg.mark_ticks))


def margin_state(collateral_units: int, legs: tuple[Leg, ...] | list[Leg]) -> MarginState:
    equity = collateral_units
    total_mm = 0  # MM = Σ legs' MM (summed here on the compiled ints, not by ``sum`` over the list)
    for leg in legs:
        equity += unrealized_pnl(leg.sym, leg.size_lots, leg.entry_ticks, leg.mark_ticks)
        total_mm += leg_maintenance(leg)
    return MarginState(equity, total_mm, legs)


def call_level(maintenance_units: int, call_ratio_ppm: int) -> int:
    """Margin-call level ceil(MM · call_ratio / 10^6), quote units."""
    return ceil_div(mul(maintenance_units, call_ratio_ppm), PPM)


def zone(state: MarginState, call_ratio_ppm: int) -> str:
    """'liquidatable', 'call' (EQ below the call level, not liquidatable) or 'healthy'."""
    if state.liquidatable():
        return "liquidatable"
    if state.equity_units < call_level(state.maintenance_units, call_ratio_ppm):
        return "call"
    return "healthy"


def severity_ppm(state: MarginState) -> int:
    """sev = clamp(floor((MM − EQ) · 10^6 / MM), 0, 10^6)   (SPEC §3.3)."""
    if state.maintenance_units <= 0:
        return 0
    raw = floor_div(mul(state.maintenance_units - state.equity_units, PPM), state.maintenance_units)
    return min(max(raw, 0), PPM)


def ratio_ppm(state: MarginState) -> int | None:
    """floor(EQ · 10^6 / MM), or None without maintenance."""
    if state.maintenance_units <= 0:
        return None
    return floor_div(mul(state.equity_units, PPM), state.maintenance_units)


def liquidation_price(collateral_units: int, legs: list[Leg], index: int) -> Fraction | None:
    """Exact P_liq in ticks of ``legs[index]``, others held fixed, within its current bracket (§3.2).

    P_liq = (q·E − C' − cum) / (q − |q|·mmr), C' = C + Σ_others (U_j − MM_j).
    """
    leg = legs[index]
    sym = leg.sym
    others = collateral_units
    for j, other in enumerate(legs):
        if j != index:
            others += unrealized_pnl(other.sym, other.size_lots, other.entry_ticks, other.mark_ticks)
            others -= maintenance(other.sym, notional(other.sym, other.size_lots, other.mark_ticks))
    bracket = bracket_for(sym, notional(sym, leg.size_lots, leg.mark_ticks))
    q = leg.size_lots
    # In ticks, with v = value_num/value_den quote units per lot·tick:
    # P = (q·E·v − C' − cum) / (v · (q − |q|·mmr/10^6))
    numerator = (q * leg.entry_ticks * sym.value_num - (others + bracket.cum_units) * sym.value_den) * PPM
    denominator = sym.value_num * (q * PPM - iabs(q) * bracket.mmr_ppm)
    if denominator == 0:
        return None
    price = Fraction(numerator, denominator)
    return price if price > 0 else None


def liquidation_price_ticks(price: Fraction, size_lots: int) -> int:
    """The last tick at which the scope is liquidatable: a long's highest tick strictly below
    P_liq, a short's lowest tick strictly above it."""
    if size_lots > 0:
        return ceil_div(price.numerator, price.denominator) - 1
    return floor_div(price.numerator, price.denominator) + 1


def bankruptcy_price(collateral_units: int, legs: list[Leg], index: int) -> Fraction | None:
    """Exact P_bk in ticks: E − (C + Σ U_others) / q   (SPEC §3.2)."""
    leg = legs[index]
    others = collateral_units + sum(
        unrealized_pnl(o.sym, o.size_lots, o.entry_ticks, o.mark_ticks) for j, o in enumerate(legs) if j != index
    )
    price = leg.entry_ticks - Fraction(others * leg.sym.value_den, leg.sym.value_num * leg.size_lots)
    return price if price > 0 else None


@dataclass(frozen=True, slots=True, init=False)
class BandTerms:
    """``safe_move_ticks``'s constants for one symbol and call ratio, computed once (the engine keeps
    one per symbol): the rounding bound and the reduced fraction den·10^12 / (num·(10^12 + ratio·mmr_max)).
    Reduced by their gcd, the terms are small for usual parameters, so the division of the band
    stays in machine words (exact either way: the same fraction)."""

    rounding_units: int  # 4 + ceil(ratio)·(3 + brackets)
    per_unit: int  # den·10^12 / g
    per_lot_tick: int  # num·(10^12 + ratio·mmr_max) / g
    # ratio·mmr_max < 10^12: a healthy scope's leg moving its position's way changes EQ − call level
    # by ≥ |q|·Δ·v·(1 − ratio·mmr_max/10^12) − rounding ≥ −rounding, so that side needs no bound
    one_sided: bool

    def __init__(self, rounding_units: int, per_unit: int, per_lot_tick: int, one_sided: bool) -> None:
        object.__setattr__(self, "rounding_units", rounding_units)
        object.__setattr__(self, "per_unit", per_unit)
        object.__setattr__(self, "per_lot_tick", per_lot_tick)
        object.__setattr__(self, "one_sided", one_sided)


def band_terms(sym: SymbolParams, call_ratio_ppm: int) -> BandTerms:
    numerator = sym.value_den * PPM * PPM
    denominator = sym.value_num * (PPM * PPM + call_ratio_ppm * sym.max_mmr_ppm)
    g = gcd(numerator, denominator)
    return BandTerms(4 + ceil_div(call_ratio_ppm, PPM) * (3 + len(sym.brackets)), numerator // g, denominator // g,
                     call_ratio_ppm * sym.max_mmr_ppm < PPM * PPM)


def safe_move_ticks(terms: BandTerms, size_lots: int, slack_units: int) -> int:
    """How far a leg's mark may move (ticks, either way) while consuming at most ``slack_units``
    of the distance between equity and the nearest zone boundary (``terms``: its symbol's).

    A move of Δ ticks changes U by ≤ |q|·Δ·v + 1 and the call level by
    ≤ ratio·(mmr_max·(|q|·Δ·v + 1) + 2) + 1 (ceil/floor rounding of N, MM, cum, level);
    each bracket boundary crossed adds ≤ 1 (floored cum); we bound the rounding by
    4 + ceil(ratio)·(3 + brackets). With budget = slack − rounding,
    Δ = floor(budget·den·10^12 / (|q|·num·(10^12 + ratio·mmr_max))), i.e. |q|·Δ·v·(10^12 + ratio·mmr_max)/10^12
    ≤ budget; 0 when the budget is not positive.
    """
    budget = slack_units - terms.rounding_units
    if budget <= 0:
        return 0
    return floor_div(mul(budget, terms.per_unit), mul(iabs(size_lots), terms.per_lot_tick))
