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

.PHONY: install run test test-slow dev sample clean check-java docs browser-deps system-deps rebuild checksums bench \
	asset-graph load-report jars restore maintenance emr-runtime-env

install: $(STAMP) jars browser-deps system-deps

# Delta Lake and S3A jars (etl_assets/jars.py): fetched once into ~/.cache/etl_assets/jars (ETL_JARS_DIR),
# checked by SHA-1; returns at once when they are there.
jars: $(STAMP)
	@$(BIN)/python etl_assets/jars.py

# The oldest EMR runtime we support, emr-spark-8.0.0 (Spark 4.0.2, Delta 4.0.0): a second virtualenv
# outside the work tree (ETL_EMR_RUNTIME_VENV) with that pyspark and the project's other pins (the
# project itself runs from this tree), plus Delta 4.0.0's jars (EMR_RUNTIME_JARS in etl_assets/jars.py).
# etl_assets_tests/test_emr_runtime.py runs the EMR entry point in it. Returns at once when done.
export ETL_EMR_RUNTIME_VENV ?= $(HOME)/.cache/etl_assets/emr-runtime-venv
EMR_RUNTIME_PYSPARK := 4.0.2
EMR_RUNTIME_STAMP := $(ETL_EMR_RUNTIME_VENV)/.installed-pyspark-$(EMR_RUNTIME_PYSPARK)
emr-runtime-env: $(EMR_RUNTIME_STAMP)
	@ETL_JARS_SET=emr-runtime $(BIN)/python etl_assets/jars.py

$(EMR_RUNTIME_STAMP): pyproject.toml requirements.lock | $(STAMP)
	@test -x $(ETL_EMR_RUNTIME_VENV)/bin/python || $(PYTHON) -m venv $(ETL_EMR_RUNTIME_VENV)
	@grep -iv '^pyspark==' requirements.lock > $(ETL_EMR_RUNTIME_VENV)/constraints.txt
	@$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
		print("\n".join(d for d in p["dependencies"] if not d.startswith("pyspark")))' \
		> $(ETL_EMR_RUNTIME_VENV)/requirements.txt
	$(ETL_EMR_RUNTIME_VENV)/bin/python -m pip install -q --upgrade pip
	$(ETL_EMR_RUNTIME_VENV)/bin/python -m pip install -q -c $(ETL_EMR_RUNTIME_VENV)/constraints.txt \
		pyspark==$(EMR_RUNTIME_PYSPARK) -r $(ETL_EMR_RUNTIME_VENV)/requirements.txt
	@rm -f $(ETL_EMR_RUNTIME_VENV)/.installed-pyspark-* && touch $@

# Headless Chromium + chromedriver (Debian packages) for the browser test; returns at once when present.
browser-deps:
	@bash .ci/install-chromium || { echo "ERROR: chromium/chromedriver could not be installed (see above); etl_assets_tests/test_ui_browser.py needs them" >&2; exit 1; }

# PostgreSQL server (Debian package) for the prod-instance test; returns at once when present.
system-deps:
	@bash .ci/install-system-deps || { echo "ERROR: postgresql could not be installed (see above); etl_assets_tests/test_engines.py needs it" >&2; exit 1; }

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

# The suite (budget: 15 minutes on 2 cores; one shared etl_all run, see README "Tests").
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25
test: install
	$(PYTEST) -m "not slow" etl_assets_tests

# Whole-run engine and fault tests (Connect, classic driver, EMR Pipes, PostgreSQL instance, SIGKILL,
# concurrent runs, Spark worker loss, 30-day load, 200 MB file); .ci/run runs them after `make test`.
test-slow: install emr-runtime-env
	$(PYTEST) -m slow etl_assets_tests

# Refresh the README's asset-graph picture (docs/asset_graph.png) from the UI, in headless Chromium.
asset-graph: install
	ETL_UPDATE_ASSET_GRAPH=1 $(PYTEST) etl_assets_tests/test_ui_browser.py -k test_asset_graph_shows_every_asset

# The load report docs/load.md: 30 days at scale 1 through the sensor path (about 7 minutes on Delta).
load-report: install
	ETL_LOAD_SCALE=1 ETL_LOAD_REPORT=$(CURDIR)/docs/load.md $(PYTEST) -s -m slow etl_assets_tests/test_load.py

dev: install
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -h 127.0.0.1 -p $${PORT:-3000} -m etl_assets

# Disaster recovery: rebuild silver, quarantine and gold from bronze (FROM=landing: everything,
# bronze included, from the landing zone) into a new Dagster instance if the old one is gone,
# then print the per-table row checksums (compare with `make checksums` taken before).
FROM ?= bronze
REBUILD_JOB = $(if $(filter landing,$(FROM)),etl_all,rebuild_from_bronze)
# Roll one lake table back to an earlier Delta version (time travel), audited:
#   make restore TABLE=silver/customers VERSION=3
restore: install
	@test -n "$(TABLE)" -a -n "$(VERSION)" || { echo "usage: make restore TABLE=<layer>/<table> VERSION=<n>"; exit 2; }
	@mkdir -p $(DAGSTER_HOME); cfg=$$(mktemp --suffix=.yaml); \
	printf 'ops:\n  restore_lake_table:\n    config: {table: "%s", version: %s}\n' "$(TABLE)" "$(VERSION)" > $$cfg; \
	$(BIN)/dagster job execute -m etl_assets -j restore_table -c $$cfg --tags '{"launched_by": "make-restore"}'; \
	rc=$$?; rm -f $$cfg; exit $$rc

# Compact bronze (OPTIMIZE) and apply the retention (VACUUM, ETL_LAKE_RETENTION_HOURS, default 168)
maintenance: install
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster job execute -m etl_assets -j lake_maintenance

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
