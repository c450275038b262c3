"""Re-deriving loss-sharing rounds (SPEC §5.1, §5.2, §6.2) from their events.

A haircut round is its `haircut_round` summary and the `haircut` events with its ``round_id``;
a repayment round is its `repayment_round` summary, the `claim_repayment` events with its
``round_id`` and the fund's two `insurance_fund_entry` records naming it (−budget, +residue).

Exact, in replay output and in topics read back:
  - ids: ``round_id = sha256("haircut|{s}|{d}|{n}")[:32]`` with ``n`` the pair's rounds before it
    (a pair's summaries share one key, so one partition keeps their order), a haircut's
    ``sha256("{round_id}|{account}|{scope}")[:32]``; ``sha256("repay|{asset}|{n}")[:32]`` and a
    repayment's ``sha256("{round_id}|{account}")[:32]``;
  - a haircut round: ``shared = min(deficit_before, eligible_weight)``, each
    ``amount = floor(shared · weight / eligible_weight)`` with ``0 < amount ≤ weight``,
    ``paid = Σ amounts``, ``haircuts`` = their number, ``carried = deficit_before − paid``; each
    haircut on the round's symbol, on the side opposite to the loss, at the round's ts, one transfer
    ``account:<id> → socialized_loss``;
  - a repayment round: ``budget = max(0, min(balance_before − repay_above, claims_before))``,
    each ``amount = floor(budget · claim_before / claims_before)``, ``paid``, ``claimants``,
    ``repay_above`` as the parameters say; the fund entries ``−budget`` (whose balance before is
    ``balance_before``) and ``+(budget − paid)``, each only when not zero; one transfer
    ``insurance_fund → account:<id>`` per repayment;
  - claims per account: each haircut's ``claim_after`` = the account's haircuts − its repayments so
    far; each repayment's ``claim_before`` = that, ``claim_after = claim_before − amount`` (an
    account's haircuts and repayments share its key: their order survives a broker).

Exact in emission order (replay output), bounds in topics read back (the order across topics and
partitions is lost):
  - ``deficit_before`` of a pair's round = the socialized losses recorded for that (symbol, side)
    before it − what the pair's earlier rounds paid (i.e. the previous round's ``carried`` plus the
    losses recorded since). Read back from a broker: ``deficit_before + Σ earlier paid`` must be one
    of the running totals of the pair's socialized losses (in the insurance-fund topic's order),
    never falling from one round to the next;
  - ``claims_before`` of a repayment round = Σ outstanding claims at its start. Read back: at least
    Σ of its repayments' ``claim_before`` (zero repayments are left out, so their claimants are
    not seen);
  - ``balance_before`` = the fund's running balance at the round's start. Read back, with a zero
    budget (no fund entry to anchor it): a balance the fund held at some point;
  - the order of a round's events (haircuts ascending by (account, scope) before the summary;
    −budget, repayments ascending by account, +residue, summary).

Not checkable from the output: each position's ``weight`` (``floor(q · (P − E))`` needs the
position, which no output carries) beyond ``0 < amount ≤ weight`` and ``Σ weights ≤
eligible_weight`` (positions whose haircut floors to 0 are left out), and when a round is due
(that needs the input ticks).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from worker.core.fixed import format_units

from .verify_common import Context, Event, Malformed, decimal_at, integer, text
from .verify_liquidation import FundLink
from .verify_math import fdiv, haircut_id, haircut_round_id, repayment_id, repayment_round_id

OPPOSITE = {"long": "short", "short": "long"}


@dataclass
class Member:
    index: int
    event: dict
    account: str
    scope: str = ""
    amount: int = 0
    weight: int = 0  # haircut
    claim_before: int = 0  # repayment


@dataclass
class Snapshot:
    """Running totals at a round's first event (emission order only)."""

    deficits: dict[tuple[str, str], int]
    claims: int
    balance: int


