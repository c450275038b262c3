"""Command line: ``python -m worker replay|worker|topics|simulate|demo|report|verify|methodology|backtest|health|web-token``."""
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
        from .web import refuse_faust_import_variables

        refuse_faust_import_variables(os.environ)  # before importing Faust, which reads them at import
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
    if argv and argv[0] == "methodology":
        from .tools.methodology import main_methodology

        return main_methodology(argv[1:])
    if argv and argv[0] == "backtest":
        from .tools.backtest import main_backtest

        return main_backtest(argv[1:])
    if argv and argv[0] == "verify":
        from .tools.verify import main_verify

        return main_verify(argv[1:])
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
    from .kafka_security import add_security_arguments

    add_security_arguments(topics)  # the worker's RISK_SECURITY_PROTOCOL, RISK_SASL_*, RISK_SSL_*
    probe = sub.add_parser("health", help="probe this worker's /live or /ready (RISK_WEB_* settings); exit 0 if OK")
    probe.add_argument("probe", choices=("live", "ready"))
    token = sub.add_parser("web-token", help="write a random web token to PATH unless PATH holds one")
    token.add_argument("path")
    sub.add_parser("simulate", help="market simulator and matching-engine stand-in (see --help of `simulate`)")
    sub.add_parser("demo", help="live demo on the embedded broker (see --help of `demo`)")
    sub.add_parser("report", help="chart (PNG) and summary of replay output or a topic dump")
    sub.add_parser("methodology", help="the methodology disclosure of a parameter file (markdown or JSON)")
    sub.add_parser("backtest", help="replay one input under several parameter files and compare them")
    sub.add_parser("verify", help="re-derive an output's liquidations and rounds independently (see --help of `verify`)")
    args = parser.parse_args(argv)
    if args.command == "topics":
        from topics.catalog import topic_specs

        from .broker import create_topics
        from .kafka_security import KafkaSecurity
        from .settings import SettingsError

        try:
            security = KafkaSecurity.resolve(args).check()
        except SettingsError as exc:
            raise SystemExit(f"error: {exc}") from None
        result = create_topics(args.bootstrap, topic_specs(args.prefix, args.partitions),
                               replication_factor=args.replication_factor, security=security)
        for name, status in result.items():
            print(f"{name}: {status}")
        return 0
    if args.command == "health":
        return health(args.probe)
    if args.command == "web-token":
        return write_web_token(args.path)
    if args.command == "replay":
        from .replay import main_replay

        return main_replay(args.input, _params(args.params))
    return 2


def health(probe: str) -> int:
    """The container healthcheck: GET /live or /ready of the worker configured by the RISK_* environment
    (its port, its bind address or loopback when it binds every interface, its token)."""
    from .settings import SettingsError, resolve
    from .web import fetch

    try:
        settings = resolve()
        token = settings.bearer_token()
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.web_bind, settings.web_bind)
    host = f"[{host}]" if ":" in host else host
    status, body = fetch(f"http://{host}:{settings.web_port}/{probe}", token)
    print(f"{probe}: HTTP {status or 'no answer'} {json_line(body)}")
    return 0 if status == 200 else 1


def json_line(value: object) -> str:
    import json

    return "" if value is None else json.dumps(value, sort_keys=True)


def write_web_token(path: str) -> int:
    """Create a random bearer token (256 bits, URL-safe base64) at ``path``, once: a token already
    there is kept, so restarts do not change it. Readable by the other containers that mount it."""
    import secrets
    from pathlib import Path

    target = Path(path)
    try:
        if target.is_file() and target.read_text(encoding="utf-8").strip():
            print(f"web token: kept {target}")
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(target.name + ".tmp")
        scratch.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        scratch.chmod(0o644)  # the workers (uid 10001) and Prometheus (nobody) read it; the volume is theirs
        scratch.replace(target)
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: web token {target}: {exc}") from None
    print(f"web token: created {target}")
    return 0


def replay_entry() -> int:
    """Console script ``risk-replay``."""
    return main(["replay", *sys.argv[1:]])
