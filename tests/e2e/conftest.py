"""Fixtures of the end-to-end tests: the development AS in each dialect, the echo upstream and
real Envoy with the filter. The AS and the echo live for the whole session and are reset
before each test; each Envoy lives as long as the test module that asks for it."""

from __future__ import annotations

import pytest

from harness import WASM, DevAs, Echo, Envoy, filter_config  # noqa: F401


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make wasm` first")


@pytest.fixture(scope="session")
def uma2_as():
    service = DevAs("uma2")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def keycloak_as():
    service = DevAs("keycloak")
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
    """Starts Envoys for a module and stops them at its end."""
    started: list[Envoy] = []

    def start(filter_json, as_port, upstream_port, **kw) -> Envoy:
        envoy = Envoy(filter_json, as_port, upstream_port, **kw)
        started.append(envoy)
        return envoy

    yield start
    for envoy in started:
        envoy.stop()
