"""Re-deriving one `liquidation` event (SPEC §3–§5, §6.1) from its own fields and the parameters.

The event carries the scope's collateral, equity and maintenance before and after, and every close
(symbol, side, closed and remaining size, mark, execution and entry price, realized PnL, penalty
rate, penalty, recovery rate). A close's position size before is ``closed + remaining`` of its
first close. What the event does *not* carry is a position of the scope that was not closed at all:
in partial mode the evaluation stops as soon as the scope meets the bar, and the positions it did
not reach are not listed. Hence two kinds of checks.

Exact, for every event:
  - liquidatable before (``MM > 0`` and ``EQ < MM``) and ``severity_ppm`` from equity/maintenance
    before (§3.3); each close's ``penalty_rate_ppm`` from its symbol and that severity (§4.1),
    0 when bankrupt;
  - ``execution_price`` from mark and slippage (§4.2), ``recovery_rate_ppm``,
    ``realized_pnl = floor(δ·(X − E))`` (§4.3), ``remaining_size``; the mark of a close on the
    trigger's symbol equals the trigger's price;
  - the order of the closes (descending ``MM_i`` before, ties by symbol; §4.6) among the positions
    the event lists;
  - totals: penalty = Σ close penalties, the split (floors, the fund takes the rest; §4.7),
    shortfall = cover + socialized loss; the transfers exactly as §6.1 lists them, zero ones left
    out; the journal ``collateral_before + Σ realized + Σ in − Σ out = collateral_after ≥ 0``;
  - against the insurance fund's ledger (its `insurance-fund` records carrying this id): the
    penalty credit, the cover ``min(shortfall, max(0, balance − floor))`` with the fund's running
    balance just before it, the socialized loss and its attribution to (symbol, side) (§5).

Exact when the event lists every position of the scope — an isolated scope (one position), a
bankruptcy (everything is closed), full mode (everything is closed), a partial liquidation whose
maintenance before is the closed positions' own (every position has ``MM_i ≥ 1`` in partial mode,
whose parameter condition needs ``mmr > 0``, so nothing else can be open):
  - ``equity_before`` and ``maintenance_before`` (§3), ``bankrupt`` (``LV < 0`` before any close,
    §4.5) and the bankruptcy's shortfall ``−LV``;
  - each penalty ``F = min(floor(Nc·f/10^6), max(0, LV1))`` with ``LV1`` right after the close (§4.4);
  - partial closes: the smallest δ (the engine's rule: δ restores ``EQ ≥ ceil(MM·(10^6 + buffer)/10^6)``
    penalty included, δ − 1 does not), the full close when none restores or the rest would be below
    ``min_notional``, the stop as soon as the bar is met, the closes of the remainders while the
    collateral is negative (docs/methodology.md);
  - equity, maintenance and collateral after.

With positions the event does not list (a partial liquidation of a cross scope that stopped before
reaching them), their unrealized PnL ``U_o`` and maintenance ``MM_o`` are still known exactly, as
differences (``equity_before − collateral_before − Σ U_closed`` and likewise for maintenance), and
they do not move during the evaluation (same marks, not closed). So the bar, the stop, equity and
maintenance after stay exact. Their liquidation value ``LV_o = Σ floor(q·(X − E))`` is not known:
it equals ``U_o`` when every symbol they can be on has no slippage, and otherwise lies in
``[−LV_closed_before, U_o]`` (``X`` is never better than the mark; a solvent scope has ``LV ≥ 0``),
narrowed by every observed penalty (a capped penalty pins it). Penalty caps, ``bankrupt`` and
smallest-δ decisions that depend on where ``LV_o`` lies in that interval are then checked as
bounds: the event is accepted if one value of ``LV_o`` in the interval explains all of it. Such
events are counted in the summary ("checked partly as bounds").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.core.fixed import format_units
from worker.core.params import Params

from .verify_common import Context, Event, Malformed, decimal_at, integer, text
from .verify_math import PPM, Sym, attribute_loss, bar_level, fdiv, severity, split

SIDES = ("long", "short")
PARTIES = ("liquidator", "protocol", "insurance_fund", "socialized_loss")


# ------------------------------------------------------------------------- the unknown LV_o
Bound = tuple[int | None, int | None]  # (lo, hi) on LV_o; None = unbounded on that side


class Interval:
    """Where the liquidation value of the positions the event does not list can lie."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    @property
    def point(self) -> bool:
        return self.lo == self.hi

    def meet(self, bound: Bound | None) -> bool:
        """Narrow to ``bound``; False (and unchanged) when nothing would be left."""
        if bound is None:
            return False
        lo = self.lo if bound[0] is None else max(self.lo, bound[0])
        hi = self.hi if bound[1] is None else min(self.hi, bound[1])
        if lo > hi:
            return False
        self.lo, self.hi = lo, hi
        return True


