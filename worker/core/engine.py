"""The risk engine: account state, evaluation triggers, pending/ack, guards, outputs.

Pure and synchronous: ``process_mark`` / ``process_positions`` take decoded JSON and return
the output events in emission order. The offline replay and the streaming worker both drive it.
"""
from __future__ import annotations

import hashlib
import heapq
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Final, Iterable, Iterator, Sequence

from .fixed import PPM, format_units, iabs, mul
from .inputs import BadInput, BalanceUpdate, MarkTick, PositionUpdate, decode_mark, decode_position_event
from .fund import InsuranceFund, record_deficits, request_item, settle
from .liquidation import plan_liquidation, plan_to_list
from .margin import (BandTerms, Leg, MarginState, band_terms, call_level, margin_state, notional, ratio_ppm,
                     safe_move_ticks, zone)
from .outputs import (SCHEMA_VERSION, Output, Source, Trigger, allocation_amounts, allocation_event, dead_letter_event,
                      margin_call_event, unpublishable_stub)
from .params import Params
from .sharing import DeficitBook, rounds_due, run_rounds_locally, tick_marker

CROSS: Final = "cross"
ScopeKey = tuple[str, ...]  # (account_id, scope): scope is "cross" or the isolated symbol
# (tuple[str, ...], not tuple[str, str]: compiled, a fixed-length tuple is unboxed and boxed anew in
# every dict, set and heap it enters; this one stays the same Python tuple)
WRONG_PARTITION: Final = "account does not belong to this message's partition"
FUND_REQUEST_ITEMS: Final = 200  # liquidations per `fund_request` message (≈ 1 KiB each)
# the first element of an `accounts` changelog value in the compact format: 3 keeps a pending
# liquidation as the seq and n its id is made of; 2 (written before, still read) kept its id
RECORD_FORMAT: Final = 3
RECORD_FORMAT_IDS: Final = 2


def liquidation_id(account_id: str, scope: str, seq: int, n: int) -> str:
    """First 32 hex digits of sha256("{account_id}|{scope}|{seq}|{n}")   (SPEC §4)."""
    return hashlib.sha256(f"{account_id}|{scope}|{seq}|{n}".encode()).hexdigest()[:32]


class PositionState:
    """One position. Compact: three fields (64 B compiled, with its GC header, against 80 B for
    four), the margin mode and the isolated margin share one int:
    ``_margin_mode = isolated_margin_units · 2 + isolated`` (isolated = its low bit; floor halving
    gives the margin back for any sign)."""

    __slots__ = ("size_lots", "entry_ticks", "_margin_mode")

    def __init__(self, size_lots: int, entry_ticks: int, isolated: bool = False,
                 isolated_margin_units: int = 0) -> None:
        self.size_lots = size_lots
        self.entry_ticks = entry_ticks
        self._margin_mode = isolated_margin_units * 2 + (1 if isolated else 0)

    @property
    def isolated(self) -> bool:
        return self._margin_mode & 1 == 1

    @property
    def isolated_margin_units(self) -> int:
        return self._margin_mode >> 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PositionState):
            return NotImplemented
        return (self.size_lots == other.size_lots and self.entry_ticks == other.entry_ticks
                and self._margin_mode == other._margin_mode)

    def __repr__(self) -> str:
        return (f"PositionState(size_lots={self.size_lots}, entry_ticks={self.entry_ticks}, "
                f"isolated={self.isolated}, isolated_margin_units={self.isolated_margin_units})")


# The engine's counters: a Counter whose item assignment is dict's own. Counter defines __delitem__
# in Python, which makes CPython route every `counters[k] = v` (so every `+= 1`) through a
# Python-level slot and dict.__setitem__'s wrapper, ~2x a dict's; with both names bound to dict's
# methods the type keeps dict's C slot. (Nothing deletes a counter; reading a missing one is 0.)
Counts: Any = type("Counts", (Counter,), {"__setitem__": dict.__setitem__, "__delitem__": dict.__delitem__})


@dataclass(slots=True, init=False)
class Pending:
    """A pending liquidation as callers see it (``AccountState.pending``, the constructor's
    ``pending``): the engine keeps it as a ``PendingLiquidation``, without the id string."""
    liquidation_id: str
    emitted_ts: int
    # what was published for it ([topic, key, value]); re-published as is after a crash. Empty
    # (replay, local settlement): the shared empty tuple, not a list per pending liquidation
    outputs: Sequence[list[Any]]

    # __init__ written out (see PositionState)
    def __init__(self, liquidation_id: str, emitted_ts: int, outputs: Sequence[list[Any]] = ()) -> None:
        self.liquidation_id = liquidation_id
        self.emitted_ts = emitted_ts
        self.outputs = outputs


class PendingLiquidation:
    """A pending liquidation of one scope, compact: its id is not kept but rebuilt from what it is
    made of, ``liquidation_id(account_id, scope, seq, n)`` (SPEC §4: ``seq`` the account's seq
    when it was emitted, ``n`` the liquidations of the scope emitted before it at that seq).
    Holding ``seq`` and ``n`` also gives the scope's emitted count while the account stays at
    that seq, ``n + 1``: no separate record of it is kept while the liquidation is pending.
    80 B compiled (five fields), against ~350 B for a dict entry, its id string and the emitted
    dict and list."""

    __slots__ = ("scope", "seq", "n", "emitted_ts", "outputs")

    def __init__(self, scope: str, seq: int, n: int, emitted_ts: int, outputs: Sequence[list[Any]] = ()) -> None:
        self.scope = scope
        self.seq = seq
        self.n = n
        self.emitted_ts = emitted_ts
        # what was published for it ([topic, key, value]); re-published as is after a crash. Empty
        # (replay, local settlement): the shared empty tuple, not a list per pending liquidation
        self.outputs = outputs

    def liquidation_id_of(self, account_id: str) -> str:
        return liquidation_id(account_id, self.scope, self.seq, self.n)

    def emitted_count_at(self, seq: int) -> int:
        """Liquidations of the scope emitted at ``seq``, as far as this one tells (0: unknown)."""
        return self.n + 1 if self.seq == seq else 0

    def view(self, account_id: str) -> Pending:
        return Pending(self.liquidation_id_of(account_id), self.emitted_ts, self.outputs)

    def to_entry(self) -> list[Any]:
        """Its changelog entry: [scope, seq, n, emitted_ts, outputs]."""
        return [self.scope, self.seq, self.n, self.emitted_ts, list(self.outputs)]


class PendingWithId(PendingLiquidation):
    """A pending liquidation recovered from a record that holds its id but not the seq and n it
    was made of (formats before RECORD_FORMAT 3, once the account's seq moved on): the id is kept
    as it was written, and it tells no emitted count."""

    __slots__ = ("liquidation_id",)

    def __init__(self, scope: str, liquidation_id: str, emitted_ts: int, outputs: Sequence[list[Any]] = ()) -> None:
        super().__init__(scope, -1, -1, emitted_ts, outputs)
        self.liquidation_id = liquidation_id

    def liquidation_id_of(self, account_id: str) -> str:
        return self.liquidation_id

    def emitted_count_at(self, seq: int) -> int:
        return 0

    def to_entry(self) -> list[Any]:
        """Its changelog entry: [scope, liquidation_id, emitted_ts, outputs] (a string second)."""
        return [self.scope, self.liquidation_id, self.emitted_ts, list(self.outputs)]


