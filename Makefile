# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base

.PHONY: demo test test-slow docs bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# the demo needs only the package's own dependencies (no torch, no test / docs tools)
$(BASE_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP) pyproject.toml
	$(PY) -m pip install -q -e ".[test,docs,dev]"
	touch $(STAMP)

demo: $(BASE_STAMP)
	$(PY) examples/quickstart.py

# two workers (CI has 2 cores); the slowest tests are listed at the end of the run
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -n 2 --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check kernels ppl lm_inference tests examples benchmarks

clean:
	rm -rf $(VENV) site .pytest_cache
