"""Fixtures of the real-client cross-checks: client libraries written against the real
Keycloak and Gluu/Janssen (python-keycloak, requests-oauthlib-uma, eoepca-uma) driven against
the development AS, and through Envoy running the filter.

Where a library and devas disagree, the test asserts what the real server does (its source or
the library's own tests against it are cited in each test), not what devas does today.

The AS and the echo live for the session and are reset before each test; an Envoy lives as long
as the module that starts it. The harness of the end-to-end tests is reused, unmodified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# requests-oauthlib refuses to fetch a token over plain http:// unless told this is a test.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

from harness import WASM, DevAs, Echo, Envoy  # noqa: E402


@pytest.fixture(scope="session")
def keycloak_as():
    service = DevAs("keycloak")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def uma2_as():
    service = DevAs("uma2")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def echo():
    service = Echo()
    yield service
    service.stop()


@pytest.fixture(autouse=True)
def _clean_fixtures(request):
    """Every test starts with an AS and an echo that remember nothing."""
    for name in ("uma2_as", "keycloak_as", "echo"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    yield


@pytest.fixture(scope="module")
def envoy_factory():
    """Starts Envoys (real Envoy, the built filter) for a module and stops them at its end."""
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm` first")
    started: list[Envoy] = []

    def start(filter_json, as_port, upstream_port, **kw) -> Envoy:
        envoy = Envoy(filter_json, as_port, upstream_port, **kw)
        started.append(envoy)
        return envoy

    yield start
    for envoy in started:
        envoy.stop()