class AccountState:
    """One account's state. Compact: the containers that are empty for most accounts (pending,
    emitted, in_call, rounds) are allocated only when first used (``None`` until then); the
    engine's hot paths read the slots.

    Pending liquidations: ``_pending`` holds the one pending liquidation itself (the common case),
    a list of them for two or more scopes, or None. Emitted counts (the ``n`` of the next id,
    SPEC §4): a pending liquidation emitted at the account's seq gives its scope's, ``n + 1``;
    ``_emitted`` (scope → [seq, count]) holds only the counts no pending liquidation gives (one
    timed out at this seq, or recovered so), and takes precedence. ``pending`` and ``emitted``
    hand out these as dicts (copies: scope → ``Pending``, scope → [seq, count]).

    Positions: one flat tuple ``(symbol, PositionState, symbol, PositionState, …)`` in the order
    they were opened (64 B for one position, 80 B for two, against 192 B for a dict); ``positions``
    hands it out as a dict (a copy), ``set_position`` changes it.
    """

    __slots__ = ("account_id", "seq", "collateral_units", "_positions", "claim_units",
                 "_pending", "_emitted", "_in_call", "_rounds")

    def __init__(self, account_id: str, seq: int = -1, collateral_units: int = 0,
                 positions: dict[str, PositionState] | None = None,
                 pending: dict[str, Pending] | None = None,
                 emitted: dict[str, list[int]] | None = None,
                 in_call: set[str] | None = None,
                 claim_units: int = 0,
                 rounds: dict[str, list[str]] | None = None) -> None:
        self.account_id = account_id
        self.seq = seq  # highest positions seq applied
        self.collateral_units = collateral_units
        self._positions: tuple[Any, ...] = tuple(x for s, p in (positions or {}).items() for x in (s, p))
        # outstanding loss-sharing claim: Σ haircuts − Σ repayments (SPEC §5.2)
        self.claim_units = claim_units
        self._pending: PendingLiquidation | list[PendingLiquidation] | None = None
        self._emitted: dict[str, list[int]] | None = None  # scope → [seq, n emitted at that seq]
        self._in_call: set[str] | None = in_call or None  # scopes in the margin-call zone
        # rounds in flight that paid this account: round_id → [amount, claim after (haircut) or before
        # (repayment)], so a takeover pays again without moving the claim twice (worker/rounds.py)
        self._rounds: dict[str, list[str]] | None = rounds or None
        if pending or emitted:
            self._adopt(pending or {}, emitted or {})

    def _adopt(self, pending: dict[str, Pending], emitted: dict[str, list[int]]) -> None:
        """Take pending liquidations and emitted counts as the first two formats hold them (ids,
        and scope → [seq, count]): a pending liquidation whose id is the one its scope's count at
        the account's seq makes, ``liquidation_id(account, scope, seq, count − 1)``, is kept as
        its seq and n and gives that count; any other keeps its id."""
        residual = {sys.intern(s): [v[0], v[1]] for s, v in emitted.items()}
        for scope, view in pending.items():
            scope = sys.intern(scope)
            count = residual.get(scope)
            held: PendingLiquidation
            if (count is not None and count[0] == self.seq and count[1] >= 1
                    and view.liquidation_id == liquidation_id(self.account_id, scope, count[0], count[1] - 1)):
                held = PendingLiquidation(scope, count[0], count[1] - 1, view.emitted_ts, view.outputs or ())
                del residual[scope]
            else:
                held = PendingWithId(scope, view.liquidation_id, view.emitted_ts, view.outputs or ())
            self.put_pending(held)
        self._emitted = residual or None

    # Views (copies): what the account holds, in the first format's terms.
    @property
    def pending(self) -> dict[str, Pending]:
        return {p.scope: p.view(self.account_id) for p in self.pendings()}

    @property
    def emitted(self) -> dict[str, list[int]]:
        counts = {p.scope: [p.seq, p.n + 1] for p in self.pendings() if p.emitted_count_at(self.seq)}
        counts.update((s, list(v)) for s, v in (self._emitted or {}).items())
        return counts

    @property
    def positions(self) -> dict[str, PositionState]:
        """symbol → position, in the order they were opened (a copy: ``set_position`` changes one)."""
        flat = self._positions
        return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}

    def position_of(self, symbol: str) -> PositionState | None:
        flat = self._positions
        for i in range(0, len(flat), 2):
            held: str = flat[i]
            if held == symbol:
                position: PositionState = flat[i + 1]
                return position
        return None

    def set_position(self, symbol: str, position: PositionState | None) -> None:
        """Open ``symbol``'s position (last in the order), replace it (in its place) or, with
        None, close it."""
        flat = self._positions
        for i in range(0, len(flat), 2):
            held: str = flat[i]
            if held == symbol:
                if position is None:
                    self._positions = flat[:i] + flat[i + 2:]
                elif len(flat) == 2:  # (its only position: one tuple, not four)
                    self._positions = (held, position)
                else:
                    self._positions = flat[:i + 1] + (position,) + flat[i + 2:]
                return
        if position is not None:
            self._positions = flat + (symbol, position)

    def cross_symbols(self) -> list[str]:
        """The symbols of the cross positions, sorted (the cross scope's legs, in order)."""
        flat = self._positions
        symbols: list[str] = []
        for i in range(0, len(flat), 2):
            position: PositionState = flat[i + 1]
            if not position.isolated:
                symbols.append(flat[i])
        if len(symbols) > 1:
            symbols.sort()
        return symbols

    # The containers, allocated on first use (callers may mutate them).
    @property
    def in_call(self) -> set[str]:
        in_call = self._in_call
        if in_call is None:
            in_call = self._in_call = set()
        return in_call

    @property
    def rounds(self) -> dict[str, list[str]]:
        rounds = self._rounds
        if rounds is None:
            rounds = self._rounds = {}
        return rounds

    # Reads that allocate nothing (but ``pendings``).
    def pendings(self) -> list[PendingLiquidation]:
        held = self._pending
        if held is None:
            return []
        if isinstance(held, PendingLiquidation):
            return [held]
        return list(held)

    def pending_of(self, scope: str) -> PendingLiquidation | None:
        held = self._pending
        if held is None:
            return None
        if isinstance(held, PendingLiquidation):
            return held if held.scope == scope else None
        for pending in held:
            if pending.scope == scope:
                return pending
        return None

    def pending_count(self) -> int:
        held = self._pending
        if held is None:
            return 0
        return 1 if isinstance(held, PendingLiquidation) else len(held)

    def emitted_count(self, scope: str) -> int:
        """Liquidations of ``scope`` emitted at the account's seq: the ``n`` of its next id."""
        emitted = self._emitted.get(scope) if self._emitted else None
        if emitted is not None:
            return emitted[1] if emitted[0] == self.seq else 0
        pending = self.pending_of(scope)
        return pending.emitted_count_at(self.seq) if pending is not None else 0

    # Changes (the engine's ``_set_pending`` / ``_clear_pending`` keep its counts).
    def put_pending(self, pending: PendingLiquidation) -> bool:
        """Hold ``pending`` for its scope (its count replaces any kept apart); False if it
        replaced one pending for that scope."""
        replaced = self.pop_pending(pending.scope) is not None
        emitted = self._emitted
        if emitted is not None and emitted.pop(pending.scope, None) is not None and not emitted:
            self._emitted = None
        held = self._pending
        if held is None:
            self._pending = pending
        elif isinstance(held, PendingLiquidation):
            self._pending = [held, pending]
        else:
            held.append(pending)
        return not replaced

    def pop_pending(self, scope: str) -> PendingLiquidation | None:
        """Stop holding ``scope``'s pending liquidation, keeping the emitted count it gave."""
        held = self._pending
        found: PendingLiquidation | None = None
        if isinstance(held, PendingLiquidation):
            if held.scope == scope:
                found = held
                self._pending = None
        elif held is not None:
            for index, pending in enumerate(held):
                if pending.scope == scope:
                    found = pending
                    del held[index]
                    self._pending = held[0] if len(held) == 1 else held
                    break
        if found is not None:
            count = found.emitted_count_at(self.seq)
            if count:
                emitted = self._emitted
                if emitted is None:
                    emitted = self._emitted = {}
                emitted.setdefault(scope, [self.seq, count])
        return found

    def in_call_count(self) -> int:
        return len(self._in_call) if self._in_call else 0

    def is_in_call(self, scope: str) -> bool:
        in_call = self._in_call
        return in_call is not None and scope in in_call

    def round_memory(self, round_id: str) -> list[str] | None:
        """What round ``round_id`` paid here ([amount, claim figure]), None if nothing remembered."""
        rounds = self._rounds
        return None if rounds is None else rounds.get(round_id)

    def remembered_rounds(self) -> list[str]:
        rounds = self._rounds
        return [] if rounds is None else list(rounds)

    def forget_round(self, round_id: str) -> bool:
        """Forget what round ``round_id`` paid; False if it paid nothing here (the container is
        released when it empties)."""
        rounds = self._rounds
        if rounds is None or rounds.pop(round_id, None) is None:
            return False
        if not rounds:
            self._rounds = None
        return True

    def watched_scopes(self) -> list[str]:
        """Scopes pending or in the margin-call zone (evaluated on the account's own events)."""
        if self._pending is None and not self._in_call:  # (most accounts: one list, not four)
            return []
        return [p.scope for p in self.pendings()] + list(self._in_call or ())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccountState):
            return NotImplemented
        return (self.account_id == other.account_id and self.seq == other.seq
                and self.collateral_units == other.collateral_units and self.positions == other.positions
                and self.claim_units == other.claim_units
                and self.pending == other.pending and self.emitted == other.emitted
                and (self._in_call or set()) == (other._in_call or set())
                and (self._rounds or {}) == (other._rounds or {}))

    def __repr__(self) -> str:
        return (f"AccountState(account_id={self.account_id!r}, seq={self.seq}, collateral_units="
                f"{self.collateral_units}, positions={self.positions!r}, pending={self.pending!r}, "
                f"emitted={self.emitted!r}, in_call={self._in_call or set()!r}, "
                f"claim_units={self.claim_units}, rounds={self._rounds or {}!r})")

    def scopes(self) -> list[str]:
        """Evaluation order: cross first, then isolated positions by symbol."""
        flat = self._positions
        scopes = [CROSS]
        for i in range(0, len(flat), 2):
            position: PositionState = flat[i + 1]
            if position.isolated:
                scopes.append(flat[i])
        if len(scopes) > 2:
            scopes[1:] = sorted(scopes[1:])
        return scopes

    def to_dict(self) -> dict[str, Any]:
        """The state as a dict with named fields (the changelog's first format; ``to_record`` is
        what the changelog carries now)."""
        return {
            "account_id": self.account_id,
            "seq": self.seq,
            "collateral": self.collateral_units,
            "positions": {s: [p.size_lots, p.entry_ticks, p.isolated, p.isolated_margin_units]
                          for s, p in self.positions.items()},
            "pending": {s: [p.liquidation_id, p.emitted_ts, list(p.outputs)] for s, p in self.pending.items()},
            "emitted": self.emitted,
            "in_call": sorted(self._in_call or ()),
            "claim": str(self.claim_units),  # a string: a sum of haircuts is not bounded by 64 bits
            "rounds": dict(self._rounds or {}),
        }

    def to_record(self) -> list[Any]:
        """The compact changelog value (``RECORD_FORMAT``): a JSON array

            [3, account_id, seq, collateral, positions, claim, pending, emitted, in_call, rounds]

        with trailing empty fields left out (most accounts stop after ``positions``). ``positions``
        is a flat array of [symbol, size, entry] (cross, no isolated margin) or
        [symbol, size, entry, isolated, isolated margin]; ``claim`` a decimal string (not bounded by
        64 bits); pending as [scope, seq, n, emitted_ts, outputs] (its id is
        ``liquidation_id(account_id, scope, seq, n)``) or, recovered with its id only,
        [scope, liquidation_id, emitted_ts, outputs]; emitted as [scope, seq, count] (only the
        counts no pending liquidation gives), rounds as [round_id, amount, claim] arrays; in_call
        sorted. (Format 2, before: pending always as [scope, liquidation_id, emitted_ts, outputs],
        and every emitted count.)"""
        positions: list[list[Any]] = []
        flat = self._positions
        for i in range(0, len(flat), 2):
            symbol: str = flat[i]
            p: PositionState = flat[i + 1]
            if p.isolated or p.isolated_margin_units:
                positions.append([symbol, p.size_lots, p.entry_ticks, p.isolated, p.isolated_margin_units])
            else:
                positions.append([symbol, p.size_lots, p.entry_ticks])
        if (self.claim_units == 0 and self._pending is None and not self._emitted and not self._in_call
                and not self._rounds):  # (most accounts: the tail below, built and popped, was half the call)
            return [RECORD_FORMAT, self.account_id, self.seq, self.collateral_units, positions]
        record: list[Any] = [RECORD_FORMAT, self.account_id, self.seq, self.collateral_units, positions,
                             str(self.claim_units),
                             [p.to_entry() for p in self.pendings()],
                             [[s, *v] for s, v in (self._emitted or {}).items()],
                             sorted(self._in_call or ()),
                             [[k, *v] for k, v in (self._rounds or {}).items()]]
        while len(record) > 6 and not record[-1]:
            record.pop()
        if len(record) == 6 and record[5] == "0":
            record.pop()
        return record

    @classmethod
    def from_record(cls, data: dict[str, Any] | list[Any]) -> "AccountState":
        """Any changelog format: the compact array (``to_record``; format 3, or format 2 written
        before it) or the first format's dict (``to_dict``): records written before still recover."""
        if isinstance(data, dict):
            return cls.from_dict(data)
        if not data or data[0] not in (RECORD_FORMAT, RECORD_FORMAT_IDS):
            raise ValueError(f"unknown account record format {data[:1]!r}")
        fields = list(data) + [None] * (10 - len(data))
        positions: dict[str, PositionState] = {}
        for entry in fields[4]:
            symbol = sys.intern(entry[0])
            if len(entry) == 3:
                positions[symbol] = PositionState(entry[1], entry[2])
            else:
                positions[symbol] = PositionState(entry[1], entry[2], entry[3], entry[4])
        account = cls(
            account_id=fields[1],
            seq=fields[2],
            collateral_units=fields[3],
            positions=positions,
            claim_units=int(fields[5] or "0"),
            in_call={sys.intern(s) for s in fields[8] or ()} or None,
            rounds={e[0]: list(e[1:]) for e in fields[9] or ()} or None,
        )
        if data[0] == RECORD_FORMAT_IDS:
            account._adopt({e[0]: Pending(e[1], e[2], e[3] or ()) for e in fields[6] or ()},
                           {e[0]: [e[1], e[2]] for e in fields[7] or ()})
            return account
        for e in fields[6] or ():
            scope = sys.intern(e[0])
            if isinstance(e[1], str):
                account.put_pending(PendingWithId(scope, e[1], e[2], e[3] or ()))
            else:
                account.put_pending(PendingLiquidation(scope, e[1], e[2], e[3], e[4] or ()))
        account._emitted = {sys.intern(e[0]): [e[1], e[2]] for e in fields[7] or ()} or None
        return account

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AccountState":
        return cls(
            account_id=data["account_id"],
            seq=data["seq"],
            collateral_units=data["collateral"],
            positions={sys.intern(s): PositionState(*v) for s, v in data["positions"].items()},
            pending={s: Pending(v[0], v[1], v[2] or ()) for s, v in data["pending"].items()} or None,
            emitted={s: list(v) for s, v in data["emitted"].items()} or None,
            in_call={sys.intern(s) for s in data["in_call"]} or None,
            claim_units=int(data.get("claim", "0")),
            rounds={k: list(v) for k, v in data.get("rounds", {}).items()} or None,
        )