def capped(raw: int, lv1_known: int, lv_other: int) -> int:
    """F = min(raw, max(0, LV1)), LV1 = the listed positions' part + LV_o   (§4.4)."""
    return min(raw, max(0, lv1_known + lv_other))


def penalty_is(raw: int, a: int, f: int) -> Bound | None:
    """The LV_o for which min(raw, max(0, a + LV_o)) == f (None: none)."""
    if f < 0 or f > raw:
        return None
    if raw == 0:
        return (None, None)
    if f == raw:
        return (raw - a, None)
    if f == 0:
        return (None, -a)
    return (f - a, f - a)


def penalty_at_most(raw: int, a: int, t: int) -> Bound | None:
    if t < 0:
        return None
    if t >= raw:
        return (None, None)
    return (None, t - a)


def penalty_at_least(raw: int, a: int, t: int) -> Bound | None:
    if t <= 0:
        return (None, None)
    if raw < t:
        return None
    return (t - a, None)


# -------------------------------------------------------------------------------- the scope
@dataclass
class Leg:
    """A position of the scope the event lists (it was closed, at least in part)."""

    symbol: str
    sym: Sym
    long: bool
    size: int  # lots before the evaluation
    entry: int
    mark: int
    x: int  # execution price by §4.2 (the expected one)

    @property
    def sign(self) -> int:
        return 1 if self.long else -1


@dataclass
class Close:
    symbol: str
    side: str
    closed: int
    remaining: int
    mark: int
    x: int
    entry: int
    realized: int
    rate: int
    penalty: int
    recovery: int


@dataclass
class Expected:
    """The engine's next close: ``symbol`` None means "a position the event does not list"."""

    symbol: str | None
    delta: int | None = None  # exact lots, or None with a range
    low: int = 0
    high: int = 0
    why: str = ""


class Scope:
    def __init__(self, params: Params, legs: dict[str, Leg], u_other: int, mm_other: int) -> None:
        self.params, self.legs, self.u_other, self.mm_other = params, legs, u_other, mm_other

    def lv_known(self, collateral: int, sizes: dict[str, int]) -> int:
        """C + Σ floor(q·(X − E)) over the listed positions still open."""
        total = collateral
        for s, lots in sizes.items():
            if lots:
                leg = self.legs[s]
                total += leg.sym.vfloor(leg.sign * lots, leg.x - leg.entry)
        return total

    def equity(self, collateral: int, sizes: dict[str, int]) -> int:
        return collateral + self.u_other + sum(
            self.legs[s].sym.upnl(self.legs[s].sign * lots, self.legs[s].entry, self.legs[s].mark)
            for s, lots in sizes.items() if lots)

    def maintenance(self, sizes: dict[str, int]) -> int:
        return self.mm_other + sum(self.legs[s].sym.maintenance(lots, self.legs[s].mark)
                                   for s, lots in sizes.items() if lots)

    def slack(self, collateral: int, sizes: dict[str, int]) -> int:
        """EQ − ceil(MM·(10^6 + buffer)/10^6): the bar is met iff ≥ 0   (§4.6)."""
        return self.equity(collateral, sizes) - bar_level(self.maintenance(sizes), self.params.buffer_ppm)

    def trial(self, collateral: int, sizes: dict[str, int], s: str, lots: int,
              rate: int) -> tuple[int, int, int, dict[str, int]]:
        """Close ``lots`` of ``s``: (R, raw penalty, LV1 of the listed positions, sizes after)."""
        leg = self.legs[s]
        realized = leg.sym.vfloor(leg.sign * lots, leg.x - leg.entry)
        raw = fdiv(leg.sym.vfloor(lots, leg.x) * rate, PPM)
        after = dict(sizes)
        after[s] -= lots
        return realized, raw, self.lv_known(collateral + realized, after), after

    def restores(self, collateral: int, sizes: dict[str, int], s: str, lots: int, rate: int, lv_other: int) -> bool:
        realized, raw, a, after = self.trial(collateral, sizes, s, lots, rate)
        return self.slack(collateral + realized - capped(raw, a, lv_other), after) >= 0

    def smallest(self, collateral: int, sizes: dict[str, int], s: str, rate: int, lv_other: int) -> int | None:
        """The engine's search: bar(δ) holds and bar(δ − 1) does not; None if a full close fails."""
        size = sizes[s]
        if not self.restores(collateral, sizes, s, size, rate, lv_other):
            return None
        low, high = 0, size
        while high - low > 1:
            middle = (low + high) // 2
            if self.restores(collateral, sizes, s, middle, rate, lv_other):
                high = middle
            else:
                low = middle
        return high

    def partial_delta(self, collateral: int, sizes: dict[str, int], s: str, rate: int, lv_other: int) -> int:
        """Lots of ``s`` the partial rule closes (§4.6): the smallest restoring δ, else all of it."""
        size = sizes[s]
        if self.slack(collateral, sizes) >= 0:  # bar met with negative collateral: close it whole
            return size
        delta = self.smallest(collateral, sizes, s, rate, lv_other)
        if delta is None:
            return size
        leg = self.legs[s]
        if delta < size and leg.sym.notional(size - delta, leg.mark) < leg.sym.min_notional:
            return size
        return delta


