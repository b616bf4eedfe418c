"""devas's Gluu oxAuth (`uma2`) and Janssen (`janssen`) dialects (a development/test fixture, NOT
for production), one test per refusal and per wire fact of devas/README.md's conformance table
(sources: GluuFederation/oxAuth, JanssenProject/jans)."""

from __future__ import annotations

import re
import time

import jwt
import requests
from devas_client import (APP, ID_TOKEN_FORMAT, PEP, T, ask_ticket, bearer, claims_of, control, error_of, get_pat,
                          introspect, mint, pat_response, rs, ticket_for, uma_grant)

NULLS = {"exp": None, "iat": None, "nbf": None, "permissions": None, "client_id": None, "sub": None, "aud": None,
         "iss": None, "jti": None, "pct_claims": None}
SCOPE_406 = {"error": "invalid_client_scope", "error_description": "The requested scope is invalid, unknown, or malformed."}


def protection_calls(as_, pat: str) -> list[requests.Response]:
    return [requests.get(rs(as_), headers=bearer(pat), timeout=T),
            ask_ticket(as_, {"resource_id": "res-alice", "resource_scopes": ["protected_get"]}, pat),
            requests.post(as_.endpoint("introspection"), data={"token": "x"}, headers=bearer(pat), timeout=T)]


# ---- PAT ------------------------------------------------------------------------------------------

def test_pat_without_uma_protection_gets_406_everywhere(gluu):
    r = pat_response(gluu)
    assert r.status_code == 200 and "scope" not in r.json() and "refresh_token" not in r.json()
    for call in protection_calls(gluu, r.json()["access_token"]):
        assert call.status_code == 406 and call.json() == SCOPE_406


def test_pat_scopes_not_registered_are_dropped_silently(gluu):
    r = pat_response(gluu, scope="uma_protection bogus openid")
    assert r.status_code == 200 and r.json()["scope"] == "uma_protection openid"
    r = pat_response(gluu, auth=APP, scope="uma_protection")   # demo-app is not registered for it
    assert r.status_code == 200 and r.json()["scope"] == ""
    assert all(c.status_code == 406 for c in protection_calls(gluu, r.json()["access_token"]))


def test_protection_api_authentication(gluu):
    perm = {"resource_id": "res-alice", "resource_scopes": []}
    r = requests.post(gluu.endpoint("permission"), json=perm, timeout=T)
    assert r.status_code == 401 and r.json() == {
        "error": "unauthorized_client",
        "error_description": "The client is not authorized to request an access token using this method."}
    r = requests.post(gluu.endpoint("permission"), json=perm, headers={"Authorization": "Basic eDp5"}, timeout=T)
    assert error_of(r) == (401, "unauthorized_client")
    r = ask_ticket(gluu, perm, "no-such-pat")
    assert r.status_code == 401 and r.json() == {"error": "access_denied",
                                                 "error_description": "The resource owner or AM server denied the request."}


# ---- permission endpoint ----------------------------------------------------------------------------

def test_permission_takes_object_or_array_and_issues_a_uuid(gluu):
    perm = {"resource_id": "res-alice", "resource_scopes": ["protected_get"]}
    for body in (perm, [perm]):
        r = ask_ticket(gluu, body)
        assert r.status_code == 201 and re.fullmatch(r"[0-9a-f-]{36}", r.json()["ticket"])
    assert error_of(ask_ticket(gluu, [])) == (400, "invalid_permission_request")


def test_permission_refusals(gluu):
    r = ask_ticket(gluu, {"resource_id": "res-nope", "resource_scopes": []})
    assert r.status_code == 404 and r.json() == {
        "error": "not_found", "error_description": "The resource set requested from the AM cannot be found."}
    r = ask_ticket(gluu, {"resource_id": " ", "resource_scopes": []})
    assert r.status_code == 400 and r.json() == {"error": "invalid_resource_id", "error_description": "invalid_resource_id"}
    # a scope not on the resource passes if it exists at all (UmaScopeService.getOrCreate)
    assert ask_ticket(gluu, {"resource_id": "res-readonly", "resource_scopes": ["protected_post"]}).status_code == 201
    r = ask_ticket(gluu, {"resource_id": "res-readonly", "resource_scopes": ["no_such_scope"]})
    assert r.status_code == 400 and r.json() == {
        "error": "invalid_scope",
        "error_description": "At least one of the scopes included in the request was not registered previously by this host."}


