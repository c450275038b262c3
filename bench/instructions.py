"""Instructions executed by an in-process benchmark's measured region, for this tree and a baseline.

    python bench/instructions.py --baseline /work/wt-base --per 5000 -- bench/round_pay_bench.py --accounts 5000 --repeat 1

On this kind of machine (2 shared vCPUs) the same code's time varies by ±20–40 % from one minute to
the next, more than most single changes move it. The number of instructions it executes does not:
the script runs under valgrind's callgrind (``--collect-atstart=no``), which counts the
instructions (``Ir``) executed inside calls of ``operator.call`` only — the region each in-process
bench wraps in it (``measured_seconds`` in bench/standins.py, for the pay, fund agent and
single-event benches; bench/replay_bench.py's loop) — with PYTHONHASHSEED=0.
The same code gives the same count within ~0.1 %. What it does not see: the kernel (page faults,
at ~3.4 µs each here), cache misses and memory, I/O; a change that moves those (the exact-size
copies of topics/codec.py) needs the time benches as well. ``--baseline DIR`` runs the script
again with ``--root DIR`` (the pay, fund agent and single-event benches import the worker from there: a checkout
compiled in place, ``setup.py build_ext --inplace``; the replay bench imports its own tree's, so
run a baseline's copy of it from there). ``--per N`` divides by N (winners, items). Needs valgrind.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(script: list[str], root: Path | None) -> int:
    """Instructions executed inside ``operator.call`` by ``python script`` (with ``--root root``)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=_operator_call*",
                   f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, *script,
                   *(["--root", str(root)] if root else [])]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"})
    found = COLLECTED.findall(result.stderr)
    if result.returncode != 0 or not found:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout to count beside this tree")
    parser.add_argument("--per", type=int, default=1, help="divide the counts by this (winners, items)")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- bench/<script>.py [its arguments]")
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("no script given (after --)")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed here (apt install valgrind): it counts the instructions")
    counts = {}
    if args.baseline is not None:
        counts[f"baseline ({args.baseline})"] = instructions(script, args.baseline.resolve())
    counts["this tree"] = instructions(script, None)
    for label, count in counts.items():
        print(f"{label:40s} {count:>16,} instructions  {count / args.per:>12,.0f} per unit")
    if len(counts) == 2:
        base, this = counts.values()
        print(f"{'ratio (this tree / baseline)':40s} {this / base:16.4f}")


if __name__ == "__main__":
    main()