# ------------------------------------------------------------------------------------ parsing
def parse_close(ctx: Context, k: int, raw: Any) -> Close:
    where = f"closes[{k}]"
    if not isinstance(raw, dict):
        raise Malformed(where, "an object", raw)
    symbol = raw.get("symbol")
    sym = ctx.syms.get(symbol) if isinstance(symbol, str) else None
    if sym is None:
        raise Malformed(f"{where}.symbol", "a symbol of the parameters", symbol)
    p, z = sym.price_decimals, sym.size_decimals
    return Close(
        symbol=symbol,
        side=text(raw.get("side"), f"{where}.side", SIDES),
        closed=decimal_at(raw.get("closed_size"), z, f"{where}.closed_size", positive=True),
        remaining=decimal_at(raw.get("remaining_size"), z, f"{where}.remaining_size", non_negative=True),
        mark=decimal_at(raw.get("mark_price"), p, f"{where}.mark_price", positive=True),
        x=decimal_at(raw.get("execution_price"), p, f"{where}.execution_price", positive=True),
        entry=decimal_at(raw.get("entry_price"), p, f"{where}.entry_price", positive=True),
        realized=ctx.amount(raw.get("realized_pnl"), f"{where}.realized_pnl"),
        rate=integer(raw.get("penalty_rate_ppm"), f"{where}.penalty_rate_ppm"),
        penalty=ctx.amount(raw.get("penalty"), f"{where}.penalty", non_negative=True),
        recovery=integer(raw.get("recovery_rate_ppm"), f"{where}.recovery_rate_ppm"),
    )


@dataclass
class FundLink:
    """The `insurance-fund` records that carry one liquidation's (or round's) id, in topic order."""

    # reason → (delta, the balance before it, its index, the entry)
    entries: dict[str, tuple[int, int, int, dict]] = field(default_factory=dict)
    social: list[tuple[int, dict]] = field(default_factory=list)  # (index, socialized_loss event)
    balance_first: int = 0  # the fund's running balance just before the first of them
    first_index: int = 0
    used: bool = False


# ------------------------------------------------------------------------------------- check
def check_liquidation(ctx: Context, ev: dict, fund: FundLink | None, index: int) -> None:
    e = Event(ctx, "liquidation", str(ev.get("liquidation_id")))
    try:
        _check(ctx, e, ev, fund, index)
    except Malformed as exc:
        e.malformed(exc)


