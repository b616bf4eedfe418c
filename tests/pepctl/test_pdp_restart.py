"""PDP default ownership policies with rollback, and durability across restarts and kill -9."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.pepctl import write_seed


class FakePdp:
    """Records policy POSTs; answers 200, or 500 from the `fail_at`-th policy on."""

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.policies: list[dict] = []
        self.authorizations: list[str] = []
        self.deleted: list[str] = []
        pdp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                pdp.policies.append(body)
                pdp.authorizations.append(self.headers.get("Authorization", ""))
                failing = pdp.fail_at is not None and len(pdp.policies) >= pdp.fail_at
                status = 500 if failing else 200
                payload = json.dumps({"error": "boom"} if failing else {"id": f"pol-{len(pdp.policies)}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_DELETE(self):
                pdp.deleted.append(self.path.rsplit("/", 1)[-1])
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def operator(devas):
    return devas.user_token("admin")


def test_pdp_gets_the_seed_policies(pepctl, devas, operator):
    pepctl.use_seeded_client()
    pdp = FakePdp()
    server = pepctl.serve("--pdp-url", pdp.url)
    try:
        r = server.request("POST", "/resources", operator, json={"name": "P", "icon_uri": "/p", "uuid": "bob-0002"})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        assert len(pdp.policies) == 6
        actions = {p["config"]["action"] for p in pdp.policies}
        assert actions == {"get", "head", "post", "put", "patch", "delete"}
        first = pdp.policies[0]
        assert first["config"]["resource_id"] == rid
        assert first["config"]["rules"] == [{"AND": [{"EQUAL": {"id": "bob-0002"}}]}]
        assert first["name"].startswith(f"Default Ownership Policy of {rid} with action ")
        assert set(pdp.authorizations) == {f"Bearer {operator}"}, "the caller's own token"
        # Open resources get no ownership policy.
        r = server.request("POST", "/resources", operator, json={"name": "Open", "icon_uri": "/open", "resource_scopes": ["public_access"]})
        assert r.status_code == 200
        assert len(pdp.policies) == 6
    finally:
        server.stop()
        pdp.stop()


def test_pdp_failure_rolls_back_the_as_registration(pepctl, devas, operator):
    pepctl.use_seeded_client()
    pdp = FakePdp(fail_at=3)
    server = pepctl.serve("--pdp-url", pdp.url)
    try:
        before = set(devas.as_resource_ids())
        r = server.request("POST", "/resources", operator, json={"name": "Half", "icon_uri": "/half"})
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "upstream_error"
        assert set(devas.as_resource_ids()) == before, "the AS registration was undone"
        assert server.request("GET", "/resources?path=/half", operator).status_code == 404
        assert server.request("GET", "/filter-config").json()["resources"] == []
        assert pdp.deleted == ["pol-1", "pol-2"], "policies made before the failure are removed"
        # The name and path are free again once the PDP works.
        pdp.fail_at = None
        r = server.request("POST", "/resources", operator, json={"name": "Half", "icon_uri": "/half"})
        assert r.status_code == 200, r.text
    finally:
        server.stop()
        pdp.stop()


def test_pdp_unreachable_rolls_back_too(pepctl, devas, operator):
    pepctl.use_seeded_client()
    pdp = FakePdp()
    url = pdp.url
    pdp.stop()
    server = pepctl.serve("--pdp-url", url)
    try:
        before = set(devas.as_resource_ids())
        r = server.request("POST", "/resources", operator, json={"name": "Gone", "icon_uri": "/gone"})
        assert r.status_code == 502
        assert set(devas.as_resource_ids()) == before
    finally:
        server.stop()


def test_acknowledged_writes_survive_kill_9(pepctl, devas, operator, tmp_path):
    pepctl.use_seeded_client()
    pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", [
        {"name": "Base", "description": "b", "resource_uri": "/base", "scopes": [], "default_owner": "alice-0001"}])))
    server = pepctl.serve()
    try:
        created = []
        for i in range(5):
            r = server.request("POST", "/resources", operator, json={"name": f"R{i}", "icon_uri": f"/r/{i}", "uuid": "bob-0002"})
            assert r.status_code == 200, r.text
            created.append(r.json()["id"])
        rid = created[0]
        r = server.request("PATCH", f"/resources/{rid}", operator, json={"ownership_id": "alice-0001"})
        assert r.status_code == 200
        version = server.request("GET", "/filter-config").json()["version"]
        server.proc.kill9()
    finally:
        server.stop()

    again = pepctl.serve()
    try:
        listed = {r["id"]: r for r in again.request("GET", "/resources", operator).json()}
        assert set(created) <= set(listed)
        assert listed[rid]["ownership_id"] == "alice-0001", "the transfer survived"
        fc = again.request("GET", "/filter-config").json()
        assert fc["version"] == version
        assert {r["id"] for r in fc["resources"]} >= set(created)
        assert pepctl.json("resources", "show", "/base", "--json")["owner"] == "alice-0001"
    finally:
        again.stop()
