"""Alerting rules (metrics/alerts.yml) and their promtool unit tests (metrics/alerts_test.yml).

promtool comes from the Debian package `prometheus`
(`apt-get install -y --no-install-recommends prometheus`); without it these tests fail, they do not skip.
"""
from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures import ROOT
from tests.promql import label_names, metric_contract, metric_names, promtool, unknown_labels, unknown_metrics

METRICS = ROOT / "metrics"
RULES = METRICS / "alerts.yml"
RULE_TESTS = METRICS / "alerts_test.yml"
CONTRACT = metric_contract()
COMPARISON = re.compile(r"^(?P<selector>.*?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<bound>-?[0-9][0-9.e+]*)$", re.S)

# what the brief asks of each alert: (expression, `for`, severity)
EXPECTED = {
    "InsuranceFundLow": ("risk_insurance_fund_balance_units < 100000000000", None, "critical"),
    "InsuranceFundFallingFast": ("delta(risk_insurance_fund_balance_units[5m]) < -10000000000", None, "critical"),
    "SocializedLoss": ("increase(risk_socialized_loss_units_total[5m]) > 0", None, "critical"),
    "StaleMarkPrice": ("risk_mark_age_seconds > 10", "30s", "warning"),
    "ConsumerLagHigh": ("risk_consumer_lag_messages > 10000", "2m", "warning"),
    "DeadLettersHigh": ("sum(rate(risk_dead_letters_total[5m])) > 1", None, "warning"),
    "Reliquidation": ("increase(risk_reliquidations_total[10m]) > 0", None, "warning"),
    "LossDeficitUnshared": ("risk_loss_deficit_units > 1000000", "10m", "warning"),
    "LossRoundStalled": ("risk_loss_round_oldest_seconds > 60", "1m", "critical"),
    "UnpublishableOutput": ('increase(risk_dead_letters_total{reason="unpublishable_output"}[5m]) > 0', None,
                            "critical"),
    "RiskWorkerDown": ('up{job="risk-worker"} == 0', "1m", "critical"),
    "GuardTrip": ("increase(risk_guard_trips_total[5m]) > 0", None, "warning"),
}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rules() -> dict[str, dict]:
    [group] = load(RULES)["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def cases() -> list[tuple[str, dict]]:
    """(alertname, alert_rule_test entry) of every case of alerts_test.yml."""
    return [(case["alertname"], case) for test in load(RULE_TESTS)["tests"] for case in test["alert_rule_test"]]


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------------- promtool
def test_promtool_check_rules_accepts_the_file():
    done = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass():
    done = run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _mutant(tmp_path: Path, alert: str, expr: str, firing: bool) -> Path:
    """Copy of the rules with `alert`'s expression replaced, and of the tests reduced to that alert's
    firing (or non-firing) cases only; returns the test file."""
    rule_doc = load(RULES)
    for rule in rule_doc["groups"][0]["rules"]:
        if rule["alert"] == alert:
            rule["expr"] = expr
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rule_doc, sort_keys=False))
    test_doc = load(RULE_TESTS)
    kept = []
    for test in test_doc["tests"]:
        test = copy.deepcopy(test)
        test["alert_rule_test"] = [case for case in test["alert_rule_test"]
                                   if case["alertname"] == alert and bool(case["exp_alerts"]) == firing]
        if test["alert_rule_test"]:
            kept.append(test)
    assert kept, f"no {'firing' if firing else 'non-firing'} case for {alert}"
    test_doc["tests"] = kept
    path = tmp_path / "alerts_test.yml"
    path.write_text(yaml.safe_dump(test_doc, sort_keys=False))
    return path


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_firing_cases_fail_when_the_alert_never_fires(alert, tmp_path):
    expr = rules()[alert]["expr"]
    baseline = _mutant(tmp_path, alert, expr, firing=True)
    assert run_promtool("test", "rules", str(baseline)).returncode == 0
    never = _mutant(tmp_path, alert, f"({expr}) and on() vector(0) == 1", firing=True)
    done = run_promtool("test", "rules", str(never))
    assert done.returncode != 0, f"the firing cases of {alert} pass even when it cannot fire"


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_non_firing_cases_fail_when_the_comparison_is_dropped(alert, tmp_path):
    expr = rules()[alert]["expr"]
    baseline = _mutant(tmp_path, alert, expr, firing=False)
    assert run_promtool("test", "rules", str(baseline)).returncode == 0
    match = COMPARISON.match(expr)
    assert match, f"{alert}: expression does not end in a comparison with a literal"
    always = _mutant(tmp_path, alert, match["selector"], firing=False)
    done = run_promtool("test", "rules", str(always))
    assert done.returncode != 0, f"the non-firing cases of {alert} pass even without its threshold"


