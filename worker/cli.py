"""Command line: ``python -m worker replay|worker|demo|report``."""
from __future__ import annotations

import argparse
import os
import sys

from .core.params import ParamsError, load_params

DEFAULT_PARAMS_ENV = "RISK_PARAMS"


def _params(path: str | None):
    path = path or os.environ.get(DEFAULT_PARAMS_ENV)
    if not path:
        raise SystemExit(f"error: --params PATH or {DEFAULT_PARAMS_ENV} is required")
    try:
        return load_params(path)
    except ParamsError as exc:
        raise SystemExit(f"error: {path}: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot read parameters: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        from .app import main_worker  # Faust takes over its own command line

        return main_worker(argv)
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="offline replay of a JSON Lines scenario (SPEC §7)")
    replay.add_argument("input", help="JSON Lines: {topic, key, value} per line")
    replay.add_argument("--params", help=f"parameter TOML (or ${DEFAULT_PARAMS_ENV})")
    args = parser.parse_args(argv)
    if args.command == "replay":
        from .replay import main_replay

        return main_replay(args.input, _params(args.params))
    return 2


def replay_entry() -> int:
    """Console script ``risk-replay``."""
    return main(["replay", *sys.argv[1:]])
