"""The AS side of `access_tokens: {"mode": "decide"}` (docs/access-tokens.md), at devas (a
development/test fixture, NOT for production), exactly as the filter speaks to it:

* Keycloak: the user's access token as `Authorization: Bearer` (no client authentication), a
  ticketless UMA grant with `audience`, ONE `permission` and `response_mode=decision`
  (KC protocol/oidc/grants/PermissionGrantType.process, authorization/util/Tokens.getAccessToken,
  authorization/authorization/AuthorizationTokenService.authorize, isGranted);
* Gluu / Janssen: a ticket asked with the PEP's PAT, then the UMA grant with the PEP's own client
  credentials and the user's ID token as `claim_token` (JS uma/service/UmaTokenService.requestRpt,
  UmaValidationService.validateClaimToken, isIdTokenValid, UmaNeedsInfoService.checkNeedsInfo).

Each assertion names what the real server answers (devas/README.md, conformance table)."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from devas_client import (ALL, APP, ID_TOKEN_FORMAT, PEP, UMA_GRANT, T, bearer, claims_of, control, error_of,
                          introspect, mint, ticket_for, user_tokens)

from devas import server

JWT_FORMAT = "urn:ietf:params:oauth:token-type:jwt"
OPAQUE_APP = ("opaque-app", "opaque-secret")
# Gluu/Janssen seed: one more requesting-party client, left with Gluu's own default for access
# tokens (accessTokenAsJwt off: an opaque UUID), and Janssen's UMA switched on.
GLUU_SEED = {"uma_feature_enabled": True,
             "clients": [{"client_id": OPAQUE_APP[0], "client_secret": OPAQUE_APP[1], "uma_protection": False,
                          "access_token_as_jwt": False}]}


@pytest.fixture(scope="module", params=["uma2", "janssen"])
def gluu_server(request):
    handle = server.start(request.param, port=0, seed=GLUU_SEED)
    yield handle
    handle.stop()


@pytest.fixture
def gl(gluu_server):
    gluu_server.app.reset()
    return gluu_server


# ---- Keycloak: response_mode=decision with the user's own token ---------------------------------

def kc_decide(kc, token: str, *permissions: str, **extra) -> requests.Response:
    """The filter's call: no client authentication, the user's token as Bearer."""
    data = {"grant_type": UMA_GRANT, "audience": PEP[0], "permission": list(permissions),
            "response_mode": "decision", **extra}
    return requests.post(kc.endpoint("token"), data=data, headers=bearer(token), timeout=T)


def test_kc_decision_for_a_users_access_token_follows_the_policy(kc):
    alice = user_tokens(kc, "alice")["access_token"]
    bob = user_tokens(kc, "bob")["access_token"]
    r = kc_decide(kc, alice, "res-alice#protected_delete")   # alice owns her space
    assert r.status_code == 200 and r.json() == {"result": True}, r.text
    assert r.headers["cache-control"] == "no-store"
    assert kc_decide(kc, bob, "res-alice#protected_get").json() == {"result": True}   # a seed grant row
    r = kc_decide(kc, bob, "res-alice#protected_delete")
    assert r.status_code == 403
    # No ticket in the request: `not_authorized` (request_submitted needs a ticket).
    assert r.json() == {"error": "access_denied", "error_description": "not_authorized"}
    assert r.headers["cache-control"] == "no-store"
    assert kc_decide(kc, bob, "res-bob#protected_get").json() == {"result": True}
    assert kc_decide(kc, alice, "res-bob#protected_get").status_code == 403


def test_kc_decision_is_true_when_any_permission_or_any_scope_is_granted(kc):
    """keycloak/keycloak#42437: isGranted is `!permissions.isEmpty()`. Bob may GET but not DELETE
    in alice's space; asked together, the answer is still true. Hence one scope per call."""
    bob = user_tokens(kc, "bob")["access_token"]
    assert kc_decide(kc, bob, "res-alice#protected_delete").status_code == 403
    r = kc_decide(kc, bob, "res-alice#protected_get", "res-alice#protected_delete")
    assert r.status_code == 200 and r.json() == {"result": True}
    r = kc_decide(kc, bob, "res-alice#protected_get,protected_delete")   # one permission, two scopes
    assert r.status_code == 200 and r.json() == {"result": True}


