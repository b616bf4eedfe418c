"""Fixtures of the end-to-end tests: the development AS in each dialect, the echo upstream and
real Envoy with the filter (tests/support/fixtures.py)."""

from __future__ import annotations

import pytest

from support.envoy import WASM
from support.fixtures import _clean_fixtures, echo, envoy_factory, keycloak_as, uma2_as  # noqa: F401


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make wasm` first")


@pytest.fixture(autouse=True)
def _reset_stack(request):
    """A test module's `stack` (an AS, the echo upstream, an Envoy) starts each test clean: the
    AS's calls, faults and grants, and the echo's log."""
    if "stack" in request.fixturenames:
        s = request.getfixturevalue("stack")
        s.as_.reset()
        s.echo.reset()
