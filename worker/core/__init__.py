"""The pure risk core: no faust, aiokafka, orjson or prometheus_client imports here.

The core's modules are plain typed Python, compiled with mypyc at install when a C compiler is
there (setup.py). This package file is never compiled: it decides, before any core module is
imported, whether the compiled modules or the ``.py`` sources run:

- ``RISK_PURE_CORE=1`` in the environment: the sources;
- compiled modules built from other sources than the ones here now (a ``.py`` edited since the
  build, or no build record): the sources, and a warning on stderr, once;
- otherwise the compiled modules, when the build produced them.

``COMPILED`` says which ran, ``PURE_REASON`` why the sources did (None when compiled).
Compiled and pure are never mixed: compiled modules call each other natively.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
MODULES = ("engine", "fixed", "fund", "inputs", "liquidation", "margin", "outputs", "params", "sharing")
PURE_ENV = "RISK_PURE_CORE"


def sources_sha256(paths: Sequence[Path]) -> str:
    """sha256 over (file name, NUL, contents, NUL) of each source in name order (as setup.py)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compiled_files() -> dict[str, Path]:
    """Module name → its extension module file next to the sources, where one exists."""
    found = {}
    for name in MODULES:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = HERE / f"{name}{suffix}"
            if path.is_file():
                found[name] = path
                break
    return found


def built_sha256() -> str | None:
    """The sources' sha256 recorded by the compiling build (``_build_info.py``), None without one."""
    try:
        from ._build_info import SOURCES_SHA256  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return SOURCES_SHA256 if isinstance(SOURCES_SHA256, str) else None


def _decide() -> tuple[bool, str | None, bool]:
    """(compiled, why pure, whether that reason deserves a warning)."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return False, f"{PURE_ENV} is set", False
    found = compiled_files()
    if not found:
        return False, "no compiled modules (installed pure: RISK_PURE_BUILD, no C compiler or a failed compile)", False
    if len(found) < len(MODULES):
        missing = sorted(set(MODULES) - set(found))
        return False, f"compiled modules incomplete (missing {', '.join(missing)}): rebuild", True
    recorded = built_sha256()
    if recorded is None:
        return False, "compiled modules without a build record (_build_info.py): rebuild", True
    if recorded != sources_sha256([HERE / f"{name}.py" for name in MODULES]):
        return False, "compiled modules are stale (a core .py changed since the build): rebuild", True
    return True, None, False


class _SourceFinder:
    """Serves ``worker.core.<module>`` from its ``.py`` file (ahead of the extension module that
    the default path finder would pick)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / f"{name}.py")


COMPILED, PURE_REASON, _warn = _decide()
if not COMPILED:
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
    if _warn:
        print(f"worker.core: running the pure-Python core: {PURE_REASON}", file=sys.stderr)
