# Two commands do everything on a fresh machine:  make run   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STATE := $(CURDIR)/.state
export DAGSTER_HOME ?= $(STATE)/dagster_home
export ETL_LANDING_URI ?= $(CURDIR)/data/landing
export ETL_LAKE_URI ?= $(CURDIR)/data/lake
SCALE ?= 1
DAYS ?= 7
SEED ?= 42

.PHONY: install run test test-slow dev sample clean check-java docs browser-deps system-deps rebuild checksums bench

install: $(STAMP) browser-deps system-deps

# Headless Chromium + chromedriver (Debian packages) for the browser test; returns at once when present.
browser-deps:
	@bash .ci/install-chromium || echo "WARNING: chromium/chromedriver could not be installed; etl_assets_tests/test_ui_browser.py needs them" >&2

# PostgreSQL server (Debian package) for the prod-instance test; returns at once when present.
system-deps:
	@bash .ci/install-system-deps || echo "WARNING: postgresql could not be installed; etl_assets_tests/test_engines.py needs it" >&2

check-java:
	@command -v java >/dev/null 2>&1 || { echo "ERROR: Java 17 is required by Spark 4 but 'java' is not on PATH. Install it (Debian: apt-get install openjdk-17-jre-headless) and retry." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "ERROR: Java 17 or newer is required by Spark 4, found: $$(java -version 2>&1 | head -1). Install openjdk-17 and retry." >&2; exit 1; fi

$(STAMP): pyproject.toml requirements.lock | check-java
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[test]'
	@mkdir -p $(DAGSTER_HOME) && cp -n etl_assets/instance/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	@touch $(STAMP)

sample: install
	@if [ -d "$(ETL_LANDING_URI)" ] && [ -n "$$(ls -A $(ETL_LANDING_URI) 2>/dev/null)" ]; then \
		echo "sample data already in $(ETL_LANDING_URI) (remove it to regenerate)"; \
	else $(BIN)/python -m etl_assets.sample_data --out $(ETL_LANDING_URI) --days $(DAYS) --seed $(SEED) --scale $(SCALE); fi

run: install sample
	@mkdir -p $(DAGSTER_HOME); start=$$(date +%s.%N); \
	$(BIN)/dagster job execute -m etl_assets -j etl_all && \
	$(BIN)/python -m etl_assets.summary --lake $(ETL_LAKE_URI) --started $$start

test: install
	$(BIN)/python -m pytest -q -m "not slow" etl_assets_tests

# Whole-run fault and load tests (SIGKILL, concurrent runs, Spark worker loss, 30-day load); .ci/run runs them too.
test-slow: install
	$(BIN)/python -m pytest -q -s -m slow etl_assets_tests

dev: install
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -m etl_assets

# Disaster recovery: rebuild silver, quarantine and gold from bronze (FROM=landing: everything,
# bronze included, from the landing zone) into a new Dagster instance if the old one is gone,
# then print the per-table row checksums (compare with `make checksums` taken before).
FROM ?= bronze
REBUILD_JOB = $(if $(filter landing,$(FROM)),etl_all,rebuild_from_bronze)
rebuild: install
	@mkdir -p $(DAGSTER_HOME) && cp -n etl_assets/instance/dagster.local.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true
	$(BIN)/dagster job execute -m etl_assets -j $(REBUILD_JOB) --tags '{"launched_by": "make-rebuild"}'
	$(BIN)/python -m etl_assets.checksums --lake $(ETL_LAKE_URI) $(if $(DECRYPT),--decrypt)

checksums: install
	@$(BIN)/python -m etl_assets.checksums --lake $(ETL_LAKE_URI) $(if $(DECRYPT),--decrypt)

# The data dictionary from the registry, the Pandera models and the Spark-plan column lineage.
docs: install
	$(BIN)/python -W ignore::RuntimeWarning:runpy -m etl_assets.docs --out docs/data_dictionary.md

# Speed, scale and the cost of orchestration: dagster vs bare Spark vs the I/O floor, written to
# docs/benchmarks.md (sample data cached in .state/bench/data). Not part of `make test`.
BENCH_SCALES ?= 1 10
BENCH_RUNS ?= 3
BENCH_ARGS ?=
bench: install
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m etl_assets.bench --scales $(BENCH_SCALES) --runs $(BENCH_RUNS) --out docs/benchmarks.md --workdir $(STATE)/bench $(BENCH_ARGS)

clean:
	rm -rf $(STATE) data spark-warehouse
