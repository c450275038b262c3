"""The one serialization module: JSON (orjson) in and out, one decode error type."""
from __future__ import annotations

from typing import Any

import orjson

MAX_MESSAGE_BYTES = 1_048_576  # larger input messages are dead-lettered as "oversized"


# An output (key + value) larger than this is not sent: the producer's max_request_size is
# 1 000 000 bytes (Faust's default) and a record carries some framing besides key and value.
MAX_OUTPUT_BYTES = 900_000


class EncodeError(ValueError):
    """Content that can never be sent (not encodable, or too large): not a transient fault."""


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


# encode(value) → JSON bytes, keys in insertion order (byte-identical for equal inputs): orjson's
# own function, called directly (a wrapper cost ~1 µs per record in a cascade's 40 000). For bytes
# used at once and dropped; what is kept (until a batch is sent, or in a table's memory) is
# ``encode_kept`` or ``encode_bounded``.
encode = orjson.dumps


# orjson writes into a buffer of at least 1 KiB from the C allocator and shrinks it in place when it
# is done: a result kept alive pins its whole buffer and splits the allocator's free memory, so the
# next results take fresh pages. On the CI kind of machine (a Firecracker VM: ~3.4 µs a page
# fault) ``orjson.dumps`` of a 441-byte event cost 4.8 µs a result when 100 000 of them were kept
# until sent (a loss-sharing round's events), against 1.35 µs for the same bytes copied at their
# own size (``bytes`` under 512 bytes come from Python's own pools) and the buffer freed at once,
# for the next result to reuse (bench/kept_bytes_bench.py; docs/benchmarks.md, "Kept bytes at
# their exact size"). A kept table value was such a copy already, for memory: 196 against 547 MiB
# for 100 000 accounts.
def encode_kept(value: Any) -> bytes:
    """``encode`` for bytes kept after the call (a record's key in a batch): its exact-size copy.
    A string that JSON writes as it is (printable: no control character; no quote, no backslash) is
    quoted here without orjson's buffer: what orjson would write (UTF-8 between quotes), ~0.4 µs
    instead of ~1.2 µs a key in a round's account writes (tests/test_codec.py compares the two)."""
    if type(value) is str and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'.encode()
    return memoryview(orjson.dumps(value)).tobytes()


def encode_bounded(value: Any, key: bytes | None = None, limit: int = MAX_OUTPUT_BYTES) -> bytes:
    """``encode`` for outputs and state records, at their exact size (as ``encode_kept``): raises
    EncodeError when the value cannot be encoded (integers beyond 64 bits, nesting beyond orjson's
    limit, a non-JSON type) or key + value exceed ``limit``."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise EncodeError(f"cannot encode: {exc}"[:200]) from None
    size = len(data) + (len(key) if key else 0)
    if size > limit:
        raise EncodeError(f"{size} bytes exceed the {limit}-byte output limit")
    return memoryview(data).tobytes()


# JSON bytes (from ``encode``) to embed as they are in a value given to ``encode``: the result is the
# same bytes as encoding the decoded value in their place, without encoding it again.
fragment = orjson.Fragment


def encode_key(key: str | None) -> bytes | None:
    return None if key is None else key.encode("utf-8")
