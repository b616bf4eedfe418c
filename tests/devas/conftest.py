"""Fixtures of the devas tests: the three AS profiles and the echo upstream, in-process on port 0.
One server of each per module; the function-scoped fixtures reset it before handing it out.
devas is a development/test fixture, NOT for production."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devas import echo as echo_mod  # noqa: E402
from devas import server  # noqa: E402


def _running(handle):
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def kc_server():
    yield from _running(server.start("keycloak", port=0))


@pytest.fixture(scope="module")
def u2_server():
    yield from _running(server.start("uma2", port=0))


@pytest.fixture(scope="module")
def jans_server():
    yield from _running(server.start("janssen", port=0))


@pytest.fixture(scope="module")
def echo_server():
    yield from _running(echo_mod.start(port=0))


@pytest.fixture
def kc(kc_server):
    kc_server.app.reset()
    return kc_server


@pytest.fixture
def u2(u2_server):
    u2_server.app.reset()
    return u2_server


@pytest.fixture
def jans(jans_server):
    """Janssen with UMA switched on (a fresh Janssen has it off: see test_janssen_*)."""
    jans_server.app.reset()
    jans_server.app.store.settings.uma_feature_enabled = True
    return jans_server


@pytest.fixture
def echo(echo_server):
    requests.post(echo_server.url + "/_echo/reset", timeout=5).raise_for_status()
    return echo_server


@pytest.fixture(params=["keycloak", "uma2", "janssen"])
def any_as(request):
    """Each test using it runs once per profile."""
    return request.getfixturevalue({"keycloak": "kc", "uma2": "u2", "janssen": "jans"}[request.param])


@pytest.fixture(params=["uma2", "janssen"])
def gluu(request):
    """Gluu oxAuth and Janssen: the same UMA code (Janssen with its UMA feature flag on)."""
    return request.getfixturevalue({"uma2": "u2", "janssen": "jans"}[request.param])
