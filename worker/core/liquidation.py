"""One evaluation of one liquidatable scope (SPEC §4): closes, penalties, split, shortfall.

``plan_liquidation`` is pure: it takes the scope as it stands and returns what the matching
engine should do and how the penalty is distributed. It never mutates the caller's state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from .fixed import PPM, ceil_div, floor_div, iabs, mul
from .margin import Leg, margin_state, notional, severity_ppm, value_floor
from .params import Params, SymbolParams


@mypyc_attr(native_class=False)  # compiled: a built-in exception base needs a Python class
class AccountingError(AssertionError):
    """A tranche that does not balance: a bug, never clamped."""


@dataclass(frozen=True, slots=True, init=False)
class Close:
    symbol: str
    side: str  # "long" | "short": the side of the position being closed
    closed_lots: int  # > 0
    remaining_lots: int  # ≥ 0, same side
    mark_ticks: int
    execution_ticks: int
    entry_ticks: int
    realized_pnl_units: int
    penalty_rate_ppm: int
    penalty_units: int
    recovery_rate_ppm: int

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, symbol: str, side: str, closed_lots: int, remaining_lots: int, mark_ticks: int,
                 execution_ticks: int, entry_ticks: int, realized_pnl_units: int, penalty_rate_ppm: int,
                 penalty_units: int, recovery_rate_ppm: int) -> None:
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "closed_lots", closed_lots)
        object.__setattr__(self, "remaining_lots", remaining_lots)
        object.__setattr__(self, "mark_ticks", mark_ticks)
        object.__setattr__(self, "execution_ticks", execution_ticks)
        object.__setattr__(self, "entry_ticks", entry_ticks)
        object.__setattr__(self, "realized_pnl_units", realized_pnl_units)
        object.__setattr__(self, "penalty_rate_ppm", penalty_rate_ppm)
        object.__setattr__(self, "penalty_units", penalty_units)
        object.__setattr__(self, "recovery_rate_ppm", recovery_rate_ppm)


@dataclass(frozen=True, slots=True, init=False)
class LiquidationPlan:
    bankrupt: bool
    severity_ppm: int
    equity_before_units: int
    maintenance_before_units: int
    equity_after_units: int
    maintenance_after_units: int
    collateral_before_units: int
    collateral_after_units: int  # C + Σ R − Σ F; negative only when bankrupt (then −shortfall)
    closes: tuple[Close, ...]
    penalty_units: int
    liquidator_units: int
    protocol_units: int
    insurance_fund_units: int
    shortfall_units: int

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, bankrupt: bool, severity_ppm: int, equity_before_units: int, maintenance_before_units: int,
                 equity_after_units: int, maintenance_after_units: int, collateral_before_units: int,
                 collateral_after_units: int, closes: tuple[Close, ...], penalty_units: int, liquidator_units: int,
                 protocol_units: int, insurance_fund_units: int, shortfall_units: int) -> None:
        object.__setattr__(self, "bankrupt", bankrupt)
        object.__setattr__(self, "severity_ppm", severity_ppm)
        object.__setattr__(self, "equity_before_units", equity_before_units)
        object.__setattr__(self, "maintenance_before_units", maintenance_before_units)
        object.__setattr__(self, "equity_after_units", equity_after_units)
        object.__setattr__(self, "maintenance_after_units", maintenance_after_units)
        object.__setattr__(self, "collateral_before_units", collateral_before_units)
        object.__setattr__(self, "collateral_after_units", collateral_after_units)
        object.__setattr__(self, "closes", closes)
        object.__setattr__(self, "penalty_units", penalty_units)
        object.__setattr__(self, "liquidator_units", liquidator_units)
        object.__setattr__(self, "protocol_units", protocol_units)
        object.__setattr__(self, "insurance_fund_units", insurance_fund_units)
        object.__setattr__(self, "shortfall_units", shortfall_units)


def execution_price(sym: SymbolParams, size_lots: int, mark_ticks: int) -> int:
    """X: long floor(P·(10^6 − slip)/10^6), short ceil(P·(10^6 + slip)/10^6), in ticks (§4.2)."""
    if size_lots > 0:
        return floor_div(mul(mark_ticks, PPM - sym.slippage_ppm), PPM)
    return ceil_div(mul(mark_ticks, PPM + sym.slippage_ppm), PPM)


def recovery_rate_ppm(size_lots: int, mark_ticks: int, execution_ticks: int) -> int:
    """Value received at X ÷ value at P: long floor(X·10^6/P), short floor(P·10^6/X)."""
    if size_lots > 0:
        return floor_div(mul(execution_ticks, PPM), mark_ticks)
    return floor_div(mul(mark_ticks, PPM), execution_ticks)


def penalty_rate_ppm(sym: SymbolParams, scope_severity_ppm: int) -> int:
    """flat → min_ppm; severity → min + floor((max − min) · sev / 10^6)   (§4.1)."""
    if sym.penalty_model == "flat":
        return sym.penalty_min_ppm
    return sym.penalty_min_ppm + floor_div((sym.penalty_max_ppm - sym.penalty_min_ppm) * scope_severity_ppm, PPM)


class _Working:
    """The scope while closes are being made: collateral and sizes move, entries and marks stay."""

    __slots__ = ("collateral", "sizes", "legs", "exec_ticks", "realized", "penalties", "start_collateral")

    def __init__(self, collateral_units: int, legs: list[Leg]) -> None:
        self.start_collateral = collateral_units
        self.collateral = collateral_units
        self.legs = legs
        self.sizes = [leg.size_lots for leg in legs]
        self.exec_ticks = [execution_price(leg.sym, leg.size_lots, leg.mark_ticks) for leg in legs]
        self.realized = 0
        self.penalties = 0

    def liquidation_value(self, collateral_units: int, sizes: list[int]) -> int:
        """LV = C + Σ floor(q_j · (X_j − E_j)) over open positions   (§4.4)."""
        total = collateral_units
        for leg, size, x in zip(self.legs, sizes, self.exec_ticks):
            if size:
                total += value_floor(leg.sym, size, x - leg.entry_ticks)
        return total

    def state_at_mark(self, collateral_units: int, sizes: list[int]):
        return margin_state(
            collateral_units,
            [Leg(leg.sym, size, leg.entry_ticks, leg.mark_ticks) for leg, size in zip(self.legs, sizes) if size],
        )

    def simulate(self, index: int, delta_lots: int, rate_ppm: int) -> tuple[int, int, int, list[int]]:
        """Close ``delta_lots`` (same sign as the position) of leg ``index``.

        R = floor(δ·(X − E)); Nc = floor(|δ|·X); F = min(floor(Nc·f/10^6), max(0, LV1)).
        Returns (realized, penalty, collateral after, sizes after).
        """
        leg = self.legs[index]
        x = self.exec_ticks[index]
        realized = value_floor(leg.sym, delta_lots, x - leg.entry_ticks)
        sizes = list(self.sizes)
        sizes[index] -= delta_lots
        collateral = self.collateral + realized
        closed_notional = value_floor(leg.sym, iabs(delta_lots), x)
        lv_after_close = self.liquidation_value(collateral, sizes)
        penalty = min(floor_div(mul(closed_notional, rate_ppm), PPM), max(0, lv_after_close))
        return realized, penalty, collateral - penalty, sizes

    def close(self, index: int, delta_lots: int, rate_ppm: int) -> Close:
        leg = self.legs[index]
        realized, penalty, collateral, sizes = self.simulate(index, delta_lots, rate_ppm)
        self.collateral, self.sizes = collateral, sizes
        self.realized += realized
        self.penalties += penalty
        # conservation after each tranche: C_now = C_start + Σ R − Σ F
        if self.collateral != self.start_collateral + self.realized - self.penalties or penalty < 0:
            raise AccountingError(f"tranche on {leg.sym.symbol} does not balance")
        x = self.exec_ticks[index]
        return Close(
            symbol=leg.sym.symbol,
            side="long" if leg.size_lots > 0 else "short",
            closed_lots=iabs(delta_lots),
            remaining_lots=iabs(sizes[index]),
            mark_ticks=leg.mark_ticks,
            execution_ticks=x,
            entry_ticks=leg.entry_ticks,
            realized_pnl_units=realized,
            penalty_rate_ppm=rate_ppm,
            penalty_units=penalty,
            recovery_rate_ppm=recovery_rate_ppm(leg.size_lots, leg.mark_ticks, x),
        )


def _bar_met(work: _Working, collateral_units: int, sizes: list[int], buffer_ppm: int) -> bool:
    """EQ ≥ ceil(MM · (10^6 + buffer) / 10^6), at marks   (§4.6)."""
    state = work.state_at_mark(collateral_units, sizes)
    return state.equity_units >= ceil_div(mul(state.maintenance_units, PPM + buffer_ppm), PPM)


def smallest_restoring_close(work: _Working, index: int, rate_ppm: int, buffer_ppm: int) -> int | None:
    """Smallest δ (lots, ≥ 1) after which the bar holds, penalty included; None if even a full
    close does not restore it. Binary search keeps bar(δ) true and bar(δ − 1) false."""
    size = work.sizes[index]
    sign = 1 if size > 0 else -1
    if not _restores(work, index, sign * iabs(size), rate_ppm, buffer_ppm):
        return None
    low, high = 0, iabs(size)  # restores(low) is false (the scope is below the bar), restores(high) true
    while high - low > 1:
        middle = (low + high) // 2
        if _restores(work, index, sign * middle, rate_ppm, buffer_ppm):
            high = middle
        else:
            low = middle
    return high


def _restores(work: _Working, index: int, delta_lots: int, rate_ppm: int, buffer_ppm: int) -> bool:
    """Whether the bar holds after closing ``delta_lots`` of leg ``index``, penalty included.
    (A module function, not a closure: compiled, a closure is called through a Python object.)"""
    _, _, collateral, sizes = work.simulate(index, delta_lots, rate_ppm)
    return _bar_met(work, collateral, sizes, buffer_ppm)


def plan_liquidation(collateral_units: int, legs: list[Leg], params: Params) -> LiquidationPlan:
    """Liquidate a liquidatable scope: bankrupt (§4.5) or solvent, full or partial (§4.6)."""
    before = margin_state(collateral_units, legs)
    severity = severity_ppm(before)
    work = _Working(collateral_units, legs)
    # descending MM_i, ties by symbol ascending
    order = sorted(range(len(legs)), key=lambda i: (-before.leg_maintenance_units[i], legs[i].sym.symbol))
    closes: list[Close] = []
    lv_before = work.liquidation_value(collateral_units, work.sizes)
    bankrupt = lv_before < 0
    if bankrupt:
        for i in order:
            closes.append(work.close(i, work.sizes[i], 0))
    elif params.liquidation_mode == "full":
        for i in order:
            closes.append(work.close(i, work.sizes[i], penalty_rate_ppm(legs[i].sym, severity)))
    else:
        for i in order:
            rate = penalty_rate_ppm(legs[i].sym, severity)
            bar_met = _bar_met(work, work.collateral, work.sizes, params.buffer_ppm)
            if bar_met and work.collateral >= 0:
                break
            size = work.sizes[i]
            delta = None if bar_met else smallest_restoring_close(work, i, rate, params.buffer_ppm)
            if delta is not None and delta < iabs(size):
                rest = iabs(size) - delta
                if notional(legs[i].sym, rest, legs[i].mark_ticks) < legs[i].sym.min_notional_units:
                    delta = None
            lots = size if delta is None else (delta if size > 0 else -delta)
            closes.append(work.close(i, lots, rate))
        # Collateral must not end negative while a position is left open: close what remains.
        for i in order:
            if work.collateral >= 0:
                break
            if work.sizes[i]:
                closes.append(work.close(i, work.sizes[i], penalty_rate_ppm(legs[i].sym, severity)))

    penalty = work.penalties
    if bankrupt:
        shortfall = -work.collateral
        after_equity = after_mm = 0
        if shortfall != -lv_before or any(work.sizes):
            raise AccountingError("bankrupt close-out does not equal the liquidation value")
    else:
        shortfall = 0
        after = work.state_at_mark(work.collateral, work.sizes)
        after_equity, after_mm = after.equity_units, after.maintenance_units
        if work.collateral < 0:
            raise AccountingError("solvent liquidation left negative collateral")
    # split once: liquidator floor(F·l/10^6), protocol floor(F·p/10^6), insurance fund the rest
    liquidator = floor_div(penalty * params.liquidator_ppm, PPM)
    protocol = floor_div(penalty * params.protocol_ppm, PPM)
    insurance = penalty - liquidator - protocol
    if insurance < 0 or liquidator + protocol + insurance != penalty:
        raise AccountingError("penalty split does not balance")
    return LiquidationPlan(
        bankrupt=bankrupt,
        severity_ppm=severity,
        equity_before_units=before.equity_units,
        maintenance_before_units=before.maintenance_units,
        equity_after_units=after_equity,
        maintenance_after_units=after_mm,
        collateral_before_units=collateral_units,
        collateral_after_units=work.collateral,
        closes=tuple(closes),
        penalty_units=penalty,
        liquidator_units=liquidator,
        protocol_units=protocol,
        insurance_fund_units=insurance,
        shortfall_units=shortfall,
    )


def plan_to_dict(plan: LiquidationPlan) -> dict[str, Any]:
    """Plain-JSON form of a plan for the fund agent's request topic (and the pending state).
    Amounts (``*_units``) are written as integer strings: a product of bounded prices and sizes
    may exceed the 64-bit integers a JSON encoder writes. Prices, sizes and rates are bounded
    inputs (or ppm) and stay integers. Keys in the dataclasses' field order, ``closes`` last.
    (Written out field by field: ``dataclasses.asdict`` deep-copied and cost 60 % of a cascade.)"""
    return {
        "bankrupt": plan.bankrupt,
        "severity_ppm": plan.severity_ppm,
        "equity_before_units": str(plan.equity_before_units),
        "maintenance_before_units": str(plan.maintenance_before_units),
        "equity_after_units": str(plan.equity_after_units),
        "maintenance_after_units": str(plan.maintenance_after_units),
        "collateral_before_units": str(plan.collateral_before_units),
        "collateral_after_units": str(plan.collateral_after_units),
        "penalty_units": str(plan.penalty_units),
        "liquidator_units": str(plan.liquidator_units),
        "protocol_units": str(plan.protocol_units),
        "insurance_fund_units": str(plan.insurance_fund_units),
        "shortfall_units": str(plan.shortfall_units),
        "closes": [{
            "symbol": c.symbol,
            "side": c.side,
            "closed_lots": c.closed_lots,
            "remaining_lots": c.remaining_lots,
            "mark_ticks": c.mark_ticks,
            "execution_ticks": c.execution_ticks,
            "entry_ticks": c.entry_ticks,
            "realized_pnl_units": str(c.realized_pnl_units),
            "penalty_rate_ppm": c.penalty_rate_ppm,
            "penalty_units": str(c.penalty_units),
            "recovery_rate_ppm": c.recovery_rate_ppm,
        } for c in plan.closes],
    }


def plan_to_list(plan: LiquidationPlan) -> list[Any]:
    """The compact JSON form of a plan that fund requests carry (and the pending state holds):
    ``plan_to_dict``'s values in its order, without the names, the closes as arrays too (a third of
    the bytes, half the cost to encode and decode). ``plan_from_json`` reads both forms."""
    return [plan.bankrupt, plan.severity_ppm, str(plan.equity_before_units), str(plan.maintenance_before_units),
            str(plan.equity_after_units), str(plan.maintenance_after_units), str(plan.collateral_before_units),
            str(plan.collateral_after_units), str(plan.penalty_units), str(plan.liquidator_units),
            str(plan.protocol_units), str(plan.insurance_fund_units), str(plan.shortfall_units),
            [[c.symbol, c.side, c.closed_lots, c.remaining_lots, c.mark_ticks, c.execution_ticks, c.entry_ticks,
              str(c.realized_pnl_units), c.penalty_rate_ppm, str(c.penalty_units), c.recovery_rate_ppm]
             for c in plan.closes]]


def plan_from_json(data: dict[str, Any] | list[Any]) -> LiquidationPlan:
    """A plan from either JSON form: the array (``plan_to_list``) or the dict (``plan_to_dict``,
    what requests carried before the array: still in the topic or in a pending state)."""
    if isinstance(data, dict):
        return plan_from_dict(data)
    if len(data) != 14:
        raise ValueError(f"a plan array has 14 fields, not {len(data)}")
    closes = tuple(Close(c[0], c[1], c[2], c[3], c[4], c[5], c[6], int(c[7]), c[8], int(c[9]), c[10])
                   for c in data[13])
    return LiquidationPlan(data[0], data[1], int(data[2]), int(data[3]), int(data[4]), int(data[5]), int(data[6]),
                           int(data[7]), closes, int(data[8]), int(data[9]), int(data[10]), int(data[11]),
                           int(data[12]))


def plan_from_dict(data: dict[str, Any]) -> LiquidationPlan:
    """``plan_to_dict`` reversed (the fund agent rebuilds each request's plan: kept lean, the
    fields named and passed positionally)."""
    closes = tuple(Close(c["symbol"], c["side"], c["closed_lots"], c["remaining_lots"], c["mark_ticks"],
                         c["execution_ticks"], c["entry_ticks"], int(c["realized_pnl_units"]),
                         c["penalty_rate_ppm"], int(c["penalty_units"]), c["recovery_rate_ppm"])
                   for c in data["closes"])
    return LiquidationPlan(data["bankrupt"], data["severity_ppm"], int(data["equity_before_units"]),
                           int(data["maintenance_before_units"]), int(data["equity_after_units"]),
                           int(data["maintenance_after_units"]), int(data["collateral_before_units"]),
                           int(data["collateral_after_units"]), closes, int(data["penalty_units"]),
                           int(data["liquidator_units"]), int(data["protocol_units"]),
                           int(data["insurance_fund_units"]), int(data["shortfall_units"]))
