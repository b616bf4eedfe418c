"""Dynamic client registration in devas (a development/test fixture, NOT for production): Keycloak's
`clients-registrations` (OIDC and default providers, initial access tokens, registration policies)
and Gluu/Janssen's `/register` (scopes allowed for dynamic registration)."""

from __future__ import annotations

import requests
from devas_client import T, bearer, claims_of, control, error_of, get_pat, pat_response, rs

IAT = "devas-initial-access-token"   # the seed's one initial access token (count 1)
TRUSTED_HOSTS = {"error": "insufficient_scope", "error_description": "Policy 'Trusted Hosts' rejected request to "
                 "client-registration service. Details: Host not trusted."}
CLIENT_SCOPES = {"error": "insufficient_scope", "error_description": "Policy 'Allowed Client Scopes' rejected request "
                 "to client-registration service. Details: Not permitted to use specified clientScope"}


def oidc(kc):
    return kc.endpoint("registration")


def default(kc):
    return kc.endpoint("registration_default")


def register(url: str, body: dict, token: str | None = IAT) -> requests.Response:
    return requests.post(url, json=body, headers=bearer(token) if token else {}, timeout=T)


# ---- Keycloak -------------------------------------------------------------------------------------

def test_keycloak_anonymous_registration_meets_trusted_hosts(kc):
    for url, body in ((oidc(kc), {"client_name": "x"}), (default(kc), {"clientId": "x"})):
        r = register(url, body, token=None)
        assert r.status_code == 403 and r.json() == TRUSTED_HOSTS
    control(kc, "config", {"registration_trusted_hosts": ["127.0.0.1"]})
    assert register(oidc(kc), {"client_name": "x"}, token=None).status_code == 201
    r = register(oidc(kc), {"redirect_uris": ["https://elsewhere.example/cb"]}, token=None)
    assert r.status_code == 403 and r.json()["error_description"].endswith(
        "URI doesn't match any trusted host or trusted domain")


def test_keycloak_initial_access_token_refusals(kc):
    r = register(oidc(kc), {"client_name": "x"}, token="not-a-token")
    assert r.status_code == 401 and r.json() == {"error": "invalid_token", "error_description": "Failed decode token"}
    r = register(oidc(kc), {"client_name": "x"}, token=get_pat(kc))   # an access token without manage-clients
    assert r.status_code == 403 and r.json() == {"error": "insufficient_scope", "error_description": "Forbidden"}
    assert register(oidc(kc), {"client_name": "x"}).status_code == 201
    r = register(oidc(kc), {"client_name": "y"})   # the seed's token had one use
    assert r.status_code == 401 and r.json() == {"error": "invalid_token",
                                                 "error_description": "No remaining count on initial access token"}
    minted = control(kc, "initial-access-token", {"count": 2}).json()
    assert minted["count"] == minted["remainingCount"] == 2 and claims_of(minted["token"])["typ"] == "InitialAccessToken"
    assert [register(oidc(kc), {}, minted["token"]).status_code for _ in range(3)] == [201, 201, 401]
    control(kc, "reset")   # the minted token is gone; the seed's is back
    r = register(oidc(kc), {}, minted["token"])
    assert r.status_code == 401 and r.json()["error_description"] == "Initial Access Token not found"
    assert control(kc, "initial-access-token", {"count": 0}).status_code == 400


def test_keycloak_oidc_provider_refuses_uma_protection_and_makes_no_resource_server(kc):
    r = register(oidc(kc), {"client_name": "pep", "grant_types": ["client_credentials"], "scope": "uma_protection"})
    assert r.status_code == 403 and r.json() == CLIENT_SCOPES
    assert register(oidc(kc), {"client_id": "mine"}).json() == {
        "error": "invalid_client_metadata", "error_description": "Client Identifier included"}
    r = register(oidc(kc), {"client_name": "pep", "grant_types": ["client_credentials"], "scope": "profile",
                            "token_endpoint_auth_method": "client_secret_basic"})   # the IAT's one use
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == body["registration_client_uri"] == f"{oidc(kc)}/{body['client_id']}"
    assert body["scope"] == "profile" and "client_credentials" in body["grant_types"] and body["client_secret"]
    assert body["registration_access_token"] and body["client_secret_expires_at"] == 0
    pat = get_pat(kc, auth=(body["client_id"], body["client_secret"]))
    r = requests.get(rs(kc), headers=bearer(pat), timeout=T)
    assert r.status_code == 403 and r.json() == {
        "error": "invalid_clientId",
        "error_description": f"Client application [{body['client_id']}] is not registered as a resource server."}
    assert pat_response(kc, (body["client_id"], body["client_secret"]), scope="email").json()["error"] == "invalid_scope"


