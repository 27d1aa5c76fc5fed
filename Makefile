# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck test-installed venv clean

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

# mypy as issue 12 sets it: --strict on the core, default checks on every other package
# (settings in pyproject.toml [tool.mypy])
typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict uptane
	$(VENV)/bin/mypy storage keystore director primary secondary hardware timeserver

# The suite against a normal (non-editable) install, as a user gets it from pip: a
# separate venv, pytest's console script (so the checkout is not on sys.path) and a check
# that the product packages really come from site-packages.
DIST_VENV ?= .venv-dist
test-installed:
	test -x $(DIST_VENV)/bin/python || $(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q --upgrade pip
	$(DIST_VENV)/bin/python -m pip install -q --force-reinstall --no-deps .
	$(DIST_VENV)/bin/python -m pip install -q '.[test]'
	rm -rf build
	$(DIST_VENV)/bin/python tests/installed_check.py
	$(DIST_VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DIST_VENV) build *.egg-info .pytest_cache

# Benchmarks (issue 8): ratios measured in one run -> bench/results.json, bench/README.md.
# Not part of `make test`; tests/test_bench_smoke.py runs each one at a tiny size.
.PHONY: bench
bench: $(STAMP)
	$(PY) -m bench

# Security (issue 7): long runs outside CI. `make fuzz` runs the atheris harness of every
# decoder (FUZZ_RUNS inputs each, default 10^6; results in fuzz/out/results.json), then the
# power walks on the realistic flash model over FLASH_WALK_SEEDS seeds (default 30, ~7 min);
# `make load` runs 1,000 real Primaries against the services on SQLite and PostgreSQL
# (LOAD_VEHICLES, LOAD_DB=sqlite|postgresql|both; results in load/out/load-DB.json), a
# campaign, 20 SIGKILLs of the Director, and three Director nodes on one PostgreSQL.
.PHONY: fuzz load
fuzz: $(STAMP)
	$(PY) -m pip install -q -e '.[fuzz]' || echo "atheris could not be installed here"
	FUZZ_RUNS=$${FUZZ_RUNS:-1000000} $(PY) -m fuzz.run
	# signed content: valid documents mutated and re-signed with the right keys (issue 15)
	$(PY) -m fuzz.signed --runs $${FUZZ_SIGNED_RUNS:-100000}
	# power loss on the realistic flash model: every write point, double faults, many seeds
	UPTANE_FLASH_WALK_SEEDS=$${FLASH_WALK_SEEDS:-30} $(PY) -m pytest -q -p no:cacheprovider tests/hardware/test_power_walks.py
	# serial bit errors: 200 seeds per rate, the probabilities in fuzz/out/ber.jsonl
	mkdir -p fuzz/out && rm -f fuzz/out/ber.jsonl
	UPTANE_BER_SEEDS=$${BER_SEEDS:-200} UPTANE_BER_OUT=fuzz/out/ber.jsonl $(PY) -m pytest -q -p no:cacheprovider tests/security/test_serial_bit_errors.py

load: $(STAMP)
	$(PY) -m load.loadgen --vehicles $${LOAD_VEHICLES:-1000} --db $${LOAD_DB:-both}
	$(PY) -m load.campaign --vehicles $${LOAD_VEHICLES:-500} --db $${LOAD_DB:-both}
	# SIGKILL the Director 20 times under 100 vehicles, per database (issue 15)
	$(PY) -m load.killrun --vehicles 100 --kills 20 --db $${LOAD_DB:-both}
	# three Director nodes on one PostgreSQL, 500 vehicles, one node SIGKILLed (issue 19)
	$(PY) -m load.nodes --vehicles 500 --nodes 3 --seconds 60
