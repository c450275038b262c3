# One command each, from a fresh clone: `make demo` and `make test` install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test replay bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m worker demo

test: $(STAMP)
	$(PY) -m pytest

replay: $(STAMP)
	$(PY) -m worker replay examples/crash.jsonl --params examples/params.toml

bench: $(STAMP)
	$(PY) bench/replay_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
