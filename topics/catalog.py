"""The versioned topic catalog (SPEC §6): names, keys, direction, partitions, cleanup policy, events.

Names here are catalog names; a deployment may put a configurable prefix before each
(``topic_name``). Each event type has a JSON Schema at ``topics/schemas/<event_type>.v1.json``.
Stdlib only: the worker imports this at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass

CATALOG_VERSION = 1

DIRECTIONS = ("in", "out", "internal")
CLEANUP_POLICIES = ("delete", "compact")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str  # catalog name, without prefix
    key: str  # what the message key is
    direction: str  # "in" | "out" | "internal"
    partitions: int | None = None  # None: the deployment's partition count
    cleanup_policy: str = "delete"  # "delete" | "compact"
    event_types: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"topic {self.name!r}: direction must be one of {DIRECTIONS}")
        if self.cleanup_policy not in CLEANUP_POLICIES:
            raise ValueError(f"topic {self.name!r}: cleanup_policy must be one of {CLEANUP_POLICIES}")
        if self.partitions is not None and self.partitions < 1:
            raise ValueError(f"topic {self.name!r}: partitions must be at least 1")


MARK_PRICES = TopicSpec(
    "mark-prices", "symbol", "in", cleanup_policy="compact", event_types=("mark_price",),
    description="Mark price ticks; one event or a JSON array of events per message. seq rises per symbol.")
POSITIONS = TopicSpec(
    "positions", "account_id", "in", cleanup_policy="delete", event_types=("position", "balance"),
    description="Position and balance snapshots; one event or a JSON array of events of the message's "
                "partition. seq rises per account.")
LIQUIDATIONS = TopicSpec(
    "liquidations", "account_id", "out", event_types=("liquidation",),
    description="Allocation events (SPEC §6.1), one per liquidation.")
MARGIN_CALLS = TopicSpec(
    "margin-calls", "account_id", "out", event_types=("margin_call", "margin_call_cleared"),
    description="Entering and leaving the margin-call zone, with equity, maintenance and ratio.")
INSURANCE_FUND = TopicSpec(
    "insurance-fund", "asset", "out", event_types=("insurance_fund_entry", "socialized_loss"),
    description="Insurance fund ledger entries and socialized losses, published before their allocation.")
RISK_SNAPSHOTS = TopicSpec(
    "risk-snapshots", "symbol", "out", event_types=("risk_snapshot",),
    description="Periodic per-symbol snapshot: mark, open interest, accounts in the call zone, notional at risk.")
LOSS_SHARING = TopicSpec(
    "loss-sharing", "account_id (haircut rounds: symbol; repayment rounds: asset)", "out",
    event_types=("haircut", "haircut_round", "claim_repayment", "repayment_round"),
    description="Loss sharing (SPEC §5.1, §5.2, §6.2): haircuts of a round then its summary; repayments of "
                "claims then their round's summary.")
DEAD_LETTERS = TopicSpec(
    "dead-letters", "source topic", "out", event_types=("dead_letter",),
    description="Refused input: source topic/partition/offset, original key and value, error code and message.")
INSURANCE_REQUESTS = TopicSpec(
    "insurance-requests", "asset", "internal", partitions=1, cleanup_policy="delete", event_types=("fund_request",),
    description="Internal: requests to the single owner of the insurance fund ledger (one partition).")

LOSS_ROUNDS = TopicSpec(
    "loss-rounds", "round_id", "internal", partitions=1, cleanup_policy="compact", event_types=("round",),
    description="Internal: the fund coordinator's broadcast of loss-sharing rounds (announce, allocate, done), "
                "read whole by every worker (worker/rounds.py).")

_CATALOG: tuple[TopicSpec, ...] = (
    MARK_PRICES, POSITIONS, LIQUIDATIONS, MARGIN_CALLS, INSURANCE_FUND, RISK_SNAPSHOTS, LOSS_SHARING, DEAD_LETTERS,
    INSURANCE_REQUESTS, LOSS_ROUNDS,
)
_BY_NAME = {spec.name: spec for spec in _CATALOG}
_BY_EVENT = {event_type: spec for spec in _CATALOG for event_type in spec.event_types}
if len(_BY_NAME) != len(_CATALOG) or len(_BY_EVENT) != sum(len(s.event_types) for s in _CATALOG):
    raise AssertionError("topic names and event types must be unique in the catalog")


def all_topics() -> tuple[TopicSpec, ...]:
    """Every topic of the catalog, inputs first."""
    return _CATALOG


def get_topic(name: str) -> TopicSpec:
    """The spec of a catalog name (without prefix); KeyError if unknown."""
    return _BY_NAME[name]


def topic_for_event(event_type: str) -> TopicSpec:
    """The one topic that carries ``event_type``; KeyError if unknown."""
    return _BY_EVENT[event_type]


def event_types() -> tuple[str, ...]:
    """Every event type of the catalog, in catalog order."""
    return tuple(_BY_EVENT)


def topic_name(name: str, prefix: str = "") -> str:
    """The deployed name of catalog topic ``name``: ``prefix + name``."""
    return prefix + name


def topic_specs(prefix: str = "", partitions: int = 1) -> list[tuple[str, int, dict[str, str]]]:
    """(full name, partitions, config) of every topic, for creating them.

    Topics with a fixed partition count (the internal ``insurance-requests``: 1) keep it;
    the others get ``partitions``.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return [
        (topic_name(spec.name, prefix), spec.partitions or partitions, {"cleanup.policy": spec.cleanup_policy})
        for spec in _CATALOG
    ]