def _check(ctx: Context, e: Event, ev: dict, fund: FundLink | None, index: int) -> None:
    params = ctx.params
    amount = ctx.amount
    account = text(ev.get("account_id"), "account_id")
    scope_name = text(ev.get("scope"), "scope")
    if scope_name != "cross" and scope_name not in ctx.syms:
        raise Malformed("scope", "cross or a symbol of the parameters (isolated)", scope_name)
    bankrupt_obs = ev.get("bankrupt")
    if not isinstance(bankrupt_obs, bool):
        raise Malformed("bankrupt", "true or false", bankrupt_obs)
    severity_obs = integer(ev.get("severity_ppm"), "severity_ppm")
    eq_before = amount(ev.get("equity_before"), "equity_before")
    mm_before = amount(ev.get("maintenance_before"), "maintenance_before")
    eq_after = amount(ev.get("equity_after"), "equity_after")
    mm_after = amount(ev.get("maintenance_after"), "maintenance_after")
    c_before = amount(ev.get("collateral_before"), "collateral_before")
    c_after = amount(ev.get("collateral_after"), "collateral_after")
    raw_closes = ev.get("closes")
    if not isinstance(raw_closes, list) or not raw_closes:
        raise Malformed("closes", "a non-empty list (a liquidatable scope holds a position)", raw_closes)
    closes = [parse_close(ctx, k, c) for k, c in enumerate(raw_closes)]
    totals_raw = ev.get("totals")
    if not isinstance(totals_raw, dict):
        raise Malformed("totals", "an object", totals_raw)
    totals = {name: amount(totals_raw.get(name), f"totals.{name}", non_negative=True)
              for name in ("penalty", "liquidator", "insurance_fund", "protocol", "shortfall", "insurance_cover",
                           "socialized_loss")}
    transfers = ev.get("transfers")
    if not isinstance(transfers, list):
        raise Malformed("transfers", "a list", transfers)
    e.same("params_version", params.params_version, ev.get("params_version"))
    trigger = ev.get("trigger")
    _check_trigger(ctx, e, trigger, closes)

    # ------------------------------------------------------------------ the scope before (§3)
    if not (mm_before > 0 and eq_before < mm_before):
        e.report("equity_before", f"below maintenance_before {ctx.fmt(mm_before)} (a liquidatable scope)",
                 ctx.fmt(eq_before))
    sev = severity(eq_before, mm_before)
    e.same("severity_ppm", sev, severity_obs)
    legs: dict[str, Leg] = {}
    for k, c in enumerate(closes):
        leg = legs.get(c.symbol)
        if leg is None:
            sym = ctx.syms[c.symbol]
            legs[c.symbol] = Leg(c.symbol, sym, c.side == "long", c.closed + c.remaining, c.entry, c.mark,
                                 sym.execution(c.side == "long", c.mark))
            continue
        # a later close of the same position: same side, entry and mark
        e.same(f"closes[{k}].side", "long" if leg.long else "short", c.side)
        e.same(f"closes[{k}].entry_price", _price(leg, leg.entry), _price(leg, c.entry))
        e.same(f"closes[{k}].mark_price", _price(leg, leg.mark), _price(leg, c.mark))
    if scope_name != "cross" and (len(legs) != 1 or scope_name not in legs):
        e.report("closes", f"closes of the isolated position {scope_name} only", sorted(legs))
    sizes0 = {s: leg.size for s, leg in legs.items()}
    u_known = sum(leg.sym.upnl(leg.sign * leg.size, leg.entry, leg.mark) for leg in legs.values())
    mm_known = {s: leg.sym.maintenance(leg.size, leg.mark) for s, leg in legs.items()}
    u_other = eq_before - c_before - u_known
    mm_other = mm_before - sum(mm_known.values())
    mode = "bankrupt" if bankrupt_obs else params.liquidation_mode
    complete = bankrupt_obs or mode == "full" or scope_name != "cross"
    if not complete:
        if mm_other < 0:
            e.report("maintenance_before", f"at least {ctx.fmt(sum(mm_known.values()))} (the closed positions' own)",
                     ctx.fmt(mm_before))
            complete = True
        elif mm_other == 0:
            complete = True  # every position has MM_i ≥ 1 in partial mode: nothing else is open
    if complete:
        e.same_amount("equity_before", c_before + u_known, eq_before,
                      "collateral_before + the positions' unrealized PnL at their marks")
        e.same_amount("maintenance_before", sum(mm_known.values()), mm_before, "Σ MM_i of the positions")
        u_other = mm_other = 0
    scope = Scope(params, legs, u_other, mm_other)
    lv_known0 = scope.lv_known(c_before, sizes0)
    if complete:
        lv = Interval(0, 0)
        bankrupt_exp = lv_known0 < 0
        why = f"LV before = {ctx.fmt(lv_known0)}"
    else:
        others = [s for s in ctx.syms if s not in legs]
        if all(ctx.syms[s].slippage_ppm == 0 for s in others):
            lv = Interval(u_other, u_other)  # no slippage where they can be: LV_o = U_o
            bankrupt_exp = lv_known0 + u_other < 0
            why = f"LV before = {ctx.fmt(lv_known0 + u_other)}"
        else:
            ctx.bounded += 1
            bankrupt_exp = lv_known0 + u_other < 0  # LV_o ≤ U_o: certainly negative then
            lv = Interval(min(-lv_known0, u_other), u_other)
            why = f"LV before ≤ {ctx.fmt(lv_known0 + u_other)}"
    if bankrupt_exp != bankrupt_obs:
        e.report("bankrupt", f"{'true' if bankrupt_exp else 'false'} ({why})", "true" if bankrupt_obs else "false")

    # ------------------------------------------------------------------ the closes (§4.1–§4.6)
    order = sorted(legs, key=lambda s: (-mm_known[s], s))
    walk = _Walk(ctx, e, scope, order, mode, sev, lv, complete)
    collateral = walk.run(c_before, sizes0, closes)

    # ------------------------------------------------------------------ after, totals, transfers
    realized_obs = sum(c.realized for c in closes)
    if bankrupt_obs:
        shortfall_exp = -collateral  # −LV: every position closed at X, no penalty (LV ≥ 0 is reported above)
        e.same_amount("totals.shortfall", max(shortfall_exp, 0), totals["shortfall"], "−LV before")
        for name, value in (("equity_after", eq_after), ("maintenance_after", mm_after),
                            ("collateral_after", c_after)):
            e.same_amount(name, 0, value, "after a bankruptcy")
    else:
        e.same_amount("collateral_after", collateral, c_after, "collateral_before + Σ R − Σ F")
        e.same_amount("equity_after", scope.equity(walk.collateral_after, walk.sizes), eq_after)
        e.same_amount("maintenance_after", scope.maintenance(walk.sizes), mm_after)
        e.same_amount("totals.shortfall", 0, totals["shortfall"], "solvent")
        if c_after < 0:
            e.report("collateral_after", "≥ 0 (a solvent liquidation never leaves debt)", ctx.fmt(c_after))
    e.same_amount("totals.penalty", sum(c.penalty for c in closes), totals["penalty"], "Σ close penalties")
    liquidator, protocol, insurance = split(totals["penalty"], params.liquidator_ppm, params.protocol_ppm)
    e.same_amount("totals.liquidator", liquidator, totals["liquidator"],
                  f"floor(penalty · {params.liquidator_ppm} / 10^6)")
    e.same_amount("totals.protocol", protocol, totals["protocol"], f"floor(penalty · {params.protocol_ppm} / 10^6)")
    e.same_amount("totals.insurance_fund", insurance, totals["insurance_fund"], "penalty − liquidator − protocol")
    if bankrupt_obs and totals["penalty"]:
        e.report("totals.penalty", "0.000000 (no penalty on a bankruptcy)", ctx.fmt(totals["penalty"]))
    e.same_amount("totals.shortfall", totals["insurance_cover"] + totals["socialized_loss"], totals["shortfall"],
                  "insurance_cover + socialized_loss")
    _check_transfers(ctx, e, account, totals, transfers)
    flows = _net_of(f"account:{account}", transfers, ctx)
    if flows is not None and c_before + realized_obs + flows != c_after:
        e.report("collateral_after", f"{ctx.fmt(c_before + realized_obs + flows)} (journal: collateral_before "
                 "+ Σ realized_pnl + Σ transfers in − Σ transfers out)", ctx.fmt(c_after))

    # ------------------------------------------------------------------ the insurance fund (§5)
    _check_fund(ctx, e, ev, account, bankrupt_obs, totals, closes, fund, index)


