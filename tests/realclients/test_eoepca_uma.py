"""eoepca-uma 0.2.4 (EOEPCA/um-common-uma-client), the seed EOEPCA PEP's own UMA library, written
against Gluu oxAuth, driven against devas in the uma2 dialect: resource registration, permission
tickets, the UMA grant and RPT introspection, called the way the seed PEP calls them (PAT from
client_credentials with scope "openid uma_protection permission", endpoints from the uma2
discovery document). Expected answers are Gluu oxAuth's (GluuFederation/oxAuth, Server/.../uma)."""

from __future__ import annotations

import base64
import time

import pytest
import requests
from eoepca_uma import resource, rpt

from realclients_support import APP_ID, APP_SECRET, ID_TOKEN_FORMAT, RS_ID, RS_SECRET, SUBS

SEED_PAT_SCOPE = "openid uma_protection permission"


@pytest.fixture
def wk(uma2_as) -> dict:
    return uma2_as.discovery


def get_pat(uma2_as, wk: dict, scope: str = SEED_PAT_SCOPE) -> str:
    """oidc_handler.get_new_pat of the seed PEP: form client_credentials with the client's
    credentials in the body and an empty redirect_uri."""
    r = requests.post(wk["token_endpoint"], data={
        "grant_type": "client_credentials", "client_id": RS_ID, "client_secret": RS_SECRET,
        "scope": scope, "redirect_uri": ""}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def pat(uma2_as, wk) -> str:
    return get_pat(uma2_as, wk)


def test_discovery_has_what_the_seed_reads(uma2_as, wk):
    """The seed reads these keys of /.well-known/uma2-configuration (WellKnownHandler KEY_UMA_V2_*);
    Gluu's paths are under /oxauth/restv1 and the issuer is the bare host."""
    assert wk["issuer"] == uma2_as.issuer == uma2_as.base
    restv1 = f"{uma2_as.base}/oxauth/restv1"
    assert wk["resource_registration_endpoint"] == f"{restv1}/host/rsrc/resource_set"
    assert wk["permission_endpoint"] == f"{restv1}/host/rsrc_pr"
    assert wk["introspection_endpoint"] == f"{restv1}/rpt/status"
    assert wk["token_endpoint"] == f"{restv1}/token"


def test_resource_lifecycle(pat, wk):
    """create -> 201 {"_id"}; read -> UmaResourceWithId; list -> ids of this client; update (PUT,
    full replacement) -> 200 {"_id"}; delete -> 204; then read -> 404 not_found
    (UmaResourceRegistrationWS, UmaResourceService.getResourceById)."""
    rr = wk["resource_registration_endpoint"]
    rid = resource.create(pat, rr, "TestResourcePEP3", ["protected_access"], description="a test resource",
                          icon_uri="/TestResourcePEP3", typ="http://www.example.com/rsrcs/photoalbum")
    assert isinstance(rid, str) and rid

    got = resource.read(pat, rr, rid)
    assert got["_id"] == rid and got["name"] == "TestResourcePEP3"
    assert got["resource_scopes"] == ["protected_access"]
    assert got["description"] == "a test resource" and got["icon_uri"] == "/TestResourcePEP3"
    assert got["type"] == "http://www.example.com/rsrcs/photoalbum"
    now = time.time()
    assert now - 60 <= got["iat"] <= now + 5
    assert 30 * 24 * 3600 - 120 <= got["exp"] - got["iat"] <= 30 * 24 * 3600  # umaResourceLifetime default

    ids = resource.list(pat, rr)
    assert rid in ids and all(isinstance(i, str) for i in ids)

    assert resource.update(pat, rr + "/", rid, "TestResourcePEP3Mod", ["protected_access", "protected_write"],
                           icon_uri="/TestResourcePEP3") == rid
    got = resource.read(pat, rr, rid)
    assert got["name"] == "TestResourcePEP3Mod"
    assert sorted(got["resource_scopes"]) == ["protected_access", "protected_write"]
    assert "description" not in got or got["description"] is None  # PUT replaces the whole resource

    resource.delete(pat, rr + "/", rid)
    with pytest.raises(Exception, match=r"^An error occurred while getting a resource's information: 404:") as err:
        resource.read(pat, rr, rid)
    assert '"not_found"' in str(err.value)
    assert rid not in resource.list(pat, rr)


def test_duplicate_names_are_separate_resources(pat, wk):
    """Gluu keys resources by a random UUID and never checks the name: a second create with the
    same name is a second resource (UmaResourceRegistrationWS.registerResource)."""
    rr = wk["resource_registration_endpoint"]
    first = resource.create(pat, rr, "Same name", ["protected_get"])
    second = resource.create(pat, rr, "Same name", ["protected_get"])
    assert first != second
    assert {first, second} <= set(resource.list(pat, rr))


def test_resource_without_scopes_is_refused(pat, wk):
    """UmaValidationService.validateResource: resource_scopes and scope_expression both empty ->
    400 invalid_scope."""
    with pytest.raises(Exception, match=r"^An error occurred while registering the resource: 400:") as err:
        resource.create(pat, wk["resource_registration_endpoint"], "No scopes", [])
    assert '"invalid_scope"' in str(err.value)


def test_pat_without_uma_protection_is_not_acceptable(uma2_as, wk):
    """Gluu side: a client_credentials token requested without uma_protection carries no
    such scope and every protection call gets 406 invalid_client_scope
    (UmaValidationService.validateAuthorization)."""
    bare = get_pat(uma2_as, wk, scope="openid")
    with pytest.raises(Exception, match=r"^An error occurred while listing resources: 406:") as err:
        resource.list(bare, wk["resource_registration_endpoint"])
    assert '"invalid_client_scope"' in str(err.value)


def test_permission_ticket_grant_and_introspection(uma2_as, pat, wk):
    """request_access_ticket POSTs ONE object (not an array) for one resource -> 201 {"ticket"}
    (UmaPermissionRegistrationWS.parseRequest takes both); request_for_rpt trades it with client
    authentication and the user's ID token as claim token -> {access_token, token_type, pct,
    upgraded} with no expires_in (UmaTokenResponse); introspect with the PAT -> the permission,
    client_id and aud = the requesting client, sub null (UmaRptService.createRPTAndPersist stores
    no user id), the user only in pct_claims (lists of strings), and no nbf/iss/jti
    (UmaRptIntrospectionWS.introspect sets none of them); is_valid_now then holds."""
    rid = resource.create(pat, wk["resource_registration_endpoint"], "Ticketed", ["protected_get", "protected_put"])
    requests.post(f"{uma2_as.base}/_devas/grant", json={"sub": SUBS["alice"], "resource_id": rid,
                                                        "scopes": ["protected_get"]}, timeout=5).raise_for_status()
    wanted = [{"resource_id": rid, "resource_scopes": ["protected_get"]}]
    ticket = resource.request_access_ticket(pat, wk["permission_endpoint"], wanted)
    assert ticket
    (perm_call,) = uma2_as.calls("permission")
    assert perm_call["body"].lstrip().startswith("{")  # the single-object body, as the seed sends it

    creds = base64.b64encode(f"{APP_ID}:{APP_SECRET}".encode()).decode()
    id_token = uma2_as.user_tokens("alice")["id_token"]
    answer = rpt.request_for_rpt(creds, wk["token_endpoint"], ticket, claim_token=id_token,
                                 claim_token_format=ID_TOKEN_FORMAT, secure=False)
    assert set(answer) == {"access_token", "token_type", "pct", "upgraded"}
    assert answer["token_type"] == "Bearer" and answer["upgraded"] is False

    info = rpt.introspect(answer["access_token"], pat, wk["introspection_endpoint"])
    assert info["active"] is True
    assert [(p["resource_id"], p["resource_scopes"]) for p in info["permissions"]] == [(rid, ["protected_get"])]
    assert info["client_id"] == APP_ID and info["aud"] == APP_ID
    # RptIntrospectionResponse declares Map<String, List<String>> getPctClaims() (JwtClaimSet.toMap):
    # every claim of the PCT is a list of strings, the user id included.
    assert info["pct_claims"]["sub"] == [SUBS["alice"]]
    assert all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in info["pct_claims"].values())
    assert info.get("sub") is None
    for never_set in ("nbf", "iss", "jti"):
        assert info.get(never_set) is None, never_set
    assert rpt.is_valid_now(answer["access_token"], pat, wk["introspection_endpoint"], wanted)
    assert not rpt.is_valid_now(answer["access_token"], pat, wk["introspection_endpoint"],
                                [{"resource_id": rid, "resource_scopes": ["protected_put"]}])


def test_unknown_token_introspects_inactive(pat, wk):
    """UmaRptIntrospectionWS: an unknown token -> 200 {"active": false} (RptIntrospectionResponse(false))."""
    info = rpt.introspect("not-an-rpt", pat, wk["introspection_endpoint"])
    assert info["active"] is False
    assert not rpt.is_valid_now("not-an-rpt", pat, wk["introspection_endpoint"],
                                [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}])


def test_permission_for_an_unknown_resource_is_not_found(pat, wk):
    """UmaValidationService.validatePermission -> UmaResourceService.getResourceById
    throws 404 not_found ("Failed to find resource set with id"), which is not caught."""
    with pytest.raises(Exception, match=r"^An error occurred while requesting permission for a resource: 404:") as err:
        resource.request_access_ticket(pat, wk["permission_endpoint"],
                                       [{"resource_id": "no-such-resource", "resource_scopes": ["protected_get"]}])
    assert '"not_found"' in str(err.value)
