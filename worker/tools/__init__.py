"""Transparency tools (SPEC §5.3, §7): commands that read parameters and outputs, never the broker."""
