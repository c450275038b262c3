"""Helpers for the monitoring tests: what a PromQL expression reads, and the worker's metric contract.

A small lexer, not a PromQL parser: it finds the metric names and label names an expression (an
alert rule or a Grafana target, `$variables` allowed) refers to, so the tests can hold every
expression to `metrics.METRIC_NAMES` and to each metric's labels.
"""
from __future__ import annotations

import re
import shutil

import pytest

from metrics import METRIC_NAMES, WorkerMetrics

# label names every scraped series has, added by Prometheus
TARGET_LABELS = frozenset({"job", "instance"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
                      "and", "or", "unless", "atan2", "inf", "nan"})
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
VARIABLE = re.compile(r"\$\{[^}]*\}|\$[a-zA-Z_][a-zA-Z0-9_]*")
RANGE = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")

PROMTOOL_INSTALL = "apt-get update && apt-get install -y --no-install-recommends prometheus"


def promtool() -> str:
    """Path of promtool; a missing promtool fails the test (never skips it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not on PATH; install it (Debian package `prometheus`): {PROMTOOL_INSTALL}",
                    pytrace=False)
    return path


def _strip(expr: str) -> str:
    expr = STRING.sub('""', expr)
    expr = VARIABLE.sub("1", expr)
    return RANGE.sub("", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (bare names and names before `{…}`)."""
    text = _strip(expr)
    text = SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call or name in KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(name)
    return names


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    text = _strip(expr)
    labels = set()
    for match in SELECTOR.finditer(text):
        labels.update(MATCHER_LABEL.findall(STRING.sub("", match.group(2))))
    for match in GROUPING.finditer(text):
        labels.update(label.strip() for label in match.group(2).split(",") if label.strip())
    return labels


def metric_contract() -> dict[str, tuple[str, frozenset[str]]]:
    """Exposed sample name → (type, label names) of every worker metric, and `up`."""
    contract: dict[str, tuple[str, frozenset[str]]] = {"up": ("gauge", frozenset())}
    bases: set[str] = set()
    for collector in vars(WorkerMetrics()).values():
        if not hasattr(collector, "describe"):
            continue
        [family] = collector.describe()
        # prometheus_client keeps a metric's label names in `_labelnames` (no public accessor)
        labels = frozenset(collector._labelnames)
        name = family.name + "_total" if family.type == "counter" else family.name
        bases.add(name)
        if family.type == "histogram":  # a histogram is queried through its _bucket/_sum/_count series only
            for suffix in HISTOGRAM_SUFFIXES:
                contract[name + suffix] = (family.type, labels | ({"le"} if suffix == "_bucket" else set()))
        else:
            contract[name] = (family.type, labels)
    assert bases == set(METRIC_NAMES), f"WorkerMetrics and METRIC_NAMES disagree: {bases ^ set(METRIC_NAMES)}"
    return contract


def unknown_metrics(expr: str, contract: dict) -> set[str]:
    return metric_names(expr) - set(contract)


def unknown_labels(expr: str, contract: dict) -> set[str]:
    allowed = set(TARGET_LABELS)
    for name in metric_names(expr):
        if name in contract:
            allowed |= contract[name][1]
    return label_names(expr) - allowed