def _price(leg: Leg, ticks: int) -> str:
    return format_units(ticks, leg.sym.price_decimals)


def _size(leg: Leg, lots: int) -> str:
    return format_units(lots, leg.sym.size_decimals)


def _check_trigger(ctx: Context, e: Event, trigger: Any, closes: list[Close]) -> None:
    if not isinstance(trigger, dict):
        raise Malformed("trigger", "an object", trigger)
    source = text(trigger.get("source"), "trigger.source", ("mark", "position", "balance"))
    integer(trigger.get("seq"), "trigger.seq")
    symbol, price = trigger.get("symbol"), trigger.get("price")
    if source == "balance":
        e.same("trigger.symbol", None, symbol)
        e.same("trigger.price", None, price)
        return
    sym = ctx.syms.get(symbol) if isinstance(symbol, str) else None
    if sym is None:
        raise Malformed("trigger.symbol", "a symbol of the parameters", symbol)
    if price is None and source == "position":
        return  # a position event before the symbol's first mark
    ticks = decimal_at(price, sym.price_decimals, "trigger.price", positive=True)
    if source == "mark":
        ctx.mark_seen(e, "trigger.price", symbol, trigger["seq"], price)
    for k, c in enumerate(closes):
        if c.symbol == symbol and c.mark != ticks:
            e.report(f"closes[{k}].mark_price", f"{price} (the trigger's mark)",
                     format_units(c.mark, sym.price_decimals))


