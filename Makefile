# The one source of truth for how to run, test and measure the tracker.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
COMPOSE ?= docker compose -f docker/compose.yaml
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# The commit `make run` and the image report in tracker_build_info{commit}.
export TRACKER_COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: run run-phase1 run-phase2 local-run-phase1 local-run-phase2 local-build build ctl status \
        test test-fast test-coverage bench load-test demo-multi docker-up docker-down docker-logs \
        docker-constraints fmt lint clean redis-server openapi promtool wrk

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# redis-server is needed for the embedded Redis (make run without REDIS_URL) and the tests.
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null; \
	  fi; }
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found: install it (apt-get install redis-server) or set REDIS_URL"; exit 1; }

# promtool (Debian's prometheus package) checks and unit-tests the alert rules and the
# dashboard queries in the tests. Only the binary is needed: no Prometheus service.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1; \
	  fi; }
	@command -v promtool >/dev/null || { \
	  echo "promtool not found: install it (apt-get install prometheus)"; exit 1; }

## run: the whole pod under supervisord in the foreground (embedded Redis unless REDIS_URL)
run: $(STAMP)
	@[ -n "$$REDIS_URL$$REDIS_URL_FILE" ] || $(MAKE) -s redis-server
	exec $(VENV)/bin/tracker pod

run-phase1: $(STAMP)
	@[ -n "$$REDIS_URL$$REDIS_URL_FILE" ] || $(MAKE) -s redis-server
	MODE=phase1 exec $(VENV)/bin/tracker pod

run-phase2: $(STAMP)
	@[ -n "$$REDIS_URL$$REDIS_URL_FILE" ] || $(MAKE) -s redis-server
	MODE=phase2 exec $(VENV)/bin/tracker pod

# The seed brief's names for the same commands.
local-run-phase1: run-phase1
local-run-phase2: run-phase2

## local-build: the venv (editable install) and the wheel in dist/, no Docker
local-build: $(STAMP)
	$(PIP) wheel --no-deps -q -w dist .
	@ls dist/tracker-$(VERSION)-*.whl

## build: local-build, and the image tracker:VERSION where a Docker daemon answers
build: local-build
	@if command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
	  docker build -f docker/Dockerfile --build-arg TRACKER_COMMIT=$(TRACKER_COMMIT) \
	    -t tracker:$(VERSION) . ; \
	else echo "no Docker daemon: built the wheel only (dist/)"; fi

## ctl: supervisorctl for the pod of this RUN_DIR, e.g. make ctl ARGS="restart consumer:*"
ctl: $(STAMP)
	$(VENV)/bin/tracker ctl $(ARGS)

status: $(STAMP)
	$(VENV)/bin/tracker status

## test: the whole suite against real redis-servers the fixtures start
test: $(STAMP) redis-server promtool
	$(PY) -m pytest -q

test-fast: $(STAMP) redis-server promtool
	$(PY) -m pytest -q -m "not slow"

test-coverage: $(STAMP) redis-server promtool
	$(PIP) install -q coverage
	$(PY) -m coverage run -m pytest -q && $(PY) -m coverage report

# wrk measures the HTTP figures of `make bench` (Debian's package; installed when root).
wrk:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends wrk) >/dev/null 2>&1; \
	  fi; }
	@command -v wrk >/dev/null || { echo "wrk not found: install it (apt-get install wrk)"; exit 1; }

## bench: every figure of the Benchmarks section; writes bench/results/latest.{json,md,png}
bench: $(STAMP) redis-server wrk
	$(PY) -m pytest bench -o python_files='bench_*.py' -p no:cacheprovider -q --benchmark-only

## load-test: drive the pod of `make run` at RATE requests/s for DURATION s (loopback only)
RATE ?= 500
DURATION ?= 30
LOAD_URL ?= http://127.0.0.1:$(or $(PORT),8080)
load-test: $(STAMP)
	$(PY) -m bench.load_test --url $(LOAD_URL) --rate $(RATE) --duration $(DURATION)

## demo-multi: two pods on one Redis; the leading sweeper stops; the other takes over
demo-multi: $(STAMP) redis-server
	$(PY) -m bench.demo_multi

## docker-up: Redis, two pods, Prometheus, Grafana and a webhook receiver (docker/compose.yaml)
docker-up:
	$(COMPOSE) up --build --detach --wait
	@echo "pods: localhost:8081 localhost:8082  prometheus: localhost:9090  grafana: localhost:3000"
	@echo "make docker-logs follows the pods and the webhook receiver"

docker-down:
	$(COMPOSE) down --remove-orphans

docker-logs:
	$(COMPOSE) logs --follow --tail=100 tracker-1 tracker-2 webhook

## docker-constraints: re-pin the image's dependencies to the versions in the venv
docker-constraints: $(STAMP)
	$(PY) docker/constraints.py > docker/constraints.txt

## openapi: write docs/openapi.json (a test checks it equals what the API serves)
openapi: $(STAMP)
	$(PY) -m tracker.api.openapi > docs/openapi.json

## fmt, lint: ruff format and fix; ruff format --check, ruff check and mypy --strict
fmt: $(STAMP)
	$(VENV)/bin/ruff format tracker tests bench
	$(VENV)/bin/ruff check --fix tracker tests bench

lint: $(STAMP)
	$(VENV)/bin/ruff format --check tracker tests bench
	$(VENV)/bin/ruff check tracker tests bench
	$(VENV)/bin/mypy

## clean: what runs, tests and builds leave behind (not .venv)
clean:
	rm -rf var dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache .benchmarks
