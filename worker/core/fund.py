"""Insurance fund (SPEC §5): one ledger per settlement asset, never paid below its floor.

``settle`` applies one liquidation plan to a fund and renders the fund events; the offline
replay calls it inline, the streaming worker through the single-writer fund agent
(``FundLedger``) fed by ``fund_request`` messages.
"""
from __future__ import annotations

from typing import Any

from .liquidation import LiquidationPlan, plan_from_json
from .outputs import (Output, Trigger, allocation_amounts, allocation_event, insurance_fund_entry,
                      socialized_loss_event)
from .params import Params
from .sharing import DeficitBook


class InsuranceFund:
    def __init__(self, balance_units: int, floor_units: int) -> None:
        self.balance_units = balance_units
        self.floor_units = floor_units

    def credit(self, amount_units: int) -> int:
        self.balance_units += amount_units
        return self.balance_units

    def debit(self, amount_units: int) -> int:
        """Pay out (a repayment budget): never below the floor."""
        if amount_units < 0 or self.balance_units - amount_units < self.floor_units:
            raise AssertionError("insurance fund paid below its floor")
        self.balance_units -= amount_units
        return self.balance_units

    def cover(self, shortfall_units: int) -> int:
        """Debit what it holds above its floor, up to the shortfall; return the cover."""
        cover = min(shortfall_units, max(0, self.balance_units - self.floor_units))
        self.balance_units -= cover
        if cover and self.balance_units < self.floor_units:
            raise AssertionError("insurance fund paid below its floor")
        return cover