def test_kc_decision_refuses_a_bearer_that_is_no_live_access_token(kc):
    invalid = {"error": "invalid_grant", "error_description": "Invalid bearer token"}
    tokens = user_tokens(kc, "alice")
    for token in ("not-a-token", "a.b.c", tokens["id_token"]):   # an ID token is typ ID, not Bearer
        r = kc_decide(kc, token, "res-alice#protected_get")
        assert r.status_code == 401 and r.json() == invalid, (token[:20], r.text)
    forged = jwt.encode({**claims_of(tokens["access_token"]), "sub": "bob-0002"}, "k" * 32, algorithm="HS256")
    assert kc_decide(kc, forged, "res-alice#protected_get").status_code == 401
    assert kc_decide(kc, tokens["access_token"], "res-alice#protected_get").status_code == 200
    assert control(kc, "revoke", {"kind": "user"}).json()["revoked"] >= 1   # a session that ended
    r = kc_decide(kc, tokens["access_token"], "res-alice#protected_get")
    assert r.status_code == 401 and r.json() == invalid


def test_kc_decision_errors_that_are_the_peps_configuration_not_the_token(kc):
    alice = user_tokens(kc, "alice")["access_token"]
    r = kc_decide(kc, alice, "res-gone#protected_get")
    assert r.status_code == 400 and r.json() == {"error": "invalid_resource",
                                                 "error_description": "Resource with id [res-gone] does not exist."}
    r = kc_decide(kc, alice, "res-alice#protected_get", audience="demo-app")
    assert error_of(r) == (400, "invalid_request")   # not a resource server
    r = kc_decide(kc, alice, "res-alice#protected_get", response_mode="verdict")
    assert r.json() == {"error": "invalid_request", "error_description": "Invalid response_mode"}


def test_kc_decision_takes_an_rpt_as_the_bearer_and_decides_for_its_user(kc):
    """An RPT is an access token (typ Bearer): in decide mode an RPT lacking the permission is
    sent as it is, and the decision is its user's."""
    rpt = mint(kc, sub="bob-0002", permissions=[{"resource_id": "res-bob", "resource_scopes": ["protected_get"]}])
    assert kc_decide(kc, rpt, "res-alice#protected_get").json() == {"result": True}
    assert kc_decide(kc, rpt, "res-alice-docs#protected_get").status_code == 403


# ---- Gluu / Janssen: ticket + UMA grant with the user's ID token as claim_token -------------------

def pat(gl) -> str:
    r = requests.post(gl.endpoint("token"), data={"grant_type": "client_credentials", "scope": "uma_protection"},
                      auth=PEP, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def gluu_decide(gl, claim_token: str | None, rid: str = "res-alice", scope: str = "protected_get",
                fmt: str | None = ID_TOKEN_FORMAT, ticket: str | None = None) -> tuple[str, requests.Response]:
    """The filter's two calls: a ticket with its PAT, then the grant with its own credentials."""
    ticket = ticket or ticket_for(gl, rid, [scope], pat=pat(gl))
    data = {"grant_type": UMA_GRANT, "ticket": ticket}
    if claim_token is not None:
        data["claim_token"] = claim_token
    if fmt is not None:
        data["claim_token_format"] = fmt
    return ticket, requests.post(gl.endpoint("token"), data=data, auth=PEP, timeout=T)


def test_gluu_grant_decides_by_the_claim_tokens_subject(gl):
    alice_id = user_tokens(gl, "alice")["id_token"]
    _, r = gluu_decide(gl, alice_id, "res-alice", "protected_delete")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "pct", "upgraded"}   # no expires_in
    seen = introspect(gl, body["access_token"]).json()
    assert seen["active"] is True and seen["sub"] is None
    assert seen["client_id"] == PEP[0]   # the RPT is the PEP's: it asked for it
    assert seen["pct_claims"]["sub"] == ["alice-0001"] and seen["pct_claims"]["aud"] == [APP[0]]
    assert [p["resource_id"] for p in seen["permissions"]] == ["res-alice"]
    assert "protected_delete" in seen["permissions"][0]["resource_scopes"]
    bob_id = user_tokens(gl, "bob")["id_token"]
    assert gluu_decide(gl, bob_id, "res-alice", "protected_get")[1].status_code == 200   # a seed grant row
    _, r = gluu_decide(gl, bob_id, "res-alice", "protected_delete")
    assert r.status_code == 403 and r.json() == {"error": "forbidden_by_policy",
                                                 "error_description": "forbidden_by_policy"}
    assert error_of(gluu_decide(gl, bob_id, "res-alice-docs")[1]) == (403, "forbidden_by_policy")
    assert error_of(gluu_decide(gl, alice_id, "res-bob")[1]) == (403, "forbidden_by_policy")


