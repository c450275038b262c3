"""Builders of output events (SPEC §6): plain dicts, amounts as decimal strings at scale.

Field order is fixed here so that one encoder gives byte-identical output on every run.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Final

from .fixed import format_units
from .liquidation import LiquidationPlan
from .params import Params

SCHEMA_VERSION: Final = 1
MAX_DEAD_LETTER_VALUE_BYTES: Final = 65_536  # a dead letter keeps at most this much of the original value
MAX_DEAD_LETTER_KEY_BYTES: Final = 1_024  # ... and of the original key
MAX_DEAD_LETTER_DEPTH: Final = 32  # a batch element nested deeper is not copied as JSON
MAX_DEAD_LETTER_MESSAGE_CHARS: Final = 300
# A reported ratio (not an amount) saturates at ±(10^18 − 1) ppm, i.e. ±10^12×: it stays a 64-bit
# integer on the wire whatever the equity (an account far beyond its maintenance either way).
RATIO_LIMIT_PPM: Final = 10**18 - 1


@dataclass(frozen=True, slots=True, init=False)
class Output:
    topic: str  # catalog name without prefix: "liquidations", "insurance-fund", ...
    key: str
    value: dict[str, Any]
    # the integer amounts the metrics count, beside the rendered value (which nothing parses back):
    # an allocation's ``ALLOCATION_AMOUNTS``, a round summary's (paid,); None for the other events
    # and for an output rebuilt from a stored value. Not part of the event: equality ignores it.
    amounts: tuple[int, ...] | None = field(compare=False)

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, topic: str, key: str, value: dict[str, Any], amounts: tuple[int, ...] | None = None) -> None:
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "amounts", amounts)


# An allocation's amounts in ``Output.amounts``, in this order, at the quote scale (the names of
# its `totals`): what the metrics add up without parsing the decimal strings back.
ALLOCATION_AMOUNTS: Final = ("liquidator", "insurance_fund", "protocol", "shortfall", "insurance_cover",
                             "socialized_loss")


def allocation_amounts(plan: LiquidationPlan, insurance_cover_units: int,
                       socialized_loss_units: int) -> tuple[int, int, int, int, int, int]:
    """``ALLOCATION_AMOUNTS`` of an allocation: the integers its `totals` render."""
    return (plan.liquidator_units, plan.insurance_fund_units, plan.protocol_units, plan.shortfall_units,
            insurance_cover_units, socialized_loss_units)


@dataclass(frozen=True, slots=True, init=False)
class Trigger:
    source: str  # "mark" | "position" | "balance"
    symbol: str | None
    seq: int
    price_ticks: int | None

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, source: str, symbol: str | None, seq: int, price_ticks: int | None) -> None:
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "price_ticks", price_ticks)


def trigger_dict(trigger: Trigger, params: Params) -> dict[str, Any]:
    price = None
    if trigger.price_ticks is not None and trigger.symbol is not None:
        price = format_units(trigger.price_ticks, params.symbols[trigger.symbol].price_decimals)
    return {"source": trigger.source, "symbol": trigger.symbol, "seq": trigger.seq, "price": price}


def allocation_event(
    params: Params,
    plan: LiquidationPlan,
    *,
    liquidation_id: str,
    account_id: str,
    scope: str,
    ts: int,
    trigger: Trigger,
    insurance_cover_units: int,
    socialized_loss_units: int,
) -> dict[str, Any]:
    """The allocation event (§6.1): one balanced journal entry per evaluation."""
    q = params.quote_decimals
    asset = params.asset
    account = f"account:{account_id}"
    if insurance_cover_units + socialized_loss_units != plan.shortfall_units:
        raise AssertionError("shortfall must equal insurance cover plus socialized loss")
    closes = []
    for close in plan.closes:
        sym = params.symbols[close.symbol]
        closes.append({
            "symbol": close.symbol,
            "side": close.side,
            "closed_size": format_units(close.closed_lots, sym.size_decimals),
            "remaining_size": format_units(close.remaining_lots, sym.size_decimals),
            "mark_price": format_units(close.mark_ticks, sym.price_decimals),
            "execution_price": format_units(close.execution_ticks, sym.price_decimals),
            "entry_price": format_units(close.entry_ticks, sym.price_decimals),
            "realized_pnl": format_units(close.realized_pnl_units, q),
            "penalty_rate_ppm": close.penalty_rate_ppm,
            "penalty": format_units(close.penalty_units, q),
            "recovery_rate_ppm": close.recovery_rate_ppm,
        })
    # each amount rendered once: in the totals and, when not zero, in its transfer
    liquidator = format_units(plan.liquidator_units, q)
    insurance_fund = format_units(plan.insurance_fund_units, q)
    protocol = format_units(plan.protocol_units, q)
    cover = format_units(insurance_cover_units, q)
    socialized = format_units(socialized_loss_units, q)
    transfers = []
    for source, target, amount, rendered, reason in (
        (account, "liquidator", plan.liquidator_units, liquidator, "penalty_liquidator"),
        (account, "protocol", plan.protocol_units, protocol, "penalty_protocol"),
        (account, "insurance_fund", plan.insurance_fund_units, insurance_fund, "penalty_insurance_fund"),
        ("insurance_fund", account, insurance_cover_units, cover, "insurance_cover"),
        ("socialized_loss", account, socialized_loss_units, socialized, "socialized_loss"),
    ):
        if amount:
            transfers.append({"from": source, "to": target, "amount": rendered, "asset": asset, "reason": reason})
    # journal check: collateral_before + Σ realized + Σ in − Σ out = collateral_after ≥ 0
    inflow = insurance_cover_units + socialized_loss_units
    outflow = plan.liquidator_units + plan.protocol_units + plan.insurance_fund_units
    realized = sum(c.realized_pnl_units for c in plan.closes)
    collateral_after = plan.collateral_before_units + realized + inflow - outflow
    if collateral_after < 0 or (plan.bankrupt and collateral_after != 0):
        raise AssertionError(f"allocation {liquidation_id} leaves collateral {collateral_after}")
    return {
        "type": "liquidation",
        "schema_version": SCHEMA_VERSION,
        "liquidation_id": liquidation_id,
        "account_id": account_id,
        "scope": scope,
        "ts": ts,
        "params_version": params.params_version,
        "trigger": trigger_dict(trigger, params),
        "bankrupt": plan.bankrupt,
        "severity_ppm": plan.severity_ppm,
        "equity_before": format_units(plan.equity_before_units, q),
        "maintenance_before": format_units(plan.maintenance_before_units, q),
        "equity_after": format_units(plan.equity_after_units, q),
        "maintenance_after": format_units(plan.maintenance_after_units, q),
        "collateral_before": format_units(plan.collateral_before_units, q),
        "collateral_after": format_units(collateral_after, q),
        "closes": closes,
        "totals": {
            "penalty": format_units(plan.penalty_units, q),
            "liquidator": liquidator,
            "insurance_fund": insurance_fund,
            "protocol": protocol,
            "shortfall": format_units(plan.shortfall_units, q),
            "insurance_cover": cover,
            "socialized_loss": socialized,
        },
        "transfers": transfers,
    }


def insurance_fund_entry(params: Params, *, ts: int, delta_units: int, balance_after_units: int, reason: str,
                         liquidation_id: str) -> dict[str, Any]:
    q = params.quote_decimals
    return {
        "type": "insurance_fund_entry",
        "schema_version": SCHEMA_VERSION,
        "ts": ts,
        "asset": params.asset,
        "delta": format_units(delta_units, q),
        "balance_after": format_units(balance_after_units, q),
        "reason": reason,
        "liquidation_id": liquidation_id,
    }


def socialized_loss_event(params: Params, *, ts: int, symbol: str, side: str, amount_units: int,
                          liquidation_id: str, account_id: str) -> dict[str, Any]:
    return {
        "type": "socialized_loss",
        "schema_version": SCHEMA_VERSION,
        "ts": ts,
        "asset": params.asset,
        "symbol": symbol,
        "side": side,
        "amount": format_units(amount_units, params.quote_decimals),
        "liquidation_id": liquidation_id,
        "account_id": account_id,
    }


def margin_call_event(params: Params, *, kind: str, ts: int, account_id: str, scope: str, equity_units: int,
                      maintenance_units: int, call_level_units: int, ratio_ppm: int | None, zone: str,
                      trigger: Trigger) -> dict[str, Any]:
    q = params.quote_decimals
    return {
        "type": kind,  # "margin_call" | "margin_call_cleared"
        "schema_version": SCHEMA_VERSION,
        "ts": ts,
        "account_id": account_id,
        "scope": scope,
        "zone": zone,
        "equity": format_units(equity_units, q),
        "maintenance": format_units(maintenance_units, q),
        "call_level": format_units(call_level_units, q),
        "ratio_ppm": None if ratio_ppm is None else max(-RATIO_LIMIT_PPM, min(RATIO_LIMIT_PPM, ratio_ppm)),
        "params_version": params.params_version,
        "trigger": trigger_dict(trigger, params),
    }


def encode_verbatim(raw: bytes | None) -> tuple[str | None, str]:
    """Verbatim bytes as (text, encoding): UTF-8 when they decode, base64 otherwise."""
    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


@dataclass(frozen=True, slots=True, init=False)
class Source:
    """Where an input message came from (replay: partition 0, offset = line number − 1)."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    # the value's bytes when only a dead letter needs them (a typed decoder did not keep them)
    value_fn: Callable[[], bytes | None] | None = None

    # __init__ written out: compiled (mypyc), the dataclass-generated one runs interpreted, ~10x slower
    def __init__(self, topic: str, partition: int | None, offset: int | None, key: bytes | None,
                 value: bytes | None, value_fn: Callable[[], bytes | None] | None = None) -> None:
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "value_fn", value_fn)

    def raw_value(self) -> bytes | None:
        return self.value if self.value_fn is None else self.value_fn()


