"""devas (a development/test fixture, NOT for production): what all profiles share — discovery
addresses, keys, client authentication, the control API (reset, config, faults, call log), HTTP
behaviour, the seed and the CLI, and the echo upstream."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import sys
import time

import jwt
import pytest
import requests
from devas_client import (APP, PEP, T, bearer, calls, claims_of, control, get_pat, introspect, is_kc, mint,
                          pat_response, rs, user_tokens)

from devas import server
from support.processes import free_port


# ---- discovery and keys ---------------------------------------------------------------------------

KC_PATHS = {"token_endpoint": "protocol/openid-connect/token",
            "introspection_endpoint": "protocol/openid-connect/token/introspect",
            "jwks_uri": "protocol/openid-connect/certs", "resource_registration_endpoint": "authz/protection/resource_set",
            "permission_endpoint": "authz/protection/permission", "policy_endpoint": "authz/protection/uma-policy",
            "registration_endpoint": "clients-registrations/openid-connect"}
GLUU_PATHS = {"token_endpoint": "token", "introspection_endpoint": "rpt/status", "jwks_uri": "jwks",
              "resource_registration_endpoint": "host/rsrc/resource_set", "permission_endpoint": "host/rsrc_pr",
              "registration_endpoint": "register"}


@pytest.mark.parametrize("profile,issuer,base,paths", [
    ("kc", "/realms/eoepca", "/", KC_PATHS),
    ("u2", "", "/oxauth/restv1/", GLUU_PATHS),
    ("jans", "", "/jans-auth/restv1/", GLUU_PATHS)])
def test_discovery(request, profile, issuer, base, paths):
    as_ = request.getfixturevalue(profile)
    assert as_.issuer == f"http://127.0.0.1:{as_.port}{issuer}"
    d = requests.get(as_.issuer + "/.well-known/uma2-configuration", timeout=T).json()
    assert d["issuer"] == as_.issuer
    root = as_.issuer + base
    assert {k: d[k] for k in paths} == {k: root + v for k, v in paths.items()}
    oidc = requests.get(as_.issuer + "/.well-known/openid-configuration", timeout=T).json()
    assert oidc["userinfo_endpoint"] == (root + "protocol/openid-connect/userinfo" if profile == "kc"
                                         else root + "userinfo")
    if profile == "kc":   # UmaConfiguration: no UMA profile list, no claims interaction, no userinfo
        assert not {"uma_profiles_supported", "claims_interaction_endpoint", "userinfo_endpoint"} & set(d)
        assert "uma_protection" not in d["scopes_supported"]
        assert requests.get(f"{as_.url}/realms/other/.well-known/uma2-configuration", timeout=T).status_code == 404
    else:
        assert d["uma_profiles_supported"] == [] and d["claims_interaction_endpoint"] and d["scope_endpoint"]
        assert ("authorization_challenge_endpoint" in d) == (profile == "jans")
        assert requests.get(root + "uma2-configuration", timeout=T).json() == d


def test_jwks_verifies_issued_tokens(any_as):
    keys = requests.get(any_as.endpoint("jwks"), timeout=T).json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert {key["kty"], key["use"], key["alg"]} == {"RSA", "sig", "RS256"} and key["kid"] and key["e"] == "AQAB"
    token = user_tokens(any_as, "alice")["id_token"]
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience="demo-app", issuer=any_as.issuer)
    assert claims["sub"] == "alice-0001" and claims["isOperator"] is False


# ---- client authentication and user tokens ------------------------------------------------------

def test_client_authentication(any_as):
    form = {"grant_type": "client_credentials", "client_id": "pep-client", "client_secret": "pep-secret"}
    assert requests.post(any_as.endpoint("token"), data=form, timeout=T).status_code == 200
    r = requests.post(any_as.endpoint("token"), data=form | {"client_secret": "wrong"}, timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "client_credentials"}, timeout=T)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_client")
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "nope"}, auth=PEP, timeout=T)
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
    assert r.headers["cache-control"] == "no-store"


def test_basic_credentials_are_form_decoded(any_as):
    # RFC 6749 §2.3.1: a client secret with reserved characters arrives form-encoded in Basic.
    handle = server.start(any_as.profile, port=0,
                          seed={"clients": [{"client_id": "odd client", "client_secret": "p@ss:w%rd"}]})
    try:
        raw = base64.b64encode(b"odd+client:p%40ss%3Aw%25rd").decode()
        r = requests.post(handle.endpoint("token"), data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {raw}"}, timeout=T)
        assert r.status_code == 200, r.text
    finally:
        handle.stop()


def test_password_grant_and_userinfo(any_as):
    tokens = user_tokens(any_as, "admin")
    id_claims = claims_of(tokens["id_token"])
    assert id_claims["sub"] == "admin-0003" and id_claims["isOperator"] is True and id_claims["aud"] == "demo-app"
    info = requests.get(any_as.endpoint("userinfo"), headers=bearer(tokens["access_token"]), timeout=T)
    assert info.json() == {"sub": "admin-0003", "preferred_username": "admin", "isOperator": True}
    assert requests.get(any_as.endpoint("userinfo"), headers=bearer("bad"), timeout=T).status_code == 401
    r = requests.post(any_as.endpoint("token"), data={"grant_type": "password", "username": "alice",
                                                      "password": "wrong"}, auth=APP, timeout=T)
    assert r.status_code == (401 if is_kc(any_as) else 400) and r.json()["error"] == "invalid_grant"


# ---- control API ------------------------------------------------------------------------------------

def test_reset_keeps_pats_unless_asked_and_config_sets_their_lifetime(any_as):
    pat = get_pat(any_as)
    rpt = mint(any_as, sub="alice-0001", permissions=[])
    control(any_as, "reset")
    if any_as.profile == "janssen":
        control(any_as, "config", {"uma_feature_enabled": True})
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code == 200
    assert introspect(any_as, rpt).json()["active"] is False
    control(any_as, "reset", {"forget_tokens": True})
    if any_as.profile == "janssen":
        control(any_as, "config", {"uma_feature_enabled": True})
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code in (401, 403)
    pat = get_pat(any_as)
    assert control(any_as, "revoke", {"kind": "pat"}).json()["revoked"] == 1
    assert requests.get(rs(any_as), headers=bearer(pat), timeout=T).status_code in (401, 403)
    assert control(any_as, "config", {"pat_lifetime_s": 1}).json()["pat_lifetime_s"] == 1
    assert pat_response(any_as).json()["expires_in"] == 1
    assert control(any_as, "config", {"nope": 1}).status_code == 400
    assert control(any_as, "config", {"client_scopes": "profile"}).status_code == 400
    assert control(any_as, "config", {"client_scopes": ["profile", "x"]}).json()["client_scopes"] == ["profile", "x"]


def test_faults(any_as):
    perm = [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}]
    pat = get_pat(any_as)
    ask = (lambda: requests.post(any_as.endpoint("permission"), json=perm, headers=bearer(pat), timeout=T))
    control(any_as, "fault", {"endpoint": "permission", "kind": "drop"})
    with pytest.raises(requests.ConnectionError):
        ask()
    control(any_as, "fault", {"endpoint": "permission", "kind": "delay", "delay_ms": 300})
    started = time.monotonic()
    assert ask().status_code == 201
    assert time.monotonic() - started >= 0.3
    control(any_as, "fault", {"endpoint": "any", "kind": "status500", "times": 2})
    assert requests.get(any_as.endpoint("jwks"), timeout=T).status_code == 500
    assert ask().status_code == 500
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
    assert token_call["headers"]["authorization"].startswith("Basic ")
    assert log[1]["query"] == "x=1" and log[1]["path"] == rs(any_as).split(str(any_as.port), 1)[1]
    assert [c["endpoint"] for c in calls(any_as, endpoint="resource_set")] == ["resource_set"]
    state = requests.get(any_as.url + "/_devas/state", timeout=T).json()
    assert state["tokens_issued"] == {"client_credentials": 1} and state["calls"] == 3
    assert state["profile"] == any_as.profile
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
            "rpt_lifetime_s": 42, "error_reason_enabled": True}
    handle = server.start("uma2", port=0, seed=seed)
    try:
        pat = get_pat(handle, auth=("pep-client", "other"))
        ids = requests.get(rs(handle), headers=bearer(pat), timeout=T).json()
        assert "res-x" in ids and "res-alice" in ids
        assert handle.app.store.settings.rpt_lifetime_s == 42 and handle.app.store.settings.error_reason_enabled
        r = requests.get(rs(handle), headers={"Authorization": "Basic eDp5"}, timeout=T)
        assert r.json()["reason"] == "Token is invalid."  # errorReasonEnabled adds the reason
    finally:
        handle.stop()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "devas", "--profile", "janssen", "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line == f"devas ready profile=janssen issuer=http://127.0.0.1:{port} port={port}"
        r = requests.get(f"http://127.0.0.1:{port}/.well-known/uma2-configuration", timeout=T)
        assert r.status_code == 403  # a fresh Janssen has UMA off
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=T)
    assert "NOT for production" in err


# ---- echo upstream ---------------------------------------------------------------------------------------

def test_echo(echo):
    r = requests.post(echo.url + "/a/b?status=500&x=1", data=b"hello", headers={"X-One": "v"}, timeout=T)
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
    # Any method, WebDAV's too (RFC 4918, RFC 3253 VERSION-CONTROL), not only the common seven.
    for method in ("PROPFIND", "VERSION-CONTROL"):
        r = requests.request(method, echo.url + "/dav", timeout=T)
        assert r.status_code == 200 and r.json()["method"] == method
    log = requests.get(echo.url + "/_echo/log", timeout=T).json()
    assert [e["path"] for e in log] == ["/a/b?status=500&x=1", "/dup", "/h", "/dav", "/dav"]
    assert requests.post(echo.url + "/_echo/reset", timeout=T).ok
    assert requests.get(echo.url + "/_echo/log", timeout=T).json() == []


# ---- a restart ------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["keycloak", "uma2"])
def test_a_restart_on_its_state_keeps_registrations_keys_and_tokens(profile, tmp_path):
    """`--state`: what a real server keeps in its database survives a stop (SIGTERM) and start."""
    from support.devas import PEP_CLIENT, DevAs

    port, state = free_port(), tmp_path / "devas.state"
    first = DevAs(profile, port=port, state=state)
    try:
        d = first.discovery
        form = {"grant_type": "client_credentials"} | ({} if profile == "keycloak" else {"scope": "uma_protection"})
        pat = requests.post(d["token_endpoint"], data=form, auth=PEP_CLIENT, timeout=T).json()["access_token"]
        r = requests.post(d["resource_registration_endpoint"], headers=bearer(pat), timeout=T,
                          json={"name": "kept", "resource_scopes": ["read"], "icon_uri": "/kept"})
        assert r.status_code == 201, r.text
        rid = r.json()["_id"]
        kid = requests.get(d["jwks_uri"], timeout=T).json()["keys"][0]["kid"]
    finally:
        first.stop()
    assert state.exists(), "written at SIGTERM"

    second = DevAs(profile, port=port, state=state)
    try:
        assert requests.get(d["jwks_uri"], timeout=T).json()["keys"][0]["kid"] == kid, "the same keys"
        r = requests.get(f"{d['resource_registration_endpoint']}/{rid}", headers=bearer(pat), timeout=T)
        assert r.status_code == 200 and r.json()["name"] == "kept", "the old PAT and the resource"
    finally:
        second.stop()

    # Without its state a devas on that port knows neither.
    fresh = DevAs(profile, port=port)
    try:
        r = requests.get(f"{d['resource_registration_endpoint']}/{rid}", headers=bearer(pat), timeout=T)
        assert r.status_code in (401, 403, 404), r.status_code
    finally:
        fresh.stop()