@dataclass(slots=True, init=False)
class MarkState:
    mark_ticks: int
    seq: int
    ts: int
    confirmed: bool

    # __init__ written out (see PositionState)
    def __init__(self, mark_ticks: int, seq: int, ts: int, confirmed: bool = True) -> None:
        self.mark_ticks = mark_ticks
        self.seq = seq
        self.ts = ts
        self.confirmed = confirmed


# An index entry keeps its slot's version mod 2^VERSION_BITS (exact: see CandidateIndex.drop)
VERSION_BITS: Final = 16
_VERSION_MASK: Final = (1 << VERSION_BITS) - 1
_HALF_VERSION_CYCLE_MASK: Final = (1 << (VERSION_BITS - 1)) - 1
MIN_SLOT_BITS: Final = 17  # an entry's slot field; widened as slots are added
BUCKET_SHIFT: Final = 12  # a bucket is reference >> 12 ticks wide (~0.025 % of the price), at least 1
REBUCKET_FACTOR: Final = 4  # a mark below reference / 4 or above reference · 4 buckets the symbol anew
LAST_BUCKET_FACTOR: Final = 8  # bounds from 8 · reference up share the last bucket


class _SymbolBands:
    """One symbol's band bounds in buckets of ``width`` ticks: ``low[b]`` holds the entries whose lo
    is in bucket b (lo // width, clamped to [0, last]), ``high[b]`` those whose hi is. Every live lo
    is ≤ ``low_max`` and every live hi ≥ ``high_min`` (kept on each put and each tick), so a tick at
    mark m looks only at the buckets between m and those bounds, and none at all on the side it
    moved away from."""

    def __init__(self, reference_ticks: int) -> None:
        self.reference = max(1, reference_ticks)
        self.width = max(1, self.reference >> BUCKET_SHIFT)
        self.last = LAST_BUCKET_FACTOR * self.reference // self.width
        self.low: dict[int, list[int]] = {}
        self.high: dict[int, list[int]] = {}
        self.any_low = False  # low_max holds a bound (else no lo was put)
        self.low_max = 0
        self.any_high = False
        self.high_min = 0

    def bucket(self, ticks: int) -> int:
        b = ticks // self.width
        return 0 if b < 0 else self.last if b > self.last else b


def _append(buckets: dict[int, list[int]], b: int, entry: int) -> None:
    entries = buckets.get(b)
    if entries is None:
        buckets[b] = [entry]
    else:
        entries.append(entry)