@dataclass
class Sharing:
    ctx: Context
    social_by_pair: dict[tuple[str, str], list[int]]  # the pair's socialized losses, in topic order
    held_balances: set[int]  # every balance the fund's ledger passed through
    round_links: dict[str, FundLink]  # fund entries naming a round_id
    claims: dict[str, int] = field(default_factory=dict)  # account → outstanding claim
    haircuts: dict[str, list[Member]] = field(default_factory=dict)  # round_id → its haircuts
    repayments: dict[str, list[Member]] = field(default_factory=dict)
    summaries: list[tuple[int, dict]] = field(default_factory=list)  # haircut_round, in order
    repay_summaries: list[tuple[int, dict]] = field(default_factory=list)
    # emission order only: running totals and their value at each round's start
    deficits: dict[tuple[str, str], int] = field(default_factory=dict)
    balance: int = 0
    snapshots: dict[str, Snapshot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.balance = self.ctx.params.insurance_initial_units

    # ------------------------------------------------------------ running totals (emission order)
    def started(self, round_id: Any) -> None:
        if isinstance(round_id, str) and round_id not in self.snapshots:
            self.snapshots[round_id] = Snapshot(dict(self.deficits), sum(self.claims.values()), self.balance)

    def on_fund_entry(self, ev: dict) -> None:
        if "round_id" in ev:
            self.started(ev.get("round_id"))
        try:
            self.balance = self.ctx.amount(ev.get("balance_after"), "balance_after")
        except Malformed:
            pass

    def on_social(self, ev: dict) -> None:
        try:
            units = self.ctx.amount(ev.get("amount"), "amount")
        except Malformed:
            return
        pair = (ev.get("symbol"), ev.get("side"))
        self.deficits[pair] = self.deficits.get(pair, 0) + units  # type: ignore[index]

    # ----------------------------------------------------------------------- events, in order
    def haircut(self, index: int, ev: dict) -> None:
        ctx = self.ctx
        e = Event(ctx, "haircut", str(ev.get("haircut_id")))
        try:
            round_id = text(ev.get("round_id"), "round_id")
            account = text(ev.get("account_id"), "account_id")
            scope = text(ev.get("scope"), "scope")
            symbol = ev.get("symbol")
            if symbol not in ctx.syms:
                raise Malformed("symbol", "a symbol of the parameters", symbol)
            text(ev.get("side"), "side", ("long", "short"))
            weight = ctx.amount(ev.get("weight"), "weight", positive=True)
            amount = ctx.amount(ev.get("amount"), "amount", positive=True)
            claim_after = ctx.amount(ev.get("claim_after"), "claim_after", non_negative=True)
        except Malformed as exc:
            e.malformed(exc)
            return
        self.started(round_id)
        e.same("params_version", ctx.params.params_version, ev.get("params_version"))
        if ctx.params.loss_sharing_mode != "haircut":
            e.report("type", "no haircut (loss_sharing.mode is \"record\")", "a haircut")
        if scope != "cross" and scope != symbol:
            e.report("scope", f"cross or {symbol} (an isolated position of the round's symbol)", scope)
        e.same("haircut_id", haircut_id(round_id, account, scope), ev.get("haircut_id"))
        if amount > weight:
            e.report("amount", f"at most the weight {ctx.fmt(weight)} (never more than the position's own profit)",
                     ctx.fmt(amount))
        claim = self.claims.get(account, 0) + amount
        e.same_amount("claim_after", claim, claim_after, "the account's claim before + amount")
        self.claims[account] = claim_after
        _one_transfer(e, ev, f"account:{account}", "socialized_loss", amount, "haircut")
        self.haircuts.setdefault(round_id, []).append(Member(index, ev, account, scope, amount, weight))

    def repayment(self, index: int, ev: dict) -> None:
        ctx = self.ctx
        e = Event(ctx, "claim_repayment", str(ev.get("repayment_id")))
        try:
            round_id = text(ev.get("round_id"), "round_id")
            account = text(ev.get("account_id"), "account_id")
            before = ctx.amount(ev.get("claim_before"), "claim_before", positive=True)
            amount = ctx.amount(ev.get("amount"), "amount", positive=True)
            after = ctx.amount(ev.get("claim_after"), "claim_after", non_negative=True)
        except Malformed as exc:
            e.malformed(exc)
            return
        self.started(round_id)
        e.same("params_version", ctx.params.params_version, ev.get("params_version"))
        e.same("repayment_id", repayment_id(round_id, account), ev.get("repayment_id"))
        e.same_amount("claim_before", self.claims.get(account, 0), before,
                      "the account's haircuts − its repayments so far")
        if amount > before:
            e.report("amount", f"at most the claim {ctx.fmt(before)}", ctx.fmt(amount))
        e.same_amount("claim_after", before - amount, after, "claim_before − amount")
        self.claims[account] = after
        _one_transfer(e, ev, "insurance_fund", f"account:{account}", amount, "claim_repayment")
        m = Member(index, ev, account, amount=amount, claim_before=before)
        self.repayments.setdefault(round_id, []).append(m)

    def haircut_round(self, index: int, ev: dict) -> None:
        self.started(ev.get("round_id"))
        self.summaries.append((index, ev))
        if self.ctx.ordered:  # the deficit as it stands after this round
            try:
                pair = (ev.get("symbol"), ev.get("loss_side"))
                paid = self.ctx.amount(ev.get("paid"), "paid")
                self.deficits[pair] = self.deficits.get(pair, 0) - paid  # type: ignore[index]
            except Malformed:
                pass

    def repayment_round(self, index: int, ev: dict) -> None:
        self.started(ev.get("round_id"))
        self.repay_summaries.append((index, ev))

    # ------------------------------------------------------------------------ rounds, at the end
    def finish(self) -> None:
        ctx = self.ctx
        rounds: dict[tuple[str, str], int] = {}
        paid_before: dict[tuple[str, str], int] = {}
        floor_total: dict[tuple[str, str], int] = {}  # deficit_before + Σ earlier paid, last round
        seen = set()
        for index, ev in self.summaries:
            e = Event(ctx, "haircut_round", str(ev.get("round_id")))
            ctx.count("haircut_round")
            try:
                self._haircut_round(e, index, ev, rounds, paid_before, floor_total)
            except Malformed as exc:
                e.malformed(exc)
            seen.add(ev.get("round_id"))
        for round_id, members in self.haircuts.items():
            if round_id not in seen:
                for m in members:
                    Event(ctx, "haircut", str(m.event.get("haircut_id"))).report(
                        "round_id", "the id of a haircut_round summary", round_id)
        seen = set()
        for n, (index, ev) in enumerate(self.repay_summaries):
            e = Event(ctx, "repayment_round", str(ev.get("round_id")))
            ctx.count("repayment_round")
            try:
                self._repayment_round(e, index, ev, n)
            except Malformed as exc:
                e.malformed(exc)
            seen.add(ev.get("round_id"))
        for round_id, members in self.repayments.items():
            if round_id not in seen:
                for m in members:
                    Event(ctx, "claim_repayment", str(m.event.get("repayment_id"))).report(
                        "round_id", "the id of a repayment_round summary", round_id)
        for round_id, link in self.round_links.items():
            if round_id not in seen:
                Event(ctx, "insurance_fund_entry", round_id).report(
                    "round_id", "the id of a repayment_round summary", round_id)

    def _haircut_round(self, e: Event, index: int, ev: dict, rounds: dict, paid_before: dict,
                       floor_total: dict) -> None:
        ctx = self.ctx
        symbol = ev.get("symbol")
        sym = ctx.syms.get(symbol) if isinstance(symbol, str) else None
        if sym is None:
            raise Malformed("symbol", "a symbol of the parameters", symbol)
        loss_side = text(ev.get("loss_side"), "loss_side", ("long", "short"))
        mark_seq = integer(ev.get("mark_seq"), "mark_seq")
        decimal_at(ev.get("mark_price"), sym.price_decimals, "mark_price", positive=True)
        deficit = ctx.amount(ev.get("deficit_before"), "deficit_before", non_negative=True)
        weight = ctx.amount(ev.get("eligible_weight"), "eligible_weight", non_negative=True)
        shared = ctx.amount(ev.get("shared"), "shared", non_negative=True)
        paid = ctx.amount(ev.get("paid"), "paid", non_negative=True)
        carried = ctx.amount(ev.get("carried"), "carried", non_negative=True)
        count = integer(ev.get("haircuts"), "haircuts")
        round_id = ev.get("round_id")
        pair = (symbol, loss_side)
        n = rounds.get(pair, 0)
        rounds[pair] = n + 1
        e.same("params_version", ctx.params.params_version, ev.get("params_version"))
        want_id = haircut_round_id(symbol, loss_side, n)
        if want_id != round_id:
            e.report("round_id", f"{want_id} (round {n} of {symbol}/{loss_side})", round_id)
        ctx.mark_seen(e, "mark_price", symbol, mark_seq, ev.get("mark_price"))
        if ctx.params.loss_sharing_mode != "haircut":
            e.report("type", "no haircut round (loss_sharing.mode is \"record\")", "a haircut_round")
        e.same_amount("shared", max(0, min(deficit, weight)), shared, "min(deficit_before, eligible_weight)")
        members = self.haircuts.get(round_id, [])
        side = OPPOSITE[loss_side]
        total_weight = 0
        total = 0
        for m in members:
            h = Event(ctx, "haircut", str(m.event.get("haircut_id")))
            h.same("symbol", symbol, m.event.get("symbol"))
            if m.event.get("side") != side:
                h.report("side", f"{side} (opposite to the loss side {loss_side})", m.event.get("side"))
            h.same("ts", ev.get("ts"), m.event.get("ts"))
            if weight > 0:
                want = fdiv(shared * m.weight, weight)
                h.same_amount("amount", want, m.amount, f"floor(shared {ctx.fmt(shared)} · weight {ctx.fmt(m.weight)}"
                              f" / eligible_weight {ctx.fmt(weight)})")
            else:
                h.report("amount", "no haircut (eligible_weight is 0)", ctx.fmt(m.amount))
            if ctx.ordered and m.index > index:
                h.report("order", "before its round's summary", "after it")
            total_weight += m.weight
            total += m.amount
        if ctx.ordered:
            keys = [(m.account, m.scope) for m in members]
            if keys != sorted(keys):
                e.report("order of haircuts", "ascending (account_id, scope)", ", ".join(f"{a}/{s}" for a, s in keys))
        e.same("haircuts", len(members), count)
        e.same_amount("paid", total, paid, "Σ haircut amounts")
        if paid > shared:
            e.report("paid", f"at most shared {ctx.fmt(shared)}", ctx.fmt(paid))
        if total_weight > weight:
            e.report("eligible_weight", f"at least {ctx.fmt(total_weight)} (Σ weights of its haircuts)",
                     ctx.fmt(weight))
        e.same_amount("carried", deficit - paid, carried, "deficit_before − paid")
        # the deficit before this round
        earlier = paid_before.get(pair, 0)
        paid_before[pair] = earlier + paid
        if ctx.ordered:
            snapshot = self.snapshots.get(round_id)
            if snapshot is not None:
                want = snapshot.deficits.get(pair, 0)
                e.same_amount("deficit_before", want, deficit,
                              f"socialized losses recorded for {symbol}/{loss_side} so far − what its rounds paid")
            return
        totals = self.social_by_pair.get(pair, [])
        prefixes = [0]
        for units in totals:
            prefixes.append(prefixes[-1] + units)
        recorded = deficit + earlier  # losses recorded before this round, by its own figures
        last = floor_total.get(pair, 0)
        floor_total[pair] = max(last, recorded)
        spot = bisect.bisect_left(prefixes, last)
        if recorded < last or recorded not in prefixes[spot:]:
            options = [p - earlier for p in prefixes[spot:spot + 4]]
            more = ", …" if len(prefixes) > spot + 4 else ""
            e.report("deficit_before", "the previous round's carried plus losses recorded since: one of "
                     + ", ".join(ctx.fmt(o) for o in options) + more, ctx.fmt(deficit))

    def _repayment_round(self, e: Event, index: int, ev: dict, n: int) -> None:
        ctx, params = self.ctx, self.ctx.params
        e.same("params_version", params.params_version, ev.get("params_version"))
        e.same("asset", params.asset, ev.get("asset"))
        balance = ctx.amount(ev.get("balance_before"), "balance_before")
        repay_above = ctx.amount(ev.get("repay_above"), "repay_above", non_negative=True)
        claims = ctx.amount(ev.get("claims_before"), "claims_before", non_negative=True)
        budget = ctx.amount(ev.get("budget"), "budget", non_negative=True)
        paid = ctx.amount(ev.get("paid"), "paid", non_negative=True)
        count = integer(ev.get("claimants"), "claimants")
        round_id = ev.get("round_id")
        want_id = repayment_round_id(params.asset, n)
        if want_id != round_id:
            e.report("round_id", f"{want_id} (repayment round {n} of {params.asset})", round_id)
        if params.repay_above_units is None:
            e.report("repay_above", "no repayment round (loss_sharing.repay_above is unset)", ctx.fmt(repay_above))
        else:
            e.same_amount("repay_above", params.repay_above_units, repay_above, "loss_sharing.repay_above")
        e.same_amount("budget", max(0, min(balance - repay_above, claims)), budget,
                      "max(0, min(balance_before − repay_above, claims_before))")
        members = self.repayments.get(round_id, [])
        total = 0
        claimed = 0
        for m in members:
            r = Event(ctx, "claim_repayment", str(m.event.get("repayment_id")))
            r.same("ts", ev.get("ts"), m.event.get("ts"))
            if claims > 0:
                r.same_amount("amount", fdiv(budget * m.claim_before, claims), m.amount,
                              f"floor(budget {ctx.fmt(budget)} · claim_before {ctx.fmt(m.claim_before)} / "
                              f"claims_before {ctx.fmt(claims)})")
            else:
                r.report("amount", "no repayment (claims_before is 0)", ctx.fmt(m.amount))
            if ctx.ordered and m.index > index:
                r.report("order", "before its round's summary", "after it")
            total += m.amount
            claimed += m.claim_before
        e.same("claimants", len(members), count)
        e.same_amount("paid", total, paid, "Σ repayment amounts")
        if paid > budget:
            e.report("paid", f"at most the budget {ctx.fmt(budget)}", ctx.fmt(paid))
        # the fund: −budget (its balance before is balance_before), then +residue
        link = self.round_links.get(round_id) if isinstance(round_id, str) else None
        entries = dict(link.entries) if link else {}
        if link:
            link.used = True
        debit = entries.pop("claim_repayment", None)
        residue = entries.pop("repayment_residue", None)
        if budget or debit is not None:
            e.same_amount("insurance-fund claim_repayment entry", -budget, 0 if debit is None else debit[0],
                          "−budget")
        if debit is not None:
            e.same_amount("balance_before", debit[1], balance, "the fund's balance before its −budget entry")
        if budget - paid or residue is not None:
            e.same_amount("insurance-fund repayment_residue entry", budget - paid,
                          0 if residue is None else residue[0], "budget − paid")
        for reason in entries:
            e.report("insurance-fund", "entries with reason claim_repayment or repayment_residue",
                     f"an entry with reason {reason}")
        for reason, (_, _, _, entry) in (link.entries.items() if link else ()):
            e.same(f"insurance-fund {reason} entry ts", ev.get("ts"), entry.get("ts"))
        if ctx.ordered:
            snapshot = self.snapshots.get(round_id)
            if snapshot is not None:
                e.same_amount("balance_before", snapshot.balance, balance, "the fund's balance at the round's start")
                e.same_amount("claims_before", snapshot.claims, claims, "Σ outstanding claims at the round's start")
            order = sorted([(debit[2], 0) if debit else (-1, 0), *((m.index, 1) for m in members),
                            (residue[2], 2) if residue else (-1, 2), (index, 3)])
            steps = [step for i, step in order if i >= 0]
            accounts = [m.account for m in sorted(members, key=lambda m: m.index)]
            if steps != sorted(steps) or accounts != sorted(accounts):
                e.report("order", "−budget entry, repayments ascending by account, +residue entry, summary",
                         "another order")
        else:
            if claimed > claims:
                e.report("claims_before", f"at least {ctx.fmt(claimed)} (Σ claim_before of its repayments)",
                         ctx.fmt(claims))
            if debit is None and balance not in self.held_balances:
                e.report("balance_before", "a balance the fund's ledger held", ctx.fmt(balance))


def _one_transfer(e: Event, ev: dict, source: str, target: str, amount: int, reason: str) -> None:
    want = [{"from": source, "to": target, "amount": format_units(amount, e.ctx.q), "asset": e.ctx.params.asset,
             "reason": reason}]
    if ev.get("transfers") != want:
        e.report("transfers", f"{source} → {target} {format_units(amount, e.ctx.q)} {e.ctx.params.asset} ({reason})",
                 ev.get("transfers"))
