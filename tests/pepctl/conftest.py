"""Fixtures of the pepctl end-to-end tests (the harness is tests/support/)."""

import pytest

from support.devas import DevAs, PROFILES
from support.pepctl import PEPCTL, Pepctl, write_seed


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


@pytest.fixture
def serve_homes(pepctl, tmp_path):
    """Applies a seed file of `entries` with the seeded client, then starts `pepctl serve`;
    stops it at the end of the test."""
    started = []

    def start(entries):
        pepctl.use_seeded_client()
        pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "seed.json", entries)))
        started.append(pepctl.serve())
        return started[-1]

    yield start
    for server in started:
        server.stop()
