"""Offline replay (SPEC §7): JSON Lines in, output events as JSON Lines out, same core."""
from __future__ import annotations

import sys
from typing import BinaryIO, Iterable, Iterator

from topics.codec import DecodeError, decode, encode

from .core.engine import Engine
from .core.outputs import Output, Source
from .core.params import Params
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
        if not line.strip():
            continue
        offset = line_number - 1
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
            yield from engine.process_mark(value, source)
        else:
            yield from engine.process_positions(value, source)
        engine.dirty.clear()  # replay persists no state: what changed need not be remembered


def format_output(output: Output) -> bytes:
    return encode({"topic": output.topic, "key": output.key, "value": output.value}) + b"\n"


def run_replay(input_stream: BinaryIO, output_stream: BinaryIO, params: Params) -> Engine:
    engine = Engine(params)
    write = output_stream.write
    for output in replay_lines(input_stream, engine):
        sent, _, _ = encode_output(engine, output)  # what streaming would publish for it
        write(format_output(sent))
    return engine


def main_replay(input_path: str, params: Params) -> int:
    with open(input_path, "rb") as handle:
        run_replay(handle, sys.stdout.buffer, params)
    sys.stdout.buffer.flush()
    return 0
