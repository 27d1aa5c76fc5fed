# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# Benchmarks (issue 8): ratios measured in one run -> bench/results.json, bench/README.md.
# Not part of `make test`; tests/test_bench_smoke.py runs each one at a tiny size.
.PHONY: bench
bench: $(STAMP)
	$(PY) -m bench

# Security (issue 7): long runs outside CI. `make fuzz` runs the atheris harness of every
# decoder (FUZZ_RUNS inputs each, default 10^6; results in fuzz/out/results.json);
# `make load` runs 1,000 real Primaries against the services on SQLite and PostgreSQL
# (LOAD_VEHICLES, LOAD_DB=sqlite|postgresql|both; results in load/out/load-DB.json).
.PHONY: fuzz load
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]' || echo "atheris could not be installed here"
	FUZZ_RUNS=$${FUZZ_RUNS:-1000000} $(PY) -m fuzz.run

load: $(STAMP)
	$(PY) -m load.loadgen --vehicles $${LOAD_VEHICLES:-1000} --db $${LOAD_DB:-both}
