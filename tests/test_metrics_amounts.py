"""The metrics add up the integers the core rendered (``Output.amounts``), never the decimal strings
parsed back; an output rebuilt from a stored value (no amounts) still counts the same.

Units: USD at 6 decimals (1 USD = 1 000 000 units).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from metrics import ALLOCATION_TOTALS, WorkerMetrics
from tests.fixtures import sharing_book as book
from worker.core.engine import Engine
from worker.core.outputs import Output
from worker.core.params import load_params
from worker.replay import replay_lines

ROOT = Path(__file__).resolve().parent.parent
T = 1_700_000_000_000


def units(text: str) -> int:
    return int(text.replace(".", ""))


def worked_book_outputs() -> list[Output]:
    """tests/test_sharing.py's worked book to its repayment: a bankrupt liquidation (100 USD short,
    60 covered, 40 socialized), haircut round 0 paying 39.999998 USD, a solvent liquidation (penalty
    29.6 USD) and repayment round 0 paying 14.799999 USD."""
    d = book()
    out = d.mark("BTC-PERP", "18900.0", T + 1000, 2)
    out += d.mark("BTC-PERP", "18900.0", T + 2000, 3)
    out += d.mark("ETH-PERP", "1480.00", T + 3000, 2)
    out += d.mark("ETH-PERP", "1480.00", T + 4000, 3)
    return out


def cascade_outputs() -> list[Output]:
    """examples/cascade.jsonl replayed: 715 liquidations, 59 socialized losses among them."""
    engine = Engine(load_params(ROOT / "examples" / "params.toml"))
    return list(replay_lines((ROOT / "examples" / "cascade.jsonl").read_bytes().splitlines(), engine))


def samples(outputs: list[Output]) -> dict:
    metrics = WorkerMetrics()
    metrics.observe_outputs(outputs)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() for s in family.samples if not s.name.endswith("_created")}


def stored(outputs: list[Output]) -> list[Output]:
    """As the fund's ledger and a pending liquidation keep them: topic, key and value only."""
    return [Output(o.topic, o.key, o.value) for o in outputs]


@pytest.mark.parametrize("scenario", [worked_book_outputs, cascade_outputs],
                         ids=["the worked book's liquidations and rounds",
                              "the example cascade's 715 liquidations"])
def test_each_allocation_carries_the_integers_its_totals_render(scenario):
    outputs = scenario()
    allocations = [o for o in outputs if o.value.get("type") == "liquidation"]
    assert allocations
    for o in allocations:
        assert o.amounts == tuple(units(o.value["totals"][name]) for name in ALLOCATION_TOTALS)
    for o in outputs:
        if o.value.get("type") in ("haircut_round", "repayment_round"):
            assert o.amounts == (units(o.value["paid"]),)
        elif o.value.get("type") != "liquidation":
            assert o.amounts is None


def test_the_worked_book_counts_the_amounts_derived_by_hand():
    got = samples(worked_book_outputs())

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    # alice: shortfall 100 USD, cover 60, socialized 40 (bankrupt, no penalty paid);
    # erin: penalty floor(14 800 · 0.2 %) = 29.6 USD, half (14.8) to the liquidator, 14.8 to the fund
    assert value("risk_shortfall_units_total") == 100_000_000
    assert value("risk_insurance_cover_units_total") == 60_000_000
    assert value("risk_socialized_loss_units_total") == 40_000_000
    assert value("risk_penalty_units_total", destination="liquidator") == 14_800_000
    assert value("risk_penalty_units_total", destination="insurance_fund") == 14_800_000
    assert value("risk_penalty_units_total", destination="protocol") == 0
    # the rounds: 30 769 230 + 8 391 608 + 839 160 = 39 999 998 haircut; 14 799 999 repaid
    assert value("risk_loss_shared_units_total", kind="haircut") == 39_999_998
    assert value("risk_loss_shared_units_total", kind="repay") == 14_799_999


@pytest.mark.parametrize("scenario", [worked_book_outputs, cascade_outputs],
                         ids=["the worked book", "the example cascade"])
def test_outputs_rebuilt_from_stored_values_count_the_same(scenario):
    outputs = scenario()
    assert samples(stored(outputs)) == samples(outputs)
