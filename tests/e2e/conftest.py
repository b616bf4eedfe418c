"""Fixtures of the end-to-end tests: the development AS in each dialect, the echo upstream and
real Envoy with the filter. The AS and the echo live for the whole session and are reset
before each test; each Envoy lives as long as the test module that asks for it."""

from __future__ import annotations

import pytest

from harness import WASM, DevAs, Echo, Envoy, filter_config  # noqa: F401
from stack_fixtures import _clean_fixtures, echo, envoy_factory, keycloak_as, uma2_as  # noqa: F401


def pytest_sessionstart(session):
    if not WASM.exists():
        raise pytest.UsageError(f"{WASM} is missing: run `make wasm` first")
