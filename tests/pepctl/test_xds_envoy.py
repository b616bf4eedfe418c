"""End to end: pepctl serves the filter's configuration to real Envoy over xDS (ECDS). A Resource
API write answers only once Envoy applied the new table, so a resource is enforced the moment its
creation is answered, and released the moment its deletion is; a table change keeps the filter's
caches, PAT and use counts; a pepctl that lost its database cannot unprotect anything (Envoy
refuses its empty table, and pepctl shows the refusal)."""

from __future__ import annotations

import time

import pytest
import requests

from support.echo import Echo
from support.envoy import WASM, RenderedEnvoy
from support.pepctl import rollout_of, write_seed
from support.processes import free_port


class XdsStack:
    """pepctl serve --xds-listen, and Envoy rendered with --xds-address in front of an echo."""

    def __init__(self, pepctl, tmp_path, *render_extra: str, xds_port: int | None = None, concurrency: int = 1):
        self.pepctl, self.tmp_path = pepctl, tmp_path
        self.echo = Echo()
        self.filter_config = tmp_path / "filter.json"
        self.filter_config.write_text(pepctl.run("render", "filter-config", *render_extra).stdout)
        self.xds_port = xds_port or free_port()
        self.server = None
        self.start_pepctl()
        self.listen, self.admin = free_port(), free_port()
        config = pepctl.render_envoy(self.echo.port, self.listen, self.admin,
                                     "--xds-address", f"127.0.0.1:{self.xds_port}", "--node-id", "envoy-a")
        path = tmp_path / "envoy.json"
        path.write_text(config)
        self.envoy = RenderedEnvoy(path, self.listen, self.admin, concurrency)
        self.base = f"http://127.0.0.1:{self.listen}"

    def start_pepctl(self, wait_ready: bool = True):
        self.server = self.pepctl.serve("--xds-listen", f"127.0.0.1:{self.xds_port}",
                                        "--xds-filter-config", str(self.filter_config), "--xds-wasm", str(WASM),
                                        wait_ready=wait_ready)
        return self.server

    def get(self, path: str, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + path, headers=headers, timeout=10)

    def status(self) -> dict:
        return requests.get(self.server.base + "/xds-status", timeout=5).json()

    def stop(self):
        for part in (self.envoy, self.server, self.echo):
            if part is not None:
                part.stop()


@pytest.fixture
def stack(pepctl, tmp_path):
    made = []

    def start(*render_extra, seed=None, xds_port=None, concurrency=1):
        pepctl.use_seeded_client()
        entries = seed if seed is not None else [
            {"name": "Static", "description": "s", "resource_uri": "/static", "scopes": [],
             "default_owner": "alice-0001"}]
        pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "seed.json", entries)))
        made.append(XdsStack(pepctl, tmp_path, *render_extra, xds_port=xds_port, concurrency=concurrency))
        return made[-1]

    yield start
    for s in made:
        s.stop()


def test_a_write_is_enforced_when_it_is_answered(stack, devas):
    s = stack()
    assert s.get("/static/x").status_code == 401, "the repository's table is served at start"
    status = s.status()
    assert status["serving"] and [e["node"] for e in status["envoys"]] == ["envoy-a"]
    assert status["envoys"][0]["applied"] == status["version"]

    admin = devas.user_token("admin")
    for i in range(12):
        # No wait of any kind between the answer and the request.
        r = s.server.request("POST", "/resources", admin, json={"name": f"Fresh{i}", "icon_uri": f"/fresh{i}"})
        assert r.status_code == 200, r.text
        rollout = rollout_of(r)
        assert (rollout["envoys"], rollout["applied"], rollout["refused"], rollout["pending"]) == (1, 1, 0, 0)
        assert "warning" not in r.headers
        got = s.get(f"/fresh{i}/x")
        assert got.status_code == 401, f"create {i}: answered, but Envoy still let {got.status_code} through"
        assert "ticket=" in got.headers.get("WWW-Authenticate", "")

        rid = r.json()["id"]
        r = s.server.request("DELETE", f"/resources/{rid}", admin)
        assert r.status_code == 204 and rollout_of(r)["applied"] == 1
        assert s.get(f"/fresh{i}/x").status_code == 200, f"delete {i}: answered, but still enforced"
    # An update applies when it is answered too: a move, then enforcement switched off.
    r = s.server.request("POST", "/resources", admin, json={"name": "Mover", "icon_uri": "/before"})
    rid = r.json()["id"]
    r = s.server.request("PATCH", f"/resources/{rid}", admin, json={"icon_uri": "/after"})
    assert r.status_code == 200 and rollout_of(r)["applied"] == 1, (r.status_code, r.text)
    assert s.get("/after/x").status_code == 401 and s.get("/before/x").status_code == 200
    r = s.server.request("PATCH", f"/resources/{rid}", admin, json={"enforcement": "disabled"})
    assert r.status_code == 200 and s.get("/after/x").status_code == 200
    assert s.server.request("DELETE", f"/resources/{rid}", admin).status_code == 204
    # Deleting the last resource of the repository applies too (same generation).
    static = s.server.request("GET", "/resources?path=/static", admin).json()
    assert s.server.request("DELETE", f"/resources/{static['id']}", admin).status_code == 204
    assert s.get("/static/x").status_code == 200


