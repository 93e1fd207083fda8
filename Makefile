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

# Reinstall only when the project's metadata changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

## run: the balancer on :5000 with three local replica processes (Ctrl-C stops everything)
run: $(VENV)/.installed-run
	exec $(BIN)/ringlb serve $(ARGS)

# In CI (CI=true), or when asked with RINGLB_REQUIRE_DOCKER=1, `make test` first makes a
# Docker engine reachable and builds the image offline, and tests/docker fail instead of
# skipping when there is no engine. In CI it also installs Chromium for the status page test
# (which otherwise skips without it).
ifeq ($(CI),true)
RINGLB_REQUIRE_DOCKER ?= 1
endif
export RINGLB_REQUIRE_DOCKER

## test: lint, then the whole suite (unit, integration, docker when an engine is reachable)
test: lint
	$(if $(filter 1,$(RINGLB_REQUIRE_DOCKER)),scripts/docker-engine.sh && scripts/docker-build.sh)
	$(if $(filter true,$(CI)),scripts/chromium.sh)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## Docker (docs/docker.md): the balancer container on :$(RINGLB_HOST_PORT), replicas on net1.
# The compose CLI: scripts/compose.sh finds the plugin or Debian's docker-compose, installs
# the latter when neither exists (root), or says what to install.
COMPOSE ?= scripts/compose.sh
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

## bench: ringlb vs HAProxy vs nginx vs a replica direct, then 10,000 held connections
## (installs haproxy, nginx and wrk from Debian packages when missing; ~4 minutes)
bench: $(VENV)/.installed-run
	bash bench/install.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## attack: slow and malformed clients (slowhttptest, raw holders) against ringlb and HAProxy
## over the same replicas, with a probe client; the table goes into docs/reliability.md
## (installs slowhttptest and haproxy from Debian when missing; ~12 minutes).
## ATTACK_ARGS="--only idle,bad-chunk --seconds 15" for one attack or shorter runs.
attack: $(VENV)/.installed-run
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
