"""`python -m worker methodology --params PARAMS.toml [--format markdown|json]` (SPEC §5.3).

The disclosure a venue publishes: the rules of SPEC §3–§5.2 (and the guards of §8) in plain words with
this parameter file's numbers, and its ``params_version``. It is generated from the parsed parameters
(``worker.core.params.Params``, what the engine runs), never written by hand, so it cannot drift from
them. The worked examples are computed by the engine's own functions (``worker.core.margin``,
``worker.core.liquidation``, ``worker.core.fund``): they are what the engine would emit.

One document, two renderings: :func:`disclosure` builds a JSON-able dict (sections of rule sentences,
tables and machine-readable values), :func:`render_markdown` prints its sentences and tables, and
``--format json`` prints the dict itself. Amounts in ``values`` are decimal strings at the settlement
scale (as events carry them); in sentences and tables they are written without trailing zeros.
Every figure is computed in integers; nothing goes through a float.
"""
from __future__ import annotations

import argparse
import json
import sys
import tomllib
from typing import Any

from ..core.fixed import PPM, format_units
from ..core.fund import InsuranceFund, settle
from ..core.liquidation import LiquidationPlan, execution_price, plan_liquidation
from ..core.margin import (Leg, bankruptcy_price, liquidation_price, liquidation_price_ticks, margin_state,
                           notional, severity_ppm)
from ..core.params import Params, ParamsError, SymbolParams, parse_params

EXAMPLE_ENTRY = 10_000  # the worked examples: a 1-unit long opened at 10 000 (quote per unit) ...
EXAMPLE_LEVERAGE = 20  # ... with a wallet of 1/20 of its notional (or twice its maintenance, if more)


