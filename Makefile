# Two commands matter on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app maia_trainings
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test test-fast lint format soak bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $@

run: install
	$(FLASK) trainings init-db
	$(FLASK) trainings token create local --if-missing
	$(FLASK) trainings serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Lint, then every test: tests/unit and tests/integration (real servers, child processes, the
# short soak), on SQLite and, when MAIA_TEST_POSTGRES_URL names a PostgreSQL server, on
# PostgreSQL too (each run in a database of its own, dropped at the end). What CI runs, in
# PYTEST_WORKERS processes (pytest-xdist): the tests mostly wait on servers and child
# processes, and two workers halve the time on CI's two cores (13.2 -> 7.5 min, 2026-12-02).
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The in-process tests only (tests/unit: no server, no child process) on SQLite, under a
# minute in PYTEST_WORKERS processes (85 s in one, 2026-12-02), without the generated
# property tests (make test runs them: ~15 s of a minute that had reached 61 s); no lint.
test-fast: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) tests/unit -k "not postgresql" \
		--ignore=tests/unit/test_properties.py $(PYTEST_ARGS)

# The chaos soak: load, random SIGKILLs and restarts, then every invariant checked.
SOAK_SECONDS ?= 120
soak: install
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python bench/soak.py

# The benchmark suite: BENCH=quick (default, a few minutes) or BENCH=full; writes
# bench/RESULTS.md and the summary table in the README.
BENCH ?= quick
bench: install
	BENCH=$(BENCH) $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
