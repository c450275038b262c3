"""Loss sharing (SPEC §5.1–§5.2): haircut rounds among the winners of a move, claims, repayments.

Pure and integer-exact. A round is computed in the same steps in replay and in streaming, where
they run in two phases across partitions (worker/stream/rounds.py):

  haircut round of (symbol s, loss side d) at mark P
    1. each partition: weights w = floor(q · (P − E)) > 0 of the positions on s opposite to d
    2. coordinator:    W = Σ w,  A = min(deficit, W)
    3. each partition: h = floor(A · w / W) per position → `haircut` events, claims += h
    4. coordinator:    deficit −= Σ h → `haircut_round` summary

  repayment round at a tick
    1. each partition: claims c > 0
    2. coordinator:    C = Σ c,  B = min(balance − repay_above, C) (≥ 0); fund −B
    3. each partition: r = floor(B · c / C) per claimant → `claim_repayment` events, claims −= r
    4. coordinator:    fund += B − Σ r (residue) → `repayment_round` summary

Rounding: every share is floored, so Σ h ≤ A ≤ deficit and Σ r ≤ B ≤ claims; what the floors
leave stays in the deficit (haircuts) or goes back to the fund (repayments).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from mypy_extensions import mypyc_attr

from .fixed import format_units
from .margin import unrealized_pnl
from .outputs import Output
from .params import Params, SymbolParams

SIDES: Final = ("long", "short")  # pairs run in this order at a tick (SPEC §5.1)


@mypyc_attr(native_class=False)  # compiled: a built-in exception base needs a Python class
class SharingError(AssertionError):
    """A round that does not conserve: raised, never clamped."""


# ------------------------------------------------------------------------ ids
def _id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def haircut_round_id(symbol: str, loss_side: str, n: int) -> str:
    """sha256("haircut|{s}|{d}|{n}")[:32], n counting the pair's rounds from 0."""
    return _id(f"haircut|{symbol}|{loss_side}|{n}")


def haircut_id(round_id: str, account_id: str, scope: str) -> str:
    return _id(f"{round_id}|{account_id}|{scope}")


def repayment_round_id(asset: str, n: int) -> str:
    return _id(f"repay|{asset}|{n}")


def repayment_id(round_id: str, account_id: str) -> str:
    return _id(f"{round_id}|{account_id}")


# ---------------------------------------------------------------------- math
def winning_weight(sym: SymbolParams, loss_side: str, size_lots: int, entry_ticks: int, mark_ticks: int) -> int:
    """w of a position in a round sharing ``loss_side``'s deficit: its unrealized PnL at the round's
    mark, floor(q · (P − E)), when it is on the opposite side and positive; else 0."""
    if size_lots == 0 or (size_lots > 0) == (loss_side == "long"):
        return 0
    return max(0, unrealized_pnl(sym, size_lots, entry_ticks, mark_ticks))


def shared_amount(deficit_units: int, total_weight_units: int) -> int:
    """A = min(deficit, W)."""
    return max(0, min(deficit_units, total_weight_units))


def pro_rata_floor(amount_units: int, part_units: int, total_units: int) -> int:
    """floor(amount · part / total): a haircut floor(A·w/W) or a repayment floor(B·c/C)."""
    if total_units <= 0:
        return 0
    return amount_units * part_units // total_units


def repayment_budget(balance_units: int, repay_above_units: int, claims_units: int) -> int:
    """B = min(balance − repay_above, Σ claims), never negative."""
    return max(0, min(balance_units - repay_above_units, claims_units))