class _Walk:
    """Walk the observed closes in order, each against the close the rules make next (§4.5, §4.6)."""

    def __init__(self, ctx: Context, e: Event, scope: Scope, order: list[str], mode: str, sev: int,
                 lv: Interval, complete: bool) -> None:
        self.ctx, self.e, self.scope, self.order, self.mode, self.sev = ctx, e, scope, order, mode, sev
        self.lv, self.complete = lv, complete
        self.cursor = 0  # partial, first pass: next position of the order
        self.sizes: dict[str, int] = {}
        self.collateral_after = 0

    def rate(self, s: str) -> int:
        return 0 if self.mode == "bankrupt" else self.scope.legs[s].sym.rate(self.sev)

    # the next close by the rules, from the state the observed closes left
    def expected(self, collateral: int) -> Expected | None:
        sizes = self.sizes
        if self.mode in ("bankrupt", "full"):
            for s in self.order:
                if sizes[s]:
                    return Expected(s, sizes[s], why="every position is closed whole, in descending MM_i")
            return None
        if self.cursor < len(self.order):  # partial, first pass (§4.6)
            if self.scope.slack(collateral, sizes) >= 0 and collateral >= 0:
                self.cursor = len(self.order)  # the engine stops here
                return None
            return self._decide(collateral, self.order[self.cursor])
        if not self.complete and not (self.scope.slack(collateral, sizes) >= 0 and collateral >= 0):
            return Expected(None, why="the scope is still below the bar after its last listed close, so the "
                                      "engine would go on with a position the event does not list")
        for s in self.order:  # second pass: the remainders, while the collateral is negative
            if collateral >= 0:
                return None
            if sizes[s]:
                return Expected(s, sizes[s], why="the collateral is negative: the remainder is closed whole")
        return None

    def _decide(self, collateral: int, s: str) -> Expected:
        rate = self.rate(s)
        low = self.scope.partial_delta(collateral, self.sizes, s, rate, self.lv.lo)
        if self.lv.point:
            return Expected(s, low, why="the smallest close that meets the bar, penalty included (else all of it)")
        high = self.scope.partial_delta(collateral, self.sizes, s, rate, self.lv.hi)
        if low == high:
            return Expected(s, low, why="the smallest close that meets the bar, penalty included (else all of it)")
        return Expected(s, None, min(low, high), max(low, high), why="the smallest close that meets the bar")

    def run(self, collateral: int, sizes: dict[str, int], closes: list[Close]) -> int:
        e, ctx = self.e, self.ctx
        self.sizes = dict(sizes)
        for k, c in enumerate(closes):
            leg = self.scope.legs[c.symbol]
            rate = self.rate(c.symbol)
            have = self.sizes[c.symbol]
            delta = min(c.closed, have)
            if c.closed > have:
                e.report(f"closes[{k}].closed_size", f"at most {_size(leg, have)} (what is left of the position)",
                         _size(leg, c.closed))
            # the penalty first: what it tells about LV_o is known before the decision it shaped
            realized, raw, a, _ = self.scope.trial(collateral, self.sizes, c.symbol, delta, rate)
            penalty = self._penalty(k, c, raw, a) if delta else c.penalty
            self._decision(k, c, collateral)
            # the values of the close, from its inputs
            e.same(f"closes[{k}].side", "long" if leg.long else "short", c.side)
            e.same(f"closes[{k}].remaining_size", _size(leg, have - delta), _size(leg, c.remaining))
            if leg.x != c.x:
                e.report(f"closes[{k}].execution_price", f"{_price(leg, leg.x)} (mark {_price(leg, leg.mark)}, "
                         f"slippage {leg.sym.slippage_ppm} ppm)", _price(leg, c.x))
            e.same(f"closes[{k}].recovery_rate_ppm", leg.sym.recovery(leg.long, leg.mark, leg.x), c.recovery)
            if realized != c.realized:
                e.report(f"closes[{k}].realized_pnl", f"{ctx.fmt(realized)} (floor(δ·(X − E)) with δ = "
                         f"{'' if leg.long else '−'}{_size(leg, delta)}, X = {_price(leg, leg.x)}, "
                         f"E = {_price(leg, leg.entry)})", ctx.fmt(c.realized))
            e.same(f"closes[{k}].penalty_rate_ppm", rate, c.rate)
            collateral += realized - penalty
            self.sizes[c.symbol] = have - delta
        want = self.expected(collateral)
        if want is not None:
            what = "a close of a position the event does not list" if want.symbol is None else (
                f"a close of {_size(self.scope.legs[want.symbol], want.delta or want.low)} lots of {want.symbol}")
            e.report("closes", f"{what} ({want.why})", "no further close")
        self.collateral_after = collateral
        return collateral

    def _decision(self, k: int, c: Close, collateral: int) -> None:
        """Which position the rules close next, and how much of it."""
        e = self.e
        want = self.expected(collateral)
        if self.mode == "partial" and self.cursor < len(self.order):
            self.cursor += 1  # the first pass moves on, whichever position was closed
        if want is None:
            e.report(f"closes[{k}]", "no further close (the scope already met the bar with collateral ≥ 0, "
                     "or everything was closed)", f"a close of {c.closed} lots of {c.symbol}")
        elif want.symbol is None:
            e.report(f"closes[{k}]", want.why, f"a close of {c.symbol}")
        elif want.symbol != c.symbol:
            e.report(f"closes[{k}].symbol", f"{want.symbol} ({want.why})", c.symbol)
        elif want.delta is None:
            self._bounded_delta(k, c, collateral, want)
        elif want.delta != c.closed:
            leg = self.scope.legs[c.symbol]
            e.report(f"closes[{k}].closed_size", f"{_size(leg, want.delta)} ({want.why})", _size(leg, c.closed))

    def _penalty(self, k: int, c: Close, raw: int, a: int) -> int:
        """Check F = min(floor(Nc·f/10^6), max(0, LV1)) of the observed close; the penalty to carry on with."""
        e, ctx, lv = self.e, self.ctx, self.lv
        if c.closed > self.sizes[c.symbol]:
            return c.penalty
        if lv.meet(penalty_is(raw, a, c.penalty)):
            return c.penalty
        low, high = capped(raw, a, lv.lo), capped(raw, a, lv.hi)
        if low == high:
            expected = f"{ctx.fmt(low)} (min(floor(Nc·f/10^6) = {ctx.fmt(raw)}, max(0, LV1 = " \
                       f"{ctx.fmt(a + lv.lo)})))"
        else:
            expected = f"between {ctx.fmt(low)} and {ctx.fmt(high)} (min(floor(Nc·f/10^6) = {ctx.fmt(raw)}, " \
                       f"max(0, LV1)), LV1 in [{ctx.fmt(a + lv.lo)}, {ctx.fmt(a + lv.hi)}])"
        e.report(f"closes[{k}].penalty", expected, ctx.fmt(c.penalty))
        return low

    def _bounded_delta(self, k: int, c: Close, collateral: int, want: Expected) -> None:
        """The smallest δ when it depends on where LV_o lies: local conditions, as bounds on LV_o."""
        e, scope, lv, leg = self.e, self.scope, self.lv, self.scope.legs[c.symbol]
        size, rate = self.sizes[c.symbol], self.rate(c.symbol)

        def bar(lots: int, holds: bool) -> Bound | None:
            realized, raw, a, after = scope.trial(collateral, self.sizes, c.symbol, lots, rate)
            t = scope.slack(collateral + realized, after)  # the bar holds iff the penalty is at most this
            return penalty_at_most(raw, a, t) if holds else penalty_at_least(raw, a, t + 1)

        ok = want.low <= c.closed <= want.high
        if ok and c.closed < size:
            ok = lv.meet(bar(c.closed, True)) and (c.closed == 1 or lv.meet(bar(c.closed - 1, False)))
            ok = ok and leg.sym.notional(size - c.closed, leg.mark) >= leg.sym.min_notional
        elif ok:  # a full close: no smaller close whose rest keeps min_notional restores the bar
            cap = size - _smallest_rest(leg, size)
            ok = cap < 1 or lv.meet(bar(cap, False))
        if not ok:
            e.report(f"closes[{k}].closed_size", f"between {_size(leg, want.low)} and {_size(leg, want.high)}, the "
                     "smallest close that meets the bar for one liquidation value of the positions the event "
                     "does not list", _size(leg, c.closed))