def test_every_worker_enforces_a_write_when_it_is_answered(stack, devas):
    """Envoy's main thread acknowledges a version; each worker takes it from its own event loop an
    instant later. With two workers, requests on fresh connections (spread over both by the
    kernel) right after each answer must all see the write."""
    s = stack(concurrency=2)
    admin = devas.user_token("admin")
    for i in range(6):
        r = s.server.request("POST", "/resources", admin, json={"name": f"Spread{i}", "icon_uri": f"/spread{i}"})
        assert r.status_code == 200 and rollout_of(r)["applied"] == 1, (r.status_code, r.text)
        # requests.get opens a new connection for each call.
        codes = [s.get(f"/spread{i}/x").status_code for _ in range(8)]
        assert codes == [401] * 8, f"create {i}: answered, but some worker let a request through: {codes}"
        assert s.server.request("DELETE", f"/resources/{r.json()['id']}", admin).status_code == 204
        codes = [s.get(f"/spread{i}/x").status_code for _ in range(8)]
        assert codes == [200] * 8, f"delete {i}: answered, but some worker still enforced it: {codes}"
    stats = requests.get(f"http://127.0.0.1:{s.admin}/stats", timeout=5,
                         params={"filter": rf"^listener\.127\.0\.0\.1_{s.listen}\.worker_\d+\.downstream_cx_total$",
                                 "format": "json"}).json()["stats"]
    per_worker = {stat["name"]: stat["value"] for stat in stats}
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker


def filter_calls(devas, *endpoints: str) -> int:
    """Calls the filter made to these endpoints (pepctl's own say `pepctl/` in their user agent)."""
    return sum(1 for e in endpoints for c in devas.calls(e)
               if not c.get("headers", {}).get("user-agent", "").startswith("pepctl/"))


def test_a_table_change_keeps_caches_pat_and_use_counts(stack, devas):
    s = stack("--rpt-max-uses", "3")
    admin = devas.user_token("admin")
    static = s.server.request("GET", "/resources?path=/static", admin).json()
    rpt = devas.mint_rpt("alice-0001", [{"resource_id": static["id"], "resource_scopes": ["protected_get"]}])
    assert s.get("/static/x", rpt).status_code == 200
    assert s.get("/static/x", rpt).status_code == 200
    pats = filter_calls(devas, "token")
    assert pats >= 1
    checks = filter_calls(devas, "introspection", "jwks")

    r = s.server.request("POST", "/resources", admin, json={"name": "Other", "icon_uri": "/other"})
    assert r.status_code == 200 and rollout_of(r)["applied"] == 1
    assert s.get("/other/x").status_code == 401, "the new table is in force"

    # Third use: allowed from the cache, the count goes on from 2; the fourth is refused.
    assert s.get("/static/x", rpt).status_code == 200
    assert filter_calls(devas, "introspection", "jwks") == checks, "the RPT was checked again"
    denied = s.get("/static/x", rpt)
    assert denied.status_code in (401, 403), "the use count restarted with the new table"
    assert filter_calls(devas, "token") == pats, "the PAT was fetched again after the table change"


def test_a_pepctl_that_lost_its_database_cannot_unprotect(stack, devas, pepctl):
    s = stack()
    assert s.get("/static/x").status_code == 401
    s.server.stop()
    # A new, empty database: a new generation with no resource.
    pepctl.db.unlink()
    server = s.start_pepctl()
    # Envoy reconnects, is sent the empty table, and refuses it (its check of the table).
    deadline_status = None
    for _ in range(100):
        deadline_status = s.status()
        envoys = deadline_status["envoys"]
        if envoys and envoys[0]["refused"]:
            break
        time.sleep(0.1)
    envoys = deadline_status["envoys"]
    assert envoys and envoys[0]["refused"], deadline_status
    # Envoy's NACK names the plugin; the filter's log line says why.
    assert "Wasm plugin" in envoys[0]["refused"]["reason"], envoys[0]
    assert envoys[0]["applied"] is None, "nothing this pepctl sent was applied"
    refusal = [line for line in s.envoy.logs().splitlines() if "configuration refused" in line]
    assert refusal and "generation" in refusal[-1] and "authorization server" not in refusal[-1].lower(), refusal
    assert s.get("/static/x").status_code == 401, "the last good table stays"

    # A resource in the new database: a table with content is taken.
    admin = devas.user_token("admin")
    r = server.request("POST", "/resources", admin, json={"name": "New", "icon_uri": "/new"})
    assert r.status_code == 200, r.text
    assert rollout_of(r)["applied"] == 1, r.headers
    assert s.get("/new/x").status_code == 401
    assert s.get("/static/x").status_code == 200, "the new database's table replaced the old"
