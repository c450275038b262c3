"""Parameters (SPEC §9): one TOML file, validated at start, hashed into ``params_version``."""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from .fixed import PPM, DecimalFormatError, parse_decimal


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Bracket:
    """One maintenance tier: notional up to ``max_notional_units`` (None = no maximum)."""

    max_notional_units: int | None
    mmr_ppm: int
    cum_units: int  # offset keeping MM continuous across tiers (SPEC §3.1)


@dataclass(frozen=True, slots=True)
class SymbolParams:
    symbol: str
    price_decimals: int
    size_decimals: int
    brackets: tuple[Bracket, ...]
    penalty_model: str  # "flat" | "severity"
    penalty_min_ppm: int
    penalty_max_ppm: int
    min_notional_units: int
    slippage_ppm: int
    # value of (lots · price ticks) in quote units is lots·ticks·value_num/value_den
    value_num: int
    value_den: int

    @property
    def max_mmr_ppm(self) -> int:
        return self.brackets[-1].mmr_ppm


@dataclass(frozen=True, slots=True)
class Params:
    params_version: str
    asset: str
    quote_decimals: int
    insurance_initial_units: int
    insurance_floor_units: int
    call_ratio_ppm: int
    pending_timeout_ms: int
    max_mark_age_ms: int
    max_jump_ppm: int
    snapshot_interval_ms: int
    liquidation_mode: str  # "partial" | "full"
    buffer_ppm: int
    liquidator_ppm: int
    protocol_ppm: int
    symbols: dict[str, SymbolParams]
    loss_sharing_mode: str = "record"  # "record" | "haircut" (SPEC §5.1)
    repay_above_units: int | None = None  # claims are repaid from the fund above this (§5.2); None = never
    round_interval_ms: int = 1_000  # at most one round per (symbol, side), and one repayment round, per interval


_DEFAULTS: dict[str, dict[str, Any]] = {
    "settlement": {"asset": "USD", "decimals": 6},
    "insurance_fund": {"initial_balance": "0", "floor": "0"},
    "engine": {
        "call_ratio_ppm": 1_500_000,
        "pending_timeout_ms": 30_000,
        "max_mark_age_ms": 5_000,
        "max_jump_ppm": 0,
        "snapshot_interval_ms": 10_000,
    },
    "liquidation": {"mode": "partial", "buffer_ppm": 20_000},
    "split": {"liquidator_ppm": 500_000, "protocol_ppm": 0},
    "loss_sharing": {"mode": "record", "repay_above": "", "round_interval_ms": 1_000},
}
_SYMBOL_KEYS = {"price_decimals", "size_decimals", "brackets", "penalty", "min_notional", "slippage_ppm"}


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        raise ParamsError(f"{name}: expected a table")
    unknown = sorted(set(raw) - set(_DEFAULTS[name]))
    if unknown:
        raise ParamsError(f"{name}.{unknown[0]}: unknown key")
    return {**_DEFAULTS[name], **raw}


