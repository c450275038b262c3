"""The security surface (README, "Security and endpoints"), without a broker.

* Kafka client security: one module (worker/kafka_security.py) gives every client the product
  creates the same settings. Each client is built with SASL_SSL + mutual TLS and inspected: the
  aiokafka client it constructs carries the protocol, mechanism and credentials, and its TLS context
  verifies a server signed by the test CA and presents the client certificate to it (a real TLS
  handshake on loopback, with a CA and certificates made here by the `openssl` command).
* The HTTP surface: only /metrics, /stats, /live and /ready; Faust's views answer 404; the optional
  bearer token (401 without it, /live excepted); /ready turns false when the mark reader is wedged.
* Faust's own environment variables change nothing (or refuse the start).

The broker tier (tests/test_broker.py) checks the bind address and the endpoints of a real worker.
"""
from __future__ import annotations

import ast
import asyncio
import shutil
import ssl
import subprocess
import time
import types
from pathlib import Path

import aiokafka
import aiokafka.admin
import faust
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.structs import TopicPartition

from tests.fixtures import EXAMPLES, ROOT, FakeProducer, mark
from worker.kafka_security import KafkaSecurity, SecurityError
from worker.settings import SettingsError, resolve

TOKEN = "s3cr3t-t0ken-for-the-tests-0123456789"
SASL = {"RISK_SECURITY_PROTOCOL": "SASL_SSL", "RISK_SASL_MECHANISM": "SCRAM-SHA-512",
        "RISK_SASL_USERNAME": "risk", "RISK_SASL_PASSWORD": "pw-risk"}
FAUST_VIEWS = ["/", "/table/", "/table/accounts/", "/table/accounts/alice/", "/router/", "/router/topics/",
               "/router/accounts/alice/", "/graph/", "/stats/", "/assignment/", "/performance/"]