# ----------------------------------------------------------------------------------------- numbers
def trim(text: str) -> str:
    """A decimal string without trailing zeros ("1000.000000" → "1000", "0.500" → "0.5")."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def human(units: int, decimals: int) -> str:
    """Integer units at ``decimals`` → the shortest exact decimal ("1000", "0.15")."""
    return trim(format_units(units, decimals))


def pct(ppm: int) -> str:
    """ppm → percent, exact (4000 → "0.4 %", 1500000 → "150 %")."""
    return f"{human(ppm, 4)} %"


def _decimals(count: int) -> str:
    return f"{count} decimal" + ("" if count == 1 else "s")


def times(ppm: int) -> str:
    """ppm → a multiple, exact (1500000 → "1.5×")."""
    return f"{human(ppm, 6)}×"


class _Doc:
    """Sentences and tables in sections, with their machine-readable values."""

    def __init__(self, params: Params) -> None:
        self.params = params
        self.sections: list[dict[str, Any]] = []

    def section(self, ident: str, title: str, spec: str) -> dict[str, Any]:
        section = {"id": ident, "title": title, "spec": spec, "rules": [], "tables": [], "values": {}}
        self.sections.append(section)
        return section

    def money(self, units: int) -> str:
        """In a sentence or a table: "1000 USD"."""
        return f"{human(units, self.params.quote_decimals)} {self.params.asset}"

    def exact(self, units: int) -> str:
        """In values: the decimal string at the settlement scale, as events carry it."""
        return format_units(units, self.params.quote_decimals)


def table(title: str, columns: list[str], rows: list[list[str]]) -> dict[str, Any]:
    return {"title": title, "columns": columns, "rows": rows}


# -------------------------------------------------------------------------------------- sections
def _numbers(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("numbers", "Numbers and rounding", "SPEC §2")
    s["rules"] += [
        f"Money is settled in {p.asset}. Every amount is an integer number of 10^-{p.quote_decimals} {p.asset} "
        f"(settlement.decimals = {p.quote_decimals}); every price and size is an integer number of its symbol's "
        "ticks and lots (table below). Nothing is computed in floating point, and on the wire every amount, price "
        "and size is a decimal string.",
        "Every division names its rounding: floor (toward −∞) or ceil (toward +∞). The rule is conservative: what "
        "an account owes is rounded up, what it is credited is rounded down, and the rounding residue of a split "
        "goes to the insurance fund. Rates are parts per million (ppm): 10000 ppm = 1 %.",
        "A mark price with more decimals than its symbol's tick is rounded half-even to the tick; any other value "
        "with too many decimals is refused as bad input.",
    ]
    rows = []
    values = {}
    for name, sym in p.symbols.items():
        tick = human(1, sym.price_decimals)
        lot = human(1, sym.size_decimals)
        rows.append([name, f"{tick} ({_decimals(sym.price_decimals)})", f"{lot} ({_decimals(sym.size_decimals)})"])
        values[name] = {"price_decimals": sym.price_decimals, "size_decimals": sym.size_decimals,
                        "tick": format_units(1, sym.price_decimals), "lot": format_units(1, sym.size_decimals)}
    s["tables"].append(table("Symbols", ["symbol", "price tick", "size lot"], rows))
    s["values"] = {"asset": p.asset, "decimals": p.quote_decimals, "symbols": values}


def _margin(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("margin", "Margin", "SPEC §3")
    s["rules"] += [
        "Each account is margined across all its positions (cross margin). For a position of signed size q, "
        "entry price E and mark price P: unrealized PnL = floor(q × (P − E)); notional N = ceil(|q| × P).",
        "Maintenance of a position = ceil(N × mmr) − cum, where mmr and the offset cum come from the first bracket "
        "of its symbol whose maximum notional is at least N (tables below; the last bracket has no maximum). "
        "The offset keeps maintenance continuous across bracket boundaries: cum of a bracket = cum of the "
        "previous one + floor(previous maximum × (its mmr − previous mmr)).",
        "Equity = collateral + the sum of unrealized PnL; maintenance = the sum of the positions' maintenance. "
        "An account is liquidatable when its maintenance is positive and its equity is strictly below it.",
        f"Margin call: an account that is not liquidatable but whose equity is below "
        f"{times(p.call_ratio_ppm)} its maintenance (engine.call_ratio_ppm = {p.call_ratio_ppm}, rounded up) "
        "gets one margin_call warning on entering that zone and one margin_call_cleared on leaving it.",
        "Severity of a liquidatable account = (maintenance − equity) / maintenance, floored in ppm and kept "
        "between 0 and 100 %.",
        "A position in isolated margin is its own account for margin and liquidation: its collateral is its "
        "isolated margin, its liquidation closes only it, and its shortfall goes to the insurance fund, never "
        "to the owner's cross collateral.",
    ]
    symbols = {}
    for name, sym in p.symbols.items():
        rows, brackets = [], []
        for index, bracket in enumerate(sym.brackets):
            top = "no maximum" if bracket.max_notional_units is None else doc.money(bracket.max_notional_units)
            rows.append([str(index), top, pct(bracket.mmr_ppm), str(bracket.mmr_ppm), doc.money(bracket.cum_units)])
            brackets.append({
                "max_notional": None if bracket.max_notional_units is None else doc.exact(bracket.max_notional_units),
                "mmr_ppm": bracket.mmr_ppm, "cum": doc.exact(bracket.cum_units)})
        s["tables"].append(table(f"{name} maintenance brackets",
                                 ["bracket", "notional up to", "mmr", "mmr (ppm)", "cum offset"], rows))
        symbols[name] = {"brackets": brackets}
    s["values"] = {"call_ratio_ppm": p.call_ratio_ppm, "symbols": symbols}


def _partial_condition(p: Params, sym: SymbolParams) -> tuple[int, int]:
    """(lowest mmr · (10^6 + buffer) / 10^6, max penalty + slippage) in ppm, floored: the §4.6 check."""
    return (sym.brackets[0].mmr_ppm * (PPM + p.buffer_ppm) // PPM,
            max(sym.penalty_min_ppm, sym.penalty_max_ppm) + sym.slippage_ppm)


def _liquidation(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("liquidation", "Liquidation", "SPEC §4")
    s["rules"] += [
        "A liquidatable account is evaluated once: the result is one allocation event (one balanced journal "
        "entry) carrying its inputs and this methodology's params_version.",
        "Penalty rate of a close, per symbol (table below): flat → the minimum rate; severity → minimum + "
        "floor((maximum − minimum) × severity), with the account's severity before the evaluation.",
        "Execution price of a close: a long is sold at floor(P × (1 − slippage)), a short bought back at "
        "ceil(P × (1 + slippage)), at the symbol's tick. Closing δ of a position realizes floor(δ × (X − E)) "
        "into collateral; its closed notional is floor(|δ| × X). The position keeps its entry price.",
        "Liquidation value = collateral + floor(q × (X − E)) over every open position: what the account would "
        "hold if everything still open were closed now at execution prices. The penalty of a close is "
        "floor(closed notional × rate), capped at the liquidation value right after the close (never below 0), "
        "so a penalty never creates bad debt.",
        "Bankrupt: a liquidation value below 0 before any close. Then every position is closed, no penalty is "
        "charged, and the shortfall (−liquidation value) goes to the insurance fund (below). The account ends "
        "with collateral 0.",
    ]
    mode_rules = {
        "full": "Mode full (liquidation.mode): a solvent account has every position closed entirely, in "
                "descending maintenance (ties by symbol).",
        "partial": (f"Mode partial (liquidation.mode): positions are taken in descending maintenance (ties by "
                    f"symbol); of each, the smallest number of lots is closed after which, penalty included, "
                    f"equity ≥ {times(PPM + p.buffer_ppm)} maintenance (a buffer of {pct(p.buffer_ppm)}, "
                    f"liquidation.buffer_ppm = {p.buffer_ppm}, rounded up). If no such amount exists, or the rest "
                    f"of the position would have a notional below the symbol's minimum notional, the position "
                    f"is closed entirely and the next one is taken. It stops as soon as the account meets "
                    f"that bar (and, a choice of this engine, its collateral is not negative)."),
    }
    s["rules"].append(mode_rules[p.liquidation_mode])
    if p.liquidation_mode == "partial":
        checks = []
        for name, sym in p.symbols.items():
            lhs, rhs = _partial_condition(p, sym)
            checks.append(f"{name}: {lhs} ppm > {rhs} ppm")
        s["rules"].append("Partial mode needs, for every symbol, lowest mmr × (1 + buffer) above maximum penalty "
                          "+ slippage (else closing more could never restore the account); this file meets it: "
                          + "; ".join(checks) + ".")
    s["rules"].append(
        "While an account's liquidation is pending (emitted, not yet acknowledged by the matching engine) it is "
        "not liquidated again; it is evaluated again on the acknowledgement"
        + (f", or after {p.pending_timeout_ms} ms of event time without one (engine.pending_timeout_ms)."
           if p.pending_timeout_ms else " only (engine.pending_timeout_ms = 0: no timeout)."))
    rows, values = [], {}
    for name, sym in p.symbols.items():
        if sym.penalty_model == "flat":
            rate = f"{pct(sym.penalty_min_ppm)} of closed notional"
        else:
            rate = (f"{pct(sym.penalty_min_ppm)} + ({pct(sym.penalty_max_ppm)} − {pct(sym.penalty_min_ppm)}) "
                    f"× severity")
        rows.append([name, sym.penalty_model, f"{pct(sym.penalty_min_ppm)} ({sym.penalty_min_ppm} ppm)",
                     f"{pct(sym.penalty_max_ppm)} ({sym.penalty_max_ppm} ppm)", rate,
                     f"{pct(sym.slippage_ppm)} ({sym.slippage_ppm} ppm)", doc.money(sym.min_notional_units)])
        values[name] = {"penalty": {"model": sym.penalty_model, "min_ppm": sym.penalty_min_ppm,
                                    "max_ppm": sym.penalty_max_ppm},
                        "slippage_ppm": sym.slippage_ppm, "min_notional": doc.exact(sym.min_notional_units)}
        if p.liquidation_mode == "partial":
            lhs, rhs = _partial_condition(p, sym)
            values[name]["partial_condition_ppm"] = {"lowest_mmr_with_buffer": lhs, "max_penalty_plus_slippage": rhs}
    s["tables"].append(table("Penalty, slippage and minimum notional per symbol",
                             ["symbol", "model", "minimum", "maximum", "rate", "slippage", "min notional"], rows))
    s["values"] = {"mode": p.liquidation_mode, "buffer_ppm": p.buffer_ppm,
                   "pending_timeout_ms": p.pending_timeout_ms, "symbols": values}


def _split(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("split", "Penalty split", "SPEC §4.7")
    fund_ppm = PPM - p.liquidator_ppm - p.protocol_ppm
    s["rules"] += [
        f"The penalties of all closes of one evaluation are summed to F, then split once: the liquidator gets "
        f"floor(F × {pct(p.liquidator_ppm)}) (split.liquidator_ppm = {p.liquidator_ppm}), the protocol "
        f"floor(F × {pct(p.protocol_ppm)}) (split.protocol_ppm = {p.protocol_ppm}), and the insurance fund the "
        f"rest: {pct(fund_ppm)} plus the rounding residue.",
    ]
    s["tables"].append(table("Split", ["destination", "share", "ppm", "rounding"], [
        ["liquidator", pct(p.liquidator_ppm), str(p.liquidator_ppm), "floor"],
        ["protocol", pct(p.protocol_ppm), str(p.protocol_ppm), "floor"],
        ["insurance fund", pct(fund_ppm), str(fund_ppm), "the remainder"],
    ]))
    s["values"] = {"liquidator_ppm": p.liquidator_ppm, "protocol_ppm": p.protocol_ppm,
                   "insurance_fund_ppm": fund_ppm}


def _fund(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("insurance_fund", "Insurance fund and socialized loss", "SPEC §5")
    s["rules"] += [
        f"One insurance fund for {p.asset}. It opens at {doc.money(p.insurance_initial_units)} "
        f"(insurance_fund.initial_balance) and is never paid below its floor of "
        f"{doc.money(p.insurance_floor_units)} (insurance_fund.floor).",
        "It is credited its share of every penalty and debited the cover of every bankruptcy: the cover is the "
        "shortfall, up to what the fund holds above its floor. Every movement is an insurance_fund_entry event "
        "with the running balance. A fund below its floor pays no cover until its balance rises above it.",
        "What the fund cannot cover is socialized loss, published per symbol and side: it is attributed to the "
        "bankrupt account's closes pro rata to each close's realized loss (floor), the residue to the largest "
        "loss (ties: the earlier close), all of it to the first close if none lost.",
    ]
    s["values"] = {"initial_balance": doc.exact(p.insurance_initial_units), "floor": doc.exact(p.insurance_floor_units)}


def _sharing(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("loss_sharing", "Loss sharing and repayments", "SPEC §5.1, §5.2")
    interval = p.round_interval_ms
    repay = "never" if p.repay_above_units is None else doc.money(p.repay_above_units)
    if p.loss_sharing_mode == "record":
        s["rules"] += [
            "Mode record (loss_sharing.mode): a socialized loss is published and recorded, and not shared out: "
            "no haircut is taken from any account, and no claim arises.",
            f"The haircut round interval (loss_sharing.round_interval_ms = {interval}) and the repayment level "
            f"(loss_sharing.repay_above: {repay}) have no effect in this mode.",
        ]
    else:
        s["rules"] += [
            "Mode haircut (loss_sharing.mode): the socialized loss of a (symbol, side) not yet shared out is its "
            "deficit. It is shared among the positions that gained from the same move: every open position on "
            "that symbol on the opposite side whose own unrealized PnL at the round's mark, w = floor(q × (P − E)), "
            "is positive (cross or isolated).",
            f"A haircut round for a (symbol, side) runs at a mark tick of that symbol when its deficit was already "
            f"positive before the tick, no round of that pair is in flight, and at least {interval} ms of event "
            f"time (loss_sharing.round_interval_ms) passed since the pair's previous round; it runs after the "
            f"tick's liquidations, long side first.",
            "With W the sum of the eligible weights, the round shares A = min(deficit, W); each eligible position "
            "pays floor(A × w / W), never more than its own unrealized profit. What the floors leave, and any "
            "deficit above W, stay in the deficit for the next round. Haircuts are applied to collateral by "
            "settlement.",
            "Every haircut gives its account a claim of the same amount.",
        ]
        if p.repay_above_units is None:
            s["rules"].append("Claims are not repaid from the insurance fund (loss_sharing.repay_above is empty).")
        else:
            s["rules"].append(
                f"Claims are repaid from the insurance fund above {repay} (loss_sharing.repay_above): a repayment "
                f"round runs at a mark tick (any symbol) when, before the tick, the fund's balance was above that "
                f"level with claims outstanding (and {interval} ms passed since the previous repayment round). It "
                f"runs after the tick's liquidations and haircut rounds and pays B = min(balance − {repay}, total "
                f"claims), each claimant floor(B × its claim / total claims); the rounding residue returns to the fund.")
    s["values"] = {"mode": p.loss_sharing_mode, "round_interval_ms": interval,
                   "repay_above": None if p.repay_above_units is None else doc.exact(p.repay_above_units)}


def _guards(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("guards", "Price guards and reporting", "SPEC §8, §6")
    if p.max_mark_age_ms:
        s["rules"].append(f"Stale mark: no liquidation on a mark older than {p.max_mark_age_ms} ms "
                          f"(engine.max_mark_age_ms) against the newest event time seen.")
    else:
        s["rules"].append("Stale mark guard: off (engine.max_mark_age_ms = 0).")
    if p.max_jump_ppm:
        s["rules"].append(f"Jump: a mark more than {pct(p.max_jump_ppm)} (engine.max_jump_ppm = {p.max_jump_ppm}) "
                          f"away from the previous one liquidates nothing until the next tick confirms it.")
    else:
        s["rules"].append("Jump guard: off (engine.max_jump_ppm = 0).")
    s["rules"].append("An account held back by a guard is evaluated again on the next tick of its symbols; "
                      "both guards are counted and alerted on.")
    if p.snapshot_interval_ms:
        s["rules"].append(f"A risk snapshot per symbol is published every {p.snapshot_interval_ms} ms of event "
                          f"time (engine.snapshot_interval_ms).")
    else:
        s["rules"].append("Risk snapshots: off (engine.snapshot_interval_ms = 0).")
    s["values"] = {"max_mark_age_ms": p.max_mark_age_ms, "max_jump_ppm": p.max_jump_ppm,
                   "snapshot_interval_ms": p.snapshot_interval_ms}


# ------------------------------------------------------------------------------- worked examples
def _plan_at(p: Params, sym: SymbolParams, collateral: int, lots: int, entry: int, mark: int) -> LiquidationPlan:
    return plan_liquidation(collateral, [Leg(sym, lots, entry, mark)], p)


def _whole(ticks: int, sym: SymbolParams) -> int:
    """Down to a whole quote unit (a round price), in ticks."""
    step = 10**sym.price_decimals
    return ticks // step * step


def example(p: Params, sym: SymbolParams) -> dict[str, Any]:
    """A 1-unit long at 10 000, liquidated solvent (a tenth of the way from its liquidation price to its
    bankruptcy price), then
    bankrupt (1 % below its bankruptcy price), computed by the engine's own functions."""
    q = p.quote_decimals
    lots = 10**sym.size_decimals
    entry = EXAMPLE_ENTRY * 10**sym.price_decimals
    position_notional = notional(sym, lots, entry)
    opening_mm = margin_state(0, [Leg(sym, lots, entry, entry)]).maintenance_units
    unit = 10**q
    collateral = max(-(-position_notional // EXAMPLE_LEVERAGE), 2 * opening_mm)
    collateral = -(-collateral // unit) * unit  # a whole quote unit
    legs = [Leg(sym, lots, entry, entry)]
    liq = liquidation_price(collateral, legs, 0)
    bk = bankruptcy_price(collateral, legs, 0)
    if liq is None or bk is None:
        return {}
    liq_tick = liquidation_price_ticks(liq, lots)
    # solvent: a round price a tenth of the way from the liquidation price down to the bankruptcy price
    # (moved up while it would be bankrupt, never above the last liquidatable tick)
    tenth = liq - (liq - bk) / 10
    mark = _whole(tenth.numerator // tenth.denominator, sym)
    step = 10**sym.price_decimals
    while mark < liq_tick and _plan_at(p, sym, collateral, lots, entry, mark).bankrupt:
        mark += step
    mark = min(mark, liq_tick)
    state = margin_state(collateral, [Leg(sym, lots, entry, mark)])
    plan = _plan_at(p, sym, collateral, lots, entry, mark)
    price = lambda ticks: format_units(ticks, sym.price_decimals)  # noqa: E731
    size = lambda l: format_units(l, sym.size_decimals)  # noqa: E731
    amt = lambda units: format_units(units, q)  # noqa: E731
    solvent = {
        "mark_price": price(mark),
        "equity": amt(state.equity_units),
        "maintenance": amt(state.maintenance_units),
        "severity_ppm": severity_ppm(state),
        "bankrupt": plan.bankrupt,
        "closes": [{
            "closed_size": size(c.closed_lots), "remaining_size": size(c.remaining_lots),
            "execution_price": price(c.execution_ticks), "realized_pnl": amt(c.realized_pnl_units),
            "closed_notional": amt(notional_floor(sym, c.closed_lots, c.execution_ticks)),
            "penalty_rate_ppm": c.penalty_rate_ppm, "penalty": amt(c.penalty_units),
        } for c in plan.closes],
        "penalty": amt(plan.penalty_units), "liquidator": amt(plan.liquidator_units),
        "protocol": amt(plan.protocol_units), "insurance_fund": amt(plan.insurance_fund_units),
        "equity_after": amt(plan.equity_after_units), "maintenance_after": amt(plan.maintenance_after_units),
        "collateral_after": amt(plan.collateral_after_units),
    }
    # bankrupt: a gap to 1 % below the bankruptcy price, a round price
    gap = _whole(bk.numerator * 99 // (100 * bk.denominator), sym)
    bankrupt_plan = _plan_at(p, sym, collateral, lots, entry, gap)
    fund = InsuranceFund(p.insurance_initial_units, p.insurance_floor_units)
    cover, social, _ = settle(p, fund, bankrupt_plan, "example", "example", 0)
    bankrupt = {
        "mark_price": price(gap),
        "execution_price": price(execution_price(sym, lots, gap)),
        "bankrupt": bankrupt_plan.bankrupt,
        "realized_pnl": amt(sum(c.realized_pnl_units for c in bankrupt_plan.closes)),
        "penalty": amt(bankrupt_plan.penalty_units),
        "shortfall": amt(bankrupt_plan.shortfall_units),
        "fund_before": amt(p.insurance_initial_units),
        "insurance_cover": amt(cover), "socialized_loss": amt(social), "fund_after": amt(fund.balance_units),
    }
    return {
        "symbol": sym.symbol,
        "position": {"side": "long", "size": size(lots), "entry_price": price(entry), "collateral": amt(collateral),
                     "notional": amt(position_notional), "maintenance": amt(opening_mm),
                     "liquidation_price": price(liq_tick), "bankruptcy_price_exact": _fraction(bk, sym)},
        "solvent": solvent,
        "bankrupt": bankrupt,
    }


def notional_floor(sym: SymbolParams, lots: int, ticks: int) -> int:
    """Closed notional floor(|δ| · X) (SPEC §4.3), quote units."""
    return abs(lots) * ticks * sym.value_num // sym.value_den


def _fraction(value: Any, sym: SymbolParams) -> str:
    """An exact price (ticks as a Fraction) to 6 decimals past the tick, floored: for reading only."""
    extra = 6
    scaled = value.numerator * 10**extra // value.denominator
    return format_units(scaled, sym.price_decimals + extra)


def _examples(doc: _Doc) -> None:
    p = doc.params
    s = doc.section("examples", "Worked examples", "SPEC §3–§5")
    s["rules"].append(
        f"Computed by the engine's own functions with this file's parameters: a long of 1 unit opened at "
        f"{EXAMPLE_ENTRY} {p.asset} per unit, the account's only position, with a wallet of 1/{EXAMPLE_LEVERAGE} "
        f"of its notional (or twice its maintenance, if more); first liquidated solvent at a round mark a tenth "
        f"of the way from its liquidation price down to its bankruptcy price, then, separately, bankrupt after a gap to 1 % below its "
        f"bankruptcy price with the insurance fund at its opening balance.")
    values = []
    for name, sym in p.symbols.items():
        ex = example(p, sym)
        if not ex:
            continue
        values.append(ex)
        pos, sol, bk = ex["position"], ex["solvent"], ex["bankrupt"]
        t = lambda text: trim(text)  # noqa: E731
        cur = p.asset
        sentence = (
            f"{name}: long {t(pos['size'])} at {t(pos['entry_price'])} (notional {t(pos['notional'])} {cur}, "
            f"maintenance {t(pos['maintenance'])} {cur}) with {t(pos['collateral'])} {cur} of collateral; it is "
            f"liquidatable at {t(pos['liquidation_price'])} and below, bankrupt at about "
            f"{t(pos['bankruptcy_price_exact'])}.")
        s["rules"].append(sentence)
        first = sol["closes"][0]
        if sym.penalty_model == "flat":
            rate = f"penalty rate {pct(first['penalty_rate_ppm'])} (flat)"
        else:
            rate = (f"penalty rate {sym.penalty_min_ppm} + floor({sym.penalty_max_ppm - sym.penalty_min_ppm} × "
                    f"{sol['severity_ppm']} / 10^6) = {first['penalty_rate_ppm']} ppm ({pct(first['penalty_rate_ppm'])})")
        closed = ("the smallest close restoring equity ≥ " + times(PPM + p.buffer_ppm) + " maintenance is "
                  if p.liquidation_mode == "partial" and first["remaining_size"] != format_units(0, sym.size_decimals)
                  else "it closes ")
        s["rules"].append(
            f"{name} at mark {t(sol['mark_price'])}: severity = ({t(sol['maintenance'])} − {t(sol['equity'])}) / "
            f"{t(sol['maintenance'])} = {pct(sol['severity_ppm'])}; {rate}; execution price "
            f"floor({t(sol['mark_price'])} × (1 − {pct(sym.slippage_ppm)})) = {t(first['execution_price'])}; "
            f"{closed}{t(first['closed_size'])}; penalty = floor({t(first['closed_notional'])} × "
            f"{pct(first['penalty_rate_ppm'])}) = {t(first['penalty'])} {cur}, split {t(sol['liquidator'])} "
            f"(liquidator) / {t(sol['protocol'])} (protocol) / {t(sol['insurance_fund'])} (insurance fund). "
            f"At {t(bk['mark_price'])} the same account is bankrupt: shortfall {t(bk['shortfall'])} {cur}, "
            f"covered {t(bk['insurance_cover'])} by the fund, {t(bk['socialized_loss'])} socialized.")
        close_rows = []
        for c in sol["closes"]:
            close_rows.append([t(c["closed_size"]), t(c["remaining_size"]), t(c["execution_price"]),
                               t(c["realized_pnl"]), t(c["closed_notional"]), pct(c["penalty_rate_ppm"]),
                               t(c["penalty"])])
        s["tables"].append(table(
            f"{name}: solvent liquidation at mark {t(sol['mark_price'])} (equity {t(sol['equity'])}, maintenance "
            f"{t(sol['maintenance'])}, severity {pct(sol['severity_ppm'])})",
            ["closed", "remaining", "execution price", "realized PnL", "closed notional", "penalty rate", "penalty"],
            close_rows))
        s["tables"].append(table(f"{name}: outcome of the solvent liquidation", ["item", cur], [
            ["penalty", t(sol["penalty"])], ["to the liquidator", t(sol["liquidator"])],
            ["to the protocol", t(sol["protocol"])], ["to the insurance fund", t(sol["insurance_fund"])],
            ["equity after", t(sol["equity_after"])], ["maintenance after", t(sol["maintenance_after"])],
            ["collateral after", t(sol["collateral_after"])]]))
        s["tables"].append(table(
            f"{name}: bankruptcy at mark {t(bk['mark_price'])} (execution {t(bk['execution_price'])})",
            ["item", cur], [
                ["realized PnL", t(bk["realized_pnl"])], ["penalty", t(bk["penalty"])],
                ["shortfall", t(bk["shortfall"])], ["insurance fund before", t(bk["fund_before"])],
                ["insurance cover", t(bk["insurance_cover"])], ["socialized loss", t(bk["socialized_loss"])],
                ["insurance fund after", t(bk["fund_after"])]]))
    s["values"] = {"examples": values}


# ---------------------------------------------------------------------------- the parameter file
def parameter_rows(p: Params, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Every key of the parameter shape (SPEC §9) with the value the engine runs, and whether the file
    left it to its default. Amounts in decimal strings at their scale, trimmed."""
    q = p.quote_decimals
    rows: list[tuple[str, Any]] = [
        ("settlement.asset", p.asset),
        ("settlement.decimals", q),
        ("insurance_fund.initial_balance", human(p.insurance_initial_units, q)),
        ("insurance_fund.floor", human(p.insurance_floor_units, q)),
        ("engine.call_ratio_ppm", p.call_ratio_ppm),
        ("engine.pending_timeout_ms", p.pending_timeout_ms),
        ("engine.max_mark_age_ms", p.max_mark_age_ms),
        ("engine.max_jump_ppm", p.max_jump_ppm),
        ("engine.snapshot_interval_ms", p.snapshot_interval_ms),
        ("liquidation.mode", p.liquidation_mode),
        ("liquidation.buffer_ppm", p.buffer_ppm),
        ("split.liquidator_ppm", p.liquidator_ppm),
        ("split.protocol_ppm", p.protocol_ppm),
        ("loss_sharing.mode", p.loss_sharing_mode),
        ("loss_sharing.repay_above", "" if p.repay_above_units is None else human(p.repay_above_units, q)),
        ("loss_sharing.round_interval_ms", p.round_interval_ms),
    ]
    for name, sym in p.symbols.items():
        base = f"symbols.{name}"
        rows += [(f"{base}.price_decimals", sym.price_decimals), (f"{base}.size_decimals", sym.size_decimals)]
        for index, bracket in enumerate(sym.brackets):
            if bracket.max_notional_units is not None:
                rows.append((f"{base}.brackets[{index}].max_notional", human(bracket.max_notional_units, q)))
            rows.append((f"{base}.brackets[{index}].mmr_ppm", bracket.mmr_ppm))
        rows += [(f"{base}.penalty.model", sym.penalty_model), (f"{base}.penalty.min_ppm", sym.penalty_min_ppm),
                 (f"{base}.penalty.max_ppm", sym.penalty_max_ppm),
                 (f"{base}.min_notional", human(sym.min_notional_units, q)),
                 (f"{base}.slippage_ppm", sym.slippage_ppm)]
    return [{"key": key, "value": value, "default": not _present(raw, key)} for key, value in rows]


def _present(raw: dict[str, Any], key: str) -> bool:
    """Whether the file itself sets ``key`` (dotted, with [i] for a bracket); symbol names hold dashes,
    never dots."""
    node: Any = raw
    parts = key.split(".")
    if parts[0] == "symbols":
        parts = ["symbols", parts[1], *parts[2:]]
    for part in parts:
        name, _, index = part.partition("[")
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
        if index:
            i = int(index.rstrip("]"))
            if not isinstance(node, list) or i >= len(node):
                return False
            node = node[i]
    return True


# ------------------------------------------------------------------------------------ document
def disclosure(data: bytes) -> dict[str, Any]:
    """The disclosure of a parameter file (its bytes: params_version is their hash)."""
    params = parse_params(data)
    raw = tomllib.loads(data.decode("utf-8"))
    doc = _Doc(params)
    for build in (_numbers, _margin, _liquidation, _split, _fund, _sharing, _guards, _examples):
        build(doc)
    parameters = parameter_rows(params, raw)
    return {
        "title": "Liquidation methodology",
        "params_version": params.params_version,
        "summary": (f"How this venue computes margin, liquidates, distributes the liquidation penalty and covers "
                    f"bankruptcies, with the numbers of the parameter file whose params_version is "
                    f"{params.params_version}. Every allocation event the engine publishes carries that "
                    f"params_version; this page is generated from the same file by `python -m worker "
                    f"methodology`, so it describes exactly what runs."),
        "sections": doc.sections,
        "parameters": parameters,
    }


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("|", "\\|")


def _markdown_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# {doc['title']}", "", f"params_version: `{doc['params_version']}`", "", doc["summary"], ""]
    for section in doc["sections"]:
        lines += [f"## {section['title']} ({section['spec']})", ""]
        lines += [f"- {rule}" for rule in section["rules"]]
        for tab in section["tables"]:
            lines += ["", f"**{tab['title']}**", ""]
            lines += _markdown_table(tab["columns"], tab["rows"])
        lines.append("")
    lines += ["## Parameter file", "",
              f"Every key the engine runs with, as parsed (amounts in {doc['sections'][0]['values']['asset']}); "
              "“default” marks a key the file leaves out.", ""]
    lines += _markdown_table(["key", "value", "default"],
                             [[f"`{row['key']}`", '`""` (never)' if row["value"] == "" else row["value"],
                               "default" if row["default"] else ""]
                              for row in doc["parameters"]])
    return "\n".join(lines) + "\n"


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main_methodology(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker methodology",
        description="Print the liquidation methodology disclosure generated from a parameter file (SPEC §5.3).")
    parser.add_argument("--params", required=True, help="parameter TOML (SPEC §9)")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown",
                        help="markdown (default) or json (the same content, structured)")
    args = parser.parse_args(argv)
    try:
        with open(args.params, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SystemExit(f"error: cannot read parameters: {exc}") from None
    try:
        doc = disclosure(data)
    except ParamsError as exc:
        raise SystemExit(f"error: {args.params}: {exc}") from None
    text = render_markdown(doc) if args.format == "markdown" else render_json(doc)
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0