def _truncate_utf8(raw: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes, cut back to a UTF-8 character boundary when they are UTF-8."""
    raw = raw[:limit]
    for cut in range(4):  # the cut may split a UTF-8 character: drop up to 3 trailing bytes
        try:
            raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return raw[: len(raw) - cut]
    return raw


def copy_refusal(value: Any, max_depth: int = MAX_DEAD_LETTER_DEPTH,
                 max_bytes: int = MAX_DEAD_LETTER_VALUE_BYTES) -> str | None:
    """Why ``value`` (decoded JSON) cannot be copied into a dead letter as JSON, or None.

    Every JSON encoder has limits the decoder does not share (orjson: nesting ≤ 254, integers in
    [−2^63, 2^64)); a dead letter also has to fit in a message. So a copy is refused beyond
    ``max_depth`` levels, beyond an estimated ``max_bytes`` of JSON (strings counted at their UTF-8
    length, up to 6× for escapes is still far below a message), for integers outside 64 bits, and
    for anything that is not a JSON type. The walk stops at the first refusal (bounded work).
    """
    budget = max_bytes
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return "depth"
        if isinstance(item, str):
            if item.isascii():
                budget -= len(item) + 2
            else:
                try:
                    budget -= len(item.encode("utf-8")) + 2
                except UnicodeEncodeError:  # a lone surrogate: no encoder writes it as UTF-8
                    return "string"
        elif isinstance(item, bool) or item is None:
            budget -= 5
        elif isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                return "integer_range"
            budget -= 21
        elif isinstance(item, float):
            budget -= 25
        elif isinstance(item, list):
            budget -= 2 + len(item)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            budget -= 2 + 2 * len(item)
            for key, child in item.items():
                if not isinstance(key, str):
                    return "type"
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        else:
            return "type"
        if budget < 0:
            return "size"
    return None


def dead_letter_event(*, ts: int, source: Source, code: str, message: str, index: int | None = None,
                      element: Any = None) -> dict[str, Any]:
    """A dead letter, bounded by construction (SPEC §8): the key at most MAX_DEAD_LETTER_KEY_BYTES,
    the value at most MAX_DEAD_LETTER_VALUE_BYTES, a batch element copied as JSON only when
    ``copy_refusal`` accepts it (else the message's raw bytes, truncated, stand for it), the
    message at most MAX_DEAD_LETTER_MESSAGE_CHARS plus what was cut or not copied."""
    notes = []
    raw_key = source.key
    if raw_key is not None and len(raw_key) > MAX_DEAD_LETTER_KEY_BYTES:
        notes.append(f"key of {len(raw_key)} bytes truncated")
        raw_key = _truncate_utf8(raw_key, MAX_DEAD_LETTER_KEY_BYTES)
    key, key_encoding = encode_verbatim(raw_key)
    raw_value = source.raw_value()
    size = None if raw_value is None else len(raw_value)
    refusal = None if index is None else copy_refusal(element)
    value: Any  # the original's text (or base64), or the batch element as JSON (any JSON value)
    if index is None or refusal is not None:
        raw = raw_value
        truncated = size is not None and size > MAX_DEAD_LETTER_VALUE_BYTES
        if truncated and raw is not None:
            raw = _truncate_utf8(raw, MAX_DEAD_LETTER_VALUE_BYTES)
        value, value_encoding = encode_verbatim(raw)
        if refusal is not None:
            notes.append(f"element not copied ({refusal}): value is the whole message")
    else:  # one bad element of a batch: the element itself, as JSON
        value, value_encoding, truncated = element, "json", False
    text = message[:MAX_DEAD_LETTER_MESSAGE_CHARS]
    if notes:
        text += " [" + "; ".join(notes) + "]"
    return {
        "type": "dead_letter",
        "schema_version": SCHEMA_VERSION,
        "ts": ts,
        "source": {"topic": source.topic, "partition": source.partition, "offset": source.offset, "index": index},
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "value_size": size,
        "value_truncated": truncated,
        "error": {"code": code, "message": text},
    }


def unpublishable_stub(*, ts: int, topic: str, key: str, reason: str) -> dict[str, Any]:
    """What replaces an output that cannot be encoded or does not fit in a message: a small dead
    letter naming the output's topic and key and why (code ``unpublishable_output``). Never
    retried: such content would fail on every attempt."""
    source = Source(topic, None, None, key.encode("utf-8", "replace"), None)
    return dead_letter_event(ts=ts, source=source, code="unpublishable_output", message=reason)
