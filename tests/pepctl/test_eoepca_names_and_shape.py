"""End to end (real pepctl against devas, both dialects): what existing EOEPCA clients expect of the
Resource API.

* Names are unique per owner, as Keycloak keeps them: the ADES names a resource after the
  application it deploys, so a second user deploying the same application gets a resource of the
  same name (the EOEPCA PEP refused it with 422 and left the second user unprotected). Paths stay
  unique, and one owner cannot hold two resources of one name.
* The answers keep the EOEPCA PEP's field names beside the new ones: `scopes` with
  `resource_scopes` (the ADES reads `scopes` from the create answer and from list items), `_id`,
  `_name`, `_reverse_match_url`, `ownership_id`, and the `Error` header on refusals; every answer
  validates against `/openapi.json`."""

import jsonschema
import requests

from support.devas import ALL_SCOPES


def validate(doc: dict, path: str, method: str, r: requests.Response) -> None:
    documented = doc["paths"][path][method]["responses"]
    assert str(r.status_code) in documented, (method, path, r.status_code, r.text)
    schema = documented[str(r.status_code)]["content"]["application/json"]["schema"]
    errors = [e.message for e in jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
              .iter_errors(r.json())]
    assert not errors, (method, path, r.json(), errors)


def homes(server, admin: str) -> None:
    for owner, path in (("alice-0001", "/alice-space"), ("bob-0002", "/bob-space")):
        r = server.request("POST", "/resources", admin, json={"name": "Workspace", "icon_uri": path,
                                                             "uuid": owner})
        assert r.status_code == 200, (owner, r.status_code, r.headers.get("Error"), r.text)


def test_two_users_deploy_an_application_of_the_same_name(server, devas):
    t = {u: devas.user_token(u) for u in ("alice", "bob", "admin")}
    homes(server, t["admin"])  # already two resources named "Workspace", one per owner
    made = {}
    for user, path in (("alice", "/alice-space/wps"), ("bob", "/bob-space/wps")):
        r = server.request("POST", "/resources", t[user], json={"name": "ADES wps", "icon_uri": path})
        assert r.status_code == 200, (user, r.status_code, r.headers.get("Error"), r.text)
        made[user] = r.json()
    assert made["alice"]["id"] != made["bob"]["id"]
    assert {made["alice"]["ownership_id"], made["bob"]["ownership_id"]} == {"alice-0001", "bob-0002"}
    # Both are registered at the AS, under their own ids.
    ids = set(devas.as_resource_ids())
    assert {made["alice"]["id"], made["bob"]["id"]} <= ids

    # One owner, one name: refused, nothing registered. One path, one resource: refused.
    r = server.request("POST", "/resources", t["alice"], json={"name": "ADES wps", "icon_uri": "/alice-space/2"})
    assert r.status_code == 422 and "already owns a resource named" in r.headers["Error"], r.text
    r = server.request("POST", "/resources", t["admin"], json={"name": "Other", "icon_uri": "/bob-space/wps"})
    assert r.status_code == 422 and r.headers["Error"] == "Resource already exists for URI /bob-space/wps", r.text
    assert set(devas.as_resource_ids()) == ids
    # A transfer that would give bob two of one name is refused; to carol it goes.
    r = server.request("PATCH", f"/resources/{made['alice']['id']}", t["alice"], json={"ownership_id": "bob-0002"})
    assert r.status_code == 422, r.text
    r = server.request("PATCH", f"/resources/{made['alice']['id']}", t["alice"], json={"ownership_id": "carol"})
    assert r.status_code == 200 and r.json()["ownership_id"] == "carol", r.text
    # The operator sees all three of that name.
    listed = server.request("GET", "/resources", t["admin"]).json()
    assert sorted(x["_name"] for x in listed).count("ADES wps") == 2
    assert sorted(x["_name"] for x in listed).count("Workspace") == 2


def test_answers_carry_the_eoepca_field_names(server, devas):
    doc = requests.get(server.base + "/openapi.json", timeout=5).json()
    resource_schema = doc["components"]["schemas"]["Resource"]
    assert "scopes" in resource_schema["properties"] and "scopes" in resource_schema.get("required", []), \
        resource_schema
    t = {u: devas.user_token(u) for u in ("alice", "admin")}
    homes(server, t["admin"])

    r = server.request("POST", "/resources", t["alice"], json={"name": "Job", "icon_uri": "/alice-space/job",
                                                              "resource_scopes": ["protected_get"]})
    validate(doc, "/resources", "post", r)
    made = r.json()
    # What the ADES's client reads, with the names it reads them by.
    assert made["scopes"] == made["resource_scopes"] and sorted(made["scopes"]) == sorted(ALL_SCOPES), made
    assert made["_id"] == made["id"] and made["_name"] == "Job" == made["name"], made
    assert made["_reverse_match_url"] == "/alice-space/job" == made["icon_uri"], made
    assert made["ownership_id"] == "alice-0001", made

    r = server.request("GET", "/resources", t["alice"])
    validate(doc, "/resources", "get", r)
    for item in r.json():
        assert item["scopes"] == item["resource_scopes"] and {"_id", "_name", "_reverse_match_url",
                                                              "ownership_id"} <= item.keys(), item
    r = server.request("GET", "/resources?path=/alice-space/job", t["alice"])
    validate(doc, "/resources", "get", r)
    assert r.json()["scopes"] == made["scopes"]
    r = server.request("GET", f"/resources/{made['id']}", t["alice"])
    validate(doc, "/resources/{id}", "get", r)
    assert r.json()["scopes"] == made["scopes"]

    # The old name is read too, when the new one is absent; and what GET answers can be sent back.
    r = server.request("PATCH", f"/resources/{made['id']}", t["alice"], json={"scopes": ["public_access"]})
    validate(doc, "/resources/{id}", "patch", r)
    assert r.json()["scopes"] == r.json()["resource_scopes"] == ["public_access"], r.text
    back = {**r.json(), "resource_scopes": ["protected_get"]}
    r = server.request("PUT", f"/resources/{made['id']}", t["alice"], json=back)
    validate(doc, "/resources/{id}", "put", r)
    assert "protected_get" in r.json()["scopes"] and r.json()["scopes"] == r.json()["resource_scopes"], r.text

    # Refusals say why in the `Error` header, as the EOEPCA PEP did.
    r = server.request("POST", "/resources", None, json={"name": "N", "icon_uri": "/n"})
    assert r.status_code == 401 and r.headers["Error"] == "no token passed"
    validate(doc, "/resources", "post", r)
    r = server.request("PUT", f"/resources/{made['id']}", devas.user_token("bob"), json=back)
    assert r.status_code == 403 and r.headers["Error"] == "User lacking sufficient access privileges"
    validate(doc, "/resources/{id}", "put", r)
