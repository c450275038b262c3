"""Prometheus metrics of the worker (prometheus_client lives here, never in the core).

Names follow the Prometheus conventions: `_total` for counters, units in the name; money is in
settlement minor units (`_units`, 10^-settlement.decimals of the asset, exact up to 2^53).
Each worker serves them at `/metrics` on its own web port.
"""
from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from worker.core.outputs import ALLOCATION_AMOUNTS

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
EVALUATION_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000, 25000)

METRIC_NAMES = (
    "risk_events_consumed_total", "risk_dead_letters_total", "risk_liquidations_total",
    "risk_penalty_units_total", "risk_shortfall_units_total", "risk_insurance_cover_units_total",
    "risk_socialized_loss_units_total", "risk_insurance_fund_balance_units", "risk_margin_call_scopes",
    "risk_pending_liquidations", "risk_reliquidations_total", "risk_guard_trips_total",
    "risk_tick_evaluations", "risk_mark_age_seconds", "risk_input_to_allocation_latency_seconds",
    "risk_consumer_lag_messages", "risk_owned_partitions",
    "risk_loss_deficit_units", "risk_loss_claims_units", "risk_loss_rounds_total", "risk_loss_shared_units_total",
    "risk_loss_round_duration_seconds", "risk_loss_rounds_in_flight", "risk_loss_round_oldest_seconds",
)
ROUND_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


# an allocation's totals that the counters sum, in settlement minor units: the order of its
# ``Output.amounts`` (the integers the core rendered; nothing here parses the strings back)
ALLOCATION_TOTALS = ALLOCATION_AMOUNTS