# ---- resource_set ----------------------------------------------------------------------------------

def test_resource_set_crud(gluu):
    h = bearer(get_pat(gluu))
    body = {"name": "Eric", "icon_uri": "/eric", "resource_scopes": ["protected_get"], "description": "d",
            "uris": ["/ignored"], "owner": "alice", "no_such_field": 1}   # unknown fields are ignored
    r = requests.post(rs(gluu), json=body, headers=h, timeout=T)
    assert r.status_code == 201 and "location" not in r.headers
    rid = r.json()["_id"]
    assert r.json() == {"_id": rid, "user_access_policy_uri": None}
    got = requests.get(f"{rs(gluu)}/{rid}", headers=h, timeout=T).json()
    lifetime = 20 * 24 * 3600 if gluu.profile == "janssen" else 30 * 24 * 3600
    assert got == {"_id": rid, "name": "Eric", "icon_uri": "/eric", "resource_scopes": ["protected_get"],
                   "description": "d", "type": None, "scope_expression": None, "iat": got["iat"], "exp": got["exp"]}
    assert abs(got["exp"] - got["iat"] - lifetime) <= 1
    assert requests.post(rs(gluu), json=body, headers=h, timeout=T).status_code == 201   # duplicate names allowed
    r = requests.put(f"{rs(gluu)}/{rid}", json={"name": "Eric2", "resource_scopes": ["a"]}, headers=h, timeout=T)
    assert (r.status_code, r.json()) == (200, {"_id": rid, "user_access_policy_uri": None})
    assert rid in requests.get(rs(gluu), headers=h, timeout=T).json()
    assert requests.delete(f"{rs(gluu)}/{rid}", headers=h, timeout=T).status_code == 204
    for r in (requests.get(f"{rs(gluu)}/{rid}", headers=h, timeout=T),
              requests.delete(f"{rs(gluu)}/{rid}", headers=h, timeout=T),
              requests.put(f"{rs(gluu)}/{rid}", json={"name": "x", "resource_scopes": ["a"]}, headers=h, timeout=T)):
        assert error_of(r) == (404, "not_found")
    for method in ("HEAD", "OPTIONS"):
        assert requests.request(method, rs(gluu), headers=h, timeout=T).status_code == 405
    assert error_of(requests.options(f"{rs(gluu)}/res-alice", headers=h, timeout=T)) == (405, "unsupported_method_type")


def test_resource_set_refusals(gluu):
    h = bearer(get_pat(gluu))
    post = (lambda b: requests.post(rs(gluu), json=b, headers=h, timeout=T))  # noqa: E731
    r = post({"resource_scopes": ["a"]})   # no name: the persistence layer refuses, createResource answers 500
    assert r.status_code == 500 and r.json()["error"] == "server_error"
    assert error_of(post({"name": "empty", "resource_scopes": []})) == (400, "invalid_scope")
    assert error_of(post({"name": "bad", "scope_expression": "not json logic"})) == (400, "invalid_scope")
    assert error_of(post({"name": "old", "resource_scopes": ["a"], "exp": int(time.time()) - 1})) == (500, "server_error")
    expr = '{"rule":{"and":[{"var":0},{"var":1}]},"data":["s1","s2"]}'
    rid = post({"name": "expr", "scope_expression": expr}).json()["_id"]
    got = requests.get(f"{rs(gluu)}/{rid}", headers=h, timeout=T).json()
    assert got["resource_scopes"] == [] and got["scope_expression"] == expr