# ------------------------------------------------------------------------------------------ a PKI
@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for `localhost` and a client certificate (with an encrypted key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=risk-test-ca")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    run("req", "-newkey", "rsa:2048", "-passout", "pass:key-pw", "-keyout", "client.key", "-out", "client.csr",
        "-subj", "/CN=risk-client")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.pem", "-days", "2")
    return {name: d / f"{name}" for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def secure_env(pki) -> dict[str, str]:
    return {**SASL, "RISK_SSL_CAFILE": str(pki["ca.pem"]), "RISK_SSL_CERTFILE": str(pki["client.pem"]),
            "RISK_SSL_KEYFILE": str(pki["client.key"]), "RISK_SSL_KEY_PASSWORD": "key-pw"}


async def peer_of(context: ssl.SSLContext, pki: dict[str, Path]) -> str:
    """TLS handshake with a loopback server that requires a client certificate signed by the test CA;
    returns the common name of the certificate the client presented (raises if the server refused it)."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca.pem"]))
    server_context.load_cert_chain(str(pki["server.pem"]), str(pki["server.key"]))
    server_context.verify_mode = ssl.CERT_REQUIRED

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item for rdn in writer.get_extra_info("peercert")["subject"] for item in rdn)
        writer.write(subject["commonName"].encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 10)
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    if not line:
        raise ConnectionError("the server closed the connection: no valid client certificate")
    return line.decode().strip()


# ------------------------------------------------------------------------------- the settings object
@pytest.mark.parametrize("env, message", [
    ({"RISK_SECURITY_PROTOCOL": "TLS"}, "RISK_SECURITY_PROTOCOL='TLS'"),
    ({**SASL, "RISK_SASL_MECHANISM": "GSSAPI"}, "RISK_SASL_MECHANISM='GSSAPI'"),
    ({**SASL, "RISK_SASL_PASSWORD": ""}, "needs RISK_SASL_USERNAME and RISK_SASL_PASSWORD"),
    ({"RISK_SASL_USERNAME": "risk"}, "RISK_SASL_USERNAME set, but RISK_SECURITY_PROTOCOL=PLAINTEXT uses no SASL"),
    ({"RISK_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RISK_SASL_USERNAME": "u", "RISK_SASL_PASSWORD": "p",
      "RISK_SSL_CAFILE": "/ca.pem"}, "RISK_SSL_CAFILE set, but RISK_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS"),
    ({"RISK_SECURITY_PROTOCOL": "SSL", "RISK_SSL_KEYFILE": "/k.pem"}, "need RISK_SSL_CERTFILE"),
], ids=["protocol", "mechanism", "no-password", "sasl-unused", "tls-unused", "key-without-cert"])
def test_settings_that_cannot_work_are_refused_with_the_reason(env, message):
    with pytest.raises(SecurityError, match=message.replace("(", r"\(")):
        KafkaSecurity.from_env(env)


def test_unreadable_tls_files_are_refused_before_any_connection(tmp_path, pki):
    missing = KafkaSecurity.from_env({"RISK_SECURITY_PROTOCOL": "SSL", "RISK_SSL_CAFILE": str(tmp_path / "nope.pem")})
    with pytest.raises(SecurityError, match="TLS settings"):
        missing.check()
    wrong_password = KafkaSecurity.from_env({"RISK_SECURITY_PROTOCOL": "SSL", "RISK_SSL_CERTFILE": str(pki["client.pem"]),
                                             "RISK_SSL_KEYFILE": str(pki["client.key"]),
                                             "RISK_SSL_KEY_PASSWORD": "not-it"})
    with pytest.raises(SecurityError, match="TLS settings"):
        wrong_password.check()


def test_secrets_stay_out_of_reprs(secure_env):
    settings = resolve(environ={**secure_env, "RISK_WEB_TOKEN": TOKEN})
    for text in (repr(settings), repr(settings.security)):
        assert "pw-risk" not in text and "key-pw" not in text and TOKEN not in text


def test_client_kwargs_per_protocol(pki):
    assert KafkaSecurity().client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert KafkaSecurity().faust_credentials() is None
    sasl_plain = KafkaSecurity.from_env({"RISK_SECURITY_PROTOCOL": "sasl_plaintext", "RISK_SASL_USERNAME": "u",
                                         "RISK_SASL_PASSWORD": "p"})
    assert sasl_plain.client_kwargs() == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                          "sasl_plain_username": "u", "sasl_plain_password": "p"}
    tls = KafkaSecurity.from_env({"RISK_SECURITY_PROTOCOL": "SSL", "RISK_SSL_CAFILE": str(pki["ca.pem"])})
    assert tls.client_kwargs() == {"security_protocol": "SSL", "ssl_context": tls.ssl_context}
    assert isinstance(tls.faust_credentials(), faust.SSLCredentials)


def test_mutual_tls_presents_the_client_certificate(secure_env, pki):
    security = KafkaSecurity.from_env(secure_env).check()
    assert asyncio.run(peer_of(security.ssl_context, pki)) == "risk-client"
    # and the check can fail: without the certificate the server refuses the handshake
    one_way = KafkaSecurity.from_env({**SASL, "RISK_SSL_CAFILE": str(pki["ca.pem"])})
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError)):
        asyncio.run(peer_of(one_way.ssl_context, pki))


# ------------------------------------------------------------------------- every client, one source
class Stop(Exception):
    """Raised by a recorded client's start(): the test only looks at how it was built."""


@pytest.fixture
def recorded(monkeypatch):
    """Replace aiokafka's client classes by subclasses that build the real client, record it and
    refuse to start; yields the list of (class name, aiokafka client core)."""
    built: list[tuple[str, object, object]] = []

    def recording(cls: type, core: str) -> type:
        class Recording(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                built.append((cls.__name__, getattr(self, core), self))

            async def start(self):
                raise Stop(cls.__name__)

        return Recording

    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", recording(aiokafka.AIOKafkaConsumer, "_client"))
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", recording(aiokafka.AIOKafkaProducer, "client"))
    monkeypatch.setattr(aiokafka.admin, "AIOKafkaAdminClient", recording(aiokafka.admin.AIOKafkaAdminClient, "_client"))
    yield built

    async def close_all() -> None:
        for name, _, client in built:
            await (client.close() if name == "AIOKafkaAdminClient" else client.stop())

    asyncio.run(close_all())


async def raises_stop(coro) -> None:
    with pytest.raises(Stop):
        await coro


def assert_secure(core, pki) -> None:
    """What an aiokafka client core received: SASL_SSL, SCRAM, the credentials, and a TLS context
    that trusts the test CA and presents the client certificate."""
    assert (core._security_protocol, core._sasl_mechanism, core._sasl_plain_username, core._sasl_plain_password) == (
        "SASL_SSL", "SCRAM-SHA-512", "risk", "pw-risk")
    assert isinstance(core._ssl_context, ssl.SSLContext)
    assert {c["subject"] for c in core._ssl_context.get_ca_certs()} == {((("commonName", "risk-test-ca"),),)}


def test_every_client_the_product_creates_gets_the_security_settings(recorded, secure_env, pki, monkeypatch, tmp_path):
    from faust.tables import recovery

    from worker import cli
    from worker.app import create_app
    from worker.demo import Board, watch
    from worker.harness import WorkerGroup, feed_lockstep, produce, read_topics
    from worker.simulator import Market

    for name, value in secure_env.items():  # the RISK_* environment, as a container would have it
        monkeypatch.setenv(name, value)
    settings = resolve(environ={**secure_env, "RISK_DATA_DIR": str(tmp_path)})
    explicit = KafkaSecurity.from_env(secure_env)
    where: dict[str, object] = {}

    async def build_all() -> None:
        app, runtime = create_app(settings)
        # the worker's Faust app: its group consumer (positions agent, fund agent, table recovery,
        # topic creation) and its producer, built as Faust builds them
        faust_consumer = app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
        faust_producer = app.producer._new_producer()
        where["faust consumer"], where["faust producer"] = faust_consumer._client, faust_producer.client
        await raises_stop(runtime.run_mark_consumer())  # the mark reader
        where["mark reader"] = recorded[-1][1]
        # the recovery helper create_app installs into Faust (true changelog ends)
        await raises_stop(recovery.Recovery._build_highwaters(None, None, [TopicPartition("c", 0)], {}, "t"))
        where["recovery highwaters"] = recorded[-1][1]
        market = Market("kafka.example:9093")  # the simulator: from the RISK_* environment
        await raises_stop(market.start())
        where["simulator producer"] = recorded[-1][1]
        await raises_stop(market.acknowledge(asyncio.Event()))
        where["simulator consumer"] = recorded[-1][1]
        await raises_stop(produce("kafka.example:9093", []))  # the harness (tests, benchmarks, tools)
        where["harness produce"] = recorded[-1][1]
        await raises_stop(read_topics("kafka.example:9093", ["liquidations"], until=lambda found: True))
        where["harness read_topics"] = recorded[-1][1]
        await raises_stop(feed_lockstep("kafka.example:9093", [], [8080]))
        where["harness feed_lockstep"] = recorded[-1][1]
        await raises_stop(watch("kafka.example:9093", Board(), asyncio.Event(), explicit))  # the demo's view
        where["demo watch"] = recorded[-1][1]
        for core in where.values():
            assert_secure(core, pki)
            assert await peer_of(core._ssl_context, pki) == "risk-client"  # type: ignore[attr-defined]
        await faust_consumer.stop()
        await faust_producer.stop()

    asyncio.run(build_all())
    # `python -m worker topics` (the compose topics job), with flags this time
    flags = ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "risk",
             "--sasl-password", "pw-risk", "--ssl-cafile", str(pki["ca.pem"]), "--ssl-certfile", str(pki["client.pem"]),
             "--ssl-keyfile", str(pki["client.key"]), "--ssl-key-password", "key-pw"]
    for name in secure_env:
        monkeypatch.delenv(name)
    with pytest.raises(Stop):
        cli.main(["topics", "--bootstrap", "kafka.example:9093", *flags])
    assert recorded[-1][0] == "AIOKafkaAdminClient"
    assert_secure(recorded[-1][1], pki)
    assert asyncio.run(peer_of(recorded[-1][1]._ssl_context, pki)) == "risk-client"
    # worker processes started by the harness or the demo get the settings as RISK_* variables
    group = WorkerGroup("kafka.example:9093", EXAMPLES / "params.toml", app_id="x", log_dir=tmp_path, security=explicit)
    assert {k: v for k, v in group.extra_env.items() if k in secure_env} == secure_env
    assert sorted(where) == sorted(["faust consumer", "faust producer", "mark reader", "recovery highwaters",
                                    "simulator producer", "simulator consumer", "harness produce",
                                    "harness read_topics", "harness feed_lockstep", "demo watch"])


def test_a_plaintext_client_gets_no_credentials(recorded):
    from worker.harness import produce

    asyncio.run(raises_stop(produce("kafka.example:9093", [], security=KafkaSecurity())))
    core = recorded[-1][1]
    assert (core._security_protocol, core._ssl_context, core._sasl_plain_username) == ("PLAINTEXT", None, None)


KAFKA_CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}