class CandidateIndex:
    """Finds the scopes a mark tick can move to another zone without touching the others.

    Each indexed scope holds, per symbol, a price band [lo, hi] in ticks inside which its zone
    cannot change (``safe_move_ticks`` with the slack shared among its positions). A tick outside
    a band makes the scope a candidate. Scopes that must be looked at on any tick of a symbol
    (no mark yet, a guard held the liquidation back) sit in that symbol's watch set.

    Compact: a scope is a slot number (its account id and scope in two lists, its version and its
    number of live bands in two lists), and an entry is one int,
    ``bound · 2^(V + S) + (version mod 2^V) · 2^S + slot`` (bound = lo on the low side, hi on the
    high side; V = VERSION_BITS, S = the slot bits, the fewest that hold every slot, at least
    MIN_SLOT_BITS), so comparing entries compares bounds and an entry is live iff its version is
    the slot's. With prices below 2^27 ticks and up to 2^17 slots an entry is below 2^60: a 32 B
    int (two 30-bit digits), against 48 B for three digits.

    Entries sit in price buckets (``_SymbolBands``), not heaps: a band put is an append, and a tick
    reads the buckets its move crossed (and the one it is in), where a heap of 100 000 entries took
    ~17 comparisons of scattered ints for each push near the mark and each pop. Superseded entries
    are dropped when their bucket is read, or all at once (``compact``).
    """

    def __init__(self) -> None:
        self._symbols: dict[str, _SymbolBands] = {}
        self._watch: dict[str, set[ScopeKey]] = {}
        self._cross_slot: dict[str, int] = {}  # account_id → slot of its cross scope
        self._isolated_slot: dict[ScopeKey, int] = {}  # (account_id, symbol) → slot
        self._slot_account: list[str] = []
        self._slot_scope: list[str] = []
        # per slot: lists, not arrays (compiled, a list item is read natively, an array's through
        # the generic protocol; small ints are shared objects, so a slot costs 8 bytes either way)
        self._version: list[int] = []  # per slot; bumped when its bands are dropped
        self._bands: list[int] = []  # per slot: live entries (0: not banded)
        self._low_entries = 0  # entries on each side, live or superseded
        self._high_entries = 0
        self._live = 0  # live entries (a band has one or two: ``put_band``)
        self._slot_bits = MIN_SLOT_BITS  # S
        self._slot_mask = (1 << MIN_SLOT_BITS) - 1  # 2^S − 1
        self._tail_bits = MIN_SLOT_BITS + VERSION_BITS  # V + S: an entry is bound · 2^(V + S) + tail

    def _find(self, key: ScopeKey) -> int:
        """The slot of ``key``, or −1 if it never had one."""
        account_id, scope = key
        if scope == CROSS:
            return self._cross_slot.get(account_id, -1)
        return self._isolated_slot.get(key, -1)

    def _slot(self, key: ScopeKey) -> int:
        slot = self._find(key)
        if slot >= 0:
            return slot
        slot = len(self._slot_account)
        if slot > self._slot_mask:
            self._widen_slots()
        account_id, scope = key
        if scope == CROSS:
            self._cross_slot[account_id] = slot
        else:
            self._isolated_slot[key] = slot
        self._slot_account.append(account_id)
        self._slot_scope.append(scope)
        self._version.append(0)
        self._bands.append(0)
        return slot

    def slot_of(self, key: ScopeKey) -> int:
        """The scope's slot, given one if it has none: for ``drop_at`` and ``put_band_at``, which
        then need no lookup of the key."""
        return self._slot(key)

    def drop(self, key: ScopeKey) -> None:
        """Forget the scope's bands and watches: whoever drops it indexes it again as it is now (a
        watch left behind would have a later tick evaluate a scope that no longer holds the symbol)."""
        self.drop_at(self._find(key), key)

    def drop_at(self, slot: int, key: ScopeKey) -> None:
        """``drop`` of the scope ``key`` at ``slot`` (−1: it never had one)."""
        if slot >= 0 and self._bands[slot]:
            self._live -= self._bands[slot]
            self._bands[slot] = 0
            version = self._version[slot] + 1
            self._version[slot] = version
            if version & _HALF_VERSION_CYCLE_MASK == 0:
                # Entries hold the version mod 2^V. Compacting whenever a slot's version reaches a
                # multiple of 2^(V−1) (it has no live entry then) leaves none of its entries older
                # than that version, so an entry's version is always within 2^(V−1) below the
                # slot's and "equal mod 2^V" is "equal".
                self.compact()
        for watched in self._watch.values():
            watched.discard(key)

    def is_banded(self, key: ScopeKey) -> bool:
        """The scope holds bands: its zone is the one of its last evaluation while the marks
        stay inside them and its positions and collateral do not change."""
        slot = self._find(key)
        return slot >= 0 and self._bands[slot] > 0

    def put_band(self, key: ScopeKey, symbol: str, lo_ticks: int | None, hi_ticks: int | None) -> None:
        """Band the scope on ``symbol``: a tick below ``lo_ticks`` or above ``hi_ticks`` finds it;
        None: no bound on that side (a healthy scope's zone cannot change that way)."""
        self.put_band_at(self._slot(key), symbol, lo_ticks, hi_ticks)

    def put_band_at(self, slot: int, symbol: str, lo_ticks: int | None, hi_ticks: int | None) -> None:
        """``put_band`` at the scope's slot (``slot_of``)."""
        if lo_ticks is None and hi_ticks is None:
            raise ValueError("a band needs a bound: no tick would ever find the scope")
        tail = (self._version[slot] & _VERSION_MASK) << self._slot_bits | slot
        bands = self._symbols.get(symbol)
        if bands is None:  # bucketed around the band's centre (a band is mark ± move) or its bound
            reference = lo_ticks if hi_ticks is None else hi_ticks if lo_ticks is None else (lo_ticks + hi_ticks) // 2
            bands = self._symbols[symbol] = _SymbolBands(0 if reference is None else reference)
        if lo_ticks is not None:
            _append(bands.low, bands.bucket(lo_ticks), lo_ticks << self._tail_bits | tail)
            if not bands.any_low or lo_ticks > bands.low_max:
                bands.low_max, bands.any_low = lo_ticks, True
            self._low_entries += 1
        if hi_ticks is not None:
            _append(bands.high, bands.bucket(hi_ticks), hi_ticks << self._tail_bits | tail)
            if not bands.any_high or hi_ticks < bands.high_min:
                bands.high_min, bands.any_high = hi_ticks, True
            self._high_entries += 1
        added = (0 if lo_ticks is None else 1) + (0 if hi_ticks is None else 1)
        self._bands[slot] += added
        self._live += added
        # superseded entries > live / 2 + 20 000: a compaction scans live + superseded entries, so
        # each superseded entry costs ~3 scans (at > live: 2, and ~55 B per account more at the peak)
        if self._low_entries + self._high_entries > self._live + self._live // 2 + 20_000:
            self.compact()

    def watch(self, key: ScopeKey, symbol: str) -> None:
        self._watch.setdefault(symbol, set()).add(key)

    def _is_live(self, entry: int) -> bool:
        return (entry >> self._slot_bits) & _VERSION_MASK == self._version[entry & self._slot_mask] & _VERSION_MASK

    def candidates(self, symbol: str, mark_ticks: int) -> set[ScopeKey]:
        found = self._watch.pop(symbol, set())
        bands = self._symbols.get(symbol)
        if bands is None:
            return found
        if mark_ticks < bands.reference // REBUCKET_FACTOR or mark_ticks > bands.reference * REBUCKET_FACTOR:
            bands = self._rebucket(symbol, mark_ticks)
        if bands.any_low and bands.low_max > mark_ticks:  # a lo above the mark may exist
            # entry ≥ above ⇔ lo ≥ mark + 1 ⇔ lo > mark: the band is left below
            above = (mark_ticks + 1) << self._tail_bits
            for b in range(bands.bucket(mark_ticks), bands.bucket(bands.low_max) + 1):
                entries = bands.low.get(b)
                if entries is not None:
                    self._low_entries -= self._take(bands.low, b, entries, above, True, found)
            bands.low_max = mark_ticks  # every lo left is ≤ the mark
        if bands.any_high and bands.high_min < mark_ticks:  # a hi below the mark may exist
            # entry < below ⇔ hi < mark: the band is left above
            below = mark_ticks << self._tail_bits
            for b in range(bands.bucket(bands.high_min), bands.bucket(mark_ticks) + 1):
                entries = bands.high.get(b)
                if entries is not None:
                    self._high_entries -= self._take(bands.high, b, entries, below, False, found)
            bands.high_min = mark_ticks  # every hi left is ≥ the mark
        return found

    def _take(self, buckets: dict[int, list[int]], b: int, entries: list[int], limit: int, at_or_above: bool,
              found: set[ScopeKey]) -> int:
        """Move the live entries of bucket ``b`` past ``limit`` (≥ it, or < it) into ``found`` as
        scopes, keep the other live ones, drop the superseded; the number of entries removed."""
        version, slot_bits, slot_mask = self._version, self._slot_bits, self._slot_mask
        kept: list[int] = []
        for e in entries:
            slot = e & slot_mask
            if (e >> slot_bits) & _VERSION_MASK != version[slot] & _VERSION_MASK:
                continue  # superseded
            if (e >= limit) == at_or_above:
                found.add((self._slot_account[slot], self._slot_scope[slot]))
            else:
                kept.append(e)
        if kept:
            buckets[b] = kept
        else:
            del buckets[b]
        return len(entries) - len(kept)

    def _rebucket(self, symbol: str, mark_ticks: int) -> _SymbolBands:
        """The symbol's entries in buckets around ``mark_ticks``: after a move beyond a factor of
        REBUCKET_FACTOR from the reference, the buckets would be too fine (a tick reads many) or too
        coarse (the mark's bucket holds many)."""
        old = self._symbols[symbol]
        bands = self._symbols[symbol] = _SymbolBands(mark_ticks)
        bands.any_low, bands.low_max, bands.any_high, bands.high_min = old.any_low, old.low_max, old.any_high, old.high_min
        tail_bits = self._tail_bits
        for entries in old.low.values():
            for e in entries:
                _append(bands.low, bands.bucket(e >> tail_bits), e)
        for entries in old.high.values():
            for e in entries:
                _append(bands.high, bands.bucket(e >> tail_bits), e)
        return bands

    def _widen_slots(self) -> None:
        """One more slot bit: every entry is written again with the wider slot field (bound,
        version and slot unchanged, so buckets and liveness are the same)."""
        old_bits, old_mask, old_tail_bits = self._slot_bits, self._slot_mask, self._tail_bits
        self._slot_bits = old_bits + 1
        self._slot_mask = (1 << self._slot_bits) - 1
        self._tail_bits = self._slot_bits + VERSION_BITS
        for bands in self._symbols.values():
            for buckets in (bands.low, bands.high):
                for b, entries in buckets.items():
                    buckets[b] = [(e >> old_tail_bits) << self._tail_bits
                                  | ((e >> old_bits) & _VERSION_MASK) << self._slot_bits | (e & old_mask)
                                  for e in entries]

    def compact(self) -> None:
        """Drop superseded entries (lazy deletion leaves them behind where no tick reads).

        ``_is_live`` written out: an entry is below 2^62 for any realistic price, so compiled these
        are machine-word operations and a list read (no method call, no set of live tails to build:
        that set is ~50 B per account of peak memory)."""
        version, slot_bits, slot_mask = self._version, self._slot_bits, self._slot_mask
        low_entries = high_entries = 0
        for bands in self._symbols.values():
            for buckets in (bands.low, bands.high):
                for b in list(buckets):
                    entries = buckets[b]
                    live = [e for e in entries
                            if (e >> slot_bits) & _VERSION_MASK == version[e & slot_mask] & _VERSION_MASK]
                    if not live:
                        del buckets[b]
                    elif len(live) < len(entries):
                        buckets[b] = live
            low_entries += sum(len(entries) for entries in bands.low.values())
            high_entries += sum(len(entries) for entries in bands.high.values())
        self._low_entries, self._high_entries = low_entries, high_entries