def test_gluu_grant_without_a_subject_is_need_info_with_a_new_ticket(gl):
    nameless = jwt.encode({"iss": gl.issuer, "name": "someone"}, key=None, algorithm="none")
    ticket, r = gluu_decide(gl, nameless)
    body = r.json()
    assert r.status_code == 403 and body["error"] == "need_info", r.text
    assert body["ticket"] != ticket and body["required_claims"]
    # The filter's ticket is gone (permissionService.changeTicket): the challenge must carry the new one.
    assert error_of(gluu_decide(gl, user_tokens(gl, "alice")["id_token"], ticket=ticket)[1]) == (400, "invalid_ticket")
    assert gluu_decide(gl, user_tokens(gl, "alice")["id_token"], ticket=body["ticket"])[1].status_code == 200


def test_gluu_takes_only_a_jwt_in_the_id_token_format(gl):
    login = user_tokens(gl, "alice", auth=OPAQUE_APP)
    opaque = login["access_token"]
    assert opaque.count(".") == 0   # accessTokenAsJwt off: Gluu's default access token
    r = requests.get(gl.endpoint("userinfo"), headers=bearer(opaque), timeout=T)
    assert r.status_code == 200 and r.json()["sub"] == "alice-0001"   # a live token all the same
    assert error_of(gluu_decide(gl, opaque)[1]) == (400, "invalid_claim_token")
    assert error_of(gluu_decide(gl, "not-a-token")[1]) == (400, "invalid_claim_token")
    assert error_of(gluu_decide(gl, login["id_token"], fmt=JWT_FORMAT)[1]) == (400, "invalid_claim_token_format")
    assert error_of(gluu_decide(gl, login["id_token"], fmt=None)[1]) == (400, "invalid_claim_token_format")
    assert error_of(gluu_decide(gl, None)[1]) == (400, "invalid_claim_token")   # a format, no token
    assert gluu_decide(gl, login["id_token"])[1].status_code == 200


def test_gluu_does_not_verify_the_claim_token_by_default(gl):
    """umaValidateClaimToken is false in the CE and Jans templates: Jwt.parse only. A forged,
    unsigned token naming alice, and an expired one, get RPTs for alice."""
    assert gl.app.store.settings.uma_validate_claim_token is False
    forged = jwt.encode({"sub": "alice-0001"}, key=None, algorithm="none")
    _, r = gluu_decide(gl, forged, "res-alice", "protected_delete")
    assert r.status_code == 200, r.text
    assert introspect(gl, r.json()["access_token"]).json()["pct_claims"]["sub"] == ["alice-0001"]
    expired = gl.app.key.sign({"iss": gl.issuer, "sub": "alice-0001", "aud": APP[0], "exp": int(time.time()) - 60})
    assert gluu_decide(gl, expired)[1].status_code == 200