def test_expired_resources_disappear(gluu):
    h = bearer(get_pat(gluu))
    rid = requests.post(rs(gluu), json={"name": "short", "resource_scopes": ["a"], "exp": int(time.time()) + 1},
                        headers=h, timeout=T).json()["_id"]
    time.sleep(1.2)
    assert error_of(requests.get(f"{rs(gluu)}/{rid}", headers=h, timeout=T)) == (404, "not_found")
    assert rid not in requests.get(rs(gluu), headers=h, timeout=T).json()
    assert error_of(ask_ticket(gluu, {"resource_id": rid, "resource_scopes": []})) == (404, "not_found")


def test_resources_of_other_clients(gluu):
    other = requests.post(gluu.endpoint("registration"), json={"grant_types": ["client_credentials"]}, timeout=T).json()
    other_pat = get_pat(gluu, auth=(other["client_id"], other["client_secret"]))
    assert requests.get(rs(gluu), headers=bearer(other_pat), timeout=T).json() == []   # the list: own resources
    assert requests.get(f"{rs(gluu)}/res-alice", headers=bearer(other_pat), timeout=T).status_code == 200
    assert ask_ticket(gluu, {"resource_id": "res-alice", "resource_scopes": []}, other_pat).status_code == 201
    control(gluu, "config", {"restrict_resource_to_associated_client": True})
    r = requests.get(f"{rs(gluu)}/res-alice", headers=bearer(other_pat), timeout=T)
    assert error_of(r) == (403, "access_denied")


# ---- UMA grant ------------------------------------------------------------------------------------

def test_grant_answer_has_no_expires_in(gluu):
    r = uma_grant(gluu, ticket_for(gluu))
    body = r.json()
    assert r.status_code == 200 and set(body) == {"access_token", "token_type", "pct", "upgraded"}
    assert body["token_type"] == "Bearer" and body["upgraded"] is False
    assert re.fullmatch(r"[0-9a-f-]{36}_\d{8}", body["access_token"])   # UUID_8digits


def test_tickets_are_reusable_need_info_changes_them(gluu):
    ticket = ticket_for(gluu)
    assert uma_grant(gluu, ticket).status_code == 200
    assert uma_grant(gluu, ticket).status_code == 200   # not consumed until it expires
    r = uma_grant(gluu, ticket, user=None)
    body = r.json()
    assert r.status_code == 403 and body["error"] == "need_info" and body["required_claims"]
    assert body["ticket"] != ticket and body["redirect_user"].endswith(body["ticket"])
    assert error_of(uma_grant(gluu, ticket)) == (400, "invalid_ticket")   # the old ticket is gone
    assert uma_grant(gluu, body["ticket"]).status_code == 200


def test_ticket_refusals(gluu):
    r = uma_grant(gluu, "not-a-ticket")
    assert r.status_code == 400 and r.json() == {"error": "invalid_ticket", "error_description": "invalid_ticket"}
    assert error_of(uma_grant(gluu, " ")) == (400, "invalid_ticket")
    r = requests.post(gluu.endpoint("token"), auth=APP, timeout=T,
                      data={"grant_type": "client_credentials", "ticket": ticket_for(gluu)})
    assert error_of(r) == (400, "invalid_resource_id")   # a ticket goes to the UMA service: wrong grant_type
    control(gluu, "config", {"ticket_lifetime_s": 1})
    old = ticket_for(gluu)
    time.sleep(1.2)
    assert error_of(uma_grant(gluu, old)) == (400, "expired_ticket")


