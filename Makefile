# One command each, from a fresh clone: `make demo` and `make test` install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the install compiles the core with mypyc (setup.py): an edited core source rebuilds it
CORE_SOURCES := $(filter-out worker/core/_build_info.py,$(wildcard worker/core/*.py))

.PHONY: demo test test-pure replay bench clean

$(STAMP): pyproject.toml setup.py $(CORE_SOURCES)
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@$(PY) -c 'import worker.core as c; print("worker.core:", "compiled (mypyc)" if c.COMPILED else f"pure ({c.PURE_REASON})")'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m worker demo

test: $(STAMP)
	$(PY) -m pytest

# the core's tests again on the .py sources (CI runs `test`, compiled, then this)
test-pure: $(STAMP)
	RISK_PURE_CORE=1 $(PY) -m pytest -m "core or pure_core"

replay: $(STAMP)
	$(PY) -m worker replay examples/crash.jsonl --params examples/params.toml

bench: $(STAMP)
	$(PY) bench/replay_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache build worker/core/*.so worker/core/_build_info.py
