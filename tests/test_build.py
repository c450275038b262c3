"""Which core ran: compiled (mypyc, setup.py) or the .py sources (RISK_PURE_CORE=1, stale build).

CI runs the suite with the compiled core and the core's tests again with RISK_PURE_CORE=1; the
first test here proves, in each pass, that the core that ran is the one that pass meant.
"""
import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import types

import pytest

import worker.core
from tests.fixtures import ROOT

# one function defined in each compiled module: a Python function when pure, a builtin when compiled
PROBES = {
    "engine": "liquidation_id", "fixed": "floor_div", "fund": "settle", "inputs": "decode_mark",
    "liquidation": "plan_liquidation", "margin": "margin_state", "outputs": "trigger_dict",
    "params": "parse_params", "sharing": "pro_rata_floor",
}
PURE_REQUESTED = os.environ.get("RISK_PURE_CORE", "") not in ("", "0")
REPORT = """
import worker.core, importlib
kinds = set()
for name, probe in {probes!r}.items():
    module = importlib.import_module("worker.core." + name)
    kinds.add(type(getattr(module, probe)).__name__)
print(worker.core.COMPILED, sorted(kinds))
"""


def kinds_of_probes() -> dict[str, type]:
    return {name: type(getattr(importlib.import_module(f"worker.core.{name}"), probe)) for name, probe in PROBES.items()}


def test_the_probes_cover_every_compiled_module():
    assert set(PROBES) == set(worker.core.MODULES)
    sources = {p.stem for p in (ROOT / "worker" / "core").glob("*.py")} - {"__init__", "_build_info"}
    assert sources == set(worker.core.MODULES)


def test_the_core_that_runs_is_the_one_this_pass_asked_for():
    kinds = kinds_of_probes()
    if PURE_REQUESTED:
        assert worker.core.COMPILED is False
        assert set(kinds.values()) == {types.FunctionType}, kinds
        origins = {name: importlib.import_module(f"worker.core.{name}").__spec__.origin for name in PROBES}
        assert all(origin.endswith(f"{name}.py") for name, origin in origins.items()), origins
        return
    if not worker.core.COMPILED:
        pytest.skip(f"the install built no usable compiled core: {worker.core.PURE_REASON}")
    assert set(kinds.values()) == {types.BuiltinFunctionType}, kinds
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    origins = {name: importlib.import_module(f"worker.core.{name}").__spec__.origin for name in PROBES}
    assert all(origin.endswith(suffixes) for origin in origins.values()), origins


def run_report(cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k != "RISK_PURE_CORE"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", REPORT.format(probes=PROBES)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_risk_pure_core_runs_the_sources_whatever_was_built():
    run = run_report(ROOT, RISK_PURE_CORE="1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "False ['function']"
    assert run.stderr == ""  # asked for: no warning


@pytest.fixture
def core_copy(tmp_path):
    """The worker package's __init__ and the core as built (sources, extension modules, build record)."""
    if not worker.core.compiled_files():
        pytest.skip(f"the install built no compiled core: {worker.core.PURE_REASON}")
    (tmp_path / "worker").mkdir()
    shutil.copy(ROOT / "worker" / "__init__.py", tmp_path / "worker")
    shutil.copytree(ROOT / "worker" / "core", tmp_path / "worker" / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_build_that_matches_its_sources_runs_compiled(core_copy):
    if worker.core.PURE_REASON and "stale" in worker.core.PURE_REASON:
        pytest.skip(f"this checkout's build is stale: {worker.core.PURE_REASON}")
    run = run_report(core_copy)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == "True ['builtin_function_or_method']"
    assert run.stderr == ""


def test_an_edited_source_makes_the_build_stale_the_sources_run_and_it_is_said_once(core_copy):
    margin = core_copy / "worker" / "core" / "margin.py"
    margin.write_text(margin.read_text() + "\n# edited after the build\n")
    run = run_report(core_copy)
    assert run.returncode == 0, run.stderr
    # pure everywhere: compiled and pure modules are never mixed
    assert run.stdout.split("\n")[0] == "False ['function']"
    assert run.stderr.count("compiled modules are stale") == 1, run.stderr


def test_compiled_modules_without_a_build_record_are_not_used(core_copy):
    (core_copy / "worker" / "core" / "_build_info.py").unlink(missing_ok=True)
    run = run_report(core_copy)
    assert run.stdout.split("\n")[0] == "False ['function']"
    assert "without a build record" in run.stderr