def test_gluu_with_claim_token_validation_checks_exp_iss_and_signature_only(gl):
    control(gl, "config", {"uma_validate_claim_token": True})
    at = int(time.time())
    good = {"iss": gl.issuer, "sub": "alice-0001", "exp": at + 300}
    refused = {
        "unsigned": jwt.encode(good, key=None, algorithm="none"),
        "expired": gl.app.key.sign({**good, "exp": at - 60}),
        "another issuer": gl.app.key.sign({**good, "iss": "https://elsewhere.example"}),
        "another key": jwt.encode(good, "k" * 32, algorithm="HS256", headers={"kid": gl.app.key.kid}),
    }
    for what, token in refused.items():
        assert error_of(gluu_decide(gl, token)[1]) == (400, "invalid_claim_token"), what
    assert gluu_decide(gl, user_tokens(gl, "alice")["id_token"])[1].status_code == 200
    # Not checked: `aud` (any client's ID token of this AS) and `typ` (a JWT access token passes).
    assert gluu_decide(gl, gl.app.key.sign({**good, "aud": "some-other-app"}))[1].status_code == 200
    jwt_access = user_tokens(gl, "alice")["access_token"]   # demo-app: devas's JWT access tokens
    assert jwt_access.count(".") == 2 and gluu_decide(gl, jwt_access)[1].status_code == 200


def test_gluu_decision_rpt_covers_what_was_asked_and_is_usable_as_an_rpt(gl):
    """The RPT of a decision is an RPT like any: introspected with the PAT, it covers the ticket's
    resource and scope (what the filter then checks, and what `return_rpt` hands the client)."""
    _, r = gluu_decide(gl, user_tokens(gl, "bob")["id_token"], "res-alice", "protected_get")
    rpt = r.json()["access_token"]
    seen = introspect(gl, rpt).json()
    assert seen["active"] is True
    assert seen["permissions"][0]["resource_id"] == "res-alice"
    assert seen["permissions"][0]["resource_scopes"] == ["protected_get"]
    assert seen["pct_claims"]["sub"] == ["bob-0002"]
    assert set(ALL) >= set(seen["permissions"][0]["resource_scopes"])


def test_control_id_token_is_signed_by_the_as_with_exactly_the_claims_given(gl, kc):
    for as_ in (gl, kc):
        r = requests.post(f"{as_.url}/_devas/id-token", json={"claims": {"name": "x", "aud": "demo-app"},
                                                              "exp_in": -5}, timeout=T)
        assert r.status_code == 200, r.text
        token = r.json()["id_token"]
        claims = jwt.decode(token, jwt.PyJWK(requests.get(as_.endpoint("jwks"), timeout=T).json()["keys"][0]).key,
                            algorithms=["RS256"], audience="demo-app", options={"verify_exp": False})
        assert set(claims) == {"iss", "iat", "exp", "name", "aud"} and claims["iss"] == as_.issuer
        assert claims["exp"] < time.time()
        bad = requests.post(f"{as_.url}/_devas/id-token", json={"claims": []}, timeout=T)
        assert bad.status_code == 400
    # At Gluu, without a subject: need_info (the party is unknown); with validation on, refused as expired.
    _, r = gluu_decide(gl, token_of(gl, name="x"))
    assert error_of(r) == (403, "need_info")
    control(gl, "config", {"uma_validate_claim_token": True})
    assert error_of(gluu_decide(gl, token_of(gl, sub="alice-0001", exp_in=-5))[1]) == (400, "invalid_claim_token")
    assert gluu_decide(gl, token_of(gl, sub="alice-0001"))[1].status_code == 200


def token_of(as_, exp_in: int = 300, **claims) -> str:
    r = requests.post(f"{as_.url}/_devas/id-token", json={"claims": claims, "exp_in": exp_in}, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()["id_token"]


def test_gluu_password_grant_gives_an_id_token_only_with_openid_scope_backward_compatibility(gl):
    """TokenRestWebServiceImpl (ROPC): the ID token needs openidScopeBackwardCompatibility, which
    the CE (setup_app/installers/oxauth.py) and Jans setups write false; devas keeps it on by
    default (its other tests log in with the password grant), devas/README.md says so."""
    assert "id_token" in user_tokens(gl, "alice")
    control(gl, "config", {"openid_scope_backward_compatibility": False})
    body = user_tokens(gl, "alice")
    assert "id_token" not in body and body["access_token"]
