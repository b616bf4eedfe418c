"""devas's Keycloak dialect (a development/test fixture, NOT for production), one test per refusal
and per wire fact of devas/README.md's conformance table (sources: keycloak/keycloak)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests
from devas_client import (ALL, APP, ID_TOKEN_FORMAT, JWT_FORMAT, PEP, T, UMA_GRANT, ask_ticket, bearer, claims_of,
                          control, error_of, get_pat, introspect, mint, pat_response, rs, ticket_for, uma_grant,
                          user_tokens)

from devas import server
from devas.store import Resource


@pytest.fixture(scope="module")
def kc_odd():
    """A realm with the client kinds Keycloak refuses at the token endpoint."""
    seed = {"clients": [
        {"client_id": "public-app", "public_client": True, "uma_protection": False},
        {"client_id": "no-sa", "client_secret": "s", "uma_protection": False, "service_accounts_enabled": False},
        {"client_id": "bearer-only", "client_secret": "s", "uma_protection": False, "bearer_only": True},
        {"client_id": "no-direct", "client_secret": "s", "uma_protection": False,
         "direct_access_grants_enabled": False},
        {"client_id": "gateway", "client_secret": "s", "uma_protection": False,
         "allow_introspection_without_audience_check": True}]}
    handle = server.start("keycloak", port=0, seed=seed)
    yield handle
    handle.stop()


# ---- PAT ------------------------------------------------------------------------------------------

def test_pat_refuses_uma_protection_scope(kc):
    # OAuth2GrantTypeBase.getRequestedScopes -> TokenManager.isValidScope: uma_protection is a client ROLE.
    r = pat_response(kc, scope="uma_protection")
    assert r.status_code == 400 and r.headers["cache-control"] == "no-store"
    assert r.json() == {"error": "invalid_scope", "error_description": "Invalid scopes: uma_protection"}
    r = pat_response(kc, scope="openid uma_protection")
    assert r.json()["error_description"] == "Invalid scopes: openid uma_protection"


def test_pat_accepts_openid_and_client_scopes(kc):
    r = pat_response(kc, scope="openid profile email roles web-origins acr basic address phone offline_access")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id_token"] and body["scope"].startswith("openid ") and body["refresh_expires_in"] == 0
    claims = claims_of(body["access_token"])
    assert claims["azp"] == "pep-client" and claims["resource_access"] == {"pep-client": {"roles": ["uma_protection"]}}
    assert "uma_protection" not in claims["scope"]
    assert "resource_access" not in claims_of(get_pat(kc, auth=APP))  # not a resource server: no role


def test_pat_refused_to_public_bearer_only_and_no_service_account_clients(kc_odd):
    def cc(form):
        return requests.post(kc_odd.endpoint("token"), data={"grant_type": "client_credentials", **form}, timeout=T)
    r = cc({"client_id": "public-app"})
    assert r.status_code == 401 and r.json() == {
        "error": "unauthorized_client", "error_description": "Public client not allowed to retrieve service account"}
    r = cc({"client_id": "no-sa", "client_secret": "s"})
    assert r.status_code == 401 and r.json()["error_description"] == "Client not enabled to retrieve service account"
    r = cc({"client_id": "bearer-only", "client_secret": "s"})
    assert r.status_code == 400 and r.json() == {"error": "invalid_client", "error_description": "Bearer-only not allowed"}


def test_password_grant_needs_direct_access_grants(kc_odd):
    r = requests.post(kc_odd.endpoint("token"), data={"grant_type": "password", "username": "alice",
                                                      "password": "alice-pw"}, auth=("no-direct", "s"), timeout=T)
    assert r.status_code == 400 and r.json()["error_description"] == "Client not allowed for direct access grants"


# ---- protection API identity ----------------------------------------------------------------------

def test_bad_bearers_get_403_invalid_bearer_token(kc):
    pat = get_pat(kc)
    assert requests.get(rs(kc), headers=bearer(pat), timeout=T).status_code == 200
    for headers in ({}, bearer("garbage"), bearer(pat[:-4] + "AAAA"), {"Authorization": "Basic cGVwOnBlcA=="}):
        for r in (requests.get(rs(kc), headers=headers, timeout=T),
                  requests.post(kc.endpoint("permission"), json=[], headers=headers, timeout=T)):
            assert r.status_code == 403 and r.json() == {
                "error": "invalid_bearer_token",
                "error_description": "Could not obtain bearer access_token from request."}


def test_protection_api_wants_a_resource_server(kc):
    pat = get_pat(kc, auth=APP)
    for r in (requests.get(rs(kc), headers=bearer(pat), timeout=T), ask_ticket(kc, [{"resource_id": "res-alice"}], pat)):
        assert r.status_code == 403 and r.json() == {
            "error": "invalid_clientId",
            "error_description": "Client application [demo-app] is not registered as a resource server."}


def test_resource_set_needs_the_uma_protection_role_permission_does_not(kc):
    access = user_tokens(kc, "alice", auth=PEP)["access_token"]   # azp pep-client, a user without the role
    r = requests.get(rs(kc), headers=bearer(access), timeout=T)
    assert r.status_code == 403 and r.json() == {"error": "invalid_scope",
                                                 "error_description": "Requires uma_protection scope."}
    assert ask_ticket(kc, [{"resource_id": "res-alice", "resource_scopes": []}], access).status_code == 201


# ---- resource_set -------------------------------------------------------------------------------

def test_resource_set_refuses_unknown_fields(kc):
    h = bearer(get_pat(kc))
    r = requests.post(rs(kc), json={"name": "x", "description": "no such field"}, headers=h, timeout=T)
    assert r.status_code == 400 and r.text.startswith('{"error":"Unrecognized field \\"description\\"')
    assert "UmaResourceRepresentation" in r.json()["error"]
    r = requests.put(f"{rs(kc)}/res-alice", json={"wrong": "payload"}, headers=h, timeout=T)
    assert r.status_code == 400 and r.text.startswith('{"error":"Unrecognized field')  # python-keycloak's assertion
    r = requests.post(rs(kc), json={"name": "x", "scopes": [{"name": "a", "nope": 1}]}, headers=h, timeout=T)
    assert r.status_code == 400 and "ScopeRepresentation" in r.json()["error"]


def test_resource_set_create_answers_the_representation(kc):
    h = bearer(get_pat(kc))
    new = {"name": "mytest", "scopes": ["test:read", "test:write"], "type": "urn:test"}
    r = requests.post(rs(kc), json=new, headers=h, timeout=T)
    assert r.status_code == 201 and "location" not in r.headers
    created = r.json()
    assert set(new) <= set(created) and created["_id"]   # python-keycloak: the keys include `scopes`
    assert [s["name"] for s in created["resource_scopes"]] == ["test:read", "test:write"]
    assert all(s["id"] for s in created["scopes"])
    rs_client = kc.app.store.clients["pep-client"]
    assert created["owner"] == {"id": rs_client.id, "name": "pep-client"} and created["ownerManagedAccess"] is False
    r = requests.post(rs(kc), json=new, headers=h, timeout=T)
    assert r.status_code == 409 and r.json() == {"error": "invalid_request",
                                                 "error_description": "Resource with name [mytest] already exists."}


def test_resource_set_input_forms_and_owners(kc):
    h = bearer(get_pat(kc))
    post = (lambda body: requests.post(rs(kc), json=body, headers=h, timeout=T))  # noqa: E731
    r = post({"name": "a", "resource_scopes": ["s1", {"name": "s2"}], "uri": "/a", "owner": "alice",
              "ownerManagedAccess": True, "displayName": "A", "icon_uri": "/i.png", "attributes": {"k": "v"}})
    assert r.status_code == 201, r.text
    got = requests.get(f"{rs(kc)}/{r.json()['_id']}", headers=h, timeout=T).json()
    assert got["owner"] == {"id": "alice-0001"} and got["ownerManagedAccess"] is True and got["uris"] == ["/a"]
    assert got["resource_scopes"] == [{"name": "s1"}, {"name": "s2"}] and got["attributes"] == {"k": ["v"]}
    assert post({"name": "a", "owner": {"id": "bob-0002"}}).json()["owner"]["name"] == "bob"  # same name, other owner
    assert post({"name": "b", "owner": {"name": "alice"}}).json()["owner"]["name"] == "pep-client"  # only id counts
    r = post({"name": "c", "owner": "nobody"})
    assert r.status_code == 500 and r.json()["error"] == "unknown_error"
    assert post({"name": "d", "owner": "pep-client"}).status_code == 500  # the RS is its internal id, not clientId


def test_resource_set_update_delete_and_not_found(kc):
    h = bearer(get_pat(kc))
    rid = requests.post(rs(kc), json={"name": "n", "owner": "alice", "scopes": ["x"]}, headers=h, timeout=T).json()["_id"]
    latest = requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T).json()
    latest["name"] = "New Resource Name"
    r = requests.put(f"{rs(kc)}/{rid}", json=latest, headers=h, timeout=T)
    assert r.status_code == 204 and r.content == b""
    got = requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T).json()
    assert got["name"] == "New Resource Name" and got["owner"]["id"] == "alice-0001"   # owner kept
    assert requests.delete(f"{rs(kc)}/{rid}", headers=h, timeout=T).status_code == 204
    for r in (requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T),
              requests.delete(f"{rs(kc)}/{rid}", headers=h, timeout=T),
              requests.put(f"{rs(kc)}/{rid}", json={"name": "z"}, headers=h, timeout=T)):
        assert r.status_code == 404 and r.content == b""


def test_resource_set_list(kc):
    h = bearer(get_pat(kc))
    q = (lambda **p: requests.get(rs(kc), params=p, headers=h, timeout=T).json())  # noqa: E731
    assert q(name="Alice space", exactName="true") == ["res-alice"]
    assert sorted(q(name="alice")) == ["res-alice", "res-alice-docs"]
    assert q(name="Alice", exactName="true") == [] and q(max="0") == []
    assert q(owner="bob") == ["res-bob"] and q(uri="/ALICE/docs") == ["res-alice-docs"]
    assert q(uri="/alice/docs/x", matchingUri="true") == [] and q(first="5") == ["res-readonly"]
    deep = q(uri="/alice", deep="true")
    assert deep[0]["name"] == "Alice space" and "scopes" in deep[0] and "resource_scopes" not in deep[0]
    for i in range(120):
        kc.app.store.resources[f"bulk-{i:03d}"] = Resource(id=f"bulk-{i:03d}", name=f"bulk {i:03d}",
                                                            client_id="pep-client", owner=None, scopes=[])
    assert len(q()) == 100 and len(q(max="200")) == 126   # default max is 100


# ---- permission endpoint ------------------------------------------------------------------------

def test_permission_body_must_be_a_non_empty_array(kc):
    pat = get_pat(kc)
    r = ask_ticket(kc, {"resource_id": "res-alice", "resource_scopes": ["protected_get"]}, pat)
    assert r.status_code == 400 and r.json()["error"].startswith("Cannot deserialize value of type `java.util.ArrayList<")
    r = ask_ticket(kc, [], pat)
    assert r.status_code == 400 and r.json() == {"error": "invalid_permission_request",
                                                 "error_description": "Invalid permission request."}
    r = requests.post(kc.endpoint("permission"), data="{", headers=bearer(pat), timeout=T)
    assert error_of(r) == (400, "invalid_request")
    r = ask_ticket(kc, [{"resource_id": "res-alice", "scope_expression": "x"}], pat)
    assert r.status_code == 400 and r.json()["error"].startswith('Unrecognized field "scope_expression"')


def test_permission_refusals(kc):
    pat = get_pat(kc)
    r = ask_ticket(kc, [{"resource_id": "res-nope", "resource_scopes": ["protected_get"]}], pat)
    assert r.status_code == 400 and r.json() == {
        "error": "invalid_resource_id", "error_description": "Resource set with id [res-nope] does not exists in this server."}
    r = ask_ticket(kc, [{"resource_id": "res-readonly", "resource_scopes": ["protected_post"]}], pat)
    assert r.status_code == 400 and r.json() == {"error": "invalid_scope",
                                                 "error_description": "Scope [protected_post] is invalid"}
    r = ask_ticket(kc, [{"resource_scopes": []}], pat)
    assert r.json() == {"error": "invalid_resource_id", "error_description": "Resource id or name not provided."}
    # by name: only the RS's own resources when the PAT is the RS's service account
    assert error_of(ask_ticket(kc, [{"resource_id": "Alice space"}], pat)) == (400, "invalid_resource_id")
    requests.post(rs(kc), json={"name": "server thing", "scopes": ["x"]}, headers=bearer(pat), timeout=T)
    assert ask_ticket(kc, [{"resource_id": "server thing"}], pat).status_code == 201


def test_ticket_is_an_hs512_jws_that_dies_with_the_pat(kc):
    pat = get_pat(kc)
    ticket = ticket_for(kc, pat=pat)
    assert jwt.get_unverified_header(ticket)["alg"] == "HS512"
    jwk = jwt.PyJWK(requests.get(kc.endpoint("jwks"), timeout=T).json()["keys"][0]).key
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(ticket, jwk, algorithms=["RS256"])   # not verifiable with the JWKS
    claims, pat_claims = claims_of(ticket), claims_of(pat)
    assert claims["permissions"] == [{"rsid": "res-alice", "scopes": ["protected_get"]}]
    assert claims["aud"] == kc.issuer and claims["azp"] == "pep-client" and claims["sub"] == pat_claims["sub"]
    assert (claims["exp"], claims["iat"]) == (pat_claims["exp"], pat_claims["iat"]) and claims["jti"]
    assert "iss" not in claims


# ---- UMA grant ------------------------------------------------------------------------------------

def test_owner_gets_a_jwt_rpt(kc):
    r = uma_grant(kc, ticket_for(kc, scopes=["protected_get", "protected_post"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["upgraded"] is False and body["refresh_token"]
    assert "pct" not in body and body["expires_in"] == 300
    rpt = claims_of(body["access_token"])
    assert rpt["aud"] == "pep-client" and rpt["azp"] == "demo-app" and rpt["sub"] == "alice-0001"
    assert rpt["iss"] == kc.issuer and rpt["typ"] == "Bearer"
    assert rpt["authorization"]["permissions"] == [
        {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get", "protected_post"]}]


def test_claim_token_defaults_to_the_id_token_format_and_bearer_works(kc):
    id_token = user_tokens(kc, "alice")["id_token"]
    r = requests.post(kc.endpoint("token"), auth=APP, timeout=T,
                      data={"grant_type": UMA_GRANT, "ticket": ticket_for(kc), "claim_token": id_token})
    assert r.status_code == 200, r.text
    access = user_tokens(kc, "bob")["access_token"]
    r = requests.post(kc.endpoint("token"), headers=bearer(access), timeout=T,
                      data={"grant_type": UMA_GRANT, "ticket": ticket_for(kc, scopes=["protected_get", "protected_put"])})
    assert r.status_code == 200, r.text  # bob may only GET: the grant keeps what the policy allows
    assert claims_of(r.json()["access_token"])["authorization"]["permissions"][0]["scopes"] == ["protected_get"]
    r = uma_grant(kc, ticket_for(kc, rid="res-bob", scopes=[]), user="bob")
    assert sorted(claims_of(r.json()["access_token"])["authorization"]["permissions"][0]["scopes"]) == sorted(ALL)


def test_tickets_are_reusable_until_they_expire(kc):
    ticket = ticket_for(kc)
    assert uma_grant(kc, ticket).status_code == 200
    assert uma_grant(kc, ticket).status_code == 200   # a self-contained JWS: not consumed
    forged = jwt.encode(claims_of(ticket), "other-key-other-key-other-key-other-key-other-key-0123", algorithm="HS512")
    r = uma_grant(kc, forged)
    assert r.status_code == 403 and r.json() == {"error": "invalid_ticket",
                                                 "error_description": "Ticket verification failed"}
    control(kc, "config", {"pat_lifetime_s": 1})
    old = ticket_for(kc, pat=get_pat(kc))
    time.sleep(1.2)
    r = uma_grant(kc, old)
    assert r.status_code == 403 and r.json() == {"error": "invalid_ticket",
                                                 "error_description": "Invalid permission ticket."}


def test_denials_read_request_submitted_with_a_ticket(kc):
    r = uma_grant(kc, ticket_for(kc, rid="res-bob"))   # alice, a stranger to bob's space
    assert r.status_code == 403 and r.json() == {"error": "access_denied", "error_description": "request_submitted"}
    assert r.headers["cache-control"] == "no-store"
    r = uma_grant(kc, ticket_for(kc, rid="res-bob"), submit_request="false")
    assert r.json()["error_description"] == "not_authorized"
    r = uma_grant(kc, None, audience="pep-client", permission="res-bob#protected_get")
    assert r.json() == {"error": "access_denied", "error_description": "not_authorized"}


def test_response_mode_decision_is_true_when_any_permission_is_granted(kc):
    both = ["res-alice#protected_get", "res-bob#protected_get"]
    r = uma_grant(kc, None, audience="pep-client", permission=both, response_mode="decision")
    assert r.status_code == 200 and r.json() == {"result": True}
    r = uma_grant(kc, None, audience="pep-client", permission="res-bob#protected_get", response_mode="decision")
    assert r.status_code == 403
    r = uma_grant(kc, None, audience="pep-client", permission=both, response_mode="permissions")
    assert r.json() == [{"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"]}]
    r = uma_grant(kc, None, audience="pep-client", permission="res-alice", response_mode="nope")
    assert r.json() == {"error": "invalid_request", "error_description": "Invalid response_mode"}


def test_ticketless_grant_refusals(kc):
    assert uma_grant(kc, None, permission="res-alice").json() == {
        "error": "invalid_request", "error_description": "You must provide the issuedFor"}
    assert uma_grant(kc, None, audience="nope").json()["error_description"] == "Unknown resource server id: [nope]"
    assert uma_grant(kc, None, audience="demo-app").json()["error_description"] == "Client does not support permissions"
    r = uma_grant(kc, None, audience="pep-client", permission="res-nope")
    assert r.status_code == 400 and r.json() == {"error": "invalid_resource",
                                                 "error_description": "Resource with id [res-nope] does not exist."}
    r = uma_grant(kc, None, audience="pep-client", permission="res-alice#zzz")
    assert r.json() == {"error": "invalid_scope", "error_description": "One of the given scopes [zzz] is invalid"}
    r = uma_grant(kc, None, audience="pep-client", permission="#protected_get")   # scopes only: every resource
    assert {p["rsid"] for p in claims_of(r.json()["access_token"])["authorization"]["permissions"]} >= {"res-alice"}


def test_grant_identity_refusals(kc, kc_odd):
    r = requests.post(kc.endpoint("token"), headers=bearer("not-a-token"), timeout=T,
                      data={"grant_type": UMA_GRANT, "ticket": ticket_for(kc)})
    assert r.status_code == 401 and r.json() == {"error": "invalid_grant", "error_description": "Invalid bearer token"}
    r = uma_grant(kc, ticket_for(kc), user=None, claim_token="x", claim_token_format="urn:nope")
    assert r.json() == {"error": "invalid_request", "error_description": "Claim token format [urn:nope] not supported"}
    r = uma_grant(kc, ticket_for(kc), user=None, claim_token="not.a.jwt", claim_token_format=ID_TOKEN_FORMAT)
    assert error_of(r) == (400, "unauthorized_client")
    r = uma_grant(kc, ticket_for(kc), rpt="forged.rpt.value")
    assert r.status_code == 403 and r.json() == {"error": "invalid_rpt", "error_description": "RPT signature is invalid"}
    r = requests.post(kc_odd.endpoint("token"), timeout=T, data={
        "grant_type": UMA_GRANT, "client_id": "public-app", "audience": "pep-client", "claim_token": "e30"})
    assert r.status_code == 403 and r.json() == {"error": "invalid_grant",
                                                 "error_description": "Public clients are not allowed to send claims"}


def test_jwt_claim_token_pushes_claims_the_identity_stays_the_client(kc):
    pushed = base64.urlsafe_b64encode(json.dumps({"organization": ["acme"]}).encode()).decode().rstrip("=")
    r = uma_grant(kc, ticket_for(kc), user=None, claim_token=pushed, claim_token_format=JWT_FORMAT)
    assert r.json()["error_description"] == "request_submitted"   # the service account owns nothing
    r = uma_grant(kc, ticket_for(kc), user=None, claim_token="%%%", claim_token_format=JWT_FORMAT)
    assert r.json() == {"error": "invalid_request", "error_description": "Invalid claims"}


def test_rpt_upgrade_merges_permissions(kc):
    first = uma_grant(kc, ticket_for(kc)).json()["access_token"]
    r = uma_grant(kc, ticket_for(kc, rid="res-alice-docs", scopes=["protected_put"]), rpt=first)
    assert r.status_code == 200 and r.json()["upgraded"] is True
    perms = claims_of(r.json()["access_token"])["authorization"]["permissions"]
    assert {p["rsid"] for p in perms} == {"res-alice", "res-alice-docs"}


# ---- introspection --------------------------------------------------------------------------------

def test_rpt_introspection_has_only_rpt_fields(kc):
    rpt = uma_grant(kc, ticket_for(kc)).json()["access_token"]
    body = introspect(kc, rpt, hint="requesting_party_token").json()
    assert set(body) == {"jti", "acr", "typ", "exp", "iat", "aud", "permissions", "active"}
    assert body["permissions"] == [{"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"],
                                    "resource_id": "res-alice", "resource_scopes": ["protected_get"]}]
    raw = introspect(kc, rpt).json()   # the default hint is access_token: the raw claims
    assert raw["active"] is True and "permissions" not in raw and raw["authorization"]["permissions"]
    assert raw["client_id"] == "demo-app" and raw["sub"] == "alice-0001"


def test_introspection_requires_the_caller_in_aud_by_default(kc, kc_odd):
    rpt = uma_grant(kc, ticket_for(kc)).json()["access_token"]
    assert introspect(kc, rpt, hint="requesting_party_token", auth=APP).json() == {"active": False}
    assert introspect(kc, rpt, hint="requesting_party_token").json()["active"] is True
    control(kc, "config", {"introspection_requires_aud": False})
    assert introspect(kc, rpt, hint="requesting_party_token", auth=APP).json()["active"] is True
    minted = mint(kc_odd, sub="alice-0001", permissions=[])
    r = requests.post(kc_odd.endpoint("introspection"), data={"token": minted}, auth=("gateway", "s"), timeout=T)
    assert r.json()["active"] is True   # allow.token.introspection.without.audience.check


def test_introspection_refusals(kc):
    rpt = mint(kc, sub="alice-0001", permissions=[])
    r = requests.post(kc.endpoint("introspection"), data={"token": rpt}, headers=bearer(get_pat(kc)), timeout=T)
    assert error_of(r) == (401, "invalid_client")
    r = introspect(kc, rpt, hint="bogus")
    assert r.status_code == 400 and r.json()["error_description"] == "Unsupported token type [bogus]."
    r = requests.post(kc.endpoint("introspection"), data={}, auth=PEP, timeout=T)
    assert r.json() == {"error": "invalid_request", "error_description": "Token not provided."}
    assert introspect(kc, "nope", hint="requesting_party_token").json() == {"active": False}
    inactive = mint(kc, sub="alice-0001", permissions=[], active=False)
    assert introspect(kc, inactive, hint="requesting_party_token").json() == {"active": False}


def test_minted_rpt_shapes(kc):
    rpt = mint(kc, sub="alice-0001", exp_in=120, claims={"extra": "x"},
               permissions=[{"resource_id": "res-alice", "resource_scopes": ["protected_get"], "exp_in": -10}])
    claims = claims_of(rpt)
    assert claims["aud"] == "pep-client" and claims["azp"] == "demo-app" and claims["extra"] == "x"
    assert claims["authorization"]["permissions"][0]["rsid"] == "res-alice"
    body = introspect(kc, rpt, hint="requesting_party_token").json()
    assert "extra" not in body and body["permissions"][0]["exp"] < time.time()
