"""Grafana dashboard and provisioning, and the Prometheus scrape config (metrics/).

Every dashboard query reads only the worker's metric contract (metrics.METRIC_NAMES, or `up`) with the
labels those metrics have, and parses as PromQL (promtool); the scrape config passes
`promtool check config` (promtool: `apt-get install -y --no-install-recommends prometheus`).
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess

import pytest
import yaml

from tests.fixtures import ROOT
from tests.promql import label_names, metric_contract, metric_names, promtool, unknown_labels, unknown_metrics

GRAFANA = ROOT / "metrics" / "grafana"
DASHBOARD = GRAFANA / "dashboard.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
PROMETHEUS = ROOT / "metrics" / "prometheus.yml"
CONTRACT = metric_contract()
# Grafana's built-in interval variables, replaced by a duration for promtool
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, dict]]:
    return [(p["title"], t) for p in panels() for t in p["targets"]]


def panel_ids() -> list[str]:
    return [p["title"] for p in panels()]


# ---------------------------------------------------------------------------------------- dashboard
def test_dashboard_has_a_uid_a_title_and_unique_panel_ids_and_titles():
    doc = dashboard()
    assert doc["uid"] == "liquidation-risk" and doc["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    titles = panel_ids()
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("title", panel_ids())
def test_panel_queries_the_provisioned_prometheus_datasource(title):
    [uid] = {s["uid"] for s in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    [panel] = [p for p in panels() if p["title"] == title]
    assert panel["datasource"] == {"type": "prometheus", "uid": uid}
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["datasource"]["uid"] == uid
    ref_ids = [t["refId"] for t in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("title", panel_ids())
def test_panel_reads_only_contract_metrics_and_their_labels(title):
    for panel_title, target in targets():
        if panel_title != title:
            continue
        expr = target["expr"]
        assert metric_names(expr), expr
        assert unknown_metrics(expr, CONTRACT) == set(), expr
        assert unknown_labels(expr, CONTRACT) == set(), expr


@pytest.mark.parametrize("title", panel_ids())
def test_money_panels_show_usd(title):
    [panel] = [p for p in panels() if p["title"] == title]
    money = [t["expr"] for t in panel["targets"] if any(n.endswith("_units") or n.endswith("_units_total")
                                                       for n in metric_names(t["expr"]))]
    if not money:
        assert panel["fieldConfig"]["defaults"]["unit"] != "currencyUSD"
        return
    assert panel["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert all(expr.rstrip().endswith("/ 1e6") for expr in money), money


# what the dashboard must show: (id, metric, a label it must be split by or None, a text the query has)
REQUIRED = [
    ("liquidations-by-outcome", "risk_liquidations_total", "outcome", "rate("),
    ("penalty-split-usd", "risk_penalty_units_total", "destination", "/ 1e6"),
    ("insurance-fund-balance", "risk_insurance_fund_balance_units", None, "/ 1e6"),
    ("socialized-loss", "risk_socialized_loss_units_total", None, "/ 1e6"),
    ("shortfall", "risk_shortfall_units_total", None, "/ 1e6"),
    ("insurance-cover", "risk_insurance_cover_units_total", None, "/ 1e6"),
    ("margin-call-scopes", "risk_margin_call_scopes", None, "sum("),
    ("pending-liquidations", "risk_pending_liquidations", None, "sum("),
    ("re-liquidations", "risk_reliquidations_total", None, "increase("),
    ("dead-letters-by-reason", "risk_dead_letters_total", "reason", "rate("),
    ("guard-trips", "risk_guard_trips_total", "guard", "increase("),
    ("evaluations-per-tick-p50", "risk_tick_evaluations_bucket", "le", "histogram_quantile(0.5,"),
    ("evaluations-per-tick-p99", "risk_tick_evaluations_bucket", "le", "histogram_quantile(0.99,"),
    ("mark-age-per-symbol", "risk_mark_age_seconds", "symbol", "max by"),
    ("latency-p50", "risk_input_to_allocation_latency_seconds_bucket", "le", "histogram_quantile(0.5,"),
    ("latency-p99", "risk_input_to_allocation_latency_seconds_bucket", "le", "histogram_quantile(0.99,"),
    ("consumer-lag-per-partition", "risk_consumer_lag_messages", "partition", "by (topic, partition)"),
    ("workers-up", "up", "job", 'job="risk-worker"'),
]


@pytest.mark.parametrize("metric, label, text", [r[1:] for r in REQUIRED], ids=[r[0] for r in REQUIRED])
def test_dashboard_shows(metric, label, text):
    matching = [t["expr"] for _, t in targets() if metric in metric_names(t["expr"]) and text in t["expr"]
                and (label is None or label in label_names(t["expr"]))]
    assert matching, f"no query of {metric} with {text!r} split by {label}"


def test_every_worker_metric_is_on_the_dashboard():
    shown = set().union(*(metric_names(t["expr"]) for _, t in targets()))
    assert set(CONTRACT) - shown <= {
        "risk_input_to_allocation_latency_seconds_sum", "risk_input_to_allocation_latency_seconds_count"}


def test_panels_do_not_overlap_and_fit_the_24_column_grid():
    cells = {}
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]
        for x, y in itertools.product(range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])):
            assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
            cells[(x, y)] = panel["title"]


def test_every_query_parses_as_promql(tmp_path):
    """promtool has no bare query check: each expression becomes a recording rule of a checked rule file."""
    rules = []
    for index, (_, target) in enumerate(targets()):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_promtool_refuses_a_broken_query(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [
        {"record": "x:y", "expr": "sum by (le (rate(risk_tick_evaluations_bucket[1m]))"}]}]}))
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


# ------------------------------------------------------------------------------------- provisioning
def test_datasource_provisioning():
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert doc["apiVersion"] == 1
    [source] = doc["datasources"]
    assert (source["uid"], source["type"], source["access"]) == ("prometheus", "prometheus", "proxy")
    assert source["isDefault"] is True


def test_dashboard_provisioning():
    doc = yaml.safe_load(PROVIDERS.read_text())
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


# ------------------------------------------------------------------------------------------ prometheus
def test_prometheus_config_scrapes_both_workers_and_loads_the_alerts():
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "risk-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # the workers' bearer token (RISK_WEB_TOKEN_FILE), from a file: never in the config itself
    assert job["authorization"]["type"] == "Bearer" and set(job["authorization"]) == {"type", "credentials_file"}
    assert [t for s in job["static_configs"] for t in s["targets"]] == ["worker-1:6066", "worker-2:6067"]


def test_promtool_check_config_resolves_rule_files_beside_the_config(tmp_path):
    # the config and its rules as compose mounts them, with the token file the web-token job writes
    # (promtool checks that credentials_file exists); run from elsewhere: rule_files and
    # credentials_file are resolved relative to the config file, not the working directory
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(PROMETHEUS, etc / "prometheus.yml")
    shutil.copy(PROMETHEUS.parent / "alerts.yml", etc / "alerts.yml")
    [job] = [job for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"] if job["job_name"] == "risk-worker"]
    token = etc / job["authorization"]["credentials_file"]
    token.parent.mkdir(parents=True)
    token.write_text("a-token-of-the-web-token-job\n")
    done = subprocess.run([promtool(), "check", "config", str(etc / "prometheus.yml")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    [group] = yaml.safe_load((PROMETHEUS.parent / "alerts.yml").read_text())["groups"]
    assert f"SUCCESS: {len(group['rules'])} rules found" in done.stdout
