"""End to end: pepctl keeps an open resource (scope `open`, the EOEPCA PEP v1.2 behaviour) to
itself: `resources apply` and `POST /resources` never register it at the AS (nor ask the PDP),
`/filter-config` serves it, and the filter in real Envoy proxies it with no token while the
resources beside it stay protected. Deleting it needs no AS either."""

import re
import time

import requests

from support.echo import Echo
from support.envoy import RenderedEnvoy
from support.pepctl import write_seed
from support.processes import free_port

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_open_resources_are_kept_from_the_as_and_proxied_unchecked(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "s.json", [
        {"name": "Static", "description": "s", "resource_uri": "/static", "scopes": [], "default_owner": "alice-0001"},
        {"name": "Open", "description": "o", "resource_uri": "/open", "scopes": ["open"]}])
    before = set(devas.as_resource_ids())
    reports = {r["name"]: r for r in pepctl.json("resources", "apply", "-f", str(seed), "--json")}
    assert reports["Open"]["outcome"] == "created" and UUID.match(reports["Open"]["id"]), reports
    registered = set(devas.as_resource_ids()) - before
    assert registered == {reports["Static"]["id"]}, "only the protected resource is registered at the AS"
    again = {r["name"]: r["outcome"] for r in pepctl.json("resources", "apply", "-f", str(seed), "--json")}
    assert again == {"Static": "unchanged", "Open": "unchanged"}

    echo = Echo()
    echo_port = echo.port
    server = pepctl.serve()
    envoy = None
    try:
        table = server.request("GET", "/filter-config").json()
        assert {"id": reports["Open"]["id"], "uri": "/open", "scopes": ["open"], "name": "Open"} in table["resources"]

        admin = devas.user_token("admin")
        r = server.request("POST", "/resources", admin, json={"name": "Also open", "icon_uri": "/also",
                                                             "resource_scopes": ["open"]})
        assert r.status_code == 200, r.text
        also = r.json()
        assert UUID.match(also["id"]) and also["resource_scopes"] == ["open"], also
        assert set(devas.as_resource_ids()) - before == {reports["Static"]["id"]}
        # `open` cannot be taken off (its id would have to become an AS id).
        r = server.request("PATCH", f"/resources/{also['id']}", admin, json={"resource_scopes": ["protected_get"]})
        assert r.status_code == 422 and "open" in r.json()["error_description"], r.text

        listen, admin_port = free_port(), free_port()
        config = pepctl.render_envoy(echo_port, listen, admin_port, "--sync-url", server.base,
                                     "--sync-interval-s", "1", "--unmatched", "deny")
        path = tmp_path / "envoy.json"
        path.write_text(config)
        envoy = RenderedEnvoy(path, listen, admin_port)
        base = f"http://127.0.0.1:{listen}"

        deadline = time.time() + 8
        while time.time() < deadline and requests.get(f"{base}/also/x", timeout=5).status_code != 200:
            time.sleep(0.2)
        asked = len(devas.calls("permission")) + len(devas.calls("introspection"))
        for p in ("/open", "/open/x?y=1", "/also/x"):
            for method in ("GET", "POST", "DELETE"):
                r = requests.request(method, base + p, timeout=5)
                assert r.status_code == 200, (method, p, r.status_code, r.text)
                assert r.json()["path"] == p
        assert len(devas.calls("permission")) + len(devas.calls("introspection")) == asked, "no AS call"
        assert requests.get(f"{base}/static/x", timeout=5).status_code == 401
        assert requests.get(f"{base}/elsewhere", timeout=5).status_code == 403

        r = server.request("DELETE", f"/resources/{also['id']}", admin)
        assert r.status_code == 204, r.text
        deadline = time.time() + 8
        while time.time() < deadline and requests.get(f"{base}/also/x", timeout=5).status_code != 403:
            time.sleep(0.2)
        assert requests.get(f"{base}/also/x", timeout=5).status_code == 403, "deleted: unmatched now"
    finally:
        if envoy is not None:
            envoy.stop()
        server.stop()
        echo.stop()
