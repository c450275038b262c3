"""Build hook: compiles the pure core (``worker/core/*.py`` but ``__init__.py``) with mypyc.

Everything else is in pyproject.toml. The same typed sources stay importable uncompiled: the
package's ``worker/core/__init__.py`` decides at import which ones run (docs/build.md).

- ``RISK_PURE_BUILD=1``: build without compiling (no mypyc run, no C compiler needed).
- A failed compile (no C compiler, no Python headers, a mypyc error) does not fail the install:
  it prints why and the package installs pure.
- A successful compile writes ``worker/core/_build_info.py``: the sha256 of the sources it compiled.
  At import, compiled modules whose sources no longer match are not used (the ``.py`` files are).

Editable installs (``pip install -e .``) build the extensions in place, next to the sources
(setuptools' build_ext ``--inplace``), the mypyc shared library as ``worker/core/native__mypyc*.so``.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CORE = ROOT / "worker" / "core"
GROUP = "worker.core.native"  # the shared library: worker/core/native__mypyc.<abi>.so
BUILD_INFO = "_build_info.py"
NOT_COMPILED = {"__init__.py", BUILD_INFO}


def core_sources() -> list[Path]:
    """The modules compiled: every core module but the package's __init__ (it decides at import)."""
    return sorted(p for p in CORE.glob("*.py") if p.name not in NOT_COMPILED)


def sources_sha256(paths: list[Path]) -> str:
    """sha256 over (file name, NUL, contents, NUL) of each source in name order; the same function
    as worker/core/__init__.py's (kept apart: setup.py must not import the package)."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _say(message: str) -> None:
    # pip shows a build backend's output only with -v or on failure; stderr reaches a `setup.py` run
    print(f"worker.core build: {message}", file=sys.stderr, flush=True)


def _pure_build_requested() -> bool:
    return os.environ.get("RISK_PURE_BUILD", "") not in ("", "0")


class CoreDistribution(Distribution):
    """Always has extension modules, so that build_ext always runs: it produces them itself
    (running mypyc only when something is built, not for metadata) and, building pure, removes
    what a previous build left and records that it built none. (A pure build's wheel is tagged
    for this platform all the same.)"""

    def has_ext_modules(self) -> bool:
        return True


class BuildCore(build_ext):
    """build_ext that mypycifies the core first, and falls back to a pure install on failure."""

    fallback_reason: str | None = None

    def finalize_options(self) -> None:
        if not self.distribution.ext_modules and not _pure_build_requested():
            self.distribution.ext_modules = self._mypycify()
        super().finalize_options()

    def _mypycify(self) -> list:
        sources = [str(p.relative_to(ROOT)) for p in core_sources()]
        try:
            from mypyc.build import mypycify
        except ImportError as exc:
            self.fallback_reason = f"mypyc is not installed ({exc})"
            return []
        cwd = os.getcwd()
        try:
            os.chdir(ROOT)  # mypy resolves worker.core.* from the project root
            return mypycify(sources, opt_level="3", group_name=GROUP, target_dir=str(ROOT / "build" / "mypyc"))
        except (Exception, SystemExit) as exc:  # mypyc exits on a type error
            self.fallback_reason = f"mypyc failed: {type(exc).__name__}: {exc}"
            return []
        finally:
            os.chdir(cwd)

    def run(self) -> None:
        if self.fallback_reason is None and self.extensions:
            try:
                super().run()
            except Exception as exc:  # CompileError, LinkError, DistutilsExecError, OSError (no gcc): pure
                self.fallback_reason = f"compiling failed: {type(exc).__name__}: {exc}"
                self._remove_outputs()
                self.extensions = []
        if _pure_build_requested():
            self.fallback_reason = "RISK_PURE_BUILD is set"
            self.extensions = []
        compiled = self.fallback_reason is None and bool(self.extensions)
        if compiled:
            _say(f"compiled {len(core_sources())} core modules with mypyc")
        else:
            _say(f"installing the core pure (uncompiled): {self.fallback_reason}")
            self._remove_outputs()
        self._write_build_info(sources_sha256(core_sources()) if compiled else None)

    def _targets(self) -> list[Path]:
        """Where this build writes: build_lib (wheels) and, editable/--inplace, the source tree."""
        targets = [Path(self.build_lib)]
        if self.inplace or getattr(self, "editable_mode", False):
            targets.append(ROOT)
        return targets

    def _remove_outputs(self) -> None:
        """No compiled core module may survive a pure build: a stale one would shadow the source."""
        for target in self._targets():
            folder = target / "worker" / "core"
            for path in folder.glob("*.so") if folder.is_dir() else ():
                path.unlink()
            for path in folder.glob("*.pyd") if folder.is_dir() else ():
                path.unlink()

    def _write_build_info(self, sha256: str | None) -> None:
        text = ('"""Written by setup.py at build time: the sha256 of the core sources the compiled modules\n'
                'were built from (None: built pure). Not in git."""\n'
                f"SOURCES_SHA256 = {sha256!r}\n")
        for target in self._targets():
            folder = target / "worker" / "core"
            if folder.is_dir():
                (folder / BUILD_INFO).write_text(text)

    def get_outputs(self) -> list[str]:
        return super().get_outputs() if self.extensions else []


setup(distclass=CoreDistribution, cmdclass={"build_ext": BuildCore})
