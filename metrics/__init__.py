"""Prometheus metrics of the worker (prometheus_client lives here, never in the core)."""
