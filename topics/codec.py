"""The one serialization module: JSON (orjson) in and out, one decode error type."""
from __future__ import annotations

from typing import Any

import orjson

MAX_MESSAGE_BYTES = 1_048_576  # larger input messages are dead-lettered as "oversized"


class DecodeError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decode(raw: bytes | None) -> Any:
    """bytes → JSON value; raises DecodeError(code) for oversized, non-UTF-8 or malformed input."""
    if raw is None:
        raise DecodeError("decode_error", "empty message")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError("oversized", f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("not_utf8", "message is not valid UTF-8") from None
        raise DecodeError("decode_error", f"not JSON: {exc}"[:200]) from None


def encode(value: Any) -> bytes:
    """JSON bytes, keys in insertion order (byte-identical for equal inputs)."""
    return orjson.dumps(value)


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode("utf-8")
