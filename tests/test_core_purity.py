"""The risk core imports nothing from faust, aiokafka, orjson or prometheus_client."""
import ast
from pathlib import Path

from tests.fixtures import ROOT

BANNED = {"faust", "aiokafka", "orjson", "prometheus_client", "mode"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_import_no_framework():
    files = sorted((ROOT / "worker" / "core").glob("*.py"))
    assert len(files) >= 6
    offenders = {f.name: imported_roots(f) & BANNED for f in files if imported_roots(f) & BANNED}
    assert offenders == {}


def test_the_check_would_catch_a_framework_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import orjson\nfrom faust import App\n")
    assert imported_roots(sample) & BANNED == {"orjson", "faust"}