def test_keycloak_default_provider_creates_a_resource_server(kc):
    body = {"clientId": "my-pep", "secret": "my-secret", "serviceAccountsEnabled": True,
            "authorizationServicesEnabled": True, "publicClient": False, "standardFlowEnabled": False,
            "directAccessGrantsEnabled": True, "name": "My PEP"}
    r = register(default(kc), body)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert r.headers["location"] == f"{default(kc)}/my-pep"
    assert rep["clientId"] == "my-pep" and rep["secret"] == "my-secret" and rep["id"] and rep["registrationAccessToken"]
    assert rep["serviceAccountsEnabled"] is True and rep["authorizationServicesEnabled"] is True
    assert rep["directAccessGrantsEnabled"] is False and rep["publicClient"] is False
    pat = get_pat(kc, auth=("my-pep", "my-secret"))
    assert claims_of(pat)["resource_access"] == {"my-pep": {"roles": ["uma_protection"]}}
    assert requests.get(rs(kc), headers=bearer(pat), timeout=T).json() == []


def test_keycloak_default_provider_refusals(kc):
    minted = control(kc, "initial-access-token", {"count": 10}).json()["token"]
    r = register(default(kc), {"clientId": "x", "description": "ok", "owner": "no such field"}, minted)
    assert r.status_code == 400 and r.json()["error"].startswith(
        'Unrecognized field "owner" (class org.keycloak.representations.idm.ClientRepresentation)')
    r = register(default(kc), {"clientId": "x", "publicClient": True, "authorizationServicesEnabled": True}, minted)
    assert error_of(r) == (500, "unknown_error")   # createResourceServer: confidential clients only
    r = register(default(kc), {"clientId": "pep-client"}, minted)
    assert r.json() == {"error": "invalid_client_metadata", "error_description": "Client Identifier in use"}
    r = register(default(kc), {"clientId": "y", "optionalClientScopes": ["uma_protection"]}, minted)
    assert r.status_code == 403 and r.json() == CLIENT_SCOPES


# ---- Gluu / Janssen -------------------------------------------------------------------------------

def test_gluu_registration_honours_only_scopes_allowed_for_dynamic_registration(gluu):
    url = gluu.endpoint("registration")
    r = requests.post(url, json={"client_name": "PEP", "grant_types": ["client_credentials"],
                                 "scope": "openid uma_protection profile bogus"}, timeout=T)
    body = r.json()
    assert r.status_code == 201 and body["scope"] == "openid uma_protection"   # the rest dropped silently
    assert body["client_secret_expires_at"] == 0 and body["client_id_issued_at"] > 0
    assert body["registration_client_uri"] == f"{url}?client_id={body['client_id']}"
    pat = get_pat(gluu, auth=(body["client_id"], body["client_secret"]))
    assert requests.get(rs(gluu), headers=bearer(pat), timeout=T).json() == []
    r = requests.post(url, json={"grant_types": ["client_credentials"]}, timeout=T)
    assert r.json()["scope"].split() == gluu.app.store.settings.dcr_allowed_scopes   # no scope: every allowed one


def test_gluu_registration_without_uma_protection_leads_to_406(gluu):
    allowed = [s for s in gluu.app.store.settings.dcr_allowed_scopes if s != "uma_protection"]
    control(gluu, "config", {"dcr_allowed_scopes": allowed})
    body = requests.post(gluu.endpoint("registration"), timeout=T,
                         json={"grant_types": ["client_credentials"], "scope": "openid uma_protection"}).json()
    assert body["scope"] == "openid"   # what pepctl must check
    r = pat_response(gluu, (body["client_id"], body["client_secret"]), scope="uma_protection")
    assert r.json()["scope"] == ""
    assert error_of(requests.get(rs(gluu), headers=bearer(r.json()["access_token"]), timeout=T)) == \
        (406, "invalid_client_scope")


def test_gluu_registration_details(gluu):
    url = gluu.endpoint("registration")
    body = requests.post(url, json={"client_name": "x"}, timeout=T).json()   # grant_types default: authorization_code
    r = pat_response(gluu, (body["client_id"], body["client_secret"]), scope="uma_protection")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"   # grant_type is not present in client
    r = requests.post(url, data='{"client_name": "x", "scope": "openid",}', timeout=T,
                      headers={"Content-Type": "application/scim+json"})
    assert r.status_code == 201   # the org.json parser takes EOEPCA's trailing comma
    r = requests.post(url, data="{", timeout=T)
    assert error_of(r) == (400, "invalid_client_metadata")
    body = requests.post(url, json={"grant_types": ["client_credentials"], "rpt_as_jwt": True}, timeout=T).json()
    assert gluu.app.store.clients[body["client_id"]].rpt_as_jwt
