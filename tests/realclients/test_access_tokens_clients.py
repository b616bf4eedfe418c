"""Decide mode (`access_tokens: {"mode": "decide"}`, docs/access-tokens.md) with the user's token
obtained the way real clients obtain it, through real Envoy running the filter (two workers):

* Keycloak: python-keycloak 7.1.1 `KeycloakOpenID.token` (the password grant of the requesting
  party's client); the PEP's decision is cross-checked against python-keycloak's own
  `KeycloakUMA.permissions_check` (response_mode=decision, as the filter asks, one permission);
  requests-oauthlib-uma's UMA2Session, which sends its access token first, gets through
  with no UMA round trip;
* Gluu: requests-oauthlib's `OAuth2Session.fetch_token` (the password grant with `openid`), whose
  `id_token` is what the client sends (the only claim token format Gluu takes)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from keycloak import KeycloakOpenID, KeycloakOpenIDConnection, KeycloakUMA
from keycloak.uma_permissions import UMAPermission
from oauthlib.oauth2 import LegacyApplicationClient
from requests_oauthlib import OAuth2Session
from requests_oauthlib_uma import UMA2Session

from realclients_support import APP_ID, APP_SECRET, PASSWORDS, PROTECTED, REALM, RS_ID, RS_SECRET, SUBS, UMA_GRANT
from support.envoy import filter_config
from support.uma_client import parse_challenge

UNREACHABLE = '199 - "UMA Authorization Server Unreachable"'
KEY = ed25519.Ed25519PrivateKey.generate()
FORWARD = {"alg": "EdDSA", "aud": "svc", "key_pem": KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}
METHOD_SCOPES = {"GET": "protected_get", "DELETE": "protected_delete"}


def decide_envoy(envoy_factory, devas, echo):
    config = filter_config(devas, resources=PROTECTED, forward=FORWARD, timeout_ms=5000, negative_cache_ttl_s=60,
                           access_tokens={"mode": "decide"})
    return envoy_factory(config, devas.port, echo.port, concurrency=2)


@pytest.fixture(scope="module")
def kc_envoy(envoy_factory, keycloak_as, echo):
    return decide_envoy(envoy_factory, keycloak_as, echo)


@pytest.fixture(scope="module")
def gluu_envoy(envoy_factory, uma2_as, echo):
    return decide_envoy(envoy_factory, uma2_as, echo)


@pytest.fixture
def oid(keycloak_as) -> KeycloakOpenID:
    """The requesting party's own client (not the resource server's)."""
    return KeycloakOpenID(server_url=keycloak_as.base, realm_name=REALM, client_id=APP_ID,
                          client_secret_key=APP_SECRET, timeout=10)


@pytest.fixture
def rs_uma(keycloak_as) -> KeycloakUMA:
    """python-keycloak's own decision client, with the resource server's credentials."""
    return KeycloakUMA(connection=KeycloakOpenIDConnection(server_url=keycloak_as.base, realm_name=REALM,
                                                           client_id=RS_ID, client_secret_key=RS_SECRET, timeout=10))


def call(envoy, path: str, token: str, method: str = "GET") -> requests.Response:
    return requests.request(method, envoy.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=15)


def sub_of(resp: requests.Response) -> str:
    minted = resp.json()["headers"]["x-user-id"]
    return jwt.decode(minted, KEY.public_key(), algorithms=["EdDSA"], audience="svc", issuer="uma-pep")["sub"]


def grants(devas) -> list[dict]:
    return [c for c in devas.calls("token") if c["grant_type"] == UMA_GRANT]


def assert_denied_with_ticket(resp: requests.Response, issuer: str) -> None:
    assert resp.status_code == 403, resp.text
    challenge = parse_challenge(resp.headers["www-authenticate"])
    assert challenge["as_uri"] == issuer and challenge["ticket"]


# ---- Keycloak, python-keycloak ------------------------------------------------------------------

def test_python_keycloak_login_then_the_pep_decides_as_python_keycloak_would(kc_envoy, keycloak_as, echo,
                                                                            oid, rs_uma):
    tokens = {u: oid.token(username=u, password=PASSWORDS[u])["access_token"] for u in ("alice", "bob")}
    cases = [(u, path, rid, method) for u in ("alice", "bob")
             for path, rid in (("/alice/a", "res-alice"), ("/alice/docs/a", "res-alice-docs"), ("/bob/a", "res-bob"))
             for method in METHOD_SCOPES]
    for user, path, rid, method in cases:
        resp = call(kc_envoy, path, tokens[user], method)
        expected = rs_uma.permissions_check(tokens[user], [UMAPermission(resource=rid, scope=METHOD_SCOPES[method])])
        if expected:
            assert resp.status_code == 200, (user, path, method, resp.text)
            assert sub_of(resp) == SUBS[user]
        else:
            assert_denied_with_ticket(resp, keycloak_as.issuer)
    # The matrix is not all one answer: alice's two spaces (4), bob reading hers (1), bob's own (2).
    assert len(echo.log()) == 7


def test_python_keycloak_token_twenty_at_once_make_one_decision(kc_envoy, keycloak_as, oid):
    token = oid.token(username="alice", password=PASSWORDS["alice"])["access_token"]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: call(kc_envoy, f"/alice/{i}", token), range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert len(grants(keycloak_as)) == 1


def test_python_keycloak_token_with_the_as_down(kc_envoy, keycloak_as, echo, oid):
    token = oid.token(username="alice", password=PASSWORDS["alice"])["access_token"]
    keycloak_as.fault("token", "status503")
    resp = call(kc_envoy, "/alice/down", token)
    assert resp.status_code == 403 and resp.headers["warning"] == UNREACHABLE
    assert echo.log() == []


def test_a_uma_client_library_sending_its_access_token_needs_no_round_trip(kc_envoy, keycloak_as, echo):
    """requests-oauthlib-uma sends the session's access token first; in decide mode that is
    enough: no challenge, no RPT, one decision."""
    login = keycloak_as.user_tokens("alice")
    session = UMA2Session(client_id=APP_ID, token={"access_token": login["access_token"], "token_type": "Bearer"})
    resp = session.get(kc_envoy.url("/alice/photos"), timeout=10)
    assert resp.status_code == 200 and sub_of(resp) == SUBS["alice"]
    [decision] = grants(keycloak_as)
    assert decision["headers"]["authorization"] == f"Bearer {login['access_token']}"
    assert keycloak_as.calls("permission") == []


# ---- Gluu, requests-oauthlib --------------------------------------------------------------------

def oauthlib_login(devas, user: str) -> dict:
    # `profile` too: the answer's scope is "openid profile", and oauthlib refuses a changed scope.
    session = OAuth2Session(client=LegacyApplicationClient(client_id=APP_ID), scope=["openid", "profile"])
    return session.fetch_token(devas.discovery["token_endpoint"], username=user, password=PASSWORDS[user],
                               client_id=APP_ID, client_secret=APP_SECRET, timeout=10)


def test_requests_oauthlib_login_then_the_id_token_is_decided(gluu_envoy, uma2_as, echo):
    alice = oauthlib_login(uma2_as, "alice")["id_token"]
    bob = oauthlib_login(uma2_as, "bob")["id_token"]
    resp = call(gluu_envoy, "/alice/a", alice, "DELETE")
    assert resp.status_code == 200 and sub_of(resp) == SUBS["alice"]
    resp = call(gluu_envoy, "/alice/a", bob)
    assert resp.status_code == 200 and sub_of(resp) == SUBS["bob"]
    assert_denied_with_ticket(call(gluu_envoy, "/alice/a", bob, "DELETE"), uma2_as.issuer)
    assert_denied_with_ticket(call(gluu_envoy, "/bob/a", alice), uma2_as.issuer)
    assert len(echo.log()) == 2
    assert len(grants(uma2_as)) == 4


def test_requests_oauthlib_id_token_twenty_at_once_make_one_decision(gluu_envoy, uma2_as):
    token = oauthlib_login(uma2_as, "alice")["id_token"]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: call(gluu_envoy, f"/alice/{i}", token), range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert len(grants(uma2_as)) == 1 and len(uma2_as.calls("permission")) == 1