# ----------------------------------------------------------------------------------------- the rules
def test_one_group_named_liquidation_risk_with_exactly_the_expected_alerts():
    groups = load(RULES)["groups"]
    assert [g["name"] for g in groups] == ["liquidation-risk"]
    assert sorted(rules()) == sorted(EXPECTED)


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_rule_expression_for_and_severity(alert):
    rule = rules()[alert]
    expr, hold, severity = EXPECTED[alert]
    assert " ".join(rule["expr"].split()) == expr
    assert rule.get("for") == hold
    assert rule["labels"]["severity"] == severity


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_rule_annotations_have_summary_and_description(alert):
    annotations = rules()[alert]["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()


def test_fund_threshold_is_documented_as_100000_usd_at_6_decimals():
    annotations = rules()["InsuranceFundLow"]["annotations"]
    assert annotations["threshold_units"] == "100000000000"
    assert "100 000 USD" in annotations["summary"]
    assert "100000000000 units" in annotations["description"] and "decimals = 6" in annotations["description"]
    assert 100_000 * 10**6 == int(annotations["threshold_units"])


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_rule_reads_only_contract_metrics_and_their_labels(alert):
    expr = rules()[alert]["expr"]
    assert metric_names(expr), expr
    assert unknown_metrics(expr, CONTRACT) == set()
    assert unknown_labels(expr, CONTRACT) == set()


# ----------------------------------------------------------------------------------------- the cases
@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_every_alert_has_a_firing_and_a_non_firing_case(alert):
    mine = [case for name, case in cases() if name == alert]
    assert any(case["exp_alerts"] for case in mine), f"{alert}: no case that fires it"
    assert any("exp_alerts" in case and case["exp_alerts"] == [] for case in mine), f"{alert}: no exp_alerts: []"


def test_every_case_names_an_existing_alert():
    # promtool passes `exp_alerts: []` for a misspelt alert name; this does not
    assert {name for name, _ in cases()} <= set(rules())


@pytest.mark.parametrize("alert", sorted(EXPECTED))
def test_firing_cases_expect_the_rule_severity_and_every_annotation(alert):
    rule = rules()[alert]
    expected = [e for name, case in cases() if name == alert for e in case["exp_alerts"]]
    assert expected
    for alert_case in expected:
        assert alert_case["exp_labels"]["severity"] == rule["labels"]["severity"]
        assert set(alert_case["exp_annotations"]) == set(rule["annotations"])


def test_input_series_use_contract_metrics_and_labels():
    for test in load(RULE_TESTS)["tests"]:
        for series in test["input_series"]:
            selector = series["series"]
            assert unknown_metrics(selector, CONTRACT) == set(), selector
            assert unknown_labels(selector, CONTRACT) == set(), selector


def test_rule_tests_load_alerts_yml_relative_to_themselves():
    assert load(RULE_TESTS)["rule_files"] == ["alerts.yml"]
    assert (RULE_TESTS.parent / "alerts.yml").is_file()


# ------------------------------------------------------------------------------------ the PromQL lexer
@pytest.mark.parametrize("expr, metrics, labels", [
    ("risk_mark_age_seconds > 10", {"risk_mark_age_seconds"}, set()),
    ('up{job="risk-worker"} == 0', {"up"}, {"job"}),
    ("sum by (destination) (rate(risk_penalty_units_total[5m])) / 1e6", {"risk_penalty_units_total"},
     {"destination"}),
    ("histogram_quantile(0.99, sum by (le) (rate(risk_tick_evaluations_bucket[$__rate_interval])))",
     {"risk_tick_evaluations_bucket"}, {"le"}),
    ('a_total{reason=~"x|y", instance!="z"} and on(instance) b', {"a_total", "b"}, {"reason", "instance"}),
    ('label_replace(x, "dst", "$1", "src", "(.*)")', {"x"}, set()),
    ("delta(g[5m] offset 1h) < -1e10", {"g"}, set()),
], ids=["bare", "matcher", "by-clause", "histogram-grafana-var", "regex-and-on", "string-args", "offset"])
def test_lexer_finds_metric_and_label_names(expr, metrics, labels):
    assert metric_names(expr) == metrics
    assert label_names(expr) == labels


@pytest.mark.parametrize("expr, unknown", [
    ("risk_liquidation_total", {"risk_liquidation_total"}),
    ("rate(risk_tick_evaluations[5m])", {"risk_tick_evaluations"}),
    ("rate(risk_liquidations_total_bucket[5m])", {"risk_liquidations_total_bucket"}),
], ids=["typo", "bare-histogram", "bucket-of-a-counter"])
def test_contract_refuses_names_not_exposed(expr, unknown):
    assert unknown_metrics(expr, CONTRACT) == unknown


@pytest.mark.parametrize("expr, unknown", [
    ("sum by (reason) (risk_liquidations_total)", {"reason"}),
    ('risk_mark_age_seconds{asset="USD"}', {"asset"}),
], ids=["by-wrong-label", "matcher-wrong-label"])
def test_contract_refuses_labels_a_metric_does_not_have(expr, unknown):
    assert unknown_labels(expr, CONTRACT) == unknown
