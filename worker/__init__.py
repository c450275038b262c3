"""Streaming liquidation risk engine."""
__version__ = "0.1.0"
