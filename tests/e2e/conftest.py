"""Fixtures of the end-to-end tests: the development AS in each dialect, the echo upstream and
real Envoy with the filter (tests/support/fixtures.py)."""

from __future__ import annotations

import pytest

from support.envoy import WASM
from support.fixtures import _clean_fixtures, echo, envoy_factory, keycloak_as, uma2_as  # noqa: F401


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make wasm` first")
