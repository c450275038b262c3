"""Topic catalog, JSON Schemas and the one codec module."""