def client_constructions(path: Path, root: Path = ROOT) -> list[str]:
    """Where a file calls an aiokafka client class: ["path:line Class", ...]."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in KAFKA_CLIENTS:
                found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def test_no_module_builds_an_aiokafka_client_but_the_security_module():
    files = [f for package in ("worker", "metrics", "topics") for f in sorted((ROOT / package).rglob("*.py"))]
    built = [site for f in files for site in client_constructions(f)]
    assert built and all(site.startswith("worker/kafka_security.py:") for site in built), built


def test_the_construction_check_would_catch_a_direct_client(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import aiokafka\nfrom aiokafka import AIOKafkaProducer\n"
                      "a = AIOKafkaProducer(bootstrap_servers='x')\nb = aiokafka.AIOKafkaConsumer('t')\n")
    assert client_constructions(sample, tmp_path) == ["x.py:3 AIOKafkaProducer", "x.py:4 AIOKafkaConsumer"]


# ------------------------------------------------------------------------------------ the endpoints
def worker_app(tmp_path, **env: str):
    from worker.app import create_app

    settings = resolve(environ={"RISK_PARAMS": str(EXAMPLES / "params.toml"), "RISK_DATA_DIR": str(tmp_path), **env})
    app, runtime = create_app(settings)
    app.web.init_server()  # what the worker's web service does when it starts
    return app, runtime


async def get_all(app, requests: list[tuple[str, dict[str, str]]]) -> list[tuple[int, str]]:
    """Real HTTP requests to the worker's aiohttp application on a loopback port."""
    async with TestClient(TestServer(app.web.web_app)) as client:
        answers = []
        for path, headers in requests:
            response = await client.get(path, headers=headers)
            answers.append((response.status, await response.text()))
        return answers


