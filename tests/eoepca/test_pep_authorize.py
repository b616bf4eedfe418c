"""`testPEPAuthorize` (EOEPCA/um-pep-engine v1.2 `tests/`): PARTIAL mode. A check at `/authorize`
(`X-Original-Method`, `X-Original-Uri`) about a protected resource with a token that is not an
RPT answers 401 with a challenge; the ticket cut out of it (`split("ticket=")[1]`) and the
user's ID token give an RPT (scope `Authenticated` asked, as the old test did); the same check
with the RPT answers 200; the resource is deleted (204). Fixtures: the operator's JWT is the
devas admin's ID token; the client of the UMA grant is the PEP's own, as in the old test."""

from __future__ import annotations

import requests

from support.devas import PEP_CLIENT
from support.eoepca_client import id_token, request_rpt, ticket_of


def authorize(stack, token: str, uri: str) -> requests.Response:
    headers = {"content-type": "application/json", "cache-control": "no-cache", "Authorization": f"Bearer {token}",
               "X-Original-Method": "GET", "X-Original-Uri": uri}
    return requests.get(f"{stack.pep}/authorize", headers=headers, timeout=10)


def get_rpt(stack, token: str, ticket: str) -> str:
    r = request_rpt(stack.token_endpoint, token, ticket, PEP_CLIENT, scope="Authenticated")
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def check_flow(stack, token: str, uri: str) -> None:
    reply = authorize(stack, token, uri)
    assert "WWW-Authenticate" in reply.headers, (reply.status_code, dict(reply.headers))
    assert reply.status_code == 401
    rpt = get_rpt(stack, token, ticket_of(reply))
    assert authorize(stack, rpt, uri).status_code == 200


def test_resource(stack):
    """The old sequence: the resource is created through the Resource API and checked at once."""
    operator = id_token(stack.gluu, "admin")
    name = "TestAuthorizePEP101"
    r = requests.post(f"{stack.res}/resources", json={"resource_scopes": [""], "icon_uri": f"/test/{name}", "name": name},
                      headers={"content-type": "application/json", "Authorization": f"Bearer {operator}"}, timeout=10)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    try:
        check_flow(stack, operator, f"/test/{name}")
    finally:
        deleted = requests.delete(f"{stack.res}/resources/{rid}", headers={"Authorization": f"Bearer {operator}"},
                                  timeout=10)
    assert deleted.status_code == 204


def test_resource_from_the_resource_file(stack):
    """The same assertions on a resource the PEP protects from its start (the old
    `default-resources.json`, here applied with `pepctl resources apply`)."""
    operator = id_token(stack.gluu, "admin")
    check_flow(stack, operator, "/test/FileAuthorizePEP101")


def test_unmatched_check_is_allowed(stack):
    """A check about a path no resource covers answers 200 (the old `authorize` blueprint)."""
    assert authorize(stack, "filler", "/nothing/registered/here").status_code == 200
