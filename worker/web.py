"""The worker's HTTP surface (README, "Security and endpoints").

Only the product's endpoints are served on RISK_WEB_BIND:RISK_WEB_PORT:

* ``/metrics`` — Prometheus exposition (metrics/__init__.py);
* ``/stats``   — counters, owned partitions, readiness (JSON);
* ``/live``    — 200 while the process serves HTTP;
* ``/ready``   — 200 when the marks are caught up, the partitions are assigned (and recovered), and
  the mark reader completed a poll within RISK_READY_STALL_S; else 503. A reader stuck retrying a
  publish turns it false.

Faust's own views (``/``, ``/table/…``, ``/router/…``, ``/graph/``, ``/stats/``, ``/assignment/``,
``/performance/``) are off. With a bearer token (RISK_WEB_TOKEN or RISK_WEB_TOKEN_FILE) every request
but ``/live`` must carry ``Authorization: Bearer <token>`` (401 otherwise).

Faust also reads unprefixed environment variables (``WEB_BIND``, ``BROKER_URL``,
``PROCESSING_GUARANTEE``, …) that would override the app's settings: the app is given an empty
environment instead (:data:`FAUST_ENV`), and the ``FAUST_*`` / ``F_*`` variables Faust reads when
it is imported make the worker refuse to start (:func:`faust_import_variables`).
"""
from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable, Mapping

PUBLIC_PATHS = frozenset({"/live"})  # answered without the token
# the settings Faust takes as keyword arguments that pin its web server to the product's endpoints
WEB_SETTINGS: dict[str, Any] = {
    "web_enabled": True,
    "web_transport": "tcp://",
    "web_in_thread": False,
    "web_stats_enabled": False,  # "/" statistics, "/stats/", "/assignment/"
    "web_graph_enabled": False,  # "/graph/"
    "web_router_enabled": False,  # "/router/": partition ownership and the workers' URLs
    "web_tables_enabled": False,  # "/table/": every table, and any account's full state
    "web_metrics_enabled": False,  # "/performance/"
    "debug": False,  # the web views above otherwise follow it
}
FAUST_ENV: Mapping[str, str] = {}  # what the app's settings may read from the environment: nothing
# read by Faust when it is imported, before any app exists (faust/types/_env.py, faust/__init__.py)
FAUST_IMPORT_NAMES = ("DEBUG", "WORKDIR", "DATADIR", "BLOCKING_TIMEOUT", "FORCE_BLOCKING_TIMEOUT", "CONSOLE_PORT",
                      "STRICT", "WEB_PORT", "F_WEB_BIND", "WEB_TRANSPORT", "LOOP")


def faust_import_variables(environ: Mapping[str, str]) -> list[str]:
    """Set variables that Faust reads at import time (they cannot be pinned by the app)."""
    return sorted(prefix + name for prefix in ("FAUST_", "F_") for name in FAUST_IMPORT_NAMES
                  if prefix + name in environ)


def refuse_faust_import_variables(environ: Mapping[str, str]) -> None:
    """Exit with the reason when one is set (called before Faust is imported, and again by the worker)."""
    stray = faust_import_variables(environ)
    if stray:
        raise SystemExit(f"error: {', '.join(stray)} set: Faust reads these at import and they would change "
                         "the worker behind its settings; unset them (the worker's settings are RISK_*)")


def faust_setting_variables(environ: Mapping[str, str]) -> list[str]:
    """Set variables that Faust's settings would read from the environment (ignored by the worker)."""
    from faust.types.settings import Settings

    names = {param.env_name for param in Settings.SETTINGS.values() if param.env_name}
    return sorted(name for name in names if name in environ)


def bearer_ok(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())


def auth_middleware(token: str) -> Callable[..., Awaitable[Any]]:
    """aiohttp middleware: every path but /live needs the token, known or not (no path probing)."""
    from aiohttp import web as aioweb

    @aioweb.middleware
    async def require_token(request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if request.path not in PUBLIC_PATHS and not bearer_ok(request.headers.get("Authorization"), token):
            return aioweb.Response(status=401, text='{"error": "unauthorized"}\n', content_type="application/json",
                                   headers={"WWW-Authenticate": 'Bearer realm="risk-worker"'})
        return await handler(request)

    return require_token


def install_endpoints(app: Any, runtime: Any) -> None:
    """Serve /stats, /live and /ready (and /metrics, when metrics/ installs it); no Faust view."""
    from faust.web.base import BlueprintManager

    # the Web driver picks Faust's blueprints from the settings; the production index ("/") has no
    # setting: drop them all, only the views added below (and /metrics) remain
    app.web.blueprints = BlueprintManager()

    @app.page("/stats")
    async def stats(web: Any, request: Any) -> Any:
        return web.json(runtime.stats())

    @app.page("/live")
    async def live(web: Any, request: Any) -> Any:
        return web.json({"live": True})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        state = runtime.readiness()
        return web.json(state, status=200 if state["ready"] else 503)


def fetch(url: str, token: str = "", timeout_s: float = 5.0) -> tuple[int, Any]:
    """GET ``url`` (with the bearer token if any) → (HTTP status, decoded JSON or None); status 0 when
    nothing answers. Used by ``python -m worker health`` and the harness."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
