"""`testActionReadWrite` (EOEPCA/um-pep-engine v1.2 `tests/`): FULL mode, scopes by action.
The owner (admin) gets a ticket for a read (GET) and for a write (POST) with no RPT (401), trades
each for an RPT and is let through (200). Another user (the old `UserAction`, here bob) is
refused an RPT for a read (403 `forbidden_by_policy` at the token endpoint); once a read policy
that lets anyone in is added at the PDP, bob reads (200) but is still refused a write (403).

Fixtures: the PDP is the stand-in of tests/support/pdp.py (its policies become the AS's grants);
the client of the UMA grant is the PEP's own, as in the old test (its `rpt.sh`)."""

from __future__ import annotations

import requests

from support.devas import PEP_CLIENT
from support.eoepca_client import id_token, request_rpt, ticket_of


def access(stack, token: str, uri: str, action: str) -> requests.Response:
    headers = {"content-type": "application/json", "cache-control": "no-cache", "Authorization": f"Bearer {token}"}
    payload = {"resource_scopes": [], "icon_uri": uri, "name": "TestResourcePEP"}
    method = {"read": "GET", "write": "POST"}[action]
    return requests.request(method, f"{stack.pep}{uri}", headers=headers, data=payload, timeout=10)


def generate_ticket(stack, token: str, uri: str, action: str) -> str:
    res = access(stack, token, uri, action)
    assert "WWW-Authenticate" in res.headers, (res.status_code, dict(res.headers))
    assert res.status_code == 401
    return ticket_of(res)


def get_rpt(stack, ticket: str, token: str, uri: str, action: str) -> int:
    """The old `getRPT`: 403 when the AS refuses by policy, else the status of the access with the RPT."""
    r = request_rpt(stack.token_endpoint, token, ticket, PEP_CLIENT, scope="openid user_name")
    body = r.json()
    if body.get("error") == "forbidden_by_policy":
        return 403
    return access(stack, body["access_token"], uri, action).status_code


def read_policy(rid: str) -> dict:
    """The old `updatePolicy(…, "read", …)`: a policy with no rules (anyone) for reading."""
    return {"name": f"Default Ownership Policy of {rid} with action get",
            "description": "This is the default ownership policy for created resources through PEP",
            "config": {"resource_id": rid, "action": "get", "rules": []}, "scopes": ["protected_get"]}


def action_flow(stack, uri: str, rid: str) -> None:
    admin, user2 = id_token(stack.gluu, "admin"), id_token(stack.gluu, "bob")
    for action in ("read", "write"):
        ticket = generate_ticket(stack, admin, uri, action)
        assert get_rpt(stack, ticket, admin, uri, action) == 200, action
    ticket = generate_ticket(stack, user2, uri, "read")
    assert get_rpt(stack, ticket, user2, uri, "read") == 403
    assert stack.pdp.create_policy(read_policy(rid), admin) == 200
    ticket = generate_ticket(stack, user2, uri, "read")
    assert get_rpt(stack, ticket, user2, uri, "read") == 200
    ticket = generate_ticket(stack, user2, uri, "write")
    assert get_rpt(stack, ticket, user2, uri, "write") == 403


def test_action(stack):
    """The old sequence: the resource is created through the Resource API (its owner's policies
    go to the PDP), then requested at once."""
    admin = id_token(stack.gluu, "admin")
    uri = "/Resource1"
    r = requests.post(f"{stack.res}/resources", json={"resource_scopes": [], "icon_uri": uri, "name": "TestResourcePEP"},
                      headers={"content-type": "application/json", "Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    try:
        action_flow(stack, uri, rid)
    finally:
        deleted = requests.delete(f"{stack.res}/resources/{rid}", headers={"Authorization": f"Bearer {admin}"},
                                  timeout=10)
    assert deleted.status_code == 204


def test_action_on_a_resource_from_the_resource_file(stack):
    """The same assertions on a resource the PEP protects from its start (the old
    `default-resources.json`, applied with `pepctl resources apply`; the owner's policies as the
    old startup registration left them)."""
    action_flow(stack, "/FileResource1", stack.seeded["/FileResource1"])


def test_policies_of_a_created_resource_reach_the_pdp(stack):
    """What the old PEP sent the PDP on creation (the old `resources` blueprint): one default
    ownership policy per method scope, naming the resource, the action and the owner, with the
    caller's own token."""
    admin = id_token(stack.gluu, "admin")
    before = len(stack.pdp.policies)
    r = requests.post(f"{stack.res}/resources", json={"resource_scopes": [], "icon_uri": "/PolicyResource", "name": "P"},
                      headers={"content-type": "application/json", "Authorization": f"Bearer {admin}"}, timeout=10)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    policies = stack.pdp.policies[before:]
    assert {p["config"]["action"] for p in policies} == {"get", "head", "post", "put", "patch", "delete"}
    for p in policies:
        assert p["name"] == f"Default Ownership Policy of {rid} with action {p['config']['action']}"
        assert p["config"]["resource_id"] == rid
        assert p["config"]["rules"] == [{"AND": [{"EQUAL": {"id": "admin-0003"}}]}]
    assert set(stack.pdp.authorizations[before:]) == {f"Bearer {admin}"}
    requests.delete(f"{stack.res}/resources/{rid}", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
