"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The Compose file is validated against the Compose Specification JSON Schema vendored in
tests/data/compose-spec.json: taken from the PyPI wheel check-jsonschema 0.39.0
(check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256 d549057e…0e64, draft 2020-12,
Apache-2.0: tests/data/LICENSE.compose-spec). Then its wiring is checked against worker/settings.py,
metrics/prometheus.yml and the Grafana provisioning, and (real-broker tier) the topics, worker and
simulator commands of the file are run as written against the embedded broker.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures import ROOT
from tests.promql import metric_contract
from topics.catalog import all_topics
from worker.settings import SETTINGS
from worker.simulator import CONNECTION_SETTINGS, SIM_SETTINGS, SimSettings

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
SETTING_ENVS = {setting.env for setting in SETTINGS}
SIMULATOR_ENVS = {setting.env for setting in (*CONNECTION_SETTINGS, *SIM_SETTINGS)}  # `python -m worker simulate`
WORKERS = ("worker-1", "worker-2")
IMAGE_SERVICES = ("topics", "web-token", "worker-1", "worker-2", "simulator")  # services running this project's image
APP_DIR = "/app"  # WORKDIR of the Dockerfile


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (services()[service].get("environment") or {}).items()}


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def command(service: str) -> list[str]:
    cmd = services()[service]["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def prometheus_targets() -> list[str]:
    config = yaml.safe_load((ROOT / "metrics" / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "risk-worker"]
    return [target for static in job["static_configs"] for target in static["targets"]]


def mounts(service: str) -> dict[str, str]:
    """container path → repository path of a service's bind mounts (or the name of a named volume)."""
    found = {}
    for volume in services()[service].get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


# ------------------------------------------------------------------------------------- the schema
def test_vendored_schema_is_the_recorded_one():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"


def test_compose_file_validates_against_the_compose_specification():
    errors = sorted(validator().iter_errors(compose()), key=lambda e: list(e.path))
    assert [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors] == []


@pytest.mark.parametrize("mutate", [
    lambda doc: doc["services"]["kafka"].update(imagee="apache/kafka:3.9.0"),
    lambda doc: doc["services"]["topics"]["depends_on"]["kafka"].update(condition="service_ready"),
    lambda doc: doc["services"]["worker-1"].update(ports="6066:6066"),
    lambda doc: doc.update(servics={}),
    lambda doc: doc["services"]["worker-1"]["environment"].update(RISK_PARTITIONS=["8"]),
], ids=["unknown-service-key", "unknown-depends-on-condition", "ports-not-a-list", "unknown-top-level-key",
        "env-value-a-list"])
def test_schema_refuses_a_broken_compose_file(mutate):
    doc = copy.deepcopy(compose())
    mutate(doc)
    assert list(validator().iter_errors(doc)), "the schema accepted a broken file"


# ------------------------------------------------------------------------------------- the wiring
@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_risk_env_vars_are_known_settings(service):
    used = {name for name in env(service) if name.startswith("RISK_")}
    assert used - (SIMULATOR_ENVS if service == "simulator" else SETTING_ENVS) == set()


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_project_services_build_the_repository_image(service):
    spec = services()[service]
    assert spec["build"] == "." and spec["image"] == services()["worker-1"]["image"]


def test_workers_have_distinct_web_ports_matching_the_prometheus_targets():
    ports = {worker: env(worker)["RISK_WEB_PORT"] for worker in WORKERS}
    assert len(set(ports.values())) == len(WORKERS)
    assert sorted(f"{worker}:{port}" for worker, port in ports.items()) == sorted(prometheus_targets())
    assert ports == {"worker-1": "6066", "worker-2": "6067"}


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_runs_the_worker_command_bound_beyond_loopback(worker):
    assert command(worker) == ["python", "-m", "worker", "worker"]
    assert env(worker)["RISK_WEB_BIND"] == "0.0.0.0"  # Prometheus scrapes it from another container
    assert env(worker)["RISK_WEB_HOST"] == worker  # the name it is reached by (advertised, not bound)
    port = env(worker)["RISK_WEB_PORT"]
    assert services()[worker]["ports"] == [f"127.0.0.1:{port}:{port}"]  # published on the host's loopback only


def test_workers_form_one_consumer_group_on_the_same_settings():
    first, second = (env(worker) for worker in WORKERS)
    assert first.pop("RISK_WEB_PORT") != second.pop("RISK_WEB_PORT")
    assert first.pop("RISK_WEB_HOST") != second.pop("RISK_WEB_HOST")
    assert first == second
    assert first["RISK_APP_ID"]


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_healthcheck_probes_ready(worker):
    check = services()[worker]["healthcheck"]
    assert check["test"] == ["CMD", "python", "-m", "worker", "health", "ready"]
    assert set(check) >= {"interval", "timeout", "retries", "start_period"}


def test_workers_and_prometheus_share_the_token_the_web_token_job_writes():
    """web-token writes the token file into the volume; the workers require it (RISK_WEB_TOKEN_FILE) and
    Prometheus sends it (credentials_file, relative to its config file in /etc/prometheus)."""
    argv = command("web-token")
    assert argv[:4] == ["python", "-m", "worker", "web-token"]
    written = Path(argv[4])
    [volume] = [source for target, source in mounts("web-token").items() if target == str(written.parent)]
    assert volume in compose()["volumes"]
    for worker in WORKERS:
        token_file = Path(env(worker)["RISK_WEB_TOKEN_FILE"])
        assert mounts(worker)[str(token_file.parent)] == volume and token_file.name == written.name
        assert f"{volume}:{token_file.parent}:ro" in services()[worker]["volumes"]
        assert services()[worker]["depends_on"]["web-token"]["condition"] == "service_completed_successfully"
    config = yaml.safe_load((ROOT / "metrics" / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "risk-worker"]
    assert job["authorization"]["type"] == "Bearer"
    credentials = Path("/etc/prometheus") / job["authorization"]["credentials_file"]
    assert mounts("prometheus")[str(credentials.parent)] == volume and credentials.name == written.name


@pytest.mark.parametrize("service", ("worker-1", "worker-2", "simulator"))
def test_partition_count_matches_the_topics_command(service):
    topics = command("topics")
    assert topics[:4] == ["python", "-m", "worker", "topics"]
    assert env(service)["RISK_PARTITIONS"] == option(topics, "--partitions") == "8"


@pytest.mark.parametrize("service", ("topics", "worker-1", "worker-2", "simulator"))
def test_bootstrap_is_the_kafka_plaintext_listener(service):
    advertised = env("kafka")["KAFKA_ADVERTISED_LISTENERS"].split(",")
    bootstrap = option(command(service), "--bootstrap") if service == "topics" else env(service)["RISK_BOOTSTRAP"]
    assert f"PLAINTEXT://{bootstrap}" in advertised


def test_params_path_is_inside_the_image():
    path = env("worker-1")["RISK_PARAMS"]
    assert path.startswith(APP_DIR + "/")
    assert (ROOT / Path(path).relative_to(APP_DIR)).is_file()
    assert "COPY examples ./examples" in DOCKERFILE.read_text()


def test_kafka_is_the_official_image_in_kraft_mode():
    kafka = services()["kafka"]
    settings = env("kafka")
    assert re.fullmatch(r"apache/kafka:3\.\d+\.\d+", kafka["image"])
    assert set(settings["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert settings["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{settings['KAFKA_NODE_ID']}@kafka:9093"
    controller = settings["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert f"{controller}://:9093" in settings["KAFKA_LISTENERS"].split(",")
    protocols = dict(pair.split(":") for pair in settings["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {listener.split("://")[0] for listener in settings["KAFKA_LISTENERS"].split(",")}
    assert listeners <= set(protocols)
    assert settings["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"  # one broker
    assert not any(name.startswith("KAFKA_ZOOKEEPER") for name in settings)
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


WORKER_NEEDS = {"kafka": "service_healthy", "topics": "service_completed_successfully",
                "web-token": "service_completed_successfully"}


@pytest.mark.parametrize("service, needs", [
    ("topics", {"kafka": "service_healthy"}),
    ("worker-1", WORKER_NEEDS),
    ("worker-2", WORKER_NEEDS),
], ids=["topics-after-kafka", "worker-1-after-topics", "worker-2-after-topics"])
def test_start_order(service, needs):
    depends = services()[service]["depends_on"]
    assert {name: spec["condition"] for name, spec in depends.items()} == needs


def test_prometheus_mounts_its_config_beside_the_rules():
    found = mounts("prometheus")
    assert found["/etc/prometheus/prometheus.yml"] == "./metrics/prometheus.yml"
    rule_files = yaml.safe_load((ROOT / "metrics" / "prometheus.yml").read_text())["rule_files"]
    for rule_file in rule_files:  # resolved relative to the config file's directory
        assert found[f"/etc/prometheus/{rule_file}"] == f"./metrics/{rule_file}"
    assert services()["prometheus"]["image"].startswith("prom/prometheus")


def test_grafana_mounts_the_provisioning_and_the_dashboard_where_the_provider_looks():
    found = mounts("grafana")
    provider = yaml.safe_load((ROOT / "metrics/grafana/provisioning/dashboards/dashboards.yml").read_text())
    [dashboard_dir] = [p["options"]["path"] for p in provider["providers"]]
    [dashboard_target] = [t for t, s in found.items() if s == "./metrics/grafana/dashboard.json"]
    assert str(Path(dashboard_target).parent) == dashboard_dir
    assert found["/etc/grafana/provisioning/datasources"] == "./metrics/grafana/provisioning/datasources"
    assert found["/etc/grafana/provisioning/dashboards"] == "./metrics/grafana/provisioning/dashboards"
    assert services()["grafana"]["image"].startswith("grafana/grafana")


def test_grafana_datasource_points_at_the_prometheus_service():
    provisioning = yaml.safe_load((ROOT / "metrics/grafana/provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioning["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in services()["prometheus"]["ports"]


@pytest.mark.parametrize("service", sorted(["prometheus", "grafana"]))
def test_bind_mount_sources_exist(service):
    for source in mounts(service).values():
        if source.startswith("."):  # a bind mount (else a named volume of the file)
            assert (ROOT / source).exists(), source
        else:
            assert source in compose()["volumes"], source


def test_simulator_runs_the_simulate_command_configured_by_its_variables():
    assert command("simulator") == ["python", "-m", "worker", "simulate"]
    sim = SimSettings.resolve(environ=env("simulator"))  # every value converts and is in range
    assert (sim.accounts, sim.crash_at, sim.ticks, sim.duration, sim.record) == (5000, 60.0, 0, 0.0, "")
    assert env("simulator")["RISK_BOOTSTRAP"] == env("worker-1")["RISK_BOOTSTRAP"]


# ------------------------------------------------------------------------------------- Dockerfile
def dockerfile() -> list[tuple[str, str]]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_base_workdir_install_and_command():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", APP_DIR) in instructions
    assert any(kind == "RUN" and "pip install ." in arg for kind, arg in instructions)
    assert json.loads(dict(instructions)["CMD"]) == ["python", "-m", "worker", "worker"]


def test_dockerfile_copies_what_pip_install_needs():
    pyproject = (ROOT / "pyproject.toml").read_text()
    copied = set()
    for kind, arg in dockerfile():
        if kind == "COPY":
            *sources, _ = arg.split()
            copied.update(sources)
    assert {"pyproject.toml", "README.md", "worker", "topics", "metrics", "examples"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), source
    for package in re.findall(r'"(\w+)\*"', pyproject):  # [tool.setuptools.packages.find] include
        assert package in copied


def test_the_image_runs_the_installed_compiled_core_not_the_copied_sources():
    """The install compiles the core (setup.py copied, a C compiler present while it runs), the
    sources copied to /app are gone before the worker starts (the working directory would shadow
    the installed package), and the build stops if the core is not compiled, checked from outside
    /app. (No Docker engine here: docs/build.md says how the same steps were run without one.)"""
    instructions = dockerfile()
    copied = {source for kind, arg in instructions if kind == "COPY" for source in arg.split()[:-1]}
    assert "setup.py" in copied
    [install] = [arg for kind, arg in instructions if kind == "RUN" and "pip install ." in arg]
    steps = [step.strip() for step in install.split("&&")]
    at = {name: next(i for i, step in enumerate(steps) if name in step)
          for name in ("apt-get install", "pip install .", "rm -rf", "cd /", "c.COMPILED")}
    assert "gcc" in steps[at["apt-get install"]]
    assert at["apt-get install"] < at["pip install ."] < at["rm -rf"] < at["cd /"] < at["c.COMPILED"]
    assert {"worker", "topics", "metrics"} <= set(steps[at["rm -rf"]].split())
    assert "sys.exit" in steps[at["c.COMPILED"]]


# ------------------------------------------------------------------- the commands, on a real broker
def free_ports(count: int) -> list[int]:
    from worker.broker import free_port

    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def scrape(port: int, token: str) -> dict[str, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    return samples


@pytest.mark.broker
def test_compose_commands_run_against_a_broker(tmp_path):
    """topics → web-token → two workers (and their healthcheck) → simulator, with the file's commands and
    environment (bootstrap, params path, token path and web ports swapped for the embedded broker, the
    checkout, a temporary directory and free ports)."""
    from worker.broker import EmbeddedBroker
    from worker.harness import WorkerGroup

    params = str(ROOT / Path(env("worker-1")["RISK_PARAMS"]).relative_to(APP_DIR))
    worker_env = env("worker-1")
    partitions = int(worker_env["RISK_PARTITIONS"])
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with EmbeddedBroker(log_dir=str(tmp_path)) as broker:
        topics = [broker.bootstrap if part == "kafka:9092" else part for part in command("topics")]
        done = subprocess.run([sys.executable, *topics[1:]], cwd=ROOT, env=base_env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert {line.split(":")[0] for line in done.stdout.splitlines()} == {t.name for t in all_topics()}

        token_dir = tmp_path / "risk-web"
        in_container = Path(command("web-token")[4]).parent
        token_cmd = [str(token_dir / Path(part).name) if part.startswith(f"{in_container}/") else part
                     for part in command("web-token")]
        done = subprocess.run([sys.executable, *token_cmd[1:]], cwd=ROOT, env=base_env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        token_file = token_dir / Path(worker_env["RISK_WEB_TOKEN_FILE"]).name
        token = token_file.read_text().strip()

        extra = {k: v for k, v in worker_env.items() if k not in ("RISK_BOOTSTRAP", "RISK_PARAMS", "RISK_WEB_PORT")}
        extra["RISK_WEB_TOKEN_FILE"] = str(token_file)
        with WorkerGroup(broker.bootstrap, params, app_id=worker_env["RISK_APP_ID"], partitions=partitions,
                         log_dir=tmp_path, extra_env=extra, token=token) as group:
            group.start(len(WORKERS))
            asyncio.run(group.wait_ready(timeout_s=120))
            # the healthcheck, as compose runs it inside each worker's container (same environment)
            for port in group.ports:
                probe = services()["worker-1"]["healthcheck"]["test"][1:]
                health_env = {**base_env, **extra, "RISK_WEB_PORT": str(port)}
                done = subprocess.run([sys.executable, *probe[1:]], cwd=ROOT, env=health_env, capture_output=True,
                                      text=True, timeout=60)
                assert done.returncode == 0 and done.stdout.startswith("ready: HTTP 200"), done.stdout + done.stderr
                done = subprocess.run([sys.executable, *probe[1:]], cwd=ROOT, capture_output=True, text=True,
                                      env={**health_env, "RISK_WEB_TOKEN_FILE": "", "RISK_WEB_TOKEN": "x" * 16},
                                      timeout=60)
                assert done.returncode == 1 and done.stdout.startswith("ready: HTTP 401"), done.stdout + done.stderr

            sim_env = {**base_env, **env("simulator"), "RISK_BOOTSTRAP": broker.bootstrap,
                       "RISK_SIM_ACCOUNTS": "400", "RISK_SIM_CRASH_AT": "3", "RISK_SIM_DURATION": "15"}
            argv = command("simulator")
            sim = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=sim_env, capture_output=True,
                                 text=True, timeout=120)
            assert sim.returncode == 0, sim.stderr
            assert re.search(r"simulator: 400 accounts, \d+ ticks, [1-9]\d* acknowledgements", sim.stdout), sim.stdout

            scraped = [scrape(port, token) for port in group.ports]
            assert group.alive() == [0, 1]
    contract = metric_contract()
    exposed = {name for samples in scraped for name in samples if name.startswith("risk_")}
    assert {n for n in exposed if not n.endswith("_created")} <= set(contract)
    assert sum(s.get("risk_owned_partitions", 0) for s in scraped) == partitions
    assert sum(s.get("risk_liquidations_total", 0) for s in scraped) > 0


@pytest.mark.parametrize("table", [SETTINGS, SIM_SETTINGS], ids=["worker", "simulator"])
def test_readme_documents_every_setting(table):
    readme = (ROOT / "README.md").read_text()
    missing = [s.env for s in table if f"`{s.env}`" not in readme or f"`--{s.name.replace('_', '-')}`" not in readme]
    assert missing == []