def test_only_the_products_endpoints_are_served(tmp_path):
    app, runtime = worker_app(tmp_path)
    answers = asyncio.run(get_all(app, [(path, {}) for path in ["/live", "/ready", "/stats", "/metrics", *FAUST_VIEWS]]))
    status = dict(zip(["/live", "/ready", "/stats", "/metrics", *FAUST_VIEWS], answers))
    assert status["/live"] == (200, '{"live":true}')
    assert status["/ready"][0] == 503  # nothing caught up yet
    assert status["/stats"][0] == 200 and orjson.loads(status["/stats"][1])["ready"] is False
    assert status["/metrics"][0] == 200 and "risk_events_consumed_total" in status["/metrics"][1]
    assert {path: code for path, (code, _) in status.items() if path in FAUST_VIEWS} == {p: 404 for p in FAUST_VIEWS}


def test_faust_would_serve_its_views_without_the_pinned_settings(tmp_path):
    """The 404s above are the product's doing: a default Faust app answers these paths."""
    app = faust.App("plain", env={}, datadir=str(tmp_path))
    app.web.init_server()
    answers = asyncio.run(get_all(app, [("/", {}), ("/table/", {}), ("/router/", {})]))
    assert [code for code, _ in answers] == [200, 200, 200]


def test_the_bearer_token_guards_every_endpoint_but_live(tmp_path):
    app, runtime = worker_app(tmp_path, RISK_WEB_TOKEN=TOKEN)
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = [{}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
           {"Authorization": TOKEN}, {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}]
    paths = ["/ready", "/stats", "/metrics", "/table/", "/router/", "/nowhere"]
    refused = [(p, h) for p in paths for h in bad]
    allowed = [("/live", {}), ("/live", bad[1]), ("/stats", good), ("/metrics", good), ("/ready", good),
               ("/ready", {"Authorization": f"bearer  {TOKEN}"}), ("/table/", good), ("/router/", good)]
    answers = asyncio.run(get_all(app, refused + allowed))
    assert {code for code, _ in answers[:len(refused)]} == {401}
    assert [code for code, _ in answers[len(refused):]] == [200, 200, 200, 200, 503, 503, 404, 404]


@pytest.mark.parametrize("token", ["short", "has space in it 0123456789", "ünïcode-0123456789abc"])
def test_a_weak_or_malformed_token_is_refused_at_start(tmp_path, token):
    with pytest.raises(SettingsError, match="at least 16 characters"):
        worker_app(tmp_path, RISK_WEB_TOKEN=token)


