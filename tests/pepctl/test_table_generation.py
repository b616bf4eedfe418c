"""End to end (real pepctl, devas, real Envoy with the filter polling `/filter-config`): deleting
the last resource through the Resource API releases its path, while a pepctl that lost its
database (and serves an empty table of a new generation) leaves the filter's last good table in
force. The EOEPCA PEP answered a deleted resource's path as unprotected at once; the filter must
neither block it (the old table kept, its resource gone from the AS) nor unprotect everything when
pepctl's database is gone. A refused table is reported as pepctl's, never as the AS's."""

import time

import pytest
import requests

from support.echo import Echo
from support.envoy import RenderedEnvoy
from support.processes import free_port

SYNC_INTERVAL_S = 1


def wait_status(url: str, status: int, timeout: float = SYNC_INTERVAL_S + 8) -> requests.Response:
    deadline = time.time() + timeout
    while True:
        r = requests.get(url, timeout=5)
        if r.status_code == status or time.time() > deadline:
            return r
        time.sleep(0.2)


@pytest.fixture
def stack(pepctl, tmp_path):
    """pepctl serve (empty repository) and a rendered Envoy that syncs from it every second."""
    pepctl.use_seeded_client()
    echo = Echo()
    server = pepctl.serve()
    listen, admin = free_port(), free_port()
    config = pepctl.render_envoy(echo.port, listen, admin, "--sync-url", server.base,
                                 "--sync-interval-s", str(SYNC_INTERVAL_S))
    path = tmp_path / "envoy.json"
    path.write_text(config)
    envoy = RenderedEnvoy(path, listen, admin)
    state = {"server": server}
    yield state, envoy, f"http://127.0.0.1:{listen}"
    envoy.stop()
    state["server"].stop()
    echo.stop()


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_deleting_the_last_resource_releases_its_path(stack, devas):
    state, envoy, base = stack
    server = state["server"]
    admin = devas.user_token("admin")
    r = server.request("POST", "/resources", admin, json={"name": "Only", "icon_uri": "/only"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    assert wait_status(f"{base}/only/x", 401).status_code == 401, "the created resource is enforced"

    table = server.request("GET", "/filter-config").json()
    generation = table["generation"]
    assert len(generation) == 32 and [x["id"] for x in table["resources"]] == [rid], table

    assert server.request("DELETE", f"/resources/{rid}", admin).status_code == 204
    table = server.request("GET", "/filter-config").json()
    assert table["resources"] == [] and table["generation"] == generation, table

    # The table, now empty, is of the generation the filter follows: the deletion applies, and the
    # path is unmatched again (unmatched=allow), not blocked with an "AS unreachable" 403.
    r = wait_status(f"{base}/only/x", 200)
    assert r.status_code == 200, (r.status_code, r.headers, r.text, envoy.logs()[-2000:])
    assert "Warning" not in r.headers
    assert r.json()["path"] == "/only/x", "proxied to the upstream"
    assert "empty table refused" not in envoy.logs()


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_a_pepctl_that_lost_its_database_does_not_unprotect(stack, pepctl, devas):
    state, envoy, base = stack
    server = state["server"]
    admin = devas.user_token("admin")
    r = server.request("POST", "/resources", admin, json={"name": "Kept", "icon_uri": "/kept"})
    assert r.status_code == 200, r.text
    assert wait_status(f"{base}/kept/x", 401).status_code == 401
    old_generation = server.request("GET", "/filter-config").json()["generation"]

    # pepctl comes back on its address with a new, empty database.
    address = server.base.removeprefix("http://")
    server.stop()
    for suffix in ("", "-wal", "-shm"):
        pepctl.db.with_name(pepctl.db.name + suffix).unlink(missing_ok=True)
    server = state["server"] = pepctl.serve(listen=address)
    table = server.request("GET", "/filter-config").json()
    assert table["resources"] == [] and table["generation"] != old_generation, table

    deadline = time.time() + 3 * SYNC_INTERVAL_S + 2
    while time.time() < deadline:
        assert requests.get(f"{base}/kept/x", timeout=5).status_code == 401, "the last good table stays"
        time.sleep(0.3)
    logs = envoy.logs()
    assert "pepctl's resource table is empty and of generation" in logs, logs[-3000:]
    refusals = [line for line in logs.splitlines() if "resource table" in line and "keeping the last good" in line]
    assert refusals and not any("Authorization Server" in line for line in refusals), refusals

    # Content counts: a resource created in the new database is a table the filter takes.
    r = server.request("POST", "/resources", admin, json={"name": "New", "icon_uri": "/new"})
    assert r.status_code == 200, r.text
    assert wait_status(f"{base}/new/x", 401).status_code == 401
    assert requests.get(f"{base}/kept/x", timeout=5).status_code == 200
