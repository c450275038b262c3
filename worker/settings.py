"""Worker configuration: every setting has a flag, an environment variable and a default."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: object
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("bootstrap", "RISK_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, host:port[,host:port]"),
    Setting("params", "RISK_PARAMS", "examples/params.toml", "parameter TOML file (SPEC §9)"),
    Setting("topic_prefix", "RISK_TOPIC_PREFIX", "", "prefix before every topic name"),
    Setting("partitions", "RISK_PARTITIONS", 4, "partitions of positions and of the account table"),
    Setting("app_id", "RISK_APP_ID", "risk-worker", "consumer group / Faust application id"),
    Setting("web_port", "RISK_WEB_PORT", 6066, "this worker's HTTP port (/metrics); one per worker"),
    Setting("web_host", "RISK_WEB_HOST", "127.0.0.1", "address this worker's HTTP server binds (0.0.0.0 in a container)"),
    Setting("data_dir", "RISK_DATA_DIR", "", "Faust data directory (default: a fresh temp dir)"),
    Setting("session_timeout_s", "RISK_SESSION_TIMEOUT_S", 2.0,
            "consumer-group session timeout: a dead worker's partitions move after this (docs/streaming.md)"),
    Setting("heartbeat_s", "RISK_HEARTBEAT_S", 0.3, "consumer-group heartbeat interval"),
    Setting("rebalance_timeout_s", "RISK_REBALANCE_TIMEOUT_S", 6.0, "consumer-group rebalance timeout"),
    Setting("standby_replicas", "RISK_STANDBY_REPLICAS", 2,
            "standby copies of each table partition kept by other workers (fast takeover; 0 = none)"),
    Setting("table_store", "RISK_TABLE_STORE", "tracked-memory://",
            "Faust table store: tracked-memory:// (in memory, knows its changelog offsets), memory://"),
    Setting("fetch_max_wait_ms", "RISK_FETCH_MAX_WAIT_MS", 100,
            "long poll of the group consumer; its other requests wait behind it (Faust's own: 1500)"),
    Setting("linger_ms", "RISK_PRODUCER_LINGER_MS", 20, "producer linger"),
    Setting("max_batch_bytes", "RISK_PRODUCER_MAX_BATCH_BYTES", 262_144, "producer batch size"),
    Setting("security_protocol", "RISK_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    Setting("sasl_mechanism", "RISK_SASL_MECHANISM", "", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512"),
    Setting("sasl_username", "RISK_SASL_USERNAME", "", "SASL user"),
    Setting("sasl_password", "RISK_SASL_PASSWORD", "", "SASL password"),
    Setting("ssl_cafile", "RISK_SSL_CAFILE", "", "CA bundle for TLS"),
    Setting("log_level", "RISK_LOG_LEVEL", "info", "log level"),
)


@dataclass(frozen=True)
class WorkerSettings:
    bootstrap: str
    params: str
    topic_prefix: str
    partitions: int
    app_id: str
    web_port: int
    web_host: str
    data_dir: str
    session_timeout_s: float
    heartbeat_s: float
    rebalance_timeout_s: float
    standby_replicas: int
    table_store: str
    fetch_max_wait_ms: int
    linger_ms: int
    max_batch_bytes: int
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str
    ssl_cafile: str
    log_level: str

    def topic(self, name: str) -> str:
        return self.topic_prefix + name


def _convert(setting: Setting, raw: str) -> object:
    kind = type(setting.default)
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"error: {setting.env}={raw!r} is not a valid {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        parser.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, default=None,
                            help=f"{setting.help} [env {setting.env}, default {setting.default!r}]")


def resolve(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> WorkerSettings:
    """Flag, else environment variable, else default."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in SETTINGS:
        flag = getattr(args, setting.name, None) if args is not None else None
        raw = flag if flag is not None else environ.get(setting.env)
        values[setting.name] = setting.default if raw is None else _convert(setting, str(raw))
    assert {f.name for f in fields(WorkerSettings)} == set(values)
    return WorkerSettings(**values)
