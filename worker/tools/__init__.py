"""Offline commands over the core and what the engine published (SPEC §5.3, §7): verify, methodology,
backtest. They read parameters and outputs, never the broker's workers."""