def _smallest_rest(leg: Leg, size: int) -> int:
    """The fewest lots whose notional at mark is at least min_notional (size when none below it)."""
    low, high = 0, size  # notional(high) ≥ min_notional or high == size
    if leg.sym.notional(size, leg.mark) < leg.sym.min_notional:
        return size
    while high - low > 1:
        middle = (low + high) // 2
        if leg.sym.notional(middle, leg.mark) >= leg.sym.min_notional:
            high = middle
        else:
            low = middle
    return high


def _check_transfers(ctx: Context, e: Event, account: str, totals: dict[str, int], transfers: list) -> None:
    """The §6.1 journal: exactly these transfers, in this order, zero ones left out."""
    party = f"account:{account}"
    expected = [(source, target, amount, reason) for source, target, amount, reason in (
        (party, "liquidator", totals["liquidator"], "penalty_liquidator"),
        (party, "protocol", totals["protocol"], "penalty_protocol"),
        (party, "insurance_fund", totals["insurance_fund"], "penalty_insurance_fund"),
        ("insurance_fund", party, totals["insurance_cover"], "insurance_cover"),
        ("socialized_loss", party, totals["socialized_loss"], "socialized_loss"),
    ) if amount]
    got = []
    for i, t in enumerate(transfers):
        if not isinstance(t, dict):
            e.report(f"transfers[{i}]", "an object", t)
            return
        try:
            units = ctx.amount(t.get("amount"), f"transfers[{i}].amount", positive=True)
        except Malformed as exc:
            e.malformed(exc)
            return
        e.same(f"transfers[{i}].asset", ctx.params.asset, t.get("asset"))
        got.append((t.get("from"), t.get("to"), units, t.get("reason")))
    if got == expected:
        return
    for i in range(max(len(got), len(expected))):
        want = expected[i] if i < len(expected) else None
        have = got[i] if i < len(got) else None
        if want != have:
            e.report(f"transfers[{i}]", _transfer_text(ctx, want) + " (from the totals)", _transfer_text(ctx, have))


