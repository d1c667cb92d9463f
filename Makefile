# bgp-speaker developer entry point. Every target installs what it needs, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help sysdeps venv demo demo-kube test test-unit test-integration lint fmt bench chart-check image image-check clean

help: ## show the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

sysdeps: ## install the Debian packages the lab and the tests need (root, idempotent)
	@bash tests/lab/install-deps.sh

$(STAMP): pyproject.toml
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
		bash tests/lab/install-deps.sh python; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP) ## create .venv with the package and the dev tools

demo: sysdeps venv ## run the lab demo: BIRD core router, two NAT gateways, real packets (DEMO_SECONDS=N to stop by itself)
	$(BIN)/python -m tests.lab.demo

demo-kube: sysdeps venv ## the demo with EIPs and NAT rules as Kube-OVN objects in a local Kubernetes API server (DEMO_SECONDS=N)
	$(BIN)/python -m tests.lab.demo_kube

test: sysdeps venv ## run the whole test suite (unit, component, integration with real routers)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv ## only the tests that need no root and no routers
	$(BIN)/python -m pytest -m 'not integration' $(PYTEST_ARGS)

lint: venv ## ruff, ruff format --check, mypy --strict, import contracts
	$(BIN)/ruff check bgp_speaker tests
	$(BIN)/ruff format --check bgp_speaker tests
	$(BIN)/mypy bgp_speaker
	$(BIN)/lint-imports

fmt: venv ## format and auto-fix
	$(BIN)/ruff format bgp_speaker tests
	$(BIN)/ruff check --fix bgp_speaker tests

bench: sysdeps venv ## benchmarks against BIRD, with GoBGP as the reference; writes bench-results.md
	$(BIN)/python -m tests.bench

IMAGE ?= bgp-speaker:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman || command -v buildah)

image: ## build the container image with docker/podman/buildah (IMAGE=name:tag)
	@if [ -z "$(CONTAINER_ENGINE)" ] || ! $(CONTAINER_ENGINE) info >/dev/null 2>&1; then \
		echo "make image: no usable container engine (docker, podman or buildah) on this machine;"; \
		echo "  'make image-check' builds the same install layout into a directory and runs it."; \
		exit 1; fi
	$(CONTAINER_ENGINE) $(if $(findstring buildah,$(CONTAINER_ENGINE)),bud,build) -t $(IMAGE) .

image-check: venv ## build the image's install layout into a temp dir and run its entry points
	$(BIN)/python -m pytest -rxX tests/image $(PYTEST_ARGS)

chart-check: venv ## helm lint + render/validate the chart; schema and README generated and current
	bash tests/chart/install-helm.sh >/dev/null
	$(BIN)/python -m tests.chart.gen_schema --check
	$(BIN)/python -m tests.chart.gen_readme --check
	$(BIN)/python -m pytest -rxX tests/chart $(PYTEST_ARGS)

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