def _units(text: str) -> int:
    """Decimal string at its scale → integer units (exact: strings carry exactly their decimals).
    Only for an output rebuilt from a stored value, which carries no amounts."""
    return int(text.replace(".", ""))


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``count`` observations of the same ``amount``, as ``count`` calls of ``histogram.observe``
    leave it (the bucket's count and the count grow by ``count``, the sum by amount × count), with
    its bucket found and incremented once: ``observe`` takes two locks a call, and a group of
    positions messages observes each message's latency (~70 a group). prometheus_client ~=0.26's
    own fields (pinned; tests/test_metrics_observe.py compares the two ways)."""
    histogram._raise_if_not_observable()
    histogram._sum.inc(amount * count)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(count)
            break


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("risk_events_consumed_total", "Input events consumed (batch elements counted)",
                              ["topic"], registry=r)
        self.dead_letters = Counter("risk_dead_letters_total", "Dead letters published, by reason",
                                    ["reason"], registry=r)
        self.liquidations = Counter("risk_liquidations_total", "Liquidation allocations published",
                                    ["scope", "outcome"], registry=r)
        self.penalty = Counter("risk_penalty_units_total", "Penalty by destination, settlement minor units",
                               ["destination"], registry=r)
        self.shortfall = Counter("risk_shortfall_units_total", "Bankruptcy shortfall, settlement minor units",
                                 registry=r)
        self.cover = Counter("risk_insurance_cover_units_total", "Shortfall covered by the insurance fund",
                             registry=r)
        self.socialized = Counter("risk_socialized_loss_units_total", "Shortfall left to socialize", registry=r)
        self.fund_balance = Gauge("risk_insurance_fund_balance_units", "Insurance fund balance (fund agent)",
                                  ["asset"], registry=r)
        self.margin_call = Gauge("risk_margin_call_scopes", "Scopes in the margin-call zone", registry=r)
        self.pending = Gauge("risk_pending_liquidations", "Liquidations emitted and not yet acknowledged",
                             registry=r)
        self.reliquidations = Counter("risk_reliquidations_total", "Re-liquidations after a pending timeout",
                                      registry=r)
        self.guard_trips = Counter("risk_guard_trips_total", "Liquidations held back by a guard", ["guard"],
                                   registry=r)
        self.tick_evaluations = Histogram("risk_tick_evaluations", "Scopes evaluated per mark tick",
                                          buckets=EVALUATION_BUCKETS, registry=r)
        self.mark_age = Gauge("risk_mark_age_seconds", "Newest event time minus the symbol's mark time",
                              ["symbol"], registry=r)
        self.latency = Histogram("risk_input_to_allocation_latency_seconds",
                                 "Input message consumed → its outputs handed to the producer",
                                 buckets=LATENCY_BUCKETS_S, registry=r)
        self.lag = Gauge("risk_consumer_lag_messages", "High watermark minus next offset", ["topic", "partition"],
                         registry=r)
        self.owned = Gauge("risk_owned_partitions", "positions partitions owned by this worker", registry=r)
        # loss sharing (SPEC §5.1, §5.2): reported by the worker that holds the fund's coordinator
        self.deficit = Gauge("risk_loss_deficit_units", "Socialized loss not yet shared out, per symbol and loss side",
                             ["symbol", "side"], registry=r)
        self.claims = Gauge("risk_loss_claims_units", "Claims outstanding (haircuts not yet repaid)", registry=r)
        self.rounds = Counter("risk_loss_rounds_total", "Loss-sharing rounds completed", ["kind"], registry=r)
        self.shared = Counter("risk_loss_shared_units_total", "Haircuts paid (kind=haircut) and claims repaid "
                              "(kind=repay), settlement minor units", ["kind"], registry=r)
        self.round_duration = Histogram("risk_loss_round_duration_seconds", "Round announced → summary published",
                                        ["kind"], buckets=ROUND_BUCKETS_S, registry=r)
        self.rounds_in_flight = Gauge("risk_loss_rounds_in_flight", "Rounds announced and not yet done", registry=r)
        self.round_oldest = Gauge("risk_loss_round_oldest_seconds",
                                  "Age of the oldest round in flight (a stalled partition keeps it growing)", registry=r)
        self._seen: dict[str, float] = {}
        self._events_of: dict[str, Any] = {}  # topic → its labelled child (``labels`` locks and looks up)

    # ----------------------------------------------------------- observations
    def observe_outputs(self, outputs: Iterable[Any]) -> None:
        """Count what was published; a cascade's allocations are summed first and each counter
        moved once (a labelled counter costs a lookup and a lock per ``inc``)."""
        liquidations: dict[tuple[str, str], int] = {}
        liquidator = insurance_fund = protocol = shortfall = cover = socialized = 0
        for output in outputs:
            value = output.value
            kind = value.get("type")
            if kind == "liquidation":
                scope = "cross" if value["scope"] == "cross" else "isolated"
                outcome = (scope, "bankrupt" if value["bankrupt"] else "solvent")
                liquidations[outcome] = liquidations.get(outcome, 0) + 1
                amounts = output.amounts
                if amounts is None:  # rebuilt from a stored value: its rendered totals
                    amounts = tuple(_units(value["totals"][name]) for name in ALLOCATION_TOTALS)
                a_liquidator, a_insurance_fund, a_protocol, a_shortfall, a_cover, a_socialized = amounts
                liquidator += a_liquidator
                insurance_fund += a_insurance_fund
                protocol += a_protocol
                shortfall += a_shortfall
                cover += a_cover
                socialized += a_socialized
            elif kind == "dead_letter":
                self.dead_letters.labels(value["error"]["code"]).inc()
            elif kind in ("haircut_round", "repayment_round"):
                round_kind = "haircut" if kind == "haircut_round" else "repay"
                self.rounds.labels(round_kind).inc()
                self.shared.labels(round_kind).inc(output.amounts[0] if output.amounts else _units(value["paid"]))
        if liquidations:
            for (scope, outcome), count in liquidations.items():
                self.liquidations.labels(scope, outcome).inc(count)
            self.penalty.labels("liquidator").inc(liquidator)
            self.penalty.labels("insurance_fund").inc(insurance_fund)
            self.penalty.labels("protocol").inc(protocol)
            self.shortfall.inc(shortfall)
            self.cover.inc(cover)
            self.socialized.inc(socialized)

    def observe_inputs(self, topic: str, events: int, messages: int, seconds: float) -> None:
        """Input messages handled together (a group of ``messages`` holding ``events`` events, its
        outputs handed to the producer ``seconds`` after the group began): each message's latency
        is the group's."""
        self._events_child(topic).inc(events)
        observe_many(self.latency, seconds, messages)

    def count_events(self, topic: str, value: Any) -> None:
        """An input message's events (an array counts its elements)."""
        self._events_child(topic).inc(len(value) if isinstance(value, list) else 1)

    def _events_child(self, topic: str) -> Any:
        """The events counter of ``topic``, its labelled child looked up once and kept."""
        child = self._events_of.get(topic)
        if child is None:
            child = self._events_of[topic] = self.events.labels(topic)
        return child

    def observe_tick_evaluations(self, count: int) -> None:
        self.tick_evaluations.observe(count)

    def sync_engine(self, runtime: Any) -> None:
        """Gauges and counters mirrored from the engine's state and counters."""
        engine = runtime.engine
        # kept by the engine as they change: O(1) per scrape, not a sum over every account
        self.pending.set(engine.pending_scopes)
        self.margin_call.set(engine.call_scopes)
        self.owned.set(len(runtime.owned))
        self._mirror("reliquidations", engine.counters.get("reliquidations", 0), self.reliquidations)
        for key, count in engine.counters.items():
            if key.startswith("guard_trip:"):
                self._mirror(key, count, self.guard_trips.labels(key.split(":", 1)[1]))
        for symbol, mark in engine.marks.items():
            self.mark_age.labels(symbol).set(max(0, engine.newest_ts - mark.ts) / 1000)
        coordinator = getattr(runtime, "coordinator", None)
        if coordinator is not None and runtime.owns_fund():
            stats = coordinator.stats()
            self.deficit.clear()
            for (symbol, side), units in coordinator.book.deficits.items():
                self.deficit.labels(symbol, side).set(units)
            self.claims.set(coordinator.claims_units)
            self.rounds_in_flight.set(stats["rounds_in_flight"])
            self.round_oldest.set(stats["oldest_round_s"])
            for round_kind, seconds in coordinator.take_durations():
                self.round_duration.labels(round_kind).observe(seconds)
        else:  # another worker holds the coordinator: report nothing rather than a stale copy
            self.deficit.clear()
            self.claims.set(0)
            self.rounds_in_flight.set(0)
            self.round_oldest.set(0)

    def _mirror(self, key: str, total: float, counter: Any) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
            self._seen[key] = total

    def observe_fund(self, asset: str, balance_units: int, outputs: Iterable[Any]) -> None:
        self.fund_balance.labels(asset).set(balance_units)
        self.observe_outputs(outputs)

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(max(0, lag))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def install(app: Any, runtime: Any) -> WorkerMetrics:
    """Attach metrics to a runtime and serve them at /metrics on the worker's web port."""
    metrics = WorkerMetrics()
    runtime.metrics = metrics

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        metrics.sync_engine(runtime)
        # aiohttp refuses parameters in content_type; text/plain is the 0.0.4 text format
        return web.bytes(metrics.exposition(), content_type="text/plain")

    return metrics


__all__ = ["WorkerMetrics", "install", "METRIC_NAMES"]
