"""JSON Schemas of the catalog's event types (``topics/schemas/<event_type>.v1.json``).

``load_schema`` is stdlib only. ``validate_event`` needs ``jsonschema``, a dev dependency, so
it is imported inside the function: the worker never imports it at run time.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_FILE_VERSION = 1


class UnknownEventType(ValueError):
    """An event whose type has no schema (or no type at all)."""


def schema_path(event_type: str, version: int = SCHEMA_FILE_VERSION) -> Path:
    return SCHEMA_DIR / f"{event_type}.v{version}.json"


def schema_event_types(version: int = SCHEMA_FILE_VERSION) -> list[str]:
    """The event types that have a schema file of ``version``, sorted."""
    suffix = f".v{version}.json"
    return sorted(p.name[: -len(suffix)] for p in SCHEMA_DIR.glob(f"*{suffix}"))


@lru_cache(maxsize=None)
def _load(event_type: str, version: int) -> dict[str, Any]:
    if not isinstance(event_type, str) or not event_type.replace("_", "").isalnum():
        raise UnknownEventType(f"no schema for event type {str(event_type)[:40]!r}")
    path = schema_path(event_type, version)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnknownEventType(f"no schema for event type {event_type[:40]!r}") from None
    return json.loads(text)


def load_schema(event_type: str, version: int = SCHEMA_FILE_VERSION) -> dict[str, Any]:
    """The parsed schema of ``event_type`` (a fresh copy); UnknownEventType if there is none."""
    return copy.deepcopy(_load(event_type, version))


@lru_cache(maxsize=None)
def _validator(event_type: str, version: int):
    import jsonschema  # dev dependency: imported only when validating

    schema = _load(event_type, version)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate_event(value: Any, event_type: str | None = None) -> None:
    """Validate one event against the schema of its ``type``.

    ``event_type`` overrides ``value["type"]`` — for input mark ticks, which carry no type.
    Raises ``jsonschema.ValidationError`` when the event does not match, ``UnknownEventType``
    (a ValueError) when there is no type or no schema for it.
    """
    if event_type is None:
        if not isinstance(value, dict):
            raise UnknownEventType("an event must be a JSON object with a 'type'")
        event_type = value.get("type")
        if not isinstance(event_type, str):
            raise UnknownEventType("event has no string 'type'")
    validator = _validator(event_type, SCHEMA_FILE_VERSION)
    error = _best_error(validator, value)
    if error is not None:
        raise error


def _best_error(validator, value: Any):
    import jsonschema

    return jsonschema.exceptions.best_match(validator.iter_errors(value))
