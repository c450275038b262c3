"""Offline replay (SPEC §7): JSON Lines in, output events as JSON Lines out, same core."""
from __future__ import annotations

import sys
from typing import Any, BinaryIO, Iterable, Iterator

from topics.codec import DecodeError, decode, encode

from .core.engine import Engine
from .core.outputs import Output, Source
from .core.params import Params
from .gc_tuning import tune_collector
from .typed_input import HeldRecord, replay_position_line
from .wire import encode_output

INPUT_TOPICS = ("mark-prices", "positions")


def _key_bytes(key: object) -> bytes | None:
    if key is None:
        return None
    return key.encode("utf-8") if isinstance(key, str) else _reencoded(key, b"")


def _reencoded(value: object, fallback: bytes) -> bytes:
    """The bytes a producer would have sent for ``value``; ``fallback`` when no encoder writes it
    (nesting beyond orjson's limit): the dead letter then carries those bytes instead."""
    try:
        return encode(value)
    except TypeError:
        return fallback


def replay_lines(lines: Iterable[bytes], engine: Engine) -> Iterator[Output]:
    """Feed lines in file order; yield outputs in emission order. Bad lines become dead letters."""
    for line_number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line or line.isspace():  # (``not line.strip()`` without copying every line)
            continue
        offset = line_number - 1
        typed = replay_position_line(line, engine.params)
        if typed is not None:  # the typed way (worker/typed_input.py); else the validating way below
            key, updates = typed
            held = _HeldLine(line)  # (what a dead letter would show, decoded only if one is written)
            source = Source("positions", 0, offset, _key_bytes(key), None, held.value_bytes)  # (value_fn)
            yield from engine.process_position_updates(updates, source, held.element_at)
            engine.dirty.clear()  # replay persists no state (below)
            continue
        try:
            record = decode(line)
        except DecodeError as exc:
            yield engine.dead_letter(Source("replay", 0, offset, None, line), exc.code, str(exc))
            continue
        if not isinstance(record, dict) or record.get("topic") not in INPUT_TOPICS or "value" not in record:
            yield engine.dead_letter(Source("replay", 0, offset, None, line), "unknown_topic",
                                     "a line must be {\"topic\": \"mark-prices\"|\"positions\", \"key\", \"value\"}")
            continue
        topic, value = record["topic"], record["value"]
        source = Source(topic, 0, offset, _key_bytes(record.get("key")), _reencoded(value, line))
        if topic == "mark-prices":
            yield from engine.iter_mark(value, source)  # a cascade's outputs one by one, not all held
        else:
            yield from engine.process_positions(value, source)
        engine.dirty.clear()  # replay persists no state: what changed need not be remembered


class _HeldLine(HeldRecord):
    """A replay line the typed way took: its ``value`` is the line's "value", and ``value_bytes``
    what the validating way puts in the Source for the line: that value, re-encoded."""

    __slots__ = ()

    def _decode(self) -> Any:
        return decode(self.raw)["value"]

    def value_bytes(self) -> bytes:
        return _reencoded(self.value(), self.raw)


def format_output(output: Output) -> bytes:
    """One line of replay output: {"topic", "key", "value"} as JSON."""
    return format_encoded(output.topic, output.key, encode(output.value))


def format_encoded(topic: str, key: str, value_json: bytes) -> bytes:
    """``format_output``'s bytes around a value already encoded (compact JSON concatenates)."""
    return b"".join((b'{"topic":', encode(topic), b',"key":', encode(key), b',"value":', value_json, b"}\n"))


def run_replay(input_stream: BinaryIO, output_stream: BinaryIO, params: Params) -> Engine:
    engine = Engine(params)
    write = output_stream.write
    for output in replay_lines(input_stream, engine):
        sent, _, value_json = encode_output(engine, output)  # what streaming would publish for it
        write(format_encoded(sent.topic, sent.key, value_json))
    return engine


def main_replay(input_path: str, params: Params) -> int:
    tune_collector()
    with open(input_path, "rb") as handle:
        run_replay(handle, sys.stdout.buffer, params)
    sys.stdout.buffer.flush()
    return 0
