"""`testPEPResources` and `testROChange` (EOEPCA/um-pep-engine v1.2 `tests/`): the Resource API
on its own. Fixtures: the old suite's self-signed operator JWT is the devas admin's ID token
(signed by the AS, `isOperator: true`), its "RO test" user's JWT is bob's, and its unnamed
delegated user is bob."""

from __future__ import annotations

import requests

from support.devas import SUBS
from support.eoepca_client import id_token

SCOPES = "protected_access"


def headers(token: str) -> dict:
    return {"content-type": "application/json", "cache-control": "no-cache", "Authorization": f"Bearer {token}"}


def create(stack, token: str, name: str, uri: str, **extra) -> requests.Response:
    body = {"resource_scopes": [SCOPES], "icon_uri": uri, "name": name, **extra}
    return requests.post(f"{stack.res}/resources", headers=headers(token), json=body, timeout=10)


def get(stack, token: str, rid: str) -> requests.Response:
    return requests.get(f"{stack.res}/resources/{rid}", headers=headers(token), timeout=10)


def listed(stack, token: str) -> requests.Response:
    return requests.get(f"{stack.res}/resources", headers=headers(token), timeout=10)


def update(stack, token: str, rid: str, name: str, uri: str, **extra) -> requests.Response:
    body = {"resource_scopes": [SCOPES], "icon_uri": uri, "name": name, **extra}
    return requests.put(f"{stack.res}/resources/{rid}", headers=headers(token), json=body, timeout=10)


def delete(stack, token: str, rid: str) -> requests.Response:
    return requests.delete(f"{stack.res}/resources/{rid}", headers=headers(token), timeout=10)


def test_resource(stack):
    """The monolithic `test_resource`: create, read, list, rename, ownership change refused to a
    non-owner and done by an operator, delete by the new owner, then gone."""
    operator, ro = id_token(stack.gluu, "admin"), id_token(stack.gluu, "bob")
    name, uri = "TestResourcePEP3", "/TestResourcePEP3"

    r = create(stack, operator, name, uri)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]

    r = get(stack, operator, rid)
    assert r.status_code == 200
    assert r.json()["_id"] == rid

    r = listed(stack, operator)
    assert r.status_code == 200
    assert any(item["_id"] == rid for item in r.json())

    assert update(stack, operator, rid, name + "Mod", uri).status_code == 200
    r = get(stack, operator, rid)
    assert r.json()["_id"] == rid
    assert r.json()["_name"] == name + "Mod"

    # Ownership change by the RO user, who neither owns it nor is an operator: refused.
    r = update(stack, ro, rid, name + "Mod", uri, ownership_id=SUBS["bob"])
    assert r.status_code == 403
    assert r.headers["Error"]
    # The same change by the operator: done.
    assert update(stack, operator, rid, name + "Mod", uri, ownership_id=SUBS["bob"]).status_code == 200

    # The new owner deletes it.
    assert delete(stack, ro, rid).status_code == 204

    r = get(stack, operator, rid)
    assert r.status_code == 404
    assert r.headers["Error"]
    # v1.0 answered an empty list with 404; v1.2 (the version translated) and uma-pep answer 200
    # with the list, which no longer holds the resource.
    r = listed(stack, operator)
    assert r.status_code == 200
    assert all(item["_id"] != rid for item in r.json())


def test_swagger_ui(stack):
    """`swaggerUI`: the interfaces page is served, as an HTML page with a title. The old PEP served
    Swagger UI at `/swagger-ui` titled "Policy Enforcement Point Interfaces"; pepctl serves its
    page at `/docs` (tests/pepctl/test_docs_page.py)."""
    reply = requests.get(f"{stack.res}/docs", timeout=10)
    assert reply.status_code == 200
    page = reply.text
    title = page[page.find("<title>") + 7: page.find("</title>")]
    assert "Resource API" in title


def test_access_enforcement(stack):
    """`access_enforcement`: a resource read through the API with a token that is not one is
    refused, with a valid token it is answered. The old PEP crashed on `Bearer filler` (500);
    uma-pep answers 401, a kept fix."""
    operator = id_token(stack.gluu, "admin")
    r = create(stack, operator, "TestResourcePEP3_access_enforcement", "/TestResourcePEP3_access_enforcement")
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    try:
        refused = get(stack, "filler", rid)
        assert refused.status_code == 401
        assert refused.headers["Error"]
        assert get(stack, operator, rid).status_code == 200
    finally:
        delete(stack, operator, rid)


def test_delegated_resource(stack):
    """`createDelegatedTestResource`: an operator creates a resource on behalf of a user (`uuid`)."""
    operator = id_token(stack.gluu, "admin")
    r = create(stack, operator, "TestResourcePEP3Delegated", "/TestResourcePEP3Delegated", uuid=SUBS["bob"])
    assert r.status_code == 200, r.text
    assert r.json()["ownership_id"] == SUBS["bob"]
    delete(stack, operator, r.json()["id"])


def test_ro_change(stack):
    """`testROChange`: a non-operator user creates a resource; another user cannot take it over,
    the owner can give it away, and the new owner deletes it. A user creates only under a path
    they own (the old `verify_previous_uri_ownership`, kept by pepctl), so the resource is made
    in alice's space of the resource file."""
    owner, ro = id_token(stack.gluu, "alice"), id_token(stack.gluu, "bob")
    name, uri = "TestROChange", "/alice-space/TestROChange"
    r = create(stack, owner, name, uri)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    assert update(stack, ro, rid, name, uri, ownership_id=SUBS["bob"]).status_code == 403
    assert update(stack, owner, rid, name, uri, ownership_id=SUBS["bob"]).status_code == 200
    assert delete(stack, ro, rid).status_code == 204
