"""Worker configuration: every setting has a flag, an environment variable and a default."""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from .kafka_security import KafkaSecurity


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
    Setting("web_port", "RISK_WEB_PORT", 6066, "this worker's HTTP port (/metrics, /stats, /live, /ready); one per worker"),
    Setting("web_bind", "RISK_WEB_BIND", "127.0.0.1",
            "address the HTTP server listens on (0.0.0.0: every interface, e.g. in a container)"),
    Setting("web_host", "RISK_WEB_HOST", "127.0.0.1",
            "host name this worker advertises for its HTTP port (Faust's canonical URL); not the bind address"),
    Setting("web_token", "RISK_WEB_TOKEN", "",
            "bearer token every HTTP endpoint but /live requires (empty: none); at least 16 of A-Z a-z 0-9 -._~+/="),
    Setting("web_token_file", "RISK_WEB_TOKEN_FILE", "", "file holding the bearer token (instead of RISK_WEB_TOKEN)"),
    Setting("ready_stall_s", "RISK_READY_STALL_S", 5.0,
            "/ready turns false when the mark reader has not completed a poll for this long (seconds)"),
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
    Setting("mark_fetch_max_wait_ms", "RISK_MARK_FETCH_MAX_WAIT_MS", 5,
            "long poll of the mark reader: the embedded broker answers an empty fetch only when it ends, so a tick "
            "waits up to about this long (Apache Kafka answers at once when data arrives: 100–500 costs no latency "
            "and saves the idle polls)"),
    Setting("positions_group_ms", "RISK_POSITIONS_GROUP_MS", 5,
            "positions messages are taken in groups gathered over at most this long (a message waits up to it; "
            "0: one at a time): one handler call a group instead of a message (docs/streaming.md)"),
    Setting("positions_group_max", "RISK_POSITIONS_GROUP_MAX", 1000, "positions messages in a group at most"),
    Setting("linger_ms", "RISK_PRODUCER_LINGER_MS", 20, "producer linger"),
    Setting("max_batch_bytes", "RISK_PRODUCER_MAX_BATCH_BYTES", 262_144, "producer batch size"),
    Setting("security_protocol", "RISK_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"),
    Setting("sasl_mechanism", "RISK_SASL_MECHANISM", "", "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512"),
    Setting("sasl_username", "RISK_SASL_USERNAME", "", "SASL user"),
    Setting("sasl_password", "RISK_SASL_PASSWORD", "", "SASL password"),
    Setting("ssl_cafile", "RISK_SSL_CAFILE", "", "CA bundle to verify the brokers (empty: the system's)"),
    Setting("ssl_certfile", "RISK_SSL_CERTFILE", "", "client certificate (PEM) for mutual TLS"),
    Setting("ssl_keyfile", "RISK_SSL_KEYFILE", "", "private key (PEM) of the client certificate"),
    Setting("ssl_key_password", "RISK_SSL_KEY_PASSWORD", "", "password of the private key, if encrypted"),
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
    web_bind: str
    web_host: str
    web_token: str = field(repr=False)
    web_token_file: str
    ready_stall_s: float
    data_dir: str
    session_timeout_s: float
    heartbeat_s: float
    rebalance_timeout_s: float
    standby_replicas: int
    table_store: str
    fetch_max_wait_ms: int
    mark_fetch_max_wait_ms: int
    positions_group_ms: int
    positions_group_max: int
    linger_ms: int
    max_batch_bytes: int
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str = field(repr=False)
    ssl_cafile: str
    ssl_certfile: str
    ssl_keyfile: str
    ssl_key_password: str = field(repr=False)
    log_level: str

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    @cached_property
    def security(self) -> "KafkaSecurity":
        """The Kafka client security of every client this worker creates (worker/kafka_security.py);
        one object, so one TLS context, for all of them."""
        from .kafka_security import KafkaSecurity

        return KafkaSecurity.from_settings(self)

    def bearer_token(self) -> str:
        """The HTTP bearer token ("" when none): RISK_WEB_TOKEN or the content of RISK_WEB_TOKEN_FILE."""
        token = self.web_token
        if self.web_token_file:
            if token:
                raise SettingsError("set RISK_WEB_TOKEN or RISK_WEB_TOKEN_FILE, not both")
            try:
                with open(self.web_token_file, encoding="utf-8") as handle:
                    token = handle.read(4096).strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(f"RISK_WEB_TOKEN_FILE: cannot read the token: {exc}") from None
            if not token:
                raise SettingsError(f"RISK_WEB_TOKEN_FILE: {self.web_token_file} is empty")
        if token and not TOKEN.fullmatch(token):
            raise SettingsError("the web token must be at least 16 characters of A-Z a-z 0-9 - . _ ~ + / = "
                                "(e.g. `python -m worker web-token PATH` or `openssl rand -hex 32`)")
        return token


class SettingsError(ValueError):
    """A setting that cannot work; the commands print it and exit 2."""


TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,}=*")  # RFC 6750 b64token, at least 16 characters


def _convert(setting: Setting, raw: str) -> object:
    kind = type(setting.default)
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(f"error: {setting.env}={raw!r} is not a valid {kind.__name__}") from None
    if kind is float and not (math.isfinite(value) and value >= 0):  # type: ignore[arg-type]
        raise SystemExit(f"error: {setting.env}={raw!r} is not a finite, non-negative number")
    return value


def add_arguments(parser: argparse.ArgumentParser, table: Iterable[Setting] = SETTINGS) -> None:
    for setting in table:
        parser.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name, default=None,
                            help=f"{setting.help} [env {setting.env}, default {setting.default!r}]")


def resolve_values(table: Iterable[Setting], args: argparse.Namespace | None = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """Each setting of ``table``: flag, else environment variable, else default."""
    environ = os.environ if environ is None else environ
    values = {}
    for setting in table:
        flag = getattr(args, setting.name, None) if args is not None else None
        raw = flag if flag is not None else environ.get(setting.env)
        values[setting.name] = setting.default if raw is None else _convert(setting, str(raw))
    return values


def resolve(args: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> WorkerSettings:
    """Flag, else environment variable, else default."""
    values = resolve_values(SETTINGS, args, environ)
    assert {f.name for f in fields(WorkerSettings)} == set(values)
    if values["positions_group_max"] < 1:  # type: ignore[operator]
        raise SettingsError(f"RISK_POSITIONS_GROUP_MAX={values['positions_group_max']}: a group holds 1 message at least")
    if values["positions_group_ms"] < 0:  # type: ignore[operator]
        raise SettingsError(f"RISK_POSITIONS_GROUP_MS={values['positions_group_ms']}: 0 (one at a time) or more")
    return WorkerSettings(**values)
