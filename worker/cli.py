"""Command line: ``python -m worker replay|worker|topics|simulate|demo|report``."""
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
    from .extras import MissingExtra

    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except MissingExtra as exc:  # an optional feature without its extra: one line, what to install
        print(exc, file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "worker":
        from .app import main_worker  # Faust takes over its own command line

        return main_worker(argv)
    if argv and argv[0] == "simulate":
        from .simulator import main_simulate

        return main_simulate(argv[1:])
    if argv and argv[0] == "demo":
        from .demo import main_demo

        return main_demo(argv[1:])
    if argv and argv[0] == "report":
        from .report import main_report

        return main_report(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="offline replay of a JSON Lines scenario (SPEC §7)")
    replay.add_argument("input", help="JSON Lines: {topic, key, value} per line")
    replay.add_argument("--params", help=f"parameter TOML (or ${DEFAULT_PARAMS_ENV})")
    topics = sub.add_parser("topics", help="create the catalog's topics on a cluster")
    topics.add_argument("--bootstrap", default=os.environ.get("RISK_BOOTSTRAP", "127.0.0.1:9092"))
    topics.add_argument("--prefix", default=os.environ.get("RISK_TOPIC_PREFIX", ""))
    topics.add_argument("--partitions", type=int, default=int(os.environ.get("RISK_PARTITIONS", "4")))
    topics.add_argument("--replication-factor", type=int, default=1)
    sub.add_parser("simulate", help="market simulator and matching-engine stand-in (see --help of `simulate`)")
    sub.add_parser("demo", help="live demo on the embedded broker (see --help of `demo`)")
    sub.add_parser("report", help="chart (PNG) and summary of replay output or a topic dump")
    args = parser.parse_args(argv)
    if args.command == "topics":
        from topics.catalog import topic_specs

        from .broker import create_topics

        result = create_topics(args.bootstrap, topic_specs(args.prefix, args.partitions),
                               replication_factor=args.replication_factor)
        for name, status in result.items():
            print(f"{name}: {status}")
        return 0
    if args.command == "replay":
        from .replay import main_replay

        return main_replay(args.input, _params(args.params))
    return 2


def replay_entry() -> int:
    """Console script ``risk-replay``."""
    return main(["replay", *sys.argv[1:]])