def _transfer_text(ctx: Context, t: tuple | None) -> str:
    if t is None:
        return "no transfer"
    source, target, units, reason = t
    return f"{source} → {target} {ctx.fmt(units)} ({reason})"


def _net_of(party: str, transfers: list, ctx: Context) -> int | None:
    total = 0
    for t in transfers:
        if not isinstance(t, dict):
            return None
        try:
            units = ctx.amount(t.get("amount"), "amount")
        except Malformed:
            return None
        total += units if t.get("to") == party else -units if t.get("from") == party else 0
    return total


def _check_fund(ctx: Context, e: Event, ev: dict, account: str, bankrupt: bool, totals: dict[str, int],
                closes: list[Close], fund: FundLink | None, index: int) -> None:
    """The liquidation against its `insurance-fund` records (§5)."""
    floor = ctx.params.insurance_floor_units
    needs = bankrupt or totals["insurance_fund"] > 0
    if fund is None:
        if needs:
            e.report("insurance-fund", "its ledger entries (penalty credit, cover) or socialized losses",
                     "no insurance-fund record with this liquidation_id")
        return
    fund.used = True
    entries = dict(fund.entries)
    credit = entries.pop("penalty_insurance_fund", None)
    if totals["insurance_fund"] or credit is not None:
        e.same_amount("insurance-fund penalty credit", totals["insurance_fund"], 0 if credit is None else credit[0],
                      "totals.insurance_fund")
    cover_entry = entries.pop("insurance_cover", None)
    cover_got = 0 if cover_entry is None else -cover_entry[0]
    if bankrupt:
        balance = fund.balance_first
        cover = min(totals["shortfall"], max(0, balance - floor))
        e.same_amount("totals.insurance_cover", cover, totals["insurance_cover"],
                      f"min(shortfall, max(0, balance {ctx.fmt(balance)} − floor {ctx.fmt(floor)}))")
        e.same_amount("totals.socialized_loss", totals["shortfall"] - cover, totals["socialized_loss"],
                      "shortfall − cover")
    if totals["insurance_cover"] or cover_entry is not None:
        e.same_amount("insurance-fund cover entry", totals["insurance_cover"], cover_got,
                      "−delta of its insurance_cover entry = totals.insurance_cover")
    for reason in entries:
        e.report("insurance-fund", "entries with reason penalty_insurance_fund or insurance_cover",
                 f"an entry with reason {reason}")
    attribution = attribute_loss(totals["socialized_loss"], [(c.symbol, c.side, c.realized) for c in closes])
    got = []
    for _, s in fund.social:
        got.append((s.get("symbol"), s.get("side"), s.get("amount")))
        e.same("socialized_loss.account_id", account, s.get("account_id"))
        e.same("socialized_loss.ts", ev.get("ts"), s.get("ts"))
    want = [(symbol, side, ctx.fmt(units)) for symbol, side, units in attribution]
    if got != want:
        e.report("socialized_loss events", ("; ".join(f"{s}/{d} {a}" for s, d, a in want) or "none")
                 + " (pro rata to the closes' realized losses, the residue to the largest)",
                 "; ".join(f"{s}/{d} {a}" for s, d, a in got) or "none")
    for reason, (_, _, _, entry) in fund.entries.items():
        e.same(f"insurance-fund {reason} entry ts", ev.get("ts"), entry.get("ts"))
    if ctx.ordered and fund.first_index > index:
        e.report("order", "its insurance-fund records before the allocation (§5: settlement never sees "
                 "collateral move before the fund's entry)", "after it")
