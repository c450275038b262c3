"""Outputs to bytes, publishable by construction (SPEC §8): the one place an output is encoded.

An output that cannot be encoded or does not fit in a message is replaced by a small stub dead
letter (``unpublishable_output``, counted, alerted) instead of being retried: such content would
fail on every attempt. The streaming worker and the offline replay both encode through here, so
they agree on what a hostile input becomes.
"""
from __future__ import annotations

import logging

from topics.codec import EncodeError, encode, encode_bounded

from .core.engine import Engine
from .core.outputs import Output

log = logging.getLogger("worker")


def encode_output(engine: Engine, output: Output) -> tuple[Output, bytes, bytes]:
    """(the output actually sent, key bytes, value bytes)."""
    key = output.key.encode("utf-8")
    try:
        return output, key, encode_bounded(output.value, key)
    except EncodeError as exc:
        log.error("unpublishable %s output (key %.80r): %s", output.topic, output.key, exc)
        stub = engine.unpublishable(output, str(exc))
        return stub, stub.key.encode("utf-8"), encode(stub.value)
