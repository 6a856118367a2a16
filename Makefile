# Portcullis: one entry point for operators and CI.
#   make up     build everything and run the local stack (Envoy + filter + runner)
#   make test   run every test: unit, policy, Envoy config validation, end-to-end
#   make bench  benchmarks (see bench/)
#   make fuzz   long fuzzing runs (see fuzz/)

CARGO ?= cargo
WASM := target/wasm32-wasip1/wasm/portcullis_filter.wasm
PORTCULLIS := target/release/portcullis

.PHONY: setup build wasm runner up test lint validate-envoy clean

setup:
	scripts/setup.sh

wasm: setup
	$(CARGO) build -p portcullis-filter --target wasm32-wasip1 --profile wasm
	@ls -l $(WASM) | awk '{print "filter wasm: " $$5 " bytes"}'

# `make test` builds the runner within the test build: one feature resolution, so every
# dependency compiles once. (A runner built alone resolves tokio without the `test-util` its tests
# enable, and ~40 crates, tokio up to kube and tonic, would be compiled twice, ~10 minutes.)
RUNNER_BUILD = $(CARGO) build --release -p portcullis-runner
runner:
	$(RUNNER_BUILD)

build: wasm runner

up: build
	$(PORTCULLIS) up

validate-envoy: build
	scripts/validate-envoy.sh

lint: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The runner as `make bench` builds it: without the Kubernetes backend and OTLP export.
	$(CARGO) clippy -p portcullis-runner --no-default-features --all-targets -- -D warnings
	$(CARGO) clippy -p portcullis-core -p portcullis-filter -p portcullis-bench-floor --target wasm32-wasip1 -- -D warnings

# The policy under real OPA (Go engine, from .venv) must decide every case in policies/cases and
# pass every Rego unit test exactly as regorus (the release runner's `policy eval`) does.
.PHONY: check-opa
check-opa: setup runner
	.venv/bin/python tests/opa/cross_check.py

# The Helm chart (charts/portcullis): rendered and linted with the Helm SDK, every object checked
# against the Kubernetes schema and asserted on, the plain-Envoy variant's gateway validated and
# run with the built filter and runner, the Istio EnvoyFilter's Envoy content validated, and the
# filter's OCI artifact checked (tests/chart).
.PHONY: chart-test
chart-test: setup wasm runner
	.venv/bin/python tests/chart/run.py

# The filter as an OCI artifact (an OCI image layout under target/oci/, no container tool
# needed) and the runner image (deploy/Dockerfile) where docker or buildah works.
.PHONY: images
images: wasm
	deploy/build-images.sh

# Fuzzing (fuzz/README.md): cargo-fuzz (libFuzzer, AddressSanitizer) targets of core and of the
# audit verifier. `make fuzz` runs each for FUZZ_SECONDS; `make fuzz-smoke` (part of `make
# test`) replays the committed crash inputs and runs each for FUZZ_SMOKE_SECONDS.
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 10
.PHONY: fuzz fuzz-smoke
fuzz: setup
	scripts/setup-fuzz.sh
	fuzz/run.sh $(FUZZ_SECONDS)

fuzz-smoke: setup
	scripts/setup-fuzz.sh
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

# Every test. End-to-end tests start the release runner and real Envoy with the built filter.
test: RUNNER_BUILD = $(CARGO) test --workspace --release --no-run
test: build validate-envoy lint check-opa chart-test fuzz-smoke
	$(PORTCULLIS) policy test
	$(CARGO) test --workspace --release -- --include-ignored

# Benchmarks (bench/README.md): criterion micro-benchmarks of core, then the end-to-end run on
# loopback (Envoy with/without the filter, static upstream and real runner, sandbox, memory;
# beside them Envoy's own MCP+RBAC filters and the proxy-wasm floor, bench/floor),
# which prints one table and writes target/bench/results.json. The runner is built without its
# default features (the Kubernetes backend, OTLP export): the bench uses neither, and they
# are minutes of its cold build. `make build` builds the full runner again. From a fresh clone
# on 2 cores: 13 min 19 s measured, nearly 10 of them building (bench/README.md).
# The native packages `make bench` builds and then benchmarks: both commands must select the
# same packages and features, or `cargo bench` resolves features anew and compiles again.
BENCH_NATIVE = --no-default-features -p portcullis-runner -p portcullis-bench -p portcullis-bench-micro
.PHONY: bench
bench: setup
	# The wasm modules build beside the native build: each has long single-threaded stretches
	# (the filter's fat LTO; the runner crate and its binary), so together they keep two cores
	# busy. Built together, the floor gets the filter's dependency features and shares them.
	# The native build is `cargo bench`'s own (profile bench, which inherits release and writes
	# to target/release), criterion included, so `cargo bench` below compiles nothing more.
	$(CARGO) build -p portcullis-filter -p portcullis-bench-floor --target wasm32-wasip1 --profile wasm & wasm=$$!; \
	  $(CARGO) build --profile bench $(BENCH_NATIVE) --bins --bench core; native=$$?; \
	  wait $$wasm && test $$native -eq 0
	$(CARGO) bench $(BENCH_NATIVE) --bench core
	target/release/portcullis-bench --out target/bench/results.json

clean:
	$(CARGO) clean
	rm -rf .portcullis
