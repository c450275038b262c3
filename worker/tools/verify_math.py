"""The rules of SPEC §2–§5.2 written out again for ``verify``, apart from the engine's code.

Nothing here is imported from ``worker/core/{margin,liquidation,fund,sharing,engine}.py``: only the
parameter loader (``worker/core/params.py``) and the decimal parser (``worker/core/fixed.py``) are
shared. The bracket offsets (§3.1) and the value of one lot·tick are recomputed here from the raw
parameters rather than taken from the loader's derived fields, so that a slip in either would show.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.core.params import Params, SymbolParams

PPM = 10**6
RATIO_LIMIT_PPM = 10**18 - 1  # margin-call ratio saturation (docs/methodology.md, "Bad input")


def fdiv(a: int, b: int) -> int:
    """floor(a / b), b > 0."""
    return a // b


def cdiv(a: int, b: int) -> int:
    """ceil(a / b), b > 0."""
    return -((-a) // b)


def sha32(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Tier:
    max_notional: int | None
    mmr_ppm: int
    cum: int


class Sym:
    """One symbol's arithmetic: quote value of lots × ticks, brackets, penalty, slippage."""

    def __init__(self, sym: SymbolParams, quote_decimals: int) -> None:
        self.name = sym.symbol
        self.price_decimals = sym.price_decimals
        self.size_decimals = sym.size_decimals
        # 1 lot × 1 tick = 10^quote / 10^(price + size) quote units
        shift = quote_decimals - sym.price_decimals - sym.size_decimals
        self.num, self.den = (10**shift, 1) if shift >= 0 else (1, 10**-shift)
        tiers: list[Tier] = []
        cum = 0
        for index, bracket in enumerate(sym.brackets):
            if index:  # cum_k = cum_{k−1} + floor(max_{k−1} · (mmr_k − mmr_{k−1}) / 10^6)
                previous = tiers[-1]
                assert previous.max_notional is not None
                cum += fdiv(previous.max_notional * (bracket.mmr_ppm - previous.mmr_ppm), PPM)
            tiers.append(Tier(bracket.max_notional_units, bracket.mmr_ppm, cum))
        self.tiers = tuple(tiers)
        self.model = sym.penalty_model
        self.min_ppm = sym.penalty_min_ppm
        self.max_ppm = sym.penalty_max_ppm
        self.slippage_ppm = sym.slippage_ppm
        self.min_notional = sym.min_notional_units

    # values of lots × ticks in quote units
    def vfloor(self, lots: int, ticks: int) -> int:
        return fdiv(lots * ticks * self.num, self.den)

    def vceil(self, lots: int, ticks: int) -> int:
        return cdiv(lots * ticks * self.num, self.den)

    def upnl(self, signed_lots: int, entry: int, price: int) -> int:
        """U = floor(q · (P − E))."""
        return self.vfloor(signed_lots, price - entry)

    def notional(self, lots: int, price: int) -> int:
        """N = ceil(|q| · P)."""
        return self.vceil(abs(lots), price)

    def maintenance(self, lots: int, price: int) -> int:
        """MM_i = ceil(N · mmr / 10^6) − cum of the first bracket with N ≤ max (§3, §3.1); 0 when flat."""
        if lots == 0:
            return 0
        n = self.notional(lots, price)
        tier = next((t for t in self.tiers if t.max_notional is None or n <= t.max_notional), self.tiers[-1])
        return cdiv(n * tier.mmr_ppm, PPM) - tier.cum

    def execution(self, long: bool, mark: int) -> int:
        """X: long floor(P·(10^6 − slip)/10^6), short ceil(P·(10^6 + slip)/10^6)   (§4.2)."""
        if long:
            return fdiv(mark * (PPM - self.slippage_ppm), PPM)
        return cdiv(mark * (PPM + self.slippage_ppm), PPM)

    def recovery(self, long: bool, mark: int, execution: int) -> int:
        """long floor(X·10^6/P), short floor(P·10^6/X)   (methodology)."""
        return fdiv(execution * PPM, mark) if long else fdiv(mark * PPM, execution)

    def rate(self, severity_ppm: int) -> int:
        """flat → min; severity → min + floor((max − min) · sev / 10^6)   (§4.1)."""
        if self.model == "flat":
            return self.min_ppm
        return self.min_ppm + fdiv((self.max_ppm - self.min_ppm) * severity_ppm, PPM)


def symbols_of(params: Params) -> dict[str, Sym]:
    return {name: Sym(sym, params.quote_decimals) for name, sym in params.symbols.items()}


def severity(equity: int, maintenance: int) -> int:
    """clamp(floor((MM − EQ) · 10^6 / MM), 0, 10^6)   (§3.3)."""
    if maintenance <= 0:
        return 0
    return min(max(fdiv((maintenance - equity) * PPM, maintenance), 0), PPM)


def bar_level(maintenance: int, buffer_ppm: int) -> int:
    """ceil(MM · (10^6 + buffer) / 10^6)   (§4.6)."""
    return cdiv(maintenance * (PPM + buffer_ppm), PPM)


def call_level(maintenance: int, call_ratio_ppm: int) -> int:
    return cdiv(maintenance * call_ratio_ppm, PPM)


def ratio_ppm(equity: int, maintenance: int) -> int | None:
    if maintenance <= 0:
        return None
    return max(-RATIO_LIMIT_PPM, min(RATIO_LIMIT_PPM, fdiv(equity * PPM, maintenance)))


def split(penalty: int, liquidator_ppm: int, protocol_ppm: int) -> tuple[int, int, int]:
    """(liquidator, protocol, insurance fund): floors, the fund takes the rest   (§4.7)."""
    liquidator = fdiv(penalty * liquidator_ppm, PPM)
    protocol = fdiv(penalty * protocol_ppm, PPM)
    return liquidator, protocol, penalty - liquidator - protocol


def attribute_loss(social: int, closes: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """A socialized loss over the closes (symbol, side, realized): pro rata to each realized loss
    (floor), the residue to the largest loss (ties: the earlier close); no loss → all to the first
    close. Zero shares left out   (§5)."""
    if social <= 0 or not closes:
        return []
    losses = [max(0, -realized) for _, _, realized in closes]
    total = sum(losses)
    if total == 0:
        return [(closes[0][0], closes[0][1], social)]
    shares = [fdiv(social * loss, total) for loss in losses]
    largest = 0
    for index, loss in enumerate(losses):
        if loss > losses[largest]:
            largest = index
    shares[largest] += social - sum(shares)
    return [(symbol, side, share) for (symbol, side, _), share in zip(closes, shares) if share > 0]


# ----------------------------------------------------------------------------------- identifiers
def liquidation_id(account_id: str, scope: str, seq: int, n: int) -> str:
    return sha32(f"{account_id}|{scope}|{seq}|{n}")


def haircut_round_id(symbol: str, loss_side: str, n: int) -> str:
    return sha32(f"haircut|{symbol}|{loss_side}|{n}")


def haircut_id(round_id: str, account_id: str, scope: str) -> str:
    return sha32(f"{round_id}|{account_id}|{scope}")


def repayment_round_id(asset: str, n: int) -> str:
    return sha32(f"repay|{asset}|{n}")


def repayment_id(round_id: str, account_id: str) -> str:
    return sha32(f"{round_id}|{account_id}")