def _int(value: Any, key: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ParamsError(f"{key}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ParamsError(f"{key}: {value} is outside {bound}")
    return value


def _units(value: Any, key: str, decimals: int, allow_negative: bool = False) -> int:
    try:
        units = parse_decimal(value, decimals)
    except DecimalFormatError as exc:
        raise ParamsError(f"{key}: {exc} (decimal string at {decimals} decimals)") from None
    if units < 0 and not allow_negative:
        raise ParamsError(f"{key}: must not be negative")
    return units


def _brackets(raw: Any, key: str, quote_decimals: int) -> tuple[Bracket, ...]:
    if not isinstance(raw, list) or not raw:
        raise ParamsError(f"{key}: expected a non-empty array of tables")
    brackets: list[Bracket] = []
    previous_max: int | None = None
    previous_mmr = 0
    cum_units = 0
    for index, tier in enumerate(raw):
        tier_key = f"{key}[{index}]"
        if not isinstance(tier, dict):
            raise ParamsError(f"{tier_key}: expected a table")
        unknown = sorted(set(tier) - {"max_notional", "mmr_ppm"})
        if unknown:
            raise ParamsError(f"{tier_key}.{unknown[0]}: unknown key")
        mmr_ppm = _int(tier.get("mmr_ppm"), f"{tier_key}.mmr_ppm", 0, PPM)
        is_last = index == len(raw) - 1
        if is_last:
            if "max_notional" in tier:
                raise ParamsError(f"{tier_key}.max_notional: the last bracket has no maximum")
            max_units = None
        else:
            if "max_notional" not in tier:
                raise ParamsError(f"{tier_key}.max_notional: required on every bracket but the last")
            max_units = _units(tier["max_notional"], f"{tier_key}.max_notional", quote_decimals)
            if max_units <= 0 or (previous_max is not None and max_units <= previous_max):
                raise ParamsError(f"{tier_key}.max_notional: brackets must be sorted by strictly rising max_notional")
        if index > 0:
            if mmr_ppm < previous_mmr:
                raise ParamsError(f"{tier_key}.mmr_ppm: must not fall below the previous bracket's")
            # cum_k = cum_{k-1} + floor(max_notional_{k-1} · (mmr_k − mmr_{k-1}) / 10^6)   (SPEC §3.1)
            assert previous_max is not None
            cum_units += (previous_max * (mmr_ppm - previous_mmr)) // PPM
        brackets.append(Bracket(max_units, mmr_ppm, cum_units))
        previous_max, previous_mmr = max_units, mmr_ppm
    return tuple(brackets)


def _symbol(name: str, raw: Any, quote_decimals: int) -> SymbolParams:
    key = f"symbols.{name}"
    if not isinstance(raw, dict):
        raise ParamsError(f"{key}: expected a table")
    unknown = sorted(set(raw) - _SYMBOL_KEYS)
    if unknown:
        raise ParamsError(f"{key}.{unknown[0]}: unknown key")
    for required in ("price_decimals", "size_decimals", "brackets"):
        if required not in raw:
            raise ParamsError(f"{key}.{required}: required")
    price_decimals = _int(raw["price_decimals"], f"{key}.price_decimals", 0, 18)
    size_decimals = _int(raw["size_decimals"], f"{key}.size_decimals", 0, 18)
    brackets = _brackets(raw["brackets"], f"{key}.brackets", quote_decimals)
    penalty = raw.get("penalty", {"model": "flat", "min_ppm": 0, "max_ppm": 0})
    if not isinstance(penalty, dict):
        raise ParamsError(f"{key}.penalty: expected a table")
    unknown = sorted(set(penalty) - {"model", "min_ppm", "max_ppm"})
    if unknown:
        raise ParamsError(f"{key}.penalty.{unknown[0]}: unknown key")
    model = penalty.get("model", "flat")
    if model not in ("flat", "severity"):
        raise ParamsError(f"{key}.penalty.model: expected 'flat' or 'severity', got {model!r}")
    min_ppm = _int(penalty.get("min_ppm", 0), f"{key}.penalty.min_ppm", 0, PPM)
    max_ppm = _int(penalty.get("max_ppm", min_ppm if model == "flat" else 0), f"{key}.penalty.max_ppm", 0, PPM)
    if max_ppm < min_ppm:
        raise ParamsError(f"{key}.penalty.max_ppm: {max_ppm} is below min_ppm {min_ppm}")
    # quote units of (1 lot × 1 tick) = 10^quote_decimals / 10^(price_decimals + size_decimals)
    shift = quote_decimals - price_decimals - size_decimals
    value_num, value_den = (10**shift, 1) if shift >= 0 else (1, 10**-shift)
    return SymbolParams(
        symbol=name,
        price_decimals=price_decimals,
        size_decimals=size_decimals,
        brackets=brackets,
        penalty_model=model,
        penalty_min_ppm=min_ppm,
        penalty_max_ppm=max_ppm,
        min_notional_units=_units(raw.get("min_notional", "0"), f"{key}.min_notional", quote_decimals),
        slippage_ppm=_int(raw.get("slippage_ppm", 0), f"{key}.slippage_ppm", 0, PPM - 1),
        value_num=value_num,
        value_den=value_den,
    )


def parse_params(data: bytes) -> Params:
    """Validate a TOML parameter document; raise ParamsError naming the offending key."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ParamsError(f"not a TOML document: {exc}") from None
    unknown = sorted(set(doc) - set(_DEFAULTS) - {"symbols"})
    if unknown:
        raise ParamsError(f"{unknown[0]}: unknown key")
    settlement = _section(doc, "settlement")
    fund = _section(doc, "insurance_fund")
    engine = _section(doc, "engine")
    liquidation = _section(doc, "liquidation")
    split = _section(doc, "split")
    sharing = _section(doc, "loss_sharing")

    asset = settlement["asset"]
    if not isinstance(asset, str) or not asset:
        raise ParamsError("settlement.asset: expected a non-empty string")
    quote_decimals = _int(settlement["decimals"], "settlement.decimals", 0, 18)
    mode = liquidation["mode"]
    if mode not in ("partial", "full"):
        raise ParamsError(f"liquidation.mode: expected 'partial' or 'full', got {mode!r}")
    buffer_ppm = _int(liquidation["buffer_ppm"], "liquidation.buffer_ppm", 0, 10 * PPM)
    liquidator_ppm = _int(split["liquidator_ppm"], "split.liquidator_ppm", 0, PPM)
    protocol_ppm = _int(split["protocol_ppm"], "split.protocol_ppm", 0, PPM)
    if liquidator_ppm + protocol_ppm > PPM:
        raise ParamsError("split.protocol_ppm: liquidator_ppm + protocol_ppm exceeds 1000000")

    raw_symbols = doc.get("symbols")
    if not isinstance(raw_symbols, dict) or not raw_symbols:
        raise ParamsError("symbols: at least one [symbols.<name>] table is required")
    symbols = {name: _symbol(name, raw, quote_decimals) for name, raw in sorted(raw_symbols.items())}
    if mode == "partial":
        for name, sym in symbols.items():
            # lowest mmr · (10^6 + buffer) / 10^6 > max penalty + slippage   (SPEC §4.6)
            worst_rate_ppm = max(sym.penalty_min_ppm, sym.penalty_max_ppm) + sym.slippage_ppm
            if sym.brackets[0].mmr_ppm * (PPM + buffer_ppm) <= worst_rate_ppm * PPM:
                raise ParamsError(
                    f"symbols.{name}.brackets[0].mmr_ppm: partial mode needs lowest mmr · (1 + buffer) "
                    f"> penalty.max_ppm + slippage_ppm ({worst_rate_ppm} ppm)"
                )

    floor_units = _units(fund["floor"], "insurance_fund.floor", quote_decimals)
    initial_units = _units(fund["initial_balance"], "insurance_fund.initial_balance", quote_decimals)
    # a fund may start below its floor (SPEC §5): it pays no cover until its balance rises above it
    sharing_mode = sharing["mode"]
    if sharing_mode not in ("record", "haircut"):
        raise ParamsError(f"loss_sharing.mode: expected 'record' or 'haircut', got {sharing_mode!r}")
    repay_above_units = None
    if sharing["repay_above"] != "":
        repay_above_units = _units(sharing["repay_above"], "loss_sharing.repay_above", quote_decimals)
        if repay_above_units < floor_units:
            raise ParamsError("loss_sharing.repay_above: must not be below insurance_fund.floor "
                              "(repayments would take the fund below its floor)")
    return Params(
        params_version=hashlib.sha256(data).hexdigest()[:16],
        asset=asset,
        quote_decimals=quote_decimals,
        insurance_initial_units=initial_units,
        insurance_floor_units=floor_units,
        call_ratio_ppm=_int(engine["call_ratio_ppm"], "engine.call_ratio_ppm", PPM, 100 * PPM),
        pending_timeout_ms=_int(engine["pending_timeout_ms"], "engine.pending_timeout_ms", 0),
        max_mark_age_ms=_int(engine["max_mark_age_ms"], "engine.max_mark_age_ms", 0),
        max_jump_ppm=_int(engine["max_jump_ppm"], "engine.max_jump_ppm", 0),
        snapshot_interval_ms=_int(engine["snapshot_interval_ms"], "engine.snapshot_interval_ms", 0),
        liquidation_mode=mode,
        buffer_ppm=buffer_ppm,
        liquidator_ppm=liquidator_ppm,
        protocol_ppm=protocol_ppm,
        symbols=symbols,
        loss_sharing_mode=sharing_mode,
        repay_above_units=repay_above_units,
        round_interval_ms=_int(sharing["round_interval_ms"], "loss_sharing.round_interval_ms", 0),
    )


def load_params(path: str | os.PathLike[str]) -> Params:
    with open(path, "rb") as handle:
        return parse_params(handle.read())