def socialized_loss_by_close(plan: LiquidationPlan, social_units: int) -> list[tuple[str, str, int]]:
    """Attribute a socialized loss to (symbol, side) pro rata to each close's realized loss,
    floor; the residue goes to the largest loss (ties by close order)."""
    if social_units <= 0:
        return []
    losses = [(c.symbol, c.side, max(0, -c.realized_pnl_units)) for c in plan.closes]
    total = sum(loss for _, _, loss in losses)
    if total == 0:
        first = plan.closes[0]
        return [(first.symbol, first.side, social_units)]
    shares = [social_units * loss // total for _, _, loss in losses]
    largest = max(range(len(losses)), key=lambda i: (losses[i][2], -i))
    shares[largest] += social_units - sum(shares)
    return [(s, side, share) for (s, side, _), share in zip(losses, shares) if share > 0]


def settle(params: Params, fund: InsuranceFund, plan: LiquidationPlan, lid: str, account_id: str,
           ts: int) -> tuple[int, int, list[Output]]:
    """Credit the fund's penalty share, cover what it can of a shortfall; (cover, socialized, events)."""
    out: list[Output] = []
    asset = params.asset
    if plan.insurance_fund_units:
        balance = fund.credit(plan.insurance_fund_units)
        out.append(Output("insurance-fund", asset, insurance_fund_entry(
            params, ts=ts, delta_units=plan.insurance_fund_units, balance_after_units=balance,
            reason="penalty_insurance_fund", liquidation_id=lid)))
    cover = social = 0
    if plan.shortfall_units:
        cover = fund.cover(plan.shortfall_units)
        social = plan.shortfall_units - cover
        if cover:
            out.append(Output("insurance-fund", asset, insurance_fund_entry(
                params, ts=ts, delta_units=-cover, balance_after_units=fund.balance_units,
                reason="insurance_cover", liquidation_id=lid)))
        for symbol, side, amount in socialized_loss_by_close(plan, social):
            out.append(Output("insurance-fund", asset, socialized_loss_event(
                params, ts=ts, symbol=symbol, side=side, amount_units=amount, liquidation_id=lid,
                account_id=account_id)))
    return cover, social, out


def record_deficits(deficits: DeficitBook, plan: LiquidationPlan, social_units: int,
                    trigger: list[Any] | None = None) -> None:
    """The socialized loss of a settled plan joins the deficit of its (symbol, side) (§5.1),
    attributed as its `socialized_loss` events are. Called once the allocation is built.
    ``trigger`` ([source, symbol, seq, price], streaming): a loss recorded by a tick of its own
    symbol is remembered by that tick's seq (DeficitBook.deficit_before)."""
    for symbol, side, amount in socialized_loss_by_close(plan, social_units):
        tick_seq = trigger[2] if trigger is not None and trigger[0] == "mark" and trigger[1] == symbol else None
        deficits.record(symbol, side, amount, tick_seq)


def request_item(plan: list[Any] | dict[str, Any], *, lid: str, account_id: str, scope: str, ts: int,
                 trigger: Trigger) -> dict[str, Any]:
    """One liquidation handed to the fund agent (internal topic ``insurance-requests``); ``plan`` in
    its JSON form (``plan_to_list``; ``plan_from_json`` reads the older dict too)."""
    return {"liquidation_id": lid, "account_id": account_id, "scope": scope, "ts": ts,
            "trigger": [trigger.source, trigger.symbol, trigger.seq, trigger.price_ticks], "plan": plan}


class FundLedger:
    """The single writer of one asset's fund: applies each liquidation once (by id) and remembers
    what it published, so a redelivered request re-publishes identical bytes.

    ``settled`` maps a liquidation id to ``{"at": position, "outputs": [[topic, key, value], ...]}``;
    ``position`` is where the item was applied ([offset, index] on the request topic). An item met
    again at the same position is an interrupted attempt (the fund's balance record did not move
    past it) and is applied afresh; met at another position it is a duplicate.
    """

    def __init__(self, params: Params, balance_units: int | None = None, settled: Any = None,
                 deficits: DeficitBook | None = None) -> None:
        self.params = params
        start = params.insurance_initial_units if balance_units is None else balance_units
        self.fund = InsuranceFund(start, params.insurance_floor_units)
        self.settled: Any = settled if settled is not None else {}
        self.deficits = deficits if deficits is not None else DeficitBook()

    def remember(self, key: str, at: list[int], outputs: list[Output]) -> None:
        """Keep what an item published (a tick marker, a round report), for a re-delivery."""
        if outputs:
            self.settled[key] = {"at": at, "outputs": [[o.topic, o.key, o.value] for o in outputs]}

    def stored_outputs(self, lid: str) -> list[Output] | None:
        done = self.settled.get(lid)
        return None if done is None else [Output(topic, key, value) for topic, key, value in done["outputs"]]

    def apply(self, item: dict[str, Any], at: list[int] | None = None) -> tuple[list[Output], bool]:
        """Outputs for one request item, and whether the fund moved (False for a duplicate)."""
        lid = item["liquidation_id"]
        done = self.settled.get(lid)
        if done is not None and (at is None or done["at"] != at):
            return [Output(topic, key, value) for topic, key, value in done["outputs"]], False
        plan = plan_from_json(item["plan"])
        source, symbol, seq, price = item["trigger"]
        balance_before = self.fund.balance_units
        cover, social, out = settle(self.params, self.fund, plan, lid, item["account_id"], item["ts"])
        try:
            if plan.bankrupt:  # the allocation depends on the cover: published after the fund entries
                event = allocation_event(self.params, plan, liquidation_id=lid, account_id=item["account_id"],
                                         scope=item["scope"], ts=item["ts"],
                                         trigger=Trigger(source, symbol, seq, price),
                                         insurance_cover_units=cover, socialized_loss_units=social)
                out.append(Output("liquidations", item["account_id"], event, allocation_amounts(plan, cover, social)))
        except AssertionError:
            self.fund.balance_units = balance_before  # nothing recorded for a plan that does not balance
            raise
        record_deficits(self.deficits, plan, social, item["trigger"])
        self.settled[lid] = {"at": at, "outputs": [[o.topic, o.key, o.value] for o in out]}
        return out, True
