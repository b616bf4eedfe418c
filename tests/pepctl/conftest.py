"""Fixtures of the pepctl end-to-end tests (the harness is pepctl_harness.py)."""

import pytest

from pepctl_harness import PEPCTL, PROFILES, DevAs, Pepctl


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not PEPCTL.exists():
        pytest.fail(f"pepctl binary not found at {PEPCTL}; build it or set PEPCTL_BIN")


@pytest.fixture(params=PROFILES)
def devas(request):
    d = DevAs(request.param)
    yield d
    d.stop()


@pytest.fixture
def pepctl(tmp_path, devas):
    return Pepctl(tmp_path, devas)


@pytest.fixture
def server(pepctl):
    pepctl.use_seeded_client()
    s = pepctl.serve()
    yield s
    s.stop()