def test_the_token_can_come_from_a_file(tmp_path):
    from worker.cli import main

    path = tmp_path / "secrets" / "web-token"
    assert main(["web-token", str(path)]) == 0
    token = path.read_text().strip()
    assert main(["web-token", str(path)]) == 0 and path.read_text().strip() == token  # kept across restarts
    assert path.stat().st_mode & 0o777 == 0o644
    app, _ = worker_app(tmp_path, RISK_WEB_TOKEN_FILE=str(path))
    answers = asyncio.run(get_all(app, [("/stats", {}), ("/stats", {"Authorization": f"Bearer {token}"})]))
    assert [code for code, _ in answers] == [401, 200]
    with pytest.raises(SettingsError, match="not both"):
        worker_app(tmp_path, RISK_WEB_TOKEN_FILE=str(path), RISK_WEB_TOKEN=TOKEN)
    with pytest.raises(SettingsError, match="cannot read"):
        worker_app(tmp_path, RISK_WEB_TOKEN_FILE=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty"):
        worker_app(tmp_path, RISK_WEB_TOKEN_FILE=str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------- /ready, wedged
class MarkLog:
    """Stands in for the mark reader's aiokafka consumer: one partition, records appended by the test."""

    def __init__(self) -> None:
        self.records: list[types.SimpleNamespace] = []
        self.position = 0

    def append(self, value: bytes) -> None:
        self.records.append(types.SimpleNamespace(partition=0, offset=len(self.records), key=b"BTC-PERP", value=value))

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def topics(self) -> set[str]:
        return {"mark-prices"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, tps) -> None: ...
    async def seek_to_beginning(self, *tps) -> None: ...

    def highwater(self, tp) -> int:
        return len(self.records)

    async def getmany(self, timeout_ms: int, max_records: int):
        if self.position == len(self.records):
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch, self.position = self.records[self.position:], len(self.records)
        return {TopicPartition("mark-prices", 0): batch}


async def until(predicate, what: str) -> None:
    """Wait for a state (checked every 10 ms); the deadline only keeps a broken build from hanging."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


def test_a_wedged_mark_reader_turns_ready_false(monkeypatch):
    import worker.app as app_module
    from worker.core.params import load_params

    marks = MarkLog()
    monkeypatch.setattr(app_module, "new_consumer", lambda *args, **kwargs: marks)
    producer = FakeProducer()
    settings = resolve(environ={"RISK_READY_STALL_S": "5"})
    runtime = app_module.Runtime(settings, load_params(EXAMPLES / "params.toml"),
                                 types.SimpleNamespace(producer=producer))

    async def scenario() -> None:
        runtime.ensure_mark_consumer()
        await until(lambda: runtime.mark_progress_at is not None, "a first poll")
        first = runtime.mark_progress_at
        await until(lambda: runtime.mark_progress_at > first, "a second poll")  # a live reader keeps polling
        runtime.assigned, runtime.owned = True, {0}  # as after recovery; positions/0 publishes bad marks
        assert runtime.readiness(now=runtime.mark_progress_at)["ready"] is True
        # the broker goes away while a bad tick needs its dead letter published: the reader retries forever
        producer.failing = True
        marks.append(orjson.dumps(mark("BTC-PERP", "-1.0", 1, 1)))
        await until(lambda: runtime.counters["publish_retries"] >= 2, "publish retries")
        stalled = runtime.mark_progress_at
        await until(lambda: runtime.counters["publish_retries"] >= 3, "more publish retries")
        assert runtime.mark_progress_at == stalled  # no poll completes while the publish is retried
        state = runtime.readiness(now=stalled + 5.001)
        assert state["ready"] is False and state["mark_reader_progressing"] is False
        assert state["marks_caught_up"] and state["partitions_assigned"]  # what /stats called ready
        assert runtime.readiness(now=stalled + 4.999)["ready"] is True  # the stall, nothing else, turned it
        # the broker comes back: the dead letter goes out and the reader polls again
        producer.failing = False
        await until(lambda: runtime.mark_progress_at > stalled, "a poll after the outage")
        assert runtime.readiness(now=runtime.mark_progress_at)["ready"] is True
        assert [topic for topic, _, _ in producer.sent] == ["dead-letters"]
        runtime._mark_task.cancel()

    asyncio.run(scenario())


# -------------------------------------------------------------------------- Faust's environment
STRAY = {"WEB_BIND": "0.0.0.0", "WEB_PORT": "1", "WEB_HOST": "evil.example", "BROKER_URL": "kafka://evil.example:9092",
         "PROCESSING_GUARANTEE": "exactly_once", "APP_WEB_TABLES_ENABLED": "true", "APP_WEB_ROUTER_ENABLED": "true",
         "APP_WEB_STATS_ENABLED": "true", "TABLE_STANDBY_REPLICAS": "3", "BROKER_SESSION_TIMEOUT": "1",
         "APP_DEBUG": "true", "PRODUCER_ACKS": "0"}


def test_unprefixed_environment_variables_do_not_change_the_apps_settings(tmp_path, monkeypatch):
    from faust.types.enums import ProcessingGuarantee

    from worker.web import faust_setting_variables

    for name, value in STRAY.items():
        monkeypatch.setenv(name, value)
    # the test can fail: a Faust app given these settings explicitly takes the environment's instead
    plain = faust.App("plain", broker="kafka://127.0.0.1:9092", web_bind="127.0.0.1",
                      processing_guarantee="at_least_once", datadir=str(tmp_path))
    assert (plain.conf.web_bind, plain.conf.processing_guarantee) == ("0.0.0.0", ProcessingGuarantee.EXACTLY_ONCE)
    app, _ = worker_app(tmp_path, RISK_WEB_PORT="7001", RISK_BOOTSTRAP="10.0.0.1:9092")
    conf = app.conf
    assert (conf.web_bind, conf.web_port, conf.web_host) == ("127.0.0.1", 7001, "127.0.0.1")
    assert [str(url) for url in conf.broker] == ["kafka://10.0.0.1:9092"]
    assert conf.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE
    assert (conf.web_tables_enabled, conf.web_router_enabled, conf.web_stats_enabled, conf.debug) == (
        False, False, False, False)
    # the worker's own settings (worker/settings.py defaults: 2 standbys, a 2 s session), not the stray 3 and 1 s
    assert (conf.table_standby_replicas, conf.broker_session_timeout, conf.producer_acks) == (2, 2.0, -1)
    assert set(faust_setting_variables(STRAY)) == set(STRAY)  # each is a variable Faust reads: the worker warns


@pytest.mark.parametrize("name", ["F_LOOP", "FAUST_LOOP", "F_DEBUG", "F_WEB_PORT", "FAUST_F_WEB_BIND"])
def test_faust_import_time_variables_refuse_the_start(monkeypatch, name):
    from worker.app import main_worker

    monkeypatch.setenv(name, "1")
    monkeypatch.setenv("RISK_PARAMS", str(EXAMPLES / "params.toml"))
    with pytest.raises(SystemExit, match=f"error: {name} set: Faust reads these at import"):
        main_worker(["worker"])


# ------------------------------------------------------------------------- reading listening sockets
@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_listening_addresses_reads_what_a_process_binds(bind):
    """The reader the broker tier uses on a worker, checked on a socket of this process."""
    import os
    import socket

    from tests.netstat import listening_addresses

    with socket.socket() as sock:
        sock.bind((bind, 0))
        port = sock.getsockname()[1]
        assert listening_addresses(os.getpid(), port) == set()  # bound, not listening yet
        sock.listen()
        assert listening_addresses(os.getpid(), port) == {bind}


def test_health_command_fails_when_nothing_answers(monkeypatch, capsys):
    from worker.broker import free_port
    from worker.cli import main

    monkeypatch.setenv("RISK_WEB_PORT", str(free_port()))
    assert main(["health", "live"]) == 1
    assert capsys.readouterr().out.startswith("live: HTTP no answer")


def test_a_bad_faust_loop_variable_is_refused_before_faust_is_imported():
    """Faust picks its event loop from F_LOOP when imported (a bad one is a traceback there): the
    command refuses first, with the reason."""
    import os
    import sys

    env = {**os.environ, "F_LOOP": "no-such-loop", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "worker", "worker"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: F_LOOP set: Faust reads these at import and they would change the worker "
                                   "behind its settings; unset them (the worker's settings are RISK_*)")