def test_claim_token_and_pct_refusals(gluu):
    ticket = ticket_for(gluu)
    assert error_of(uma_grant(gluu, ticket, user=None, claim_token="x", claim_token_format="urn:ietf:params:oauth:"
                                                                                         "token-type:jwt")) \
        == (400, "invalid_claim_token_format")
    assert error_of(uma_grant(gluu, ticket, user=None, claim_token="garbage",
                              claim_token_format=ID_TOKEN_FORMAT)) == (400, "invalid_claim_token")
    assert error_of(uma_grant(gluu, ticket, user=None, claim_token_format=ID_TOKEN_FORMAT)) == (400, "invalid_claim_token")
    assert error_of(uma_grant(gluu, ticket, user=None, pct="no-such-pct")) == (401, "invalid_pct")
    assert error_of(uma_grant(gluu, ticket, rpt="no-such-rpt")) == (400, "invalid_rpt")
    r = uma_grant(gluu, ticket_for(gluu, rid="res-bob"))   # alice is a stranger to bob's space
    assert r.status_code == 403 and r.json() == {"error": "forbidden_by_policy", "error_description": "forbidden_by_policy"}
    r = uma_grant(gluu, ticket_for(gluu, scopes=["protected_get", "protected_put"]), user="bob")
    assert error_of(r) == (403, "forbidden_by_policy")   # every scope must be allowed
    assert error_of(uma_grant(gluu, ticket_for(gluu, scopes=[]))) == (400, "invalid_scope")


def test_claim_token_is_not_verified_by_default(gluu):
    unsigned = jwt.encode({"sub": "bob-0002", "preferred_username": "bob"}, key=None, algorithm="none")
    r = uma_grant(gluu, ticket_for(gluu, rid="res-bob"), user=None, claim_token=unsigned,
                  claim_token_format=ID_TOKEN_FORMAT)
    assert r.status_code == 200, r.text   # umaValidateClaimToken is false in the CE and Jans templates
    control(gluu, "config", {"uma_validate_claim_token": True})
    r = uma_grant(gluu, ticket_for(gluu, rid="res-bob"), user=None, claim_token=unsigned,
                  claim_token_format=ID_TOKEN_FORMAT)
    assert error_of(r) == (400, "invalid_claim_token")


def test_pct_carries_the_party_to_the_next_grant(gluu):
    pct = uma_grant(gluu, ticket_for(gluu)).json()["pct"]
    r = uma_grant(gluu, ticket_for(gluu), user=None, pct=pct)
    assert r.status_code == 200 and r.json()["pct"] == pct


def test_rpt_upgrade_returns_the_same_rpt(gluu):
    first = uma_grant(gluu, ticket_for(gluu)).json()["access_token"]
    r = uma_grant(gluu, ticket_for(gluu, rid="res-alice-docs", scopes=["protected_put"]), rpt=first)
    assert r.status_code == 200 and r.json()["upgraded"] is True and r.json()["access_token"] == first
    body = introspect(gluu, first).json()
    assert {p["resource_id"] for p in body["permissions"]} == {"res-alice", "res-alice-docs"}


# ---- introspection --------------------------------------------------------------------------------

def test_introspection_sub_is_null_the_party_is_in_pct_claims(gluu):
    rpt = uma_grant(gluu, ticket_for(gluu)).json()["access_token"]
    r = introspect(gluu, rpt, hint="ignored")
    body = r.json()
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store" and body["active"] is True
    assert body["sub"] is None and body["nbf"] is None and body["iss"] is None and body["jti"] is None
    assert body["client_id"] == body["aud"] == "demo-app" and "scope" not in body
    assert body["pct_claims"]["sub"] == ["alice-0001"] and body["pct_claims"]["preferred_username"] == ["alice"]
    assert body["pct_claims"]["isOperator"] == ["false"]   # JwtClaimSet.toMap: lists of strings
    [perm] = body["permissions"]
    assert perm == {"resource_id": "res-alice", "resource_scopes": ["protected_get"], "exp": perm["exp"], "params": None}
    r = requests.get(gluu.endpoint("introspection"), params={"token": rpt}, headers=bearer(get_pat(gluu)), timeout=T)
    assert r.json()["active"] is True   # introspectGet
    r = requests.post(gluu.endpoint("introspection"), data={"token": rpt}, auth=PEP, timeout=T)
    assert error_of(r) == (401, "unauthorized_client")   # a PAT, not client credentials


def test_inactive_introspection_serializes_the_nulls(gluu):
    assert introspect(gluu, "unknown").json() == {"active": False, **NULLS}
    assert introspect(gluu, mint(gluu, sub="alice-0001", permissions=[], exp_in=-5)).json() == {"active": False, **NULLS}
    assert introspect(gluu, get_pat(gluu)).json() == {"active": False, **NULLS}   # only RPTs are known here


