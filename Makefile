# riskscore: `make run` starts the service on 127.0.0.1:8000; `make test` runs the suite;
# `make bench` measures it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
REDIS_PORT ?= 6379

.PHONY: setup run test lint format redis model postgres bench clean browser assets notebooks

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

setup: $(STAMP)

# A development secret and API keys; kept out of git, printed so they can be used.
.run/env: | $(STAMP)
	mkdir -p .run
	$(BIN)/python -m training.dev_env > .run/env
	chmod 600 .run/env

# Redis on loopback when none answers (no persistence: a development instance).
redis:
	@if ! (exec 3<>/dev/tcp/127.0.0.1/$(REDIS_PORT)) 2>/dev/null; then \
	  echo "starting redis-server on 127.0.0.1:$(REDIS_PORT)"; \
	  redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no; \
	  sleep 0.5; \
	fi

# Train and register a default model from simulated traffic when none the service can load
# is registered (none yet, or one trained for an older feature catalogue).
model: | $(STAMP)
	@if ! $(BIN)/python -c "import sys; from service.model.bundle import load_latest; \
	    sys.exit(load_latest('models') is None)" 2>/dev/null; then \
	  echo "no loadable model registered: training a default model on simulated traffic"; \
	  $(BIN)/riskscore simulate --out .run/simulated.parquet --rows 300000 --seed 7 && \
	  $(BIN)/riskscore train --log .run/simulated.parquet --registry models; \
	fi

# The decision archive: PostgreSQL at RISKSCORE_DATABASE_URL, else on 127.0.0.1:5432, else a
# private one started under .run/pg; its database made and its schema applied
# (training/dev_database.py). The URL it found is kept in .run/database-url.
postgres: | $(STAMP)
	@mkdir -p .run && $(BIN)/python -m training.dev_database > .run/database-url.new && \
	  mv .run/database-url.new .run/database-url

run: setup .run/env redis model postgres
	@set -a && source .run/env && set +a && \
	  export RISKSCORE_DATABASE_URL="$$(tail -n 1 .run/database-url)" && \
	  echo "decision archive: $$RISKSCORE_DATABASE_URL" && \
	  echo "riskscore on http://127.0.0.1:8000 (keys in .run/env; OpenAPI at /schema;" \
	    "the console at http://127.0.0.1:8000/console, sign in with ANALYST_KEY)" && \
	  $(BIN)/riskscore serve

# The browser test of the pages (tests/reliability/test_pages_offline.py) drives Debian's
# Chromium with Playwright, which never downloads a browser of its own; the network test
# builds its guard with the C compiler.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; \
	fi
	@command -v cc >/dev/null || command -v gcc >/dev/null || \
	  { apt-get update -q >/dev/null && apt-get install -y -q gcc >/dev/null; }

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The published benchmark: a private Redis and the service on free loopback ports, driven
# by wrk; table and JSON in benchmarks/results/. QUICK=1: a few seconds, harness check only.
# BENCH_ARGS passes more options (see .venv/bin/python benchmarks/run.py --help).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,train,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 2; }
	@command -v redis-server >/dev/null || \
	  { echo "redis-server is not installed: apt-get install redis-server" >&2; exit 2; }
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# JupyterLab on the analysts' notebooks (notebooks/), from the `notebooks` extra: not a
# dependency of the service. NOTEBOOK_PORT picks the port (8888).
NOTEBOOK_PORT ?= 8888
NOTEBOOKS_STAMP := $(VENV)/.notebooks-stamp
$(NOTEBOOKS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,train,notebooks]'
	touch $(NOTEBOOKS_STAMP)

notebooks: $(NOTEBOOKS_STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(NOTEBOOK_PORT) --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

# The UI files of /schema (Redoc, Swagger UI), fetched with npm at the versions pinned in
# service/api/assets/sources.json; commit what it changes.
assets: setup
	$(BIN)/riskscore assets update

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache .hypothesis
