"""The pytest fixtures of a whole stack, shared by every suite that runs the filter in Envoy:
the development AS in each dialect and the echo upstream, alive for the whole session and reset
before each test, and real Envoys with the built filter, alive as long as the test module that
starts them. A conftest imports them by name (`from support.fixtures import ...`), which is how
pytest registers them there."""

from __future__ import annotations

import pytest

from support.devas import DevAs
from support.echo import Echo
from support.envoy import WASM, Envoy


def require_wasm() -> None:
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: run `make wasm` first (or set UMA_PEP_WASM)")


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
    """Starts Envoys (real Envoy, the built filter) for a module and stops them at its end."""
    require_wasm()
    started: list[Envoy] = []

    def start(filter_json, as_port, upstream_port, **kw) -> Envoy:
        envoy = Envoy(filter_json, as_port, upstream_port, **kw)
        started.append(envoy)
        return envoy

    yield start
    for envoy in started:
        envoy.stop()
