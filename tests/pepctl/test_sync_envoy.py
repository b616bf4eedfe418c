"""End to end: resources created (and deleted) through `pepctl serve` are enforced (and released)
by the filter in real Envoy within the sync interval (`resource_sync` polling of `/filter-config`),
with no restart; with pepctl down the filter keeps its last good table."""

import json
import time

import requests

from support.echo import Echo
from support.envoy import RenderedEnvoy
from support.pepctl import write_seed
from support.processes import free_port

SYNC_INTERVAL_S = 1


def test_created_resource_is_enforced_within_the_sync_interval(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    pepctl.env["PEPCTL_LOG"] = "pepctl=debug,info"
    pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", [
        {"name": "Static", "description": "s", "resource_uri": "/static", "scopes": [], "default_owner": "alice-0001"}])))
    echo = Echo()
    echo_port = echo.port
    server = pepctl.serve()
    envoy = None
    try:
        listen, admin = free_port(), free_port()
        config = pepctl.render_envoy(echo_port, listen, admin, "--sync-url", server.base,
                                     "--sync-interval-s", str(SYNC_INTERVAL_S))
        path = tmp_path / "envoy.json"
        path.write_text(config)
        envoy = RenderedEnvoy(path, listen, admin)
        base = f"http://127.0.0.1:{listen}"

        assert requests.get(f"{base}/static/x", timeout=5).status_code == 401, "the rendered table is enforced"
        assert requests.get(f"{base}/fresh/x", timeout=5).status_code == 200, "unmatched passes (allow)"

        admin_token = devas.user_token("admin")
        r = server.request("POST", "/resources", admin_token, json={"name": "Fresh", "icon_uri": "/fresh"})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]

        status, waited, start = None, 0.0, time.time()
        while time.time() - start < SYNC_INTERVAL_S + 5:
            resp = requests.get(f"{base}/fresh/x", timeout=5)
            status = resp.status_code
            if status == 401:
                break
            time.sleep(0.2)
        waited = time.time() - start
        polled = "filter-config served" in server.proc.output()
        assert status == 401, f"not enforced after {waited:.1f}s (filter polled pepctl: {polled})"
        print(f"enforced {waited:.2f}s after creation (sync interval {SYNC_INTERVAL_S}s)")
        assert "ticket=" in resp.headers.get("WWW-Authenticate", "")
        asked = [json.loads(c["body"]) for c in devas.calls("permission") if c.get("body")]
        flat = [p for a in asked for p in (a if isinstance(a, list) else [a])]
        assert any(p.get("resource_id") == rid for p in flat), "the ticket is for the new id"

        # Deleted through the API: no longer protected after the next poll.
        assert server.request("DELETE", f"/resources/{rid}", admin_token).status_code == 204
        start = time.time()
        while time.time() - start < SYNC_INTERVAL_S + 5:
            if requests.get(f"{base}/fresh/x", timeout=5).status_code == 200:
                break
            time.sleep(0.2)
        assert requests.get(f"{base}/fresh/x", timeout=5).status_code == 200, "deletion not picked up"

        # pepctl down: the filter keeps its last good table.
        server.stop()
        time.sleep(3 * SYNC_INTERVAL_S + 0.5)
        assert requests.get(f"{base}/static/x", timeout=5).status_code == 401
        assert requests.get(f"{base}/fresh/x", timeout=5).status_code == 200
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
        echo.stop()
