"""Replay benchmark: N accounts, M events with a crash, through the same core as the worker.

Prints events/s, liquidations, evaluations per tick, peak RSS and the replay's memory per account
(peak RSS minus the RSS after generating the input, ÷ accounts). No broker involved.
Usage: python bench/replay_bench.py [--accounts 100000] [--events 1000000] [--both]
       python bench/replay_bench.py --accounts 1000000 --events 2000002   (memory: 1 M accounts, loading only)

The core runs compiled (mypyc) when the install built it, else pure; the first line says which.
``--both`` runs the bench twice, one subprocess each, pure (RISK_PURE_CORE=1) then compiled, on
the same input, and prints both and their ratio.
"""
from __future__ import annotations

import argparse
import operator
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

import worker.core  # noqa: E402
from worker.core.params import load_params  # noqa: E402
from worker.core.engine import Engine  # noqa: E402
from worker.gc_tuning import tune_collector  # noqa: E402
from worker.replay import format_encoded, replay_lines  # noqa: E402
from worker.wire import encode_output  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class _Lines(list):
    """JSON Lines as exact-size bytes (orjson's buffers are over-allocated; + b"\n" copies)."""

    def append(self, line: bytes) -> None:
        super().append(line + b"\n")


def scenario(accounts: int, events: int, seed: int = 7) -> list[bytes]:
    """Open `accounts` BTC/ETH positions, then position churn and ticks ending in a 12 % crash."""
    rng = random.Random(seed)
    lines = _Lines()
    ts = 1_700_000_000_000
    btc, eth = 200_000, 150_000  # ticks
    seq = {"BTC-PERP": 1, "ETH-PERP": 1}

    def tick(symbol: str, ticks: int) -> None:
        seq[symbol] += 1
        text = f"{ticks // 10}.{ticks % 10}" if symbol == "BTC-PERP" else f"{ticks // 100}.{ticks % 100:02d}"
        lines.append(orjson.dumps({"topic": "mark-prices", "key": symbol, "value": {
            "symbol": symbol, "mark_price": text, "ts": ts, "seq": seq[symbol]}}))

    lines.append(orjson.dumps({"topic": "mark-prices", "key": "BTC-PERP", "value": {
        "symbol": "BTC-PERP", "mark_price": "20000.0", "ts": ts, "seq": 1}}))
    lines.append(orjson.dumps({"topic": "mark-prices", "key": "ETH-PERP", "value": {
        "symbol": "ETH-PERP", "mark_price": "1500.00", "ts": ts, "seq": 1}}))
    account_seq = [0] * accounts
    for i in range(accounts):
        account = f"acct-{i:07d}"
        leverage = rng.choice([2, 3, 5, 8, 10, 15, 20, 25])
        size_btc = rng.randint(1, 2_000)  # lots of 0.001
        collateral = 20_000 * size_btc // 1000 // leverage + 1
        lines.append(orjson.dumps({"topic": "positions", "key": account, "value": [
            {"type": "balance", "account_id": account, "asset": "USD", "collateral": str(collateral), "seq": 1, "ts": ts},
            {"type": "position", "account_id": account, "symbol": "BTC-PERP",
             "size": f"{(size_btc if i % 3 else -size_btc) / 1000:.3f}", "entry_price": "20000.0", "seq": 2, "ts": ts}]}))
        account_seq[i] = 2
    remaining = events - 2 - 2 * accounts
    crash_start = int(remaining * 0.8)
    for n in range(max(0, remaining)):
        ts += 1
        if n % 50 == 0:
            if n >= crash_start:
                btc = btc * 9_985 // 10_000  # crash: −0.15 % a tick
            else:
                btc = btc + rng.randint(-40, 40)
            tick("BTC-PERP", btc)
        elif n % 50 == 25:
            eth = max(1, eth + rng.randint(-30, 30))
            tick("ETH-PERP", eth)
        else:
            i = rng.randrange(accounts)
            account_seq[i] += 1
            account = f"acct-{i:07d}"
            lines.append(orjson.dumps({"topic": "positions", "key": account, "value": {
                "type": "position", "account_id": account, "symbol": "ETH-PERP",
                "size": f"{rng.randint(-500, 500) / 100:.2f}", "entry_price": f"{eth // 100}.{eth % 100:02d}",
                "seq": account_seq[i], "ts": ts}}))
    return lines


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--params", default=str(ROOT / "bench" / "bench_params.toml"))
    parser.add_argument("--both", action="store_true",
                        help="run pure (RISK_PURE_CORE=1) then compiled, one subprocess each, and compare")
    args = parser.parse_args()
    if args.both:
        return both(args)
    params = load_params(args.params)
    started = time.perf_counter()
    lines = scenario(args.accounts, args.events)
    generated = time.perf_counter() - started
    rss_after_input_mib = current_rss_bytes() / 2**20
    tune_collector()  # what `replay` does (worker/gc_tuning.py)
    engine = Engine(params)
    started = time.perf_counter()
    cpu_started = time.process_time()
    def replay() -> tuple[int, int]:
        outputs = written = 0
        for output in replay_lines(lines, engine):  # encoded and formatted as `replay` writes it, then dropped
            sent, _, value_json = encode_output(engine, output)
            written += len(format_encoded(sent.topic, sent.key, value_json))
            outputs += 1
        return outputs, written

    outputs, written = operator.call(replay)  # (the region bench/instructions.py counts)
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # this process's CPU: steadier than wall time on a shared machine
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ticks = engine.counters["ticks"]
    print(f"core                   {'compiled (mypyc)' if worker.core.COMPILED else 'pure Python'}"
          f"{'' if worker.core.COMPILED else f'  ({worker.core.PURE_REASON})'}")
    print(f"input lines            {len(lines):>12,}  (generated in {generated:.1f} s)")
    print(f"events processed       {engine.counters['ticks'] + engine.counters['position_events']:>12,}")
    print(f"replay time            {elapsed:>12.2f} s")
    print(f"events/s               {len(lines) / elapsed:>12,.0f}  (input messages per second, one process)")
    print(f"events per CPU-second  {len(lines) / cpu_seconds:>12,.0f}  ({cpu_seconds:.2f} s of CPU: less noisy on a shared machine)")
    print(f"outputs                {outputs:>12,}  ({written / 2**20:.1f} MiB)")
    print(f"liquidations           {engine.counters['liquidations']:>12,}  "
          f"(bankrupt {engine.counters['bankruptcies']:,})")
    print(f"evaluations per tick   {engine.counters['evaluations:BTC-PERP'] / max(1, ticks):>12.1f}  "
          f"(mean over {ticks:,} ticks, {args.accounts:,} accounts)")
    print(f"peak RSS               {peak_mib:>12.0f} MiB  ({rss_after_input_mib:.0f} MiB after generating the input in memory)")
    # replay memory per account = (peak RSS − RSS after generating the input) ÷ accounts
    per_account_bytes = max(0.0, peak_mib - rss_after_input_mib) * 2**20 / max(1, args.accounts)
    print(f"memory per account     {per_account_bytes:>12,.0f} B    (peak RSS − RSS after the input, ÷ accounts)")
    return 0


