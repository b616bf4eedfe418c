"""Wire-format tests of the development AS (both dialects) and of the echo upstream, driven with
`requests` against in-process servers on port 0. devas is a development/test fixture, NOT for
production; these tests pin what the end-to-end tests and `make run` rely on
(devas/README.md; /work/shared/reference/uma-wire-formats.md §1-3, §6)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import time

import jwt
import pytest
import requests

from devas import server

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"
PEP = ("pep-client", "pep-secret")
APP = ("demo-app", "demo-secret")
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}
ALL = ["protected_get", "protected_head", "protected_post", "protected_put", "protected_patch", "protected_delete"]
T = 5  # seconds, every HTTP call


# ---- helpers ------------------------------------------------------------------------------------

def is_kc(as_) -> bool:
    return as_.profile == "keycloak"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def get_pat(as_, auth=PEP, scope="uma_protection") -> str:
    r = requests.post(as_.endpoint("token"), data={"grant_type": "client_credentials", "scope": scope},
                      auth=auth, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def user_tokens(as_, user: str) -> dict:
    r = requests.post(as_.endpoint("token"), data={"grant_type": "password", "username": user,
                                                   "password": PASSWORDS[user], "scope": "openid"},
                      auth=APP, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def ask_ticket(as_, perms, pat=None) -> requests.Response:
    return requests.post(as_.endpoint("permission"), json=perms, headers=bearer(pat or get_pat(as_)), timeout=T)


def ticket_for(as_, rid="res-alice", scopes=("protected_get",), pat=None) -> str:
    r = ask_ticket(as_, [{"resource_id": rid, "resource_scopes": list(scopes)}], pat)
    assert r.status_code == 201, r.text
    return r.json()["ticket"]


def uma_grant(as_, ticket: str, user: str | None = "alice", auth=APP, **extra) -> requests.Response:
    data = {"grant_type": UMA_GRANT, "ticket": ticket, **extra}
    if user:
        data |= {"claim_token": user_tokens(as_, user)["id_token"], "claim_token_format": ID_TOKEN_FORMAT}
    return requests.post(as_.endpoint("token"), data=data, auth=auth, timeout=T)


def introspect(as_, token: str, hint: str | None = None, **kw) -> requests.Response:
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    if is_kc(as_):
        kw.setdefault("auth", PEP)
    elif "headers" not in kw:
        kw["headers"] = bearer(get_pat(as_))
    return requests.post(as_.endpoint("introspection"), data=data, timeout=T, **kw)


def mint(as_, **body) -> str:
    r = requests.post(as_.url + "/_devas/rpt", json=body, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()["rpt"]


def control(as_, name: str, body=None) -> requests.Response:
    return requests.post(f"{as_.url}/_devas/{name}", json=body or {}, timeout=T)


def calls(as_, **params) -> list[dict]:
    return requests.get(as_.url + "/_devas/calls", params=params, timeout=T).json()


def rs(as_) -> str:
    return as_.endpoint("resource_set")


# ---- discovery and keys ---------------------------------------------------------------------------

def test_keycloak_discovery(kc):
    assert kc.issuer == f"http://127.0.0.1:{kc.port}/realms/eoepca"
    d = requests.get(kc.issuer + "/.well-known/uma2-configuration", timeout=T).json()
    base = kc.issuer + "/"
    assert d["issuer"] == kc.issuer
    assert d["token_endpoint"] == base + "protocol/openid-connect/token"
    assert d["introspection_endpoint"] == base + "protocol/openid-connect/token/introspect"
    assert d["jwks_uri"] == base + "protocol/openid-connect/certs"
    assert d["resource_registration_endpoint"] == base + "authz/protection/resource_set"
    assert d["permission_endpoint"] == base + "authz/protection/permission"
    assert d["registration_endpoint"] == base + "clients-registrations/openid-connect"
    assert "uma_profiles_supported" not in d and "claims_interaction_endpoint" not in d
    oidc = requests.get(kc.issuer + "/.well-known/openid-configuration", timeout=T).json()
    assert oidc["userinfo_endpoint"] == base + "protocol/openid-connect/userinfo"
    assert requests.get(f"{kc.url}/realms/other/.well-known/uma2-configuration", timeout=T).status_code == 404


def test_uma2_discovery(u2):
    assert u2.issuer == f"http://127.0.0.1:{u2.port}"
    d = requests.get(u2.issuer + "/.well-known/uma2-configuration", timeout=T).json()
    base = u2.issuer + "/oxauth/restv1/"
    assert d["issuer"] == u2.issuer
    assert d["token_endpoint"] == base + "token"
    assert d["introspection_endpoint"] == base + "rpt/status"
    assert d["jwks_uri"] == base + "jwks"
    assert d["resource_registration_endpoint"] == base + "host/rsrc/resource_set"
    assert d["permission_endpoint"] == base + "host/rsrc_pr"
    assert d["registration_endpoint"] == base + "register"
    assert d["uma_profiles_supported"] == []
    assert d["claims_interaction_endpoint"] and d["scope_endpoint"]
    assert requests.get(base + "uma2-configuration", timeout=T).json() == d
    oidc = requests.get(u2.issuer + "/.well-known/openid-configuration", timeout=T).json()
    assert oidc["userinfo_endpoint"] == base + "userinfo"


def test_jwks_verifies_issued_tokens(any_as):
    keys = requests.get(any_as.endpoint("jwks"), timeout=T).json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert {key["kty"], key["use"], key["alg"]} == {"RSA", "sig", "RS256"} and key["kid"] and key["e"] == "AQAB"
    token = user_tokens(any_as, "alice")["id_token"]
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="demo-app", issuer=any_as.issuer)
    assert claims["sub"] == "alice-0001" and claims["isOperator"] is False


# ---- PAT and protection-API authentication ---------------------------------------------------------

def test_uma2_pat_needs_the_uma_protection_scope(u2):
    r = requests.post(u2.endpoint("token"), data={"grant_type": "client_credentials", "scope": "uma_protection"},
                      auth=PEP, timeout=T)
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "uma_protection" and r.headers["cache-control"] == "no-store"
    perm = [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}]
    assert ask_ticket(u2, perm, body["access_token"]).status_code == 201
    r = ask_ticket(u2, perm, get_pat(u2, scope="openid"))
    assert r.status_code == 406
    assert r.json()["error"] == "invalid_client_scope" and set(r.json()) == {"error", "error_description", "reason"}
    r = requests.post(u2.endpoint("permission"), json=perm, timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "unauthorized_client")
    r = ask_ticket(u2, perm, "no-such-pat")
    assert (r.status_code, r.json()["error"]) == (401, "access_denied")
    # A client not allowed uma_protection never gets it, even when asking.
    assert ask_ticket(u2, perm, get_pat(u2, auth=APP)).status_code == 406


def test_client_authentication(any_as):
    form = {"grant_type": "client_credentials", "scope": "uma_protection",
            "client_id": "pep-client", "client_secret": "pep-secret"}
    assert requests.post(any_as.endpoint("token"), data=form, timeout=T).status_code == 200
    r = requests.post(any_as.endpoint("token"), data=form | {"client_secret": "wrong"}, timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "client_credentials"}, timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "nope"}, auth=PEP, timeout=T)
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")


def test_keycloak_pat_is_a_jwt_and_bad_bearers_get_403(kc):
    pat = get_pat(kc, scope="")  # the scope parameter is ignored
    claims = claims_of(pat)
    assert claims["azp"] == "pep-client" and claims["iss"] == kc.issuer and claims["exp"] - claims["iat"] == 300
    assert requests.get(rs(kc), headers=bearer(pat), timeout=T).status_code == 200
    for headers in ({}, bearer("garbage"), bearer(pat[:-4] + "AAAA"), {"Authorization": "Basic cGVwOnBlcA=="}):
        r = requests.get(rs(kc), headers=headers, timeout=T)
        assert (r.status_code, r.json()["error"]) == (403, "invalid_bearer_token")
    r = requests.get(rs(kc), headers=bearer(get_pat(kc, auth=APP)), timeout=T)  # no uma_protection role
    assert (r.status_code, r.json()["error"]) == (403, "invalid_scope")


def test_reset_keeps_pats_unless_asked_and_config_sets_their_lifetime(any_as):
    pat = get_pat(any_as)
    rpt = mint(any_as, sub="alice-0001", permissions=[])
    control(any_as, "reset")
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code == 200
    assert introspect(any_as, rpt).json() == {"active": False}
    control(any_as, "reset", {"forget_tokens": True})
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code in (401, 403)
    pat = get_pat(any_as)
    assert control(any_as, "revoke", {"kind": "pat"}).json()["revoked"] == 1
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code in (401, 403)
    assert control(any_as, "config", {"pat_lifetime_s": 1}).json()["pat_lifetime_s"] == 1
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "client_credentials", "scope": "uma_protection"},
                      auth=PEP, timeout=T)
    assert r.json()["expires_in"] == 1
    assert control(any_as, "config", {"nope": 1}).status_code == 400


def test_password_grant_and_userinfo(any_as):
    tokens = user_tokens(any_as, "admin")
    id_claims = claims_of(tokens["id_token"])
    assert id_claims["sub"] == "admin-0003" and id_claims["isOperator"] is True and id_claims["aud"] == "demo-app"
    assert claims_of(tokens["access_token"])["aud"] == "demo-app"
    info = requests.get(any_as.endpoint("userinfo"), headers=bearer(tokens["access_token"]), timeout=T)
    assert info.json() == {"sub": "admin-0003", "preferred_username": "admin", "isOperator": True}
    assert requests.get(any_as.endpoint("userinfo"), headers=bearer("bad"), timeout=T).status_code == 401
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "password", "username": "alice",
                                                      "password": "wrong"}, auth=APP, timeout=T)
    assert r.status_code == (401 if is_kc(any_as) else 400) and r.json()["error"] == "invalid_grant"


# ---- permission endpoint -------------------------------------------------------------------------

def test_keycloak_permission_wants_an_array_and_issues_a_jws_ticket(kc):
    pat = get_pat(kc)
    perm = {"resource_id": "res-alice", "resource_scopes": ["protected_get"]}
    r = ask_ticket(kc, perm, pat)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_permission_request")
    r = ask_ticket(kc, [perm], pat)
    assert r.status_code == 201
    ticket = claims_of(r.json()["ticket"])
    assert ticket["permissions"] == [{"rsid": "res-alice", "scopes": ["protected_get"]}]
    assert ticket["aud"] == kc.issuer and ticket["azp"] == "pep-client"
    assert ticket["exp"] == claims_of(pat)["exp"] and ticket["iat"] == claims_of(pat)["iat"]
    by_name = ask_ticket(kc, [{"resource_id": "Alice space", "resource_scopes": []}], pat)
    assert claims_of(by_name.json()["ticket"])["permissions"][0]["rsid"] == "res-alice"


def test_uma2_permission_takes_object_or_array_and_issues_a_uuid(u2):
    perm = {"resource_id": "res-alice", "resource_scopes": ["protected_get"]}
    for body in (perm, [perm]):
        r = ask_ticket(u2, body)
        assert r.status_code == 201 and len(r.json()["ticket"]) == 36 and r.json()["ticket"].count("-") == 4


def test_permission_errors(any_as):
    wrap = (lambda p: [p]) if is_kc(any_as) else (lambda p: p)
    r = ask_ticket(any_as, wrap({"resource_id": "res-nope", "resource_scopes": ["protected_get"]}))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_resource_id")
    r = ask_ticket(any_as, wrap({"resource_id": "res-readonly", "resource_scopes": ["protected_post"]}))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_scope")
    r = requests.post(any_as.endpoint("permission"), data="{", headers=bearer(get_pat(any_as)), timeout=T)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_permission_request")


# ---- the UMA grant -----------------------------------------------------------------------------------

def test_keycloak_owner_gets_a_jwt_rpt(kc):
    r = uma_grant(kc, ticket_for(kc, scopes=["protected_get", "protected_post"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["upgraded"] is False
    rpt = claims_of(body["access_token"])
    assert rpt["aud"] == "pep-client" and rpt["azp"] == "demo-app" and rpt["sub"] == "alice-0001"
    assert rpt["iss"] == kc.issuer and rpt["typ"] == "Bearer" and rpt["exp"] - rpt["iat"] == 300
    assert rpt["authorization"]["permissions"] == [
        {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get", "protected_post"]}]


def test_keycloak_grant_by_bearer_and_partial_and_empty_scopes(kc):
    access = user_tokens(kc, "bob")["access_token"]
    r = requests.post(kc.endpoint("token"), headers=bearer(access), timeout=T,
                      data={"grant_type": UMA_GRANT, "ticket": ticket_for(kc, scopes=["protected_get", "protected_put"])})
    assert r.status_code == 200, r.text  # Keycloak grants what the policy allows (bob: get only)
    assert claims_of(r.json()["access_token"])["authorization"]["permissions"][0]["scopes"] == ["protected_get"]
    r = uma_grant(kc, ticket_for(kc, rid="res-bob", scopes=[]), user="bob")
    assert sorted(claims_of(r.json()["access_token"])["authorization"]["permissions"][0]["scopes"]) == sorted(ALL)


def test_uma2_owner_gets_an_opaque_rpt_and_a_jwt_for_rpt_as_jwt_clients(u2):
    r = uma_grant(u2, ticket_for(u2))
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer" and body["upgraded"] is False and body["pct"]
    assert body["access_token"].count(".") == 0
    r = uma_grant(u2, ticket_for(u2), auth=("jwt-app", "jwt-secret"))
    rpt = claims_of(r.json()["access_token"])
    assert rpt["client_id"] == "jwt-app" and rpt["aud"] == "jwt-app" and rpt["sub"] == "alice-0001"
    assert rpt["permissions"] == [{"resource_id": "res-alice", "resource_scopes": ["protected_get"], "exp": rpt["exp"]}]


def test_grant_denials_per_dialect(any_as):
    r = uma_grant(any_as, ticket_for(any_as, rid="res-bob"), user="alice")  # a stranger
    expected = {"error": "access_denied", "error_description": "not_authorized"} if is_kc(any_as) \
        else {"error": "forbidden_by_policy"}
    assert r.status_code == 403 and expected.items() <= r.json().items()
    assert r.headers["cache-control"] == "no-store"
    # Bob may GET Alice's space, not PUT: uma2 wants every scope.
    if not is_kc(any_as):
        r = uma_grant(any_as, ticket_for(any_as, scopes=["protected_get", "protected_put"]), user="bob")
        assert (r.status_code, r.json()["error"]) == (403, "forbidden_by_policy")


def test_tickets_are_single_use_and_bad_tickets_are_refused(any_as):
    ticket = ticket_for(any_as)
    assert uma_grant(any_as, ticket).status_code == 200
    status, code = (403, "invalid_ticket") if is_kc(any_as) else (400, "invalid_ticket")
    for bad in (ticket, "not-a-ticket"):
        r = uma_grant(any_as, bad)
        assert (r.status_code, r.json()["error"]) == (status, code)


def test_uma2_without_claims_needs_info(u2):
    r = uma_grant(u2, ticket_for(u2), user=None)
    body = r.json()
    assert r.status_code == 403 and body["error"] == "need_info" and body["ticket"] and body["required_claims"]
    assert uma_grant(u2, body["ticket"]).status_code == 200  # the new ticket works


def test_rpt_upgrade_merges_permissions(any_as):
    first = uma_grant(any_as, ticket_for(any_as)).json()["access_token"]
    r = uma_grant(any_as, ticket_for(any_as, rid="res-alice-docs", scopes=["protected_put"]), rpt=first)
    assert r.status_code == 200 and r.json()["upgraded"] is True
    body = introspect(any_as, r.json()["access_token"], hint="requesting_party_token").json()
    assert {p["resource_id"] for p in body["permissions"]} == {"res-alice", "res-alice-docs"}


# ---- introspection ----------------------------------------------------------------------------------

def test_uma2_introspection(u2):
    rpt = uma_grant(u2, ticket_for(u2)).json()["access_token"]
    r = introspect(u2, rpt, hint="ignored")
    body = r.json()
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store" and body["active"] is True
    assert {"exp", "iat", "nbf", "client_id", "sub", "aud", "iss", "jti", "pct_claims"} <= set(body)
    assert body["permissions"] == [{"resource_id": "res-alice", "resource_scopes": ["protected_get"], "exp": body["exp"]}]
    assert body["client_id"] == body["aud"] == "demo-app" and body["pct_claims"]["sub"] == "alice-0001"
    assert "scope" not in body
    assert introspect(u2, "unknown").json() == {"active": False}
    assert introspect(u2, mint(u2, sub="alice-0001", permissions=[], exp_in=-5)).json() == {"active": False}
    r = requests.post(u2.endpoint("introspection"), data={"token": rpt}, auth=PEP, timeout=T)
    assert r.status_code == 401  # a PAT, not client credentials


def test_keycloak_introspection_hints(kc):
    rpt = mint(kc, sub="alice-0001", permissions=[{"resource_id": "res-alice", "resource_scopes": ["protected_get"]},
                                                  {"resource_id": "res-bob", "resource_scopes": []}])
    body = introspect(kc, rpt, hint="requesting_party_token").json()
    assert body["active"] is True and "authorization" not in body
    assert {"exp", "iat", "jti", "aud", "typ", "azp", "sub"} <= set(body)
    assert body["permissions"] == [
        {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"],
         "resource_id": "res-alice", "resource_scopes": ["protected_get"]},
        {"rsid": "res-bob", "rsname": "Bob space", "resource_id": "res-bob", "resource_scopes": []}]
    raw = introspect(kc, rpt).json()
    assert raw["active"] is True and "permissions" not in raw and raw["authorization"]["permissions"]
    r = introspect(kc, rpt, hint="bogus")
    assert r.status_code == 400
    assert introspect(kc, "nope", hint="requesting_party_token").json() == {"active": False}
    inactive = mint(kc, sub="alice-0001", permissions=[], active=False)
    assert introspect(kc, inactive, hint="requesting_party_token").json() == {"active": False}
    r = requests.post(kc.endpoint("introspection"), data={"token": rpt}, headers=bearer(get_pat(kc)), timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    form = {"token": rpt, "client_id": "pep-client", "client_secret": "pep-secret"}
    assert requests.post(kc.endpoint("introspection"), data=form, timeout=T).json()["active"] is True


def test_minted_rpt_shapes(any_as):
    exp_perm = int(time.time()) - 10
    rpt = mint(any_as, sub="alice-0001", exp_in=120, claims={"extra": "x"},
               permissions=[{"resource_id": "res-alice", "resource_scopes": ["protected_get"], "exp": exp_perm}])
    body = introspect(any_as, rpt, hint="requesting_party_token").json()
    assert body["active"] is True and body["extra"] == "x" and body["permissions"][0]["exp"] == exp_perm
    if is_kc(any_as):
        claims = claims_of(rpt)
        assert claims["aud"] == "pep-client" and claims["azp"] == "demo-app"
        assert claims["authorization"]["permissions"][0]["rsid"] == "res-alice"
    else:
        assert "." not in rpt and body["sub"] == "alice-0001"
        assert claims_of(mint(any_as, sub="bob-0002", permissions=[], jwt=True))["sub"] == "bob-0002"


# ---- resource registration ----------------------------------------------------------------------

def test_keycloak_resource_set_crud(kc):
    h = bearer(get_pat(kc))
    new = {"name": "Photos", "uris": ["/alice/photos"], "owner": "alice",
           "resource_scopes": ["protected_get", {"name": "protected_post"}], "icon_uri": "/i.png"}
    r = requests.post(rs(kc), json=new, headers=h, timeout=T)
    assert r.status_code == 201 and "location" not in r.headers
    created = r.json()
    rid = created["_id"]
    assert created["owner"] == {"id": "alice-0001", "name": "alice"} and created["uris"] == ["/alice/photos"]
    assert [s["name"] for s in created["resource_scopes"]] == ["protected_get", "protected_post"]
    r = requests.post(rs(kc), json=new, headers=h, timeout=T)
    assert (r.status_code, r.json()["error"]) == (409, "invalid_request")
    ids = requests.get(rs(kc), headers=h, timeout=T).json()
    assert rid in ids and "res-alice" in ids
    q = lambda **p: requests.get(rs(kc), params=p, headers=h, timeout=T).json()  # noqa: E731
    assert q(name="Photos", exactName="true") == [rid]
    assert q(name="photo") == [rid]
    assert q(uri="/alice/photos") == [rid]
    assert q(owner="bob") == ["res-bob"]
    assert q(uri="/alice", deep="true")[0]["name"] == "Alice space"
    r = requests.put(f"{rs(kc)}/{rid}", json={**new, "name": "Pictures"}, headers=h, timeout=T)
    assert r.status_code == 204 and r.content == b""
    r = requests.put(f"{rs(kc)}/{rid}", json={"name": "Pictures", "resource_scopes": ["protected_get"]}, headers=h, timeout=T)
    updated = requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T).json()
    assert updated["name"] == "Pictures" and updated["owner"]["id"] == "alice-0001"  # owner kept
    assert requests.delete(f"{rs(kc)}/{rid}", headers=h, timeout=T).status_code == 204
    r = requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T)
    assert r.status_code == 404 and r.content == b""


def test_uma2_resource_set_crud(u2):
    h = bearer(get_pat(u2))
    r = requests.post(rs(u2), json={"name": "Eric", "icon_uri": "/eric", "resource_scopes": ["protected_get"]},
                      headers=h, timeout=T)
    assert r.status_code == 201 and set(r.json()) == {"_id"}
    rid = r.json()["_id"]
    got = requests.get(f"{rs(u2)}/{rid}", headers=h, timeout=T).json()
    assert got["icon_uri"] == "/eric" and got["resource_scopes"] == ["protected_get"]
    assert abs(got["exp"] - got["iat"] - 30 * 24 * 3600) <= 1
    r = requests.put(f"{rs(u2)}/{rid}", json={"name": "Eric2", "resource_scopes": ["a"]}, headers=h, timeout=T)
    assert (r.status_code, r.json()) == (200, {"_id": rid})
    assert rid in requests.get(rs(u2), headers=h, timeout=T).json()
    other = requests.post(u2.endpoint("registration"), json={"client_name": "x"}, timeout=T).json()
    other_pat = get_pat(u2, auth=(other["client_id"], other["client_secret"]))
    assert requests.get(rs(u2), headers=bearer(other_pat), timeout=T).json() == []
    assert requests.delete(f"{rs(u2)}/{rid}", headers=h, timeout=T).status_code == 204
    r = requests.get(f"{rs(u2)}/{rid}", headers=h, timeout=T)
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    for method in ("HEAD", "OPTIONS"):
        assert requests.request(method, rs(u2), headers=h, timeout=T).status_code == 405
    r = requests.post(rs(u2), json={"name": "empty", "resource_scopes": []}, headers=h, timeout=T)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_scope")
    expr = json.dumps({"rule": {"and": [{"var": 0}, {"var": 1}]}, "data": ["s1", "s2"]})
    r = requests.post(rs(u2), json={"name": "expr", "scope_expression": expr}, headers=h, timeout=T)
    assert requests.get(f"{rs(u2)}/{r.json()['_id']}", headers=h, timeout=T).json()["resource_scopes"] == ["s1", "s2"]


def test_uma2_expired_resources_disappear(u2):
    h = bearer(get_pat(u2))
    rid = requests.post(rs(u2), json={"name": "old", "resource_scopes": ["a"], "exp": int(time.time()) - 1},
                        headers=h, timeout=T).json()["_id"]
    assert requests.get(f"{rs(u2)}/{rid}", headers=h, timeout=T).status_code == 404
    assert rid not in requests.get(rs(u2), headers=h, timeout=T).json()
    r = ask_ticket(u2, {"resource_id": rid, "resource_scopes": []})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_resource_id")


# ---- dynamic client registration ---------------------------------------------------------------------

def test_registration(any_as):
    r = requests.post(any_as.endpoint("registration"), timeout=T,
                      json={"client_name": "PEP", "grant_types": ["client_credentials"], "scope": "openid uma_protection"})
    body = r.json()
    assert r.status_code == 201 and body["client_secret_expires_at"] == 0 and body["client_id_issued_at"] > 0
    assert body["grant_types"] == ["client_credentials"] and body["client_name"] == "PEP"
    pat = get_pat(any_as, auth=(body["client_id"], body["client_secret"]))
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).json() == []
    if not is_kc(any_as):  # oxAuth takes EOEPCA's trailing comma
        r = requests.post(any_as.endpoint("registration"), data='{"client_name": "x", "scope": "a",}',
                          headers={"Content-Type": "application/scim+json"}, timeout=T)
        assert r.status_code == 201


# ---- faults and the call log --------------------------------------------------------------------------

def test_faults(any_as):
    perm = [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}]
    pat = get_pat(any_as)
    control(any_as, "fault", {"endpoint": "permission", "kind": "drop"})
    with pytest.raises(requests.ConnectionError):
        ask_ticket(any_as, perm, pat)
    control(any_as, "fault", {"endpoint": "permission", "kind": "delay", "delay_ms": 300})
    started = time.monotonic()
    assert ask_ticket(any_as, perm, pat).status_code == 201
    assert time.monotonic() - started >= 0.3
    control(any_as, "fault", {"endpoint": "any", "kind": "status500", "times": 2})
    assert requests.get(any_as.endpoint("jwks"), timeout=T).status_code == 500
    assert ask_ticket(any_as, perm, pat).status_code == 500
    control(any_as, "fault", {"endpoint": "introspection", "kind": "garbage"})
    control(any_as, "fault", {"endpoint": "introspection", "kind": "status503"})
    r = introspect(any_as, "x")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert introspect(any_as, "x").status_code == 503
    assert introspect(any_as, "x").status_code == 200  # queue drained
    control(any_as, "fault", {"endpoint": "token", "kind": "status500", "times": -1, "grant_type": "password"})
    assert requests.post(any_as.endpoint("token"), data={"grant_type": "password"}, timeout=T).status_code == 500
    assert get_pat(any_as)
    assert control(any_as, "fault", {"endpoint": "nope", "kind": "drop"}).status_code == 400
    faulted = [c["fault"] for c in calls(any_as) if "fault" in c]
    assert faulted == ["drop", "delay", "status500", "status500", "garbage", "status503", "status500"]


def test_call_log(any_as):
    requests.get(any_as.url + "/_devas/state", timeout=T)
    pat = get_pat(any_as)
    requests.get(rs(any_as) + "?x=1", headers=bearer(pat), timeout=T)
    requests.get(any_as.url + "/nowhere", timeout=T)
    log = calls(any_as)
    assert [c["endpoint"] for c in log] == ["token", "resource_set", "unknown"]
    token_call = log[0]
    assert token_call["grant_type"] == "client_credentials" and token_call["method"] == "POST"
    assert "scope=uma_protection" in token_call["body"] and token_call["headers"]["authorization"].startswith("Basic ")
    assert log[1]["query"] == "x=1" and log[1]["path"] == rs(any_as).split(str(any_as.port), 1)[1]
    assert [c["endpoint"] for c in calls(any_as, endpoint="resource_set")] == ["resource_set"]
    state = requests.get(any_as.url + "/_devas/state", timeout=T).json()
    assert state["tokens_issued"] == {"client_credentials": 1} and state["calls"] == 3
    control(any_as, "reset")
    assert calls(any_as) == []


# ---- HTTP behaviour ------------------------------------------------------------------------------------

def test_keep_alive_survives_every_kind_of_answer(kc):
    pat = get_pat(kc)
    conn = http.client.HTTPConnection("127.0.0.1", kc.port, timeout=T)
    sock_ids = set()
    rid_body = json.dumps({"name": "ka", "resource_scopes": ["a"]})
    for method, path, body in [("GET", "/realms/eoepca/protocol/openid-connect/certs", None),
                               ("POST", "/realms/eoepca/authz/protection/resource_set", rid_body),
                               ("GET", "/realms/eoepca/authz/protection/resource_set/missing", None),
                               ("HEAD", "/realms/eoepca/authz/protection/resource_set", None),
                               ("GET", "/nowhere", None)]:
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {pat}",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        sock_ids.add(id(conn.sock))
        assert resp.getheader("Content-Length") == str(len(data)) or method == "HEAD"
        if resp.status == 201:
            conn.request("DELETE", path + "/" + json.loads(data)["_id"], headers={"Authorization": f"Bearer {pat}"})
            deleted = conn.getresponse()
            assert deleted.status == 204 and deleted.getheader("Content-Length") is None and deleted.read() == b""
    assert len(sock_ids) == 1
    conn.close()


def test_stop_closes_kept_alive_connections():
    handle = server.start("uma2", port=0)
    session = requests.Session()
    assert session.get(handle.endpoint("jwks"), timeout=T).status_code == 200
    handle.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(handle.endpoint("jwks"), timeout=T)


def test_seed_override_and_cli():
    seed = {"clients": [{"client_id": "pep-client", "client_secret": "other"}],
            "resources": [{"_id": "res-x", "name": "X", "uris": ["/x"], "resource_scopes": ["s"], "owner": "bob-0002"}],
            "rpt_lifetime_s": 42}
    handle = server.start("uma2", port=0, seed=seed)
    try:
        pat = get_pat(handle, auth=("pep-client", "other"))
        ids = requests.get(rs(handle), headers=bearer(pat), timeout=T).json()
        assert "res-x" in ids and "res-alice" in ids
        r = uma_grant(handle, ticket_for(handle, rid="res-x", scopes=["s"], pat=pat), user="bob")
        body = introspect(handle, r.json()["access_token"], headers=bearer(pat)).json()
        assert body["active"] is True and body["exp"] - body["iat"] == 42
    finally:
        handle.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "devas", "--profile", "keycloak", "--port", str(port),
                             "--realm", "demo", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == f"devas ready profile=keycloak issuer=http://127.0.0.1:{port}/realms/demo port={port}"
        assert requests.get(f"http://127.0.0.1:{port}/realms/demo/.well-known/uma2-configuration", timeout=T).ok
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=T)
    assert "NOT for production" in err


# ---- echo upstream ---------------------------------------------------------------------------------------

def test_echo(echo):
    r = requests.post(echo.url + "/a/b?status=500&x=1", data=b"hello",
                      headers={"X-One": "v"}, timeout=T)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    seen = r.json()
    assert seen["method"] == "POST" and seen["path"] == "/a/b?status=500&x=1" and seen["body"] == "hello"
    assert seen["headers"]["x-one"] == "v"
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=T)
    conn.putrequest("GET", "/dup")
    conn.putheader("X-Twice", "1")
    conn.putheader("X-Twice", "2")
    conn.endheaders()
    assert json.loads(conn.getresponse().read())["headers"]["x-twice"] == ["1", "2"]
    conn.close()
    assert requests.head(echo.url + "/h", timeout=T).status_code == 200
    log = requests.get(echo.url + "/_echo/log", timeout=T).json()
    assert [e["path"] for e in log] == ["/a/b?status=500&x=1", "/dup", "/h"]
    assert requests.post(echo.url + "/_echo/reset", timeout=T).ok
    assert requests.get(echo.url + "/_echo/log", timeout=T).json() == []


def test_basic_credentials_are_form_decoded(any_as):
    # RFC 6749 §2.3.1: a client secret with reserved characters arrives form-encoded in Basic.
    handle_seed = {"clients": [{"client_id": "odd client", "client_secret": "p@ss:w%rd"}]}
    handle = server.start(any_as.profile, port=0, seed=handle_seed)
    try:
        raw = base64.b64encode(b"odd+client:p%40ss%3Aw%25rd").decode()
        r = requests.post(handle.endpoint("token"), data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {raw}"}, timeout=T)
        assert r.status_code == 200, r.text
    finally:
        handle.stop()
