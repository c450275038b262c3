"""Run a benchmark next to its baseline in one run: the same script from a git ref and from this tree.

    python bench/baseline.py 4a2e5f3 --runs 3 -- bench/replay_bench.py --accounts 20000 --events 200000

The ref is checked out into a temporary git worktree (removed afterwards); when it has a
``setup.py`` its core is compiled there in place first (``build_ext --inplace``, as the editable
install does; ``--no-build`` skips it), so that a compiled core is measured against a compiled
core. The script runs from
there and from this tree alternately (baseline first), ``--runs`` times each, with this interpreter;
every benchmark here imports the code of the tree it sits in (``sys.path`` / the harness's
``PYTHONPATH``), so each side measures its own code under the same machine load. Prints every
output, then, for each line of the form ``<label>  <number> ...`` that the runs print, the median
of each side and the ratio. Labels that only one side prints show "—" on the other.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"^\s*([A-Za-z][^0-9]*?)\s{2,}(-?[0-9][0-9,]*\.?[0-9]*)")


def figures(output: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in output.splitlines():
        match = NUMBER.match(line)
        if match and match.group(1).strip() not in found:
            found[match.group(1).strip()] = float(match.group(2).replace(",", ""))
    return found


def run(tree: Path, script: list[str]) -> str:
    result = subprocess.run([sys.executable, str(tree / script[0]), *script[1:]], cwd=tree, text=True,
                            capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{tree / script[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the baseline: a commit, branch or tag")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-build", action="store_true", help="run the ref's core as its sources (pure)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    script = argv[cut + 1:]  # SCRIPT [ARGS...], SCRIPT relative to the repo
    if not script:
        parser.error("name the benchmark script after --")
    with tempfile.TemporaryDirectory(prefix="baseline-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(base), args.ref], cwd=ROOT, check=True)
        try:
            if (base / "setup.py").exists() and not args.no_build:
                subprocess.run([sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"], cwd=base,
                               check=True, stdout=subprocess.DEVNULL)
            sides: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
            for n in range(args.runs):
                for name, tree in (("baseline", base), ("this tree", ROOT)):
                    output = run(tree, script)
                    print(f"==== {name} ({args.ref if tree is base else 'working tree'}), run {n + 1}\n{output}",
                          flush=True)
                    sides[name].append(figures(output))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    labels: list[str] = []
    for runs in sides.values():
        for found in runs:
            labels.extend(label for label in found if label not in labels)
    print(f"median of {args.runs} runs each        baseline ({args.ref})    this tree    ratio")
    for label in labels:
        medians = []
        for runs in sides.values():
            values = [found[label] for found in runs if label in found]
            medians.append(statistics.median(values) if values else None)
        ratio = f"{medians[1] / medians[0]:.2f}×" if None not in medians and medians[0] else "—"
        cells = ["—" if m is None else f"{m:,.2f}" for m in medians]
        print(f"{label[:36]:<36} {cells[0]:>16} {cells[1]:>12} {ratio:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