# --------------------------------------------------------------------- state
@dataclass(slots=True)
class DeficitBook:
    """What the fund's single writer holds for loss sharing: the deficit per (symbol, loss side)
    and the round counters (SPEC §5.1, §5.2). Claims live with the accounts."""

    deficits: dict[tuple[str, str], int] = field(default_factory=dict)
    rounds: dict[tuple[str, str], int] = field(default_factory=dict)  # rounds run per pair
    last_round_ts: dict[tuple[str, str], int] = field(default_factory=dict)
    repay_rounds: int = 0
    last_repay_ts: int | None = None
    # streaming: losses recorded from liquidations triggered by a tick of the pair's own symbol,
    # by that tick's seq, until a later tick of the symbol makes them "before" (deficit_before)
    by_tick: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)

    def record(self, symbol: str, side: str, amount_units: int, tick_seq: int | None = None) -> None:
        """Add to the pair's deficit; ``tick_seq``: the seq of the tick of ``symbol`` whose
        liquidation recorded it (streaming), so that this tick never counts it as "before"."""
        if amount_units:
            self.deficits[(symbol, side)] = self.deficits.get((symbol, side), 0) + amount_units
            if tick_seq is not None:
                recent = self.by_tick.setdefault((symbol, side), {})
                recent[tick_seq] = recent.get(tick_seq, 0) + amount_units

    def deficit_before(self, symbol: str, side: str, seq: int) -> int:
        """The pair's deficit as it stood before tick ``seq`` of ``symbol`` was applied: without the
        losses of that tick's liquidations or of later ticks' (another worker's items may reach the
        coordinator before the tick's marker). Older entries are forgotten: they are "before" now."""
        recent = self.by_tick.get((symbol, side), {})
        for old in [q for q in recent if q < seq]:
            del recent[old]
        return self.deficit(symbol, side) - sum(recent.values())

    def deficit(self, symbol: str, side: str) -> int:
        return self.deficits.get((symbol, side), 0)

    def round_due(self, symbol: str, side: str, ts: int, interval_ms: int, seq: int | None = None) -> bool:
        """The pair's deficit is positive (before tick ``seq``, in streaming) and its previous round
        is at least interval_ms old."""
        last = self.last_round_ts.get((symbol, side))
        deficit = self.deficit(symbol, side) if seq is None else self.deficit_before(symbol, side, seq)
        return deficit > 0 and (last is None or ts - last >= interval_ms)

    def repay_due(self, ts: int, interval_ms: int) -> bool:
        return self.last_repay_ts is None or ts - self.last_repay_ts >= interval_ms

    def start_round(self, symbol: str, side: str, ts: int) -> int:
        """Count a round of the pair; returns its n."""
        n = self.rounds.get((symbol, side), 0)
        self.rounds[(symbol, side)] = n + 1
        self.last_round_ts[(symbol, side)] = ts
        return n

    def settle_round(self, symbol: str, side: str, deficit_before_units: int, paid_units: int) -> int:
        """deficit −= paid; returns what is carried. Raises when more was paid than shared."""
        if paid_units < 0 or paid_units > deficit_before_units or self.deficit(symbol, side) < paid_units:
            raise SharingError(f"round of {symbol}/{side} paid {paid_units} of a deficit of {deficit_before_units}")
        self.deficits[(symbol, side)] = self.deficit(symbol, side) - paid_units
        return self.deficits[(symbol, side)]

    def start_repayment(self, ts: int) -> int:
        n = self.repay_rounds
        self.repay_rounds += 1
        self.last_repay_ts = ts
        return n

    def to_dict(self) -> dict[str, Any]:
        """JSON form; amounts as integer strings (sums of losses are not bounded by 64 bits)."""
        return {
            "deficits": [[s, d, str(v)] for (s, d), v in sorted(self.deficits.items())],
            "rounds": [[s, d, n] for (s, d), n in sorted(self.rounds.items())],
            "last_round_ts": [[s, d, t] for (s, d), t in sorted(self.last_round_ts.items())],
            "repay_rounds": self.repay_rounds,
            "last_repay_ts": self.last_repay_ts,
            "by_tick": [[s, d, [[q, str(v)] for q, v in sorted(t.items())]] for (s, d), t in sorted(self.by_tick.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DeficitBook":
        return cls(
            deficits={(s, d): int(v) for s, d, v in data["deficits"]},
            rounds={(s, d): n for s, d, n in data["rounds"]},
            last_round_ts={(s, d): t for s, d, t in data["last_round_ts"]},
            repay_rounds=data["repay_rounds"],
            last_repay_ts=data["last_repay_ts"],
            by_tick={(s, d): {q: int(v) for q, v in t} for s, d, t in data.get("by_tick", [])},
        )


# -------------------------------------------------------------------- events
def _transfer(params: Params, source: str, target: str, amount: str, reason: str) -> dict[str, Any]:
    """A transfer of ``amount`` (rendered at the quote scale, as the event's own amount field)."""
    return {"from": source, "to": target, "amount": amount, "asset": params.asset, "reason": reason}


def haircut_event(params: Params, *, round_id: str, ts: int, account_id: str, scope: str, symbol: str,
                  side: str, weight_units: int, amount_units: int, claim_after_units: int) -> dict[str, Any]:
    """One haircut: a balanced entry moving ``amount`` from the account to `socialized_loss`."""
    if not 0 < amount_units <= weight_units:
        raise SharingError(f"haircut of {amount_units} on a weight of {weight_units}")
    q = params.quote_decimals
    amount = format_units(amount_units, q)
    return {
        "type": "haircut",
        "schema_version": 1,
        "haircut_id": haircut_id(round_id, account_id, scope),
        "round_id": round_id,
        "ts": ts,
        "account_id": account_id,
        "scope": scope,
        "symbol": symbol,
        "side": side,
        "weight": format_units(weight_units, q),
        "amount": amount,
        "claim_after": format_units(claim_after_units, q),
        "params_version": params.params_version,
        "transfers": [_transfer(params, f"account:{account_id}", "socialized_loss", amount, "haircut")],
    }


# A haircut event as JSON text, built without the event's dicts (``pay_haircuts_rendered``). orjson
# (topics/codec.py ``encode``) writes a dict's keys in order with no spaces, an int in decimal and a
# string between quotes, escaping '"', '\\' and the control characters below 0x20 and copying every
# other character as UTF-8: so a string of printable ASCII without '"' or '\\' (``_plain``) is
# written as itself, and the text below is what encoding ``haircut_event`` gives (tests/test_sharing.py
# checks it against the encoder on generated strings). Anything else keeps the dict.
_JSON_INT_MIN: Final = -(1 << 63)  # orjson's integers: 64-bit signed or unsigned
_JSON_INT_END: Final = 1 << 64


def _plain(text: str) -> bool:
    """JSON writes ``text`` as itself between quotes: printable ASCII, no '"' or '\\'."""
    for char in text:
        code = ord(char)
        if code < 0x20 or code > 0x7E or code == 0x22 or code == 0x5C:
            return False
    return True


def _round_strings_plain(params: Params, round_id: str, ts: int, symbol: str, side: str) -> bool:
    """The strings every haircut event of a round shares are ``_plain`` (and its ts an integer JSON writes)."""
    return (_JSON_INT_MIN <= ts < _JSON_INT_END and _plain(round_id) and _plain(symbol) and _plain(side)
            and _plain(params.params_version) and _plain(params.asset))


def _haircut_text(params_version: str, asset: str, round_id: str, ts: int, account_id: str, scope: str,
                  symbol: str, side: str, weight: str, amount: str, claim_after: str) -> str:
    """``haircut_event``'s JSON, its strings all ``_plain`` (its keys and constant strings in the same order)."""
    return (f'{{"type":"haircut","schema_version":1,"haircut_id":"{haircut_id(round_id, account_id, scope)}",'
            f'"round_id":"{round_id}","ts":{ts},"account_id":"{account_id}","scope":"{scope}",'
            f'"symbol":"{symbol}","side":"{side}","weight":"{weight}","amount":"{amount}",'
            f'"claim_after":"{claim_after}","params_version":"{params_version}","transfers":[{{'
            f'"from":"account:{account_id}","to":"socialized_loss","amount":"{amount}","asset":"{asset}",'
            f'"reason":"haircut"}}]}}')


def haircut_text(params: Params, *, round_id: str, ts: int, account_id: str, scope: str, symbol: str,
                 side: str, weight_units: int, amount_units: int, claim_after_units: int) -> str | None:
    """``haircut_event`` as the JSON text encoding it gives, built without it; None when one of
    its strings is not ``_plain`` (JSON would escape it: encode the event)."""
    if not (_round_strings_plain(params, round_id, ts, symbol, side) and _plain(account_id) and _plain(scope)):
        return None
    if not 0 < amount_units <= weight_units:
        raise SharingError(f"haircut of {amount_units} on a weight of {weight_units}")
    q = params.quote_decimals
    return _haircut_text(params.params_version, params.asset, round_id, ts, account_id, scope, symbol, side,
                         format_units(weight_units, q), format_units(amount_units, q),
                         format_units(claim_after_units, q))


def haircut_round_event(params: Params, *, round_id: str, ts: int, symbol: str, loss_side: str, mark_seq: int,
                        mark_ticks: int, deficit_before_units: int, eligible_weight_units: int,
                        shared_units: int, paid_units: int, carried_units: int, haircuts: int) -> dict[str, Any]:
    # conservation of the round: paid ≤ shared = min(deficit, W); carried = deficit − paid
    if not (0 <= paid_units <= shared_units == shared_amount(deficit_before_units, eligible_weight_units)
            and carried_units == deficit_before_units - paid_units):
        raise SharingError(f"haircut round {round_id} does not conserve")
    q = params.quote_decimals
    return {
        "type": "haircut_round",
        "schema_version": 1,
        "round_id": round_id,
        "ts": ts,
        "symbol": symbol,
        "loss_side": loss_side,
        "mark_seq": mark_seq,
        "mark_price": format_units(mark_ticks, params.symbols[symbol].price_decimals),
        "deficit_before": format_units(deficit_before_units, q),
        "eligible_weight": format_units(eligible_weight_units, q),
        "shared": format_units(shared_units, q),
        "paid": format_units(paid_units, q),
        "carried": format_units(carried_units, q),
        "haircuts": haircuts,
        "params_version": params.params_version,
    }


def claim_repayment_event(params: Params, *, round_id: str, ts: int, account_id: str, claim_before_units: int,
                          amount_units: int) -> dict[str, Any]:
    if not 0 < amount_units <= claim_before_units:
        raise SharingError(f"repayment of {amount_units} on a claim of {claim_before_units}")
    q = params.quote_decimals
    amount = format_units(amount_units, q)
    return {
        "type": "claim_repayment",
        "schema_version": 1,
        "repayment_id": repayment_id(round_id, account_id),
        "round_id": round_id,
        "ts": ts,
        "account_id": account_id,
        "claim_before": format_units(claim_before_units, q),
        "amount": amount,
        "claim_after": format_units(claim_before_units - amount_units, q),
        "params_version": params.params_version,
        "transfers": [_transfer(params, "insurance_fund", f"account:{account_id}", amount, "claim_repayment")],
    }


def repayment_round_event(params: Params, *, round_id: str, ts: int, balance_before_units: int,
                          claims_before_units: int, budget_units: int, paid_units: int,
                          claimants: int) -> dict[str, Any]:
    assert params.repay_above_units is not None
    if not (0 <= paid_units <= budget_units == repayment_budget(balance_before_units, params.repay_above_units,
                                                                claims_before_units)):
        raise SharingError(f"repayment round {round_id} does not conserve")
    q = params.quote_decimals
    return {
        "type": "repayment_round",
        "schema_version": 1,
        "round_id": round_id,
        "ts": ts,
        "asset": params.asset,
        "balance_before": format_units(balance_before_units, q),
        "repay_above": format_units(params.repay_above_units, q),
        "claims_before": format_units(claims_before_units, q),
        "budget": format_units(budget_units, q),
        "paid": format_units(paid_units, q),
        "claimants": claimants,
        "params_version": params.params_version,
    }


def round_fund_entry(params: Params, *, ts: int, delta_units: int, balance_after_units: int, reason: str,
                     round_id: str) -> dict[str, Any]:
    """An `insurance_fund_entry` of a repayment round (−B, then +residue): it names the round."""
    q = params.quote_decimals
    return {
        "type": "insurance_fund_entry",
        "schema_version": 1,
        "ts": ts,
        "asset": params.asset,
        "delta": format_units(delta_units, q),
        "balance_after": format_units(balance_after_units, q),
        "reason": reason,
        "round_id": round_id,
    }


def tick_marker(at: str, symbol: str, seq: int, ts: int, mark_ticks: int, usable: bool = True) -> dict[str, Any]:
    """A `fund_request` item that tells the fund's coordinator where a tick's own liquidation
    items begin and end (streaming): what it holds before "begin" is "before the tick was
    applied" (SPEC §5.1), and rounds start at "end", after the tick's liquidations."""
    return {"kind": "tick", "at": at, "symbol": symbol, "seq": seq, "ts": ts, "mark": mark_ticks, "usable": usable}


# ------------------------------------------------- partition side (accounts)
# These read and change the accounts of one engine (replay: all of them; streaming: the
# partitions a worker owns). ``accounts`` maps account_id → AccountState (worker/core/engine.py).
Winner = tuple[str, str, int]  # (account_id, scope, w)


def winners(params: Params, accounts: dict[str, Any], symbol: str, loss_side: str, mark_ticks: int) -> list[Winner]:
    """The round's snapshot: every open position on ``symbol`` opposite to ``loss_side`` with
    w = floor(q · (P − E)) > 0, cross or isolated, in ascending (account_id, scope)."""
    sym = params.symbols[symbol]
    found: list[Winner] = []
    for account_id, account in accounts.items():
        position = account.position_of(symbol)
        if position is None:
            continue
        weight = winning_weight(sym, loss_side, position.size_lots, position.entry_ticks, mark_ticks)
        if weight > 0:
            found.append((account_id, symbol if position.isolated else "cross", weight))
    found.sort()
    return found


def snapshot_rows_by_partition(params: Params, accounts: dict[str, Any], kind: str, symbol: str | None,
                               loss_side: str | None, mark_ticks: int | None,
                               partition_of: dict[str, int]) -> dict[int, list[list[Any]]]:
    """A round's snapshot rows by positions partition (``partition_of``: account → partition), each
    partition's ascending: the winners [account, scope, w] of a haircut round (``winners``), or the
    claimants [account, c] of a repayment round (``claimants``); amounts as decimal strings, as the
    snapshot's changelog records hold them. (Compiled: a round's 100 000 rows were an interpreted loop.)"""
    everyone: list[list[Any]]
    if kind == "haircut":
        assert symbol is not None and loss_side is not None and mark_ticks is not None
        everyone = [[account_id, scope, str(weight)]
                    for account_id, scope, weight in winners(params, accounts, symbol, loss_side, mark_ticks)]
    else:
        everyone = [[account_id, str(claim)] for account_id, claim in claimants(accounts)]
    found: dict[int, list[list[Any]]] = {}
    for row in everyone:
        partition = partition_of[row[0]]
        rows = found.get(partition)
        if rows is None:
            rows = found[partition] = []
        rows.append(row)
    return found


def snapshot_total(rows: list[list[Any]]) -> int:
    """Σ w (or Σ c) of snapshot rows: the integer of each row's last field."""
    total = 0
    for row in rows:
        total += int(row[-1])
    return total


PaidHaircut = tuple[str, str, int, int, int]  # (account_id, scope, w, h, claim after)


def _pay_haircuts(accounts: dict[str, Any], snapshot: list[Winner], round_id: str, shared_units: int,
                  total_weight_units: int, dirty: set[str]) -> tuple[list[PaidHaircut], int]:
    """The haircuts of ``pay_haircuts`` before their events: [(account, scope, w, h, claim after)], Σ h."""
    paid_haircuts: list[PaidHaircut] = []
    paid = 0
    for account_id, scope, weight in snapshot:
        amount = pro_rata_floor(shared_units, weight, total_weight_units)
        if amount <= 0:
            continue
        if amount > weight:  # h ≤ w: never more than the position's own unrealized profit
            raise SharingError(f"haircut of {amount} on a weight of {weight}")
        account = accounts[account_id]
        done = account.rounds.get(round_id)
        if done is None:
            account.claim_units += amount
            done = account.rounds[round_id] = [str(amount), str(account.claim_units)]
            dirty.add(account_id)
        elif int(done[0]) != amount:
            raise SharingError(f"{account_id} was paid {done[0]} in round {round_id}, now {amount}")
        paid += amount
        paid_haircuts.append((account_id, scope, weight, amount, int(done[1])))
    if paid > shared_units:
        raise SharingError(f"round {round_id} paid {paid} of {shared_units}")
    return paid_haircuts, paid


def pay_haircuts(params: Params, accounts: dict[str, Any], snapshot: list[Winner], *, round_id: str, ts: int,
                 symbol: str, loss_side: str, shared_units: int, total_weight_units: int,
                 dirty: set[str]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """h = floor(A · w / W) for each winner of the snapshot; each haircut adds to its account's
    claim. Idempotent: an account remembers [h, claim after] under the round's id until the
    round is done, so paying again (a takeover) changes nothing and rebuilds identical events.
    Returns ([(account_id, haircut event)], Σ h); zero haircuts are left out."""
    side = "short" if loss_side == "long" else "long"
    paid_haircuts, paid = _pay_haircuts(accounts, snapshot, round_id, shared_units, total_weight_units, dirty)
    return [(account_id, haircut_event(
        params, round_id=round_id, ts=ts, account_id=account_id, scope=scope, symbol=symbol, side=side,
        weight_units=weight, amount_units=amount, claim_after_units=claim_after))
        for account_id, scope, weight, amount, claim_after in paid_haircuts], paid


def pay_haircuts_rendered(params: Params, accounts: dict[str, Any], snapshot: list[Winner], *, round_id: str,
                          ts: int, symbol: str, loss_side: str, shared_units: int, total_weight_units: int,
                          dirty: set[str]) -> tuple[list[tuple[str, Any]], int]:
    """``pay_haircuts`` (the same haircuts, claims and checks) with each event as the JSON text
    ``haircut_text`` renders for it, byte for byte what encoding the event would give, without
    building it: a streaming round's 100 000 events as dicts, their encoding and their freeing
    were ~25 % of the worker's work in a round (docs/benchmarks.md). An event with a string
    that JSON would escape stays a dict (``haircut_event``), for the caller to encode."""
    side = "short" if loss_side == "long" else "long"
    paid_haircuts, paid = _pay_haircuts(accounts, snapshot, round_id, shared_units, total_weight_units, dirty)
    q = params.quote_decimals
    constant = _round_strings_plain(params, round_id, ts, symbol, side)
    events: list[tuple[str, Any]] = []
    for account_id, scope, weight, amount, claim_after in paid_haircuts:
        if constant and _plain(account_id) and _plain(scope):
            events.append((account_id, _haircut_text(
                params.params_version, params.asset, round_id, ts, account_id, scope, symbol, side,
                format_units(weight, q), format_units(amount, q), format_units(claim_after, q))))
        else:
            events.append((account_id, haircut_event(
                params, round_id=round_id, ts=ts, account_id=account_id, scope=scope, symbol=symbol, side=side,
                weight_units=weight, amount_units=amount, claim_after_units=claim_after)))
    return events, paid


def claimants(accounts: dict[str, Any]) -> list[tuple[str, int]]:
    """Accounts with an outstanding claim, ascending by account_id."""
    return sorted((account_id, a.claim_units) for account_id, a in accounts.items() if a.claim_units > 0)


def pay_repayments(params: Params, accounts: dict[str, Any], snapshot: list[tuple[str, int]], *, round_id: str,
                   ts: int, budget_units: int, claims_total_units: int,
                   dirty: set[str]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """r = floor(B · c / C) for each claimant of the snapshot, off its claim; idempotent like
    ``pay_haircuts`` (the account remembers [r, claim before])."""
    events: list[tuple[str, dict[str, Any]]] = []
    paid = 0
    for account_id, claim in snapshot:
        amount = pro_rata_floor(budget_units, claim, claims_total_units)
        if amount <= 0:
            continue
        account = accounts[account_id]
        done = account.rounds.get(round_id)
        if done is None:
            if account.claim_units < amount:
                raise SharingError(f"repayment of {amount} exceeds {account_id}'s claim of {account.claim_units}")
            done = account.rounds[round_id] = [str(amount), str(account.claim_units)]
            account.claim_units -= amount
            dirty.add(account_id)
        elif int(done[0]) != amount:
            raise SharingError(f"{account_id} was repaid {done[0]} in round {round_id}, now {amount}")
        paid += amount
        events.append((account_id, claim_repayment_event(
            params, round_id=round_id, ts=ts, account_id=account_id, claim_before_units=int(done[1]),
            amount_units=amount)))
    if paid > budget_units:
        raise SharingError(f"repayment round {round_id} paid {paid} of {budget_units}")
    return events, paid


def forget_round(accounts: dict[str, Any], account_ids: Any, round_id: str, dirty: set[str]) -> None:
    """A round is done: its accounts no longer need to remember what it paid them."""
    for account_id in account_ids:
        account = accounts.get(account_id)
        if account is not None and account.forget_round(round_id):
            dirty.add(account_id)


def round_memory_rows(accounts: dict[str, Any], round_id: str, account_ids: list[str]) -> list[list[str]]:
    """[account, amount, claim figure] of each of ``account_ids`` (paid in round ``round_id``) as the
    round's memory in it holds them (``pay_haircuts``: [h, claim after]; ``pay_repayments``: [r, claim
    before]): streaming's durable record of a pay chunk (``restore_round_claims``)."""
    rows: list[list[str]] = []
    for account_id in account_ids:
        done = accounts[account_id].round_memory(round_id)
        if done is None:
            raise SharingError(f"{account_id} has no memory of round {round_id}")
        rows.append([account_id, done[0], done[1]])
    return rows


def restore_round_claims(accounts: dict[str, Any], round_id: str, kind: str, rows: list[list[str]]) -> int:
    """Apply again, to accounts recovered without it, what a pay chunk of round ``round_id`` did
    (``round_memory_rows``): each account that does not remember the round gets its memory back and
    its claim moved, +h (``kind`` "haircut") or −r (a repayment). An account that remembers it
    already holds it (written since, or never lost). Every account named must be there. Returns how
    many were restored; all or nothing (SharingError, nothing applied, if a repayment would take a
    claim below 0). Claims add up in any order, but a repayment checks the claim it comes off: apply
    every haircut chunk before any repayment chunk (the claims are then never below their end)."""
    sign = 1 if kind == "haircut" else -1
    apply: list[tuple[Any, int, list[str]]] = []
    for account_id, amount_text, figure in rows:
        account = accounts[account_id]
        if account.round_memory(round_id) is not None:
            continue
        amount = int(amount_text)
        if sign < 0 and account.claim_units < amount:
            raise SharingError(f"restoring round {round_id}: {account_id} repaid {amount} of a claim of "
                               f"{account.claim_units}")
        apply.append((account, amount, [amount_text, figure]))
    for account, amount, memory in apply:
        account.claim_units += sign * amount
        account.rounds[round_id] = memory
    return len(apply)


def forget_rounds_except(accounts: dict[str, Any], live: set[str]) -> int:
    """Drop every round memory but those of rounds in ``live`` (rounds whose snapshot is still kept):
    a record written during a round's sweep keeps the memory (worker/rounds.py), and nothing but a
    later write drops it. Returns how many accounts changed (in memory only: nothing to write)."""
    changed = 0
    for account in accounts.values():
        stale = [round_id for round_id in account.remembered_rounds() if round_id not in live]
        for round_id in stale:
            account.forget_round(round_id)
        changed += 1 if stale else 0
    return changed


# ------------------------------------------------------- one process (replay)
def rounds_due(params: Params, book: DeficitBook, claims_units: int, fund_balance_units: int, symbol: str,
               ts: int, seq: int | None = None) -> tuple[list[str], bool]:
    """Before tick ``ts`` of ``symbol`` is applied: the loss sides whose round runs after it, and
    whether a repayment round does (SPEC §5.1, §5.2). Only in mode "haircut". ``seq`` (streaming):
    the tick's seq, so that its own losses do not count as before it (DeficitBook.deficit_before)."""
    if params.loss_sharing_mode != "haircut":
        return [], False
    interval = params.round_interval_ms
    sides = [side for side in SIDES if book.round_due(symbol, side, ts, interval, seq)]
    repay = (params.repay_above_units is not None and fund_balance_units > params.repay_above_units
             and claims_units > 0 and book.repay_due(ts, interval))
    return sides, repay


def run_rounds_locally(params: Params, book: DeficitBook, accounts: dict[str, Any], fund: Any, dirty: set[str], *,
                       symbol: str, mark_seq: int, mark_ticks: int, ts: int, sides: list[str],
                       repay: bool) -> tuple[list[Output], int]:
    """Replay: every phase of the due rounds at once, after the tick's liquidations (SPEC §7).
    The streaming coordinator runs the same steps across partitions (worker/stream/rounds.py).
    Returns the events and the change of Σ claims (haircuts paid − repaid)."""
    out: list[Output] = []
    claims_delta = 0
    for side in sides:
        deficit = book.deficit(symbol, side)
        round_id = haircut_round_id(symbol, side, book.start_round(symbol, side, ts))
        snapshot = winners(params, accounts, symbol, side, mark_ticks)
        total = sum(w for _, _, w in snapshot)
        shared = shared_amount(deficit, total)
        events, paid = pay_haircuts(params, accounts, snapshot, round_id=round_id, ts=ts, symbol=symbol,
                                    loss_side=side, shared_units=shared, total_weight_units=total, dirty=dirty)
        carried = book.settle_round(symbol, side, deficit, paid)
        forget_round(accounts, (a for a, _, _ in snapshot), round_id, dirty)
        claims_delta += paid
        out.extend(Output("loss-sharing", account_id, event) for account_id, event in events)
        out.append(Output("loss-sharing", symbol, haircut_round_event(
            params, round_id=round_id, ts=ts, symbol=symbol, loss_side=side, mark_seq=mark_seq,
            mark_ticks=mark_ticks, deficit_before_units=deficit, eligible_weight_units=total, shared_units=shared,
            paid_units=paid, carried_units=carried, haircuts=len(events)), (paid,)))
    if repay:
        outputs, repaid = repayment_round_locally(params, book, accounts, fund, dirty, ts=ts)
        out.extend(outputs)
        claims_delta -= repaid
    return out, claims_delta


def repayment_round_locally(params: Params, book: DeficitBook, accounts: dict[str, Any], fund: Any,
                            dirty: set[str], *, ts: int) -> tuple[list[Output], int]:
    assert params.repay_above_units is not None
    round_id = repayment_round_id(params.asset, book.start_repayment(ts))
    snapshot = claimants(accounts)
    total = sum(c for _, c in snapshot)
    balance_before = fund.balance_units
    budget = repayment_budget(balance_before, params.repay_above_units, total)
    out: list[Output] = []
    if budget:
        out.append(Output("insurance-fund", params.asset, round_fund_entry(
            params, ts=ts, delta_units=-budget, balance_after_units=fund.debit(budget), reason="claim_repayment",
            round_id=round_id)))
    events, paid = pay_repayments(params, accounts, snapshot, round_id=round_id, ts=ts, budget_units=budget,
                                  claims_total_units=total, dirty=dirty)
    forget_round(accounts, (a for a, _ in snapshot), round_id, dirty)
    out.extend(Output("loss-sharing", account_id, event) for account_id, event in events)
    if budget - paid:
        out.append(Output("insurance-fund", params.asset, round_fund_entry(
            params, ts=ts, delta_units=budget - paid, balance_after_units=fund.credit(budget - paid),
            reason="repayment_residue", round_id=round_id)))
    out.append(Output("loss-sharing", params.asset, repayment_round_event(
        params, round_id=round_id, ts=ts, balance_before_units=balance_before, claims_before_units=total,
        budget_units=budget, paid_units=paid, claimants=len(events)), (paid,)))
    return out, paid
