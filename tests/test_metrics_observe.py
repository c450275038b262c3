"""metrics.observe_many: a group's latency observations at once, as one observe a message leaves them."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from metrics import LATENCY_BUCKETS_S, observe_many


def exposed(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def histogram() -> Histogram:
    return Histogram("lat_seconds", "latency", buckets=LATENCY_BUCKETS_S, registry=CollectorRegistry())


@pytest.mark.parametrize("amount, count", [
    pytest.param(0.25, 7, id="seven messages of a quarter second land in the 0.25 bucket"),
    pytest.param(0.0005, 3, id="an amount on the lowest bound counts in that bucket"),
    pytest.param(0.0078125, 70, id="a group of seventy at 7.8 ms counts seventy in the 0.01 bucket"),
    pytest.param(3.0, 2, id="beyond the last bound only the +Inf bucket and the count grow"),
    pytest.param(0.5, 0, id="an empty group changes nothing"),
])
def test_a_group_observed_at_once_exposes_what_one_observe_a_message_does(amount, count):
    # amounts are powers of two over bounds (or exact sums): amount × count is the repeated sum exactly
    one_by_one, at_once = histogram(), histogram()
    for _ in range(count):
        one_by_one.observe(amount)
    observe_many(at_once, amount, count)
    assert exposed(at_once) == exposed(one_by_one)


def test_groups_after_groups_add_up_like_single_observations():
    one_by_one, at_once = histogram(), histogram()
    for amount, count in ((0.002, 5), (0.03, 1), (0.002, 4), (1.5, 3)):
        for _ in range(count):
            one_by_one.observe(amount)
        observe_many(at_once, amount, count)
    a, b = exposed(at_once), exposed(one_by_one)
    assert {k: v for k, v in a.items() if k[0] != "lat_seconds_sum"} == \
        {k: v for k, v in b.items() if k[0] != "lat_seconds_sum"}
    assert a[("lat_seconds_count", "")] == 13  # 5 + 1 + 4 + 3
    assert a[("lat_seconds_sum", "")] == pytest.approx(b[("lat_seconds_sum", "")], rel=1e-12)