class Engine:
    """Account state and the evaluation rules of SPEC §3–§5, §8."""

    def __init__(self, params: Params, accounts: dict[str, AccountState] | None = None,
                 fund: InsuranceFund | None = None, use_index: bool = True, remote_settlement: bool = False) -> None:
        self.params = params
        self.use_index = use_index  # False: every holder of the ticked symbol is evaluated (reference)
        # True (streaming): fund movements go to the single-writer fund agent as `fund_request`s
        self.remote_settlement = remote_settlement
        self.dirty: set[str] = set()  # accounts changed since the adapter last persisted them
        # positions partitions this engine holds (streaming); None = every account (replay)
        self.partitions: list[int] | None = None
        self._requests: list[dict[str, Any]] = []
        self.accounts: dict[str, AccountState] = accounts if accounts is not None else {}
        self.marks: dict[str, MarkState] = {}
        self.fund = fund or InsuranceFund(params.insurance_initial_units, params.insurance_floor_units)
        self.deficits = DeficitBook()  # replay: loss sharing runs here (streaming: in the fund's coordinator)
        # streaming, loss sharing on: this engine marks each tick's items for the coordinator
        # (worker/rounds.py); set by the worker that owns positions partition 0
        self.tick_markers = False
        self.claims_units = sum(a.claim_units for a in self.accounts.values())  # Σ claims outstanding
        self.index = CandidateIndex()
        # per symbol: safe_move_ticks' constants at this call ratio (BandTerms)
        self._band_terms: dict[str, BandTerms] = {
            name: band_terms(sym, params.call_ratio_ppm) for name, sym in params.symbols.items()}
        self.expiries: list[tuple[int, ScopeKey, str]] = []  # (expiry ts, key, liquidation_id)
        self.newest_ts = 0
        self.counters: Counter[str] = Counts()
        self.last_snapshot_bucket: dict[str, int] = {}
        # (symbol) → signed sums for open interest in lots
        # open interest in lots by symbol (plain dicts: a Counter's item assignment goes through a
        # Python-level slot, ~3× a dict's, on every position event)
        self.open_long: dict[str, int] = {}
        self.open_short: dict[str, int] = {}
        # kept as pending / in_call change (O(changes) metrics): Σ a.pending_count(), Σ a.in_call_count()
        self.pending_scopes = 0
        self.call_scopes = 0
        self.load_accounts(self.accounts)

    def load_accounts(self, accounts: dict[str, AccountState]) -> None:
        """Replace the account set (after a rebalance) and rebuild the index and aggregates."""
        self.accounts = accounts
        self.index = CandidateIndex()
        self.open_long.clear()
        self.open_short.clear()
        self.expiries = []
        self.pending_scopes, self.call_scopes = self.recount_scopes()
        for account in accounts.values():
            self._count_open_interest(account, +1)
            for pending in account.pendings():
                if self.params.pending_timeout_ms:
                    heapq.heappush(self.expiries, (pending.emitted_ts + self.params.pending_timeout_ms,
                                                   (account.account_id, pending.scope),
                                                   pending.liquidation_id_of(account.account_id)))
            for scope in account.scopes():
                self._reindex(account, scope)

    def evaluate_all(self, account_ids: Iterable[str] | None = None) -> list[Output]:
        """Evaluate every scope once against the current marks (after taking over partitions);
        only those of ``account_ids`` if given (a takeover evaluates the accounts new to it first).

        The trigger is the newest tick of the scope's symbols, as if that tick had found it.
        """
        out: list[Output] = []
        for account_id in sorted(self.accounts if account_ids is None else account_ids):
            account = self.accounts[account_id]
            for scope in account.scopes():
                out.extend(self._evaluate_at_marks(account, scope) or ())
        return out + self._flush_requests()

    def take_over(self, accounts: dict[str, AccountState]) -> tuple[list[Output], list[Output]]:
        """Add accounts (a rebalance handed this engine their partitions) and evaluate each scope
        once against the current marks, as ``evaluate_all`` does; a scope with no mark yet is
        watched. The same result as adding them to ``load_accounts`` and then ``evaluate_all``,
        at about half the cost: each scope is indexed once, by its evaluation.

        Returns what their pending liquidations published (to publish again first: same ids and
        bytes) and the outputs of the evaluation."""
        for account in accounts.values():
            replaced = self.accounts.get(account.account_id)
            if replaced is not None:
                self._count_open_interest(replaced, -1)
                self.pending_scopes -= replaced.pending_count()
                self.call_scopes -= replaced.in_call_count()
            self.accounts[account.account_id] = account
            self._count_open_interest(account, +1)
            self.pending_scopes += account.pending_count()
            self.call_scopes += account.in_call_count()
            for pending in account.pendings():
                if self.params.pending_timeout_ms:
                    heapq.heappush(self.expiries, (pending.emitted_ts + self.params.pending_timeout_ms,
                                                   (account.account_id, pending.scope),
                                                   pending.liquidation_id_of(account.account_id)))
        republish = self.pending_outputs(accounts)
        out: list[Output] = []
        for account_id in sorted(accounts):
            account = accounts[account_id]
            for scope in account.scopes():
                evaluated = self._evaluate_at_marks(account, scope)
                if evaluated is None:
                    self._reindex(account, scope)
                else:
                    out.extend(evaluated)
        return republish, out + self._flush_requests()

    def recount_scopes(self) -> tuple[int, int]:
        """(Σ pending scopes, Σ scopes in the margin-call zone) counted over every account: what
        ``pending_scopes`` and ``call_scopes`` keep as they change."""
        pending = in_call = 0
        for account in self.accounts.values():
            pending += account.pending_count()
            in_call += account.in_call_count()
        return pending, in_call

    def _set_pending(self, account: AccountState, pending: PendingLiquidation) -> None:
        if account.put_pending(pending):
            self.pending_scopes += 1

    def _clear_pending(self, account: AccountState, scope: str) -> None:
        if account.pop_pending(scope) is not None:
            self.pending_scopes -= 1

    def _set_in_call(self, account: AccountState, scope: str, in_call: bool) -> None:
        held = account._in_call
        if in_call:
            if held is None:
                held = account._in_call = set()
            if scope not in held:
                held.add(scope)
                self.call_scopes += 1
        elif held is not None and scope in held:
            held.discard(scope)
            self.call_scopes -= 1
            if not held:
                account._in_call = None

    def _evaluate_at_marks(self, account: AccountState, scope: str) -> list[Output] | None:
        """Evaluate a scope as if the newest tick of its symbols had found it; None: no mark yet."""
        symbols = [s for s in self._scope_symbols(account, scope) if s in self.marks]
        if not symbols:
            return None
        newest = max(symbols, key=lambda s: (self.marks[s].ts, s))
        mark = self.marks[newest]
        trigger = Trigger("mark", newest, mark.seq, mark.mark_ticks)
        self.counters["evaluations"] += 1
        return self._evaluate(account, scope, trigger, mark.ts)

    def take_dirty(self) -> list[AccountState]:
        changed = [self.accounts[a] for a in sorted(self.dirty) if a in self.accounts]
        self.dirty.clear()
        return changed

    # ----------------------------------------------------------------- inputs
    def process_mark(self, value: Any, source: Source) -> list[Output]:
        """One `mark-prices` message: an event or an array of events, applied in order."""
        return list(self.iter_mark(value, source))

    def iter_mark(self, value: Any, source: Source) -> Iterator[Output]:
        """``process_mark``'s outputs, each scope's made when the caller asks for the next ones: a
        cascade's tick liquidates thousands of scopes at once, and a caller that writes each output
        and drops it (replay) need not hold all of them (~7 KB of objects per liquidation event).
        The same outputs in the same order, provided the caller changes no engine state between two."""
        for index, element in _elements(value):
            try:
                tick = decode_mark(element, self.params)
            except BadInput as exc:
                yield self.dead_letter(source, exc.code, str(exc), index, element)
                continue
            yield from self.iter_apply_mark(tick, source, index, element)
        yield from self._flush_requests()

    def process_positions(self, value: Any, source: Source,
                          accept_account: Callable[[str], bool] | None = None) -> list[Output]:
        """One `positions` message; ``accept_account`` refuses accounts of another partition."""
        out: list[Output] = []
        element_at = _element_of(value)
        for index, element in _elements(value):
            try:
                update = decode_position_event(element, self.params)
            except BadInput as exc:
                out.append(self.dead_letter(source, exc.code, str(exc), index, element))
                continue
            out.extend(self._apply_update(index, update, source, element_at, accept_account))
        return out + self._flush_requests()

    def process_position_updates(self, updates: list[tuple[int | None, PositionUpdate | BalanceUpdate]],
                                 source: Source, element_at: Callable[[int | None], Any],
                                 accept_account: Callable[[str], bool] | None = None) -> list[Output]:
        """``process_positions`` for events a typed decoder already validated (worker/typed_input.py):
        the same outputs; ``element_at(index)`` gives an event's JSON, asked only for a dead letter."""
        out: list[Output] = []
        for index, update in updates:
            out.extend(self._apply_update(index, update, source, element_at, accept_account))
        return out + self._flush_requests()

    def _apply_update(self, index: int | None, update: PositionUpdate | BalanceUpdate, source: Source,
                      element_at: Callable[[int | None], Any],
                      accept_account: Callable[[str], bool] | None) -> list[Output]:
        """A decoded positions event: dead-lettered when its account belongs to another partition,
        else applied."""
        if accept_account is not None and not accept_account(update.account_id):
            return [self.dead_letter(source, "wrong_partition", WRONG_PARTITION, index, element_at(index))]
        return self.apply_position_event(update, source, index, element_at)

    def dead_letter(self, source: Source, code: str, message: str, index: int | None = None,
                    element: Any = None) -> Output:
        self.counters[f"dead_letter:{code}"] += 1
        event = dead_letter_event(ts=self.newest_ts, source=source, code=code, message=message,
                                  index=index, element=element)
        return Output("dead-letters", source.topic, event)

    def unpublishable(self, output: Output, reason: str) -> Output:
        """The stub dead letter that replaces an output no encoder or message can carry."""
        self.counters["dead_letter:unpublishable_output"] += 1
        event = unpublishable_stub(ts=self.newest_ts, topic=output.topic, key=output.key, reason=reason)
        return Output("dead-letters", output.topic, event)

    # ------------------------------------------------------------ mark ticks
    def apply_mark(self, tick: MarkTick, source: Source, index: int | None = None, element: Any = None) -> list[Output]:
        return list(self.iter_apply_mark(tick, source, index, element))

    def iter_apply_mark(self, tick: MarkTick, source: Source, index: int | None = None,
                        element: Any = None) -> Iterator[Output]:
        """``apply_mark``'s outputs, one evaluated scope's at a time (``iter_mark``)."""
        previous = self.marks.get(tick.symbol)
        if previous is not None and tick.seq <= previous.seq:
            self.counters["stale_seq:mark"] += 1
            yield self.dead_letter(source, "stale_seq", f"mark seq {tick.seq} <= applied {previous.seq}",
                                   index, element)
            return
        sides, repay = ([], False) if self.remote_settlement else rounds_due(
            self.params, self.deficits, self.claims_units, self.fund.balance_units, tick.symbol, tick.ts)
        if self.tick_markers:
            self._requests.append(tick_marker("begin", tick.symbol, tick.seq, tick.ts, tick.mark_ticks))
        self.newest_ts = max(self.newest_ts, tick.ts)
        confirmed = True
        jump = self.params.max_jump_ppm
        if jump and previous is not None:
            # jumped iff |P − P_prev| · 10^6 > max_jump · P_prev; confirmed by the next tick
            confirmed = iabs(tick.mark_ticks - previous.mark_ticks) * PPM <= jump * previous.mark_ticks
            if not confirmed:
                self.counters["guard:jump"] += 1
        self.marks[tick.symbol] = MarkState(tick.mark_ticks, tick.seq, tick.ts, confirmed)
        self.counters["ticks"] += 1
        trigger = Trigger("mark", tick.symbol, tick.seq, tick.mark_ticks)
        keys = self.index.candidates(tick.symbol, tick.mark_ticks)
        if not self.use_index:
            keys = {(a.account_id, scope) for a in self.accounts.values() for scope in a.scopes()
                    if tick.symbol in self._scope_symbols(a, scope)}
        keys.update(self._expired(tick.ts))
        self.counters["evaluations"] += len(keys)
        self.counters[f"evaluations:{tick.symbol}"] += len(keys)
        for account_id, scope in sorted(keys, key=_scope_order):
            account = self.accounts.get(account_id)
            if account is None:
                continue
            yield from self._evaluate_guarded(account, scope, trigger, tick.ts, source)
        yield from self._maybe_snapshot(tick)
        if self.tick_markers:
            self._requests.append(tick_marker("end", tick.symbol, tick.seq, tick.ts, tick.mark_ticks,
                                              self._guard_free(tick)))
        if (sides or repay) and self._guard_free(tick):  # loss sharing (§5.1, §5.2): after the liquidations
            outputs, claims_delta = run_rounds_locally(
                self.params, self.deficits, self.accounts, self.fund, self.dirty, symbol=tick.symbol,
                mark_seq=tick.seq, mark_ticks=tick.mark_ticks, ts=tick.ts, sides=sides, repay=repay)
            self.claims_units += claims_delta
            yield from outputs

    def _guard_free(self, tick: MarkTick) -> bool:
        """A round runs only on a tick the guards would liquidate on: confirmed, not stale."""
        return self._mark_guard(tick.symbol) is None

    # -------------------------------------------------------- positions events
    def apply_position_event(self, update: PositionUpdate | BalanceUpdate, source: Source,
                             index: int | None = None,
                             element_at: Callable[[int | None], Any] | None = None) -> list[Output]:
        """``element_at(index)``: the event's JSON for a dead letter (asked only for one)."""
        account = self.accounts.get(update.account_id)
        if account is None:
            account = AccountState(update.account_id)
        elif update.seq <= account.seq:
            self.counters["stale_seq:positions"] += 1
            return [self.dead_letter(source, "stale_seq", f"positions seq {update.seq} <= applied {account.seq}",
                                     index, None if element_at is None else element_at(index))]
        self.newest_ts = max(self.newest_ts, update.ts)
        changed: list[str] = []  # the scopes whose positions or collateral this event changed
        if isinstance(update, PositionUpdate):
            symbol = update.symbol
            held = account.position_of(symbol)
            new = None if update.size_lots == 0 else PositionState(
                update.size_lots, update.entry_ticks, update.isolated, update.isolated_margin_units)
            if new != held:
                self._count_position(symbol, held, -1)
                self._count_position(symbol, new, +1)
                account.set_position(symbol, new)
                for position in (held, new):
                    if position is not None:
                        changed.append(symbol if position.isolated else CROSS)
            mark = self.marks.get(symbol)
            trigger = Trigger("position", symbol, update.seq, mark.mark_ticks if mark else None)
        else:
            if update.collateral_units != account.collateral_units:
                account.collateral_units = update.collateral_units
                changed.append(CROSS)
            trigger = Trigger("balance", None, update.seq, None)
        account.seq = update.seq
        # emitted counts liquidations per scope at one seq (the n of their ids); every count, kept
        # apart or given by a pending liquidation, is of a seq ≤ the one before this event, so none
        # is read again (ids restart at n = 0)
        account._emitted = None
        self.counters["position_events"] += 1
        if update.liquidation_id is not None:
            acked = [p.scope for p in account.pendings()
                     if p.liquidation_id_of(account.account_id) == update.liquidation_id]
            for scope in acked:
                self._clear_pending(account, scope)
                self.counters["acks"] += 1
            if not acked:
                self.counters["unmatched_acks"] += 1
        self.accounts[account.account_id] = account
        self.dirty.add(account.account_id)
        scopes = account.scopes()
        # its own pending scopes see the timeout here; other accounts' only on ticks, which every
        # worker sees (so that a partitioned worker expires exactly what replay expires)
        watched = account.watched_scopes()
        if watched and any(scope not in scopes for scope in watched):  # a scope closed since
            scopes = sorted(set(scopes).union(watched), key=_scope_rank)
        for scope in changed:
            if scope not in scopes:  # an isolated scope this event closed: nothing of it left to index
                self.index.drop((account.account_id, scope))
        out: list[Output] = []
        for scope in scopes:
            # A scope that holds bands and whose positions and collateral this event left as they
            # were is in the zone of its last evaluation (the marks are inside its bands): evaluating
            # it again would emit nothing and only re-index it. (The reference, use_index=False,
            # evaluates it anyway: the property tests compare the two.)
            if self.use_index and scope not in changed and self.index.is_banded((account.account_id, scope)):
                continue
            self.counters["evaluations"] += 1
            out.extend(self._evaluate_guarded(account, scope, trigger, update.ts, source))
        return out

    # -------------------------------------------------------------- evaluation
    def scope_legs(self, account: AccountState, scope: str) -> tuple[int, list[Leg]] | None:
        """(collateral, legs) of a scope, or None while one of its symbols has no mark."""
        legs: list[Leg] = []
        if scope == CROSS:
            collateral = account.collateral_units
            symbols = account.cross_symbols()
        else:
            held = account.position_of(scope)
            if held is None or not held.isolated:
                return 0, []  # the isolated position was closed (or became cross): nothing to evaluate
            collateral = held.isolated_margin_units
            symbols = [scope]
        for symbol in symbols:
            mark = self.marks.get(symbol)
            if mark is None:
                return None
            position = account.position_of(symbol)
            assert position is not None
            legs.append(Leg(self.params.symbols[symbol], position.size_lots, position.entry_ticks, mark.mark_ticks))
        return collateral, legs

    def _evaluate(self, account: AccountState, scope: str, trigger: Trigger, ts: int) -> list[Output]:
        key = (account.account_id, scope)
        pending = account.pending_of(scope)
        timed_out = False
        if pending is not None:
            timeout = self.params.pending_timeout_ms
            if timeout == 0 or ts - pending.emitted_ts < timeout:
                self.index.drop(key)
                return []
            self._clear_pending(account, scope)  # timed out: evaluated again; a new liquidation is counted
            self.dirty.add(account.account_id)
            self.counters["pending_timeouts"] += 1
            timed_out = True
        else:
            timed_out = False
        found = self.scope_legs(account, scope)
        if found is None:
            self.index.drop(key)
            for symbol in self._scope_symbols(account, scope):
                if symbol not in self.marks:
                    self.index.watch(key, symbol)
            return []
        collateral, legs = found
        state = margin_state(collateral, legs)
        current = zone(state, self.params.call_ratio_ppm) if legs else "healthy"
        out: list[Output] = []
        if current == "liquidatable":
            guard = self._guard(legs)
            if guard is not None:
                self.counters[f"guard_trip:{guard}"] += 1
                self.index.drop(key)
                for leg in legs:
                    self.index.watch(key, leg.sym.symbol)
                return []
        was_call = account.is_in_call(scope)
        if current == "call" and not was_call:
            self.dirty.add(account.account_id)
            self._set_in_call(account, scope, True)
            out.append(self._margin_call("margin_call", account, scope, state, current, trigger, ts))
        elif current != "call" and was_call:
            self.dirty.add(account.account_id)
            self._set_in_call(account, scope, False)
            out.append(self._margin_call("margin_call_cleared", account, scope, state, current, trigger, ts))
        if current == "liquidatable":
            out.extend(self._liquidate(account, scope, collateral, legs, trigger, ts, timed_out))
            self.index.drop(key)
        else:
            self._index_bands(key, state, legs)
        return out

    def _evaluate_guarded(self, account: AccountState, scope: str, trigger: Trigger, ts: int,
                          source: Source) -> list[Output]:
        """One scope's failure (a bug: AccountingError, ...) must not take the others down: it is
        dead-lettered and counted, and the scope is looked at again on its symbols' next tick."""
        try:
            return self._evaluate(account, scope, trigger, ts)
        except Exception as exc:  # noqa: BLE001 - isolate, count, report; never swallow silently
            self.counters["internal_error:evaluation"] += 1
            key = (account.account_id, scope)
            self.index.drop(key)
            for symbol in self._scope_symbols(account, scope):
                self.index.watch(key, symbol)
            return [self.dead_letter(source, "internal_error",
                                     f"evaluating {account.account_id}/{scope}: {type(exc).__name__}: {exc}"[:300])]

    def _guard(self, legs: list[Leg]) -> str | None:
        for leg in legs:
            guard = self._mark_guard(leg.sym.symbol)
            if guard is not None:
                return guard
        return None

    def _mark_guard(self, symbol: str) -> str | None:
        """The guard (§8) that holds back a liquidation on ``symbol``'s current mark, if any."""
        mark = self.marks[symbol]
        max_age = self.params.max_mark_age_ms
        if max_age and mark.ts < self.newest_ts - max_age:
            return "stale_mark"
        if not mark.confirmed:
            return "unconfirmed_jump"
        return None

    def _liquidate(self, account: AccountState, scope: str, collateral: int, legs: list[Leg],
                   trigger: Trigger, ts: int, timed_out: bool = False) -> list[Output]:
        """Plan, render and only then record: an AccountingError leaves no state behind."""
        plan = plan_liquidation(collateral, legs, self.params)
        n = account.emitted_count(scope)
        lid = liquidation_id(account.account_id, scope, account.seq, n)
        out: list[Output] = []
        item = None
        if self.remote_settlement:
            if plan.insurance_fund_units or plan.bankrupt:
                item = request_item(plan_to_list(plan), lid=lid, account_id=account.account_id, scope=scope,
                                    ts=ts, trigger=trigger)
                out.append(Output("insurance-requests", self.params.asset, fund_request([item])))
            if not plan.bankrupt:  # a solvent allocation does not depend on the fund
                out.append(Output("liquidations", account.account_id, allocation_event(
                    self.params, plan, liquidation_id=lid, account_id=account.account_id, scope=scope, ts=ts,
                    trigger=trigger, insurance_cover_units=0, socialized_loss_units=0),
                    allocation_amounts(plan, 0, 0)))
            pending = PendingLiquidation(scope, account.seq, n, ts, [[o.topic, o.key, o.value] for o in out])
            out = [o for o in out if o.topic != "insurance-requests"]  # requests leave batched
        else:
            balance_before = self.fund.balance_units
            cover, social, out = settle(self.params, self.fund, plan, lid, account.account_id, ts)
            try:
                out.append(Output("liquidations", account.account_id, allocation_event(
                    self.params, plan, liquidation_id=lid, account_id=account.account_id, scope=scope, ts=ts,
                    trigger=trigger, insurance_cover_units=cover, socialized_loss_units=social),
                    allocation_amounts(plan, cover, social)))
            except AssertionError:
                self.fund.balance_units = balance_before
                raise
            record_deficits(self.deficits, plan, social)
            self.counters["socialized_loss_units"] += social
            pending = PendingLiquidation(scope, account.seq, n, ts)
        # record: nothing above raised
        if item is not None:
            self._requests.append(item)
        self._set_pending(account, pending)  # its scope's emitted count at this seq is now n + 1
        self.dirty.add(account.account_id)
        if self.params.pending_timeout_ms:
            heapq.heappush(self.expiries, (ts + self.params.pending_timeout_ms, (account.account_id, scope), lid))
        self.counters["liquidations"] += 1
        self.counters["bankruptcies" if plan.bankrupt else "solvent_liquidations"] += 1
        if timed_out:
            self.counters["reliquidations"] += 1
        return out

    def _flush_requests(self) -> list[Output]:
        """The fund requests of one input message leave batched: one `fund_request` per
        FUND_REQUEST_ITEMS liquidations (one framework pass each, and well under a message's size)."""
        if not self._requests:
            return []
        items, self._requests = self._requests, []
        return self._fund_requests(items)

    def _fund_requests(self, items: list[dict[str, Any]]) -> list[Output]:
        return [Output("insurance-requests", self.params.asset, fund_request(items[i:i + FUND_REQUEST_ITEMS]))
                for i in range(0, len(items), FUND_REQUEST_ITEMS)]

    def pending_outputs(self, account_ids: Iterable[str] | None = None) -> list[Output]:
        """What was published for every pending liquidation (of ``account_ids`` if given), to
        publish again after a takeover (a duplicate carries the same id and bytes; the fund agent
        applies a request once)."""
        out: list[Output] = []
        items: list[dict[str, Any]] = []
        for account_id in sorted(self.accounts if account_ids is None else account_ids):
            for pending in sorted(self.accounts[account_id].pendings(), key=_pending_scope):
                for topic, key, value in pending.outputs:
                    if topic == "insurance-requests":
                        items.extend(value["items"])
                    else:
                        out.append(Output(topic, key, value))
        return self._fund_requests(items) + out

    def _margin_call(self, kind: str, account: AccountState, scope: str, state: MarginState, current: str,
                     trigger: Trigger, ts: int) -> Output:
        self.counters[kind] += 1
        event = margin_call_event(
            self.params, kind=kind, ts=ts, account_id=account.account_id, scope=scope,
            equity_units=state.equity_units, maintenance_units=state.maintenance_units,
            call_level_units=call_level(state.maintenance_units, self.params.call_ratio_ppm),
            ratio_ppm=ratio_ppm(state), zone=current, trigger=trigger)
        return Output("margin-calls", account.account_id, event)

    # ------------------------------------------------------------------ index
    def _index_bands(self, key: ScopeKey, state: MarginState, legs: list[Leg]) -> None:
        if not legs:
            self.index.drop(key)
            return
        index = self.index
        slot = index.slot_of(key)  # (one lookup of the key for the drop and the puts)
        index.drop_at(slot, key)
        ratio = self.params.call_ratio_ppm
        level = call_level(state.maintenance_units, ratio)
        healthy = state.equity_units >= level
        if healthy:  # healthy: stays so while EQ ≥ call level
            slack = state.equity_units - level
        else:  # call zone: stays while MM ≤ EQ < call level
            slack = min(state.equity_units - state.maintenance_units, level - state.equity_units - 1)
        # The slack is shared among the legs in proportion to their notionals, share_i = floor(slack ·
        # N_i / ΣN) (Σ share_i ≤ slack: any split keeps the zone inside the bands), so that each band
        # allows about the same relative move: an equal split gave the largest leg the narrowest band
        # in price terms, and the most evaluations (replay bench: −10 % evaluations, −20 % on BTC ticks).
        # A healthy scope's leg is banded on its adverse side only (BandTerms.one_sided: a move its
        # position's way cannot bring EQ below the call level by more than the rounding its share holds).
        terms = self._band_terms
        count = len(legs)
        weights: list[int] = []
        total = 0
        if count > 1:
            for leg in legs:
                weight = notional(leg.sym, leg.size_lots, leg.mark_ticks)
                weights.append(weight)
                total += weight
        for i in range(count):
            leg = legs[i]
            if count == 1:
                share = slack
            elif total > 0:
                share = mul(slack, weights[i]) // total
            else:
                share = slack // count
            leg_terms = terms[leg.sym.symbol]
            move = safe_move_ticks(leg_terms, leg.size_lots, share)
            if healthy and move > 0 and leg_terms.one_sided:
                if leg.size_lots > 0:
                    index.put_band_at(slot, leg.sym.symbol, leg.mark_ticks - move, None)
                else:
                    index.put_band_at(slot, leg.sym.symbol, None, leg.mark_ticks + move)
            else:
                index.put_band_at(slot, leg.sym.symbol, leg.mark_ticks - move, leg.mark_ticks + move)

    def _reindex(self, account: AccountState, scope: str) -> None:
        key = (account.account_id, scope)
        if account.pending_of(scope) is not None:
            self.index.drop(key)
            return
        found = self.scope_legs(account, scope)
        if found is None:
            for symbol in self._scope_symbols(account, scope):
                self.index.watch(key, symbol)
            return
        collateral, legs = found
        state = margin_state(collateral, legs)
        if state.liquidatable():
            for leg in legs:
                self.index.watch(key, leg.sym.symbol)
        else:
            self._index_bands(key, state, legs)

    def _scope_symbols(self, account: AccountState, scope: str) -> list[str]:
        if scope == CROSS:
            return account.cross_symbols()
        return [scope]

    def _expired(self, ts: int) -> set[ScopeKey]:
        """Pending scopes whose timeout passed at event time ``ts``."""
        found: set[ScopeKey] = set()
        while self.expiries and self.expiries[0][0] <= ts:
            _, key, lid = heapq.heappop(self.expiries)
            account = self.accounts.get(key[0])
            pending = account.pending_of(key[1]) if account else None
            if pending is not None and pending.liquidation_id_of(key[0]) == lid:
                found.add(key)
        return found

    # -------------------------------------------------------- snapshots, OI
    def _count_open_interest(self, account: AccountState, sign: int) -> None:
        flat = account._positions
        for i in range(0, len(flat), 2):
            self._count_position(flat[i], flat[i + 1], sign)

    def _count_position(self, symbol: str, position: PositionState | None, sign: int) -> None:
        if position is None:
            return
        side = self.open_long if position.size_lots > 0 else self.open_short
        lots = side.get(symbol, 0) + sign * iabs(position.size_lots)
        if lots:
            side[symbol] = lots
        else:  # no zero entries: two engines with the same open interest hold equal dicts
            side.pop(symbol, None)  # (a zero-lot position from a hand-written record: nothing to remove)

    def _maybe_snapshot(self, tick: MarkTick) -> list[Output]:
        interval = self.params.snapshot_interval_ms
        if not interval:
            return []
        bucket = tick.ts // interval
        if self.last_snapshot_bucket.get(tick.symbol) == bucket:
            return []
        self.last_snapshot_bucket[tick.symbol] = bucket
        return [Output("risk-snapshots", tick.symbol, self.snapshot(tick.symbol, tick.ts))]

    def snapshot(self, symbol: str, ts: int) -> dict[str, Any]:
        """Mark, open interest, accounts in the margin-call zone and their notional (at mark)."""
        sym = self.params.symbols[symbol]
        mark = self.marks[symbol]
        in_zone = 0
        at_risk = 0
        for account in self.accounts.values():
            if account._in_call is None and account._pending is None:
                continue
            for scope in set(account.watched_scopes()):
                position = account.position_of(symbol)
                if symbol in self._scope_symbols(account, scope) and position is not None:
                    in_zone += account.is_in_call(scope)
                    at_risk += notional(sym, position.size_lots, mark.mark_ticks)
        return {
            "type": "risk_snapshot",
            "schema_version": SCHEMA_VERSION,
            "ts": ts,
            "symbol": symbol,
            "mark_price": format_units(mark.mark_ticks, sym.price_decimals),
            "open_interest_long": format_units(self.open_long.get(symbol, 0), sym.size_decimals),
            "open_interest_short": format_units(self.open_short.get(symbol, 0), sym.size_decimals),
            "accounts_in_margin_call": in_zone,
            "notional_at_risk": format_units(at_risk, self.params.quote_decimals),
            "partitions": self.partitions,
            "params_version": self.params.params_version,
        }


def fund_request(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "fund_request", "schema_version": 1, "items": items}


def _element_of(value: Any) -> Callable[[int | None], Any]:
    """``element_at`` for a decoded message: the event at an index of its array, or the message."""
    return lambda index: value if index is None else value[index]


def _elements(value: Any) -> Iterable[tuple[int | None, Any]]:
    if isinstance(value, list):
        return enumerate(value)
    return ((None, value),)


def _pending_scope(pending: PendingLiquidation) -> str:
    return pending.scope


def _scope_order(key: ScopeKey) -> tuple[str, int, str]:
    account_id, scope = key
    return (account_id, 0 if scope == CROSS else 1, scope)


def _scope_rank(scope: str) -> tuple[int, str]:
    """Evaluation order of one account's scopes: cross first, then isolated by symbol."""
    return (0 if scope == CROSS else 1, scope)
