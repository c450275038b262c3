"""Kept encoded bytes: ``orjson.dumps`` results kept until sent, against exact-size copies (topics/codec.py).

A loss-sharing round encodes 100 000 haircut events and keeps each chunk's until the producer has
them; a cascade keeps its allocations, ledger records and account records the same way. This
measures, in one process, µs per encoded value for ``--values`` values of the round's event shape
(441 bytes) and of a larger one (~1.3 KiB): kept as ``orjson.dumps`` returns them, kept as
``encode_bounded`` returns them (an exact-size copy), and encoded and dropped at once (the floor).
Each way runs ``--repeat`` times, alternating, after the others freed their values.

Usage: python bench/kept_bytes_bench.py [--values N] [--repeat R]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from topics.codec import encode_bounded  # noqa: E402

EVENT = {"type": "haircut", "schema_version": 1, "haircut_id": "a" * 32, "round_id": "b" * 32, "ts": 1_700_000_000_000,
         "account_id": "s000001", "scope": "cross", "symbol": "BTC-PERP", "side": "short", "weight": "5000.000000",
         "amount": "1666.666666", "claim_after": "1666.666666", "params_version": "abc",
         "transfers": [{"from": "account:s000001", "to": "socialized_loss", "amount": "1666.666666", "asset": "USD",
                        "reason": "haircut"}]}
LARGER = dict(EVENT, closes=[{"symbol": "BTC-PERP", "side": "long", "closed_size": "1.000", "note": "x" * 40}] * 9)


def per_value_us(way: str, value: dict, n: int) -> float:
    started = time.perf_counter()
    if way == "orjson.dumps, kept":
        kept = [orjson.dumps(value) for _ in range(n)]
    elif way == "encode_bounded, kept":
        kept = [encode_bounded(value) for _ in range(n)]
    else:
        for _ in range(n):
            orjson.dumps(value)
        kept = []
    elapsed = time.perf_counter() - started
    del kept
    return 1e6 * elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ways = ("orjson.dumps, kept", "encode_bounded, kept", "orjson.dumps, dropped")
    print(f"conditions: Python {sys.version.split()[0]}, orjson {orjson.__version__}, {args.values:,} values "
          f"per run, {args.repeat} runs per way, alternating")
    for name, value in (("event (441 B)", EVENT), (f"larger ({len(orjson.dumps(LARGER))} B)", LARGER)):
        runs: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.repeat):
            for way in ways:
                runs[way].append(per_value_us(way, value, args.values))
        for way in ways:
            print(f"{name}, {way:<22}  {statistics.median(runs[way]):.2f} µs a value "
                  f"(min {min(runs[way]):.2f}, max {max(runs[way]):.2f})")


if __name__ == "__main__":
    main()
