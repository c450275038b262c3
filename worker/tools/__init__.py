"""Offline commands that read what the engine published (``verify``, …): never the engine itself."""
