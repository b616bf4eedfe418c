"""`/openapi.json` is generated from the Resource API's own types: every answer the API sends,
for each operation and each status it can reach here (success, 400, 401, 403, 404, 422, 502,
503), is one the document lists, and its body validates against the schema the document gives
for it (JSON Schema 2020-12, the dialect of OpenAPI 3.1)."""

import re

import jsonschema
import pytest
import requests

from support.processes import free_port


class Checked:
    """Sends requests to a server and checks each answer against the document."""

    def __init__(self, server, doc):
        self.server, self.doc = server, doc
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        r = self.server.request(method, path, token, **kw)
        template = self.template(path.split("?")[0])
        operation = self.doc["paths"][template][method.lower()]
        documented = operation["responses"]
        assert str(r.status_code) in documented, (method, path, r.status_code, r.text, sorted(documented))
        content = documented[str(r.status_code)].get("content")
        if method == "HEAD" or not content:
            assert r.content == b"", (method, path, r.status_code, r.content)
        else:
            media = r.headers["content-type"].split(";")[0].strip()
            assert media in content, (method, path, media, sorted(content))
            schema = content[media]["schema"]
            value = r.json() if media == "application/json" else r.text
            validator = jsonschema.Draft202012Validator({**schema, "components": self.doc["components"]})
            errors = [e.message for e in validator.iter_errors(value)]
            assert not errors, (method, path, r.status_code, value, errors)
        self.seen.add((method, template, r.status_code))
        return r

    def template(self, path: str) -> str:
        for t in self.doc["paths"]:
            if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", t), path):
                return t
        raise AssertionError(f"{path} is not in the document")


@pytest.fixture
def homes(serve_homes, devas):
    server = serve_homes([{"name": "Alice home", "description": "a", "resource_uri": "/home/alice", "scopes": [],
                           "default_owner": "alice-0001"}])
    doc = requests.get(server.base + "/openapi.json", timeout=5).json()
    return Checked(server, doc), {u: devas.user_token(u) for u in ("alice", "bob", "admin")}


def test_every_answer_validates_against_the_document(homes, pepctl):
    call, t = homes
    assert call.doc["openapi"].startswith("3.1")
    for path in ("/openapi.json", "/healthz", "/readyz", "/filter-config"):
        call("GET", path)
    call("GET", "/resources")
    call("GET", "/resources", "not-a-token")

    made = call("POST", "/resources", t["alice"], json={"name": "Doc", "icon_uri": "/home/alice/doc",
                                                         "description": "d"}).json()
    call("POST", "/resources", t["admin"], json={"name": "Open", "icon_uri": "/open", "resource_scopes": ["open"]})
    call("POST", "/resources", t["admin"], json={"name": "Pub", "icon_uri": "/pub", "resource_scopes": ["public_access"]})
    call("POST", "/resources", t["bob"], json={"name": "X", "icon_uri": "/home/alice/x"})
    call("POST", "/resources", t["alice"], data="{nope")
    call("POST", "/resources", t["alice"], json={"name": "Y", "icon_uri": "/home/alice/y", "scope": []})
    call("POST", "/resources", t["alice"], json={"name": "Doc", "icon_uri": "/home/alice/doc"})

    call("GET", "/resources", t["alice"])
    call("GET", "/resources", t["admin"])
    call("GET", "/resources?path=/home//alice/doc/", t["alice"])
    call("GET", "/resources?path=/nothing", t["alice"])
    call("GET", "/resources?path=relative", t["alice"])
    call("GET", "/resources?path=/home/alice", t["bob"])

    rid = made["id"]
    call("GET", f"/resources/{rid}", t["alice"])
    call("HEAD", f"/resources/{rid}", t["alice"])
    call("GET", f"/resources/{rid}", t["bob"])
    call("GET", "/resources/unknown", t["alice"])
    back = call("GET", f"/resources/{rid}", t["alice"]).json()
    call("PUT", f"/resources/{rid}", t["alice"], json={**back, "name": "Doc 2"})
    call("PUT", f"/resources/{rid}", t["alice"], json={"name": "Doc 3"})
    call("PATCH", f"/resources/{rid}", t["alice"], json={"description": None})
    call("PATCH", f"/resources/{rid}", t["bob"], json={"name": "Mine"})
    call("DELETE", f"/resources/{rid}", t["bob"])
    call("DELETE", f"/resources/{rid}", t["alice"])
    call("DELETE", f"/resources/{rid}", t["alice"])

    for status in (200, 204, 400, 401, 403, 404, 422):
        assert any(s == status for _, _, s in call.seen), (status, sorted(call.seen))


def test_answers_without_the_as_or_the_pdp_validate_too(pepctl, devas):
    pepctl.use_seeded_client()
    with_dead_pdp = pepctl.serve("--pdp-url", f"http://127.0.0.1:{free_port()}")
    try:
        doc = requests.get(with_dead_pdp.base + "/openapi.json", timeout=5).json()
        call = Checked(with_dead_pdp, doc)
        r = call("POST", "/resources", devas.user_token("admin"), json={"name": "P", "icon_uri": "/p"})
        assert r.status_code == 502, r.text
    finally:
        with_dead_pdp.stop()

    pepctl.env["PEPCTL_ISSUER"] = f"http://127.0.0.1:{free_port()}/realms/none"
    waiting = pepctl.serve(wait_ready=False)
    try:
        call = Checked(waiting, doc)
        assert call("GET", "/readyz").status_code == 503
        assert call("GET", "/resources", "some-token").status_code == 503
        assert call("GET", "/filter-config").status_code == 200
    finally:
        waiting.stop()