def both(args: argparse.Namespace) -> int:
    """The same bench, pure then compiled, in two subprocesses (same input: the scenario is seeded)."""
    command = [sys.executable, __file__, "--accounts", str(args.accounts), "--events", str(args.events),
               "--params", args.params]
    rates = {}
    for label, pure in (("pure", "1"), ("compiled", "0")):
        print(f"--- {label} core (RISK_PURE_CORE={pure})", flush=True)
        run = subprocess.run(command, env={**os.environ, "RISK_PURE_CORE": pure}, capture_output=True, text=True)
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr)
        if run.returncode:
            return run.returncode
        for name, pattern in (("wall", r"^events/s\s+([\d,]+)"), ("cpu", r"^events per CPU-second\s+([\d,]+)")):
            found = re.search(pattern, run.stdout, re.MULTILINE)
            rates[label, name] = int(found.group(1).replace(",", "")) if found else 0
        if label == "compiled" and "compiled (mypyc)" not in run.stdout:
            print("(no compiled core in this install: the second run was pure too)")
    if rates.get(("pure", "wall")) and rates.get(("pure", "cpu")):
        print(f"--- compiled / pure: {rates['compiled', 'wall'] / rates['pure', 'wall']:.2f}x by wall clock "
              f"({rates['compiled', 'wall']:,} / {rates['pure', 'wall']:,} input lines/s), "
              f"{rates['compiled', 'cpu'] / rates['pure', 'cpu']:.2f}x by CPU time "
              f"({rates['compiled', 'cpu']:,} / {rates['pure', 'cpu']:,} input lines per CPU-second)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