def test_minted_rpt_puts_sub_in_pct_claims(gluu):
    rpt = mint(gluu, sub="bob-0002", claims={"extra": "x"},
               permissions=[{"resource_id": "res-alice", "resource_scopes": ["protected_get"]},
                            {"resource_id": "res-bob", "resource_scopes": [], "exp_in": -10}])
    body = introspect(gluu, rpt).json()
    assert "." not in rpt and body["sub"] is None and body["pct_claims"]["sub"] == ["bob-0002"]
    assert body["extra"] == "x" and [p["resource_id"] for p in body["permissions"]] == ["res-alice"]
    control(gluu, "config", {"keep_expired_permissions": True})   # lenient: show the expired one too
    assert len(introspect(gluu, rpt).json()["permissions"]) == 2


def test_jwt_rpts(gluu):
    r = uma_grant(gluu, ticket_for(gluu), auth=("jwt-app", "jwt-secret"))
    rpt = r.json()["access_token"]
    header, claims = jwt.get_unverified_header(rpt), claims_of(rpt)
    assert header["typ"] == "JWT" and header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == gluu.issuer and claims["client_id"] == claims["aud"] == "jwt-app"
    assert not {"sub", "jti", "nbf"} & set(claims) and claims["pct_claims"]["sub"] == "alice-0001"
    assert claims["permissions"] == [{"resource_id": "res-alice", "resource_scopes": ["protected_get"],
                                      "exp": claims["permissions"][0]["exp"], "params": None}]
    assert introspect(gluu, rpt).json()["active"] is True
    r = uma_grant(gluu, ticket_for(gluu), auth=("jwt-hs-app", "jwt-hs-secret"))
    rpt = r.json()["access_token"]
    assert jwt.get_unverified_header(rpt)["alg"] == "HS256"
    assert jwt.decode(rpt, "jwt-hs-secret", algorithms=["HS256"], audience="jwt-hs-app")["client_id"] == "jwt-hs-app"
    assert introspect(gluu, rpt).json()["active"] is True


# ---- Janssen's UMA feature flag -------------------------------------------------------------------

def test_janssen_ships_with_uma_switched_off(jans_server):
    jans = jans_server
    jans.app.reset()
    off = {"error": "access_denied", "error_description": "access_denied"}
    r = requests.get(jans.issuer + "/.well-known/uma2-configuration", timeout=T)
    assert r.status_code == 403 and r.json() == off
    assert requests.get(jans.issuer + "/.well-known/openid-configuration", timeout=T).status_code == 200
    pat = get_pat(jans)   # the token endpoint works
    for call in protection_calls(jans, pat):
        assert call.status_code == 403 and call.json() == off
    jans.app.store.settings.uma_feature_enabled = True
    ticket = ticket_for(jans, pat=pat)
    control(jans, "config", {"uma_feature_enabled": False})
    r = uma_grant(jans, ticket)
    assert r.status_code == 403 and r.json() == off
    assert control(jans, "config", {"uma_feature_enabled": True}).json()["uma_feature_enabled"] is True
    assert requests.get(jans.issuer + "/.well-known/uma2-configuration", timeout=T).status_code == 200
    assert requests.get(jans.issuer + "/.well-known/uma2-configuration", timeout=T).json()["issuer"] == jans.issuer


def test_a_resource_registered_through_the_api_is_owned_by_nobody(gluu):
    # oxAuth keeps no owner for a resource registered through its API: only a policy opens it,
    # and no grant row names this one, so nobody gets it (umaGrantAccessIfNoPolicies=false).
    h = bearer(get_pat(gluu))
    r = requests.post(rs(gluu), json={"name": "Orphan", "resource_scopes": ["protected_get"], "owner": "alice"},
                      headers=h, timeout=T)
    assert r.status_code == 201
    ticket = ticket_for(gluu, rid=r.json()["_id"])
    assert error_of(uma_grant(gluu, ticket)) == (403, "forbidden_by_policy")
