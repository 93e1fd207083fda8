# ringlb: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench attack analysis faults clean
.PHONY: build up down logs ps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes. Installing also compiles the hot path
# in place (setup.py: mypyc, when a C compiler is present; RINGLB_PURE=1 skips it).
$(VENV)/.installed-run: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@ $(VENV)/.compiled

$(VENV)/.installed-dev: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run $(VENV)/.compiled

# The compiled hot path again whenever its source changes (a stale build is not used: the
# process runs the source and says so, see ringlb.hotpath).
HOT_PATH := src/ringlb/model.py $(filter-out %/testing.py,$(wildcard src/ringlb/dataplane/*.py))
$(VENV)/.compiled: $(HOT_PATH) | $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

## run: the balancer on :5000 with three local replica processes (Ctrl-C stops everything)
run: $(VENV)/.installed-run $(VENV)/.compiled
	exec $(BIN)/ringlb serve $(ARGS)

# In CI (CI=true), or when asked with RINGLB_REQUIRE_DOCKER=1, `make test` first makes a
# Docker engine reachable and builds the image offline, and tests/docker fail instead of
# skipping when there is no engine. In CI it also installs Chromium for the status page test
# (which otherwise skips without it).
ifeq ($(CI),true)
RINGLB_REQUIRE_DOCKER ?= 1
RINGLB_REQUIRE_COMPILED ?= 1
endif
export RINGLB_REQUIRE_DOCKER RINGLB_REQUIRE_COMPILED

## test: lint, then the whole suite (unit, integration, docker when an engine is reachable)
## on the compiled hot path, then the unit and integration tests again on the pure-Python one
## (the same source, RINGLB_PURE=1). PYTEST_ARGS replaces the second run's selection too.
PURE_TESTS ?= tests/unit tests/integration
test: lint $(VENV)/.compiled
	$(if $(filter 1,$(RINGLB_REQUIRE_DOCKER)),scripts/docker-engine.sh && scripts/docker-build.sh)
	$(if $(filter true,$(CI)),scripts/chromium.sh)
	$(BIN)/ringlb --version
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	RINGLB_PURE=1 $(BIN)/ringlb --version
	RINGLB_PURE=1 $(BIN)/python -m pytest -q $(or $(PYTEST_ARGS),$(PURE_TESTS))

## Docker (docs/docker.md): the balancer container on :$(RINGLB_HOST_PORT), replicas on net1.
# The compose CLI is the v2 plugin when present, else Debian's docker-compose.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
STACK = $(COMPOSE) -p ringlb
RINGLB_HOST_PORT ?= 5000
RINGLB_IMAGE ?= ringlb:latest
export RINGLB_HOST_PORT RINGLB_IMAGE
OURS := --filter label=ringlb.owner=ringlb

## build: the ringlb image (offline when no registry is reachable: debootstrap + wheelhouse)
build:
	scripts/docker-build.sh

## up: build, start the balancer container (detached), wait until its /rep answers
# The probe: can this engine run a privileged root container at all (see docker-compose.yml)?
up: build
	@if [ -z "$$RINGLB_PRIVILEGED" ] && ! docker run --rm --privileged --user root \
	    --network none $(RINGLB_IMAGE) true >/dev/null 2>&1; then \
	    echo "this engine refuses privileged containers: starting the balancer unprivileged"; \
	    export RINGLB_PRIVILEGED=false; fi; \
	$(STACK) up -d --no-build
	@$(PYTHON) scripts/wait-rep.py $(RINGLB_HOST_PORT) 90
	@echo "ringlb serves on http://127.0.0.1:$(RINGLB_HOST_PORT) (make logs, make ps, make down)"

## down: remove the balancer, every replica container it started, and the network
down:
	$(STACK) stop
	docker ps -aq $(OURS) --filter label=ringlb.role=replica | xargs -r docker rm -f
	$(STACK) down --remove-orphans
	docker network ls -q $(OURS) | xargs -r docker network rm

logs:
	$(STACK) logs --tail=200 lb

ps:
	docker ps -a $(OURS) --format 'table {{.Names}}\t{{.Label "ringlb.role"}}\t{{.Status}}\t{{.Ports}}'

## lint: ruff, and the layers of the planes (import-linter, contracts in pyproject.toml)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

## faults: the fault-injection suite (tests/faults, ~3 minutes), its figures rendered into
## the table of docs/reliability.md (the Docker rows need a reachable engine and root)
FAULTS_REPORT := $(CURDIR)/.cache/faults.jsonl
faults: $(VENV)/.installed-dev
	@mkdir -p .cache && rm -f $(FAULTS_REPORT)
	RINGLB_FAULTS_REPORT=$(FAULTS_REPORT) \
	RINGLB_FAULTS_RESTART_DOCKERD=$(RINGLB_FAULTS_RESTART_DOCKERD) $(BIN)/python -m pytest -q -s \
	    tests/faults $(PYTEST_ARGS); status=$$?; \
	$(BIN)/python scripts/faults_table.py $(FAULTS_REPORT) docs/reliability.md; exit $$status

## bench: ringlb vs HAProxy vs nginx vs a replica direct, HTTPS and WebSocket rows, then
## 10,000 held connections, then the regimes of issue 14 (wrk 1 and 2 threads, round robin
## and maglev, one worker vs HAProxy nbthread 1, --workers auto vs its default threads) and
## the stall of an /add under load (installs haproxy, nginx and wrk from Debian packages when
## missing; ~16 minutes; the WebSocket client is the dev extra's `websockets`).
## BENCH_ARGS for bench/run.py; REGIMES_ARGS="--rounds 3 --seconds 10", or "--skip-stall".
bench: $(VENV)/.installed-dev $(VENV)/.compiled
	bash bench/install.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/regimes.py $(REGIMES_ARGS)

## attack: slow and malformed clients (slowhttptest, raw holders) against ringlb and HAProxy
## over the same replicas, with a probe client; the table goes into docs/reliability.md
## (installs slowhttptest and haproxy from Debian when missing; ~12 minutes).
## ATTACK_ARGS="--only idle,bad-chunk --seconds 15" for one attack or shorter runs.
attack: $(VENV)/.installed-run $(VENV)/.compiled
	bash bench/install.sh haproxy slowhttptest
	$(BIN)/python bench/attack.py $(ATTACK_ARGS)

$(VENV)/.installed-analysis: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[analysis]'
	touch $@ $(VENV)/.installed-run

## analysis: A-1..A-4 against a balancer it starts itself (no Docker needed); charts, data
## and REPORT.md in docs/analysis/ (3-10 minutes). ANALYZE_ARGS="--url http://..." to measure
## a running balancer instead.
analysis: $(VENV)/.installed-analysis
	$(BIN)/ringlb analyze --out docs/analysis $(ANALYZE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build src/*.egg-info
