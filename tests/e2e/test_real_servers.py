"""End to end against the development AS as strict as the real servers: what Keycloak and
Gluu/Janssen do on the wire, read from their sources (devas/README.md cites each behaviour).
Each test here failed with the filter as it was when it had only met a lenient AS:

- the PAT request per dialect (Keycloak refuses `scope=uma_protection`, Gluu needs it);
- the forwarded identity names the user: Gluu introspection has `sub: null` (the party is in
  `pct_claims`), Keycloak's RPT introspection has no `sub` at all (the RPT itself does);
- JWT RPTs the filter cannot verify with the JWKS (Gluu `rpt_as_jwt` signed HS256 with the
  client secret) go to introspection instead of being refused;
- an AS clock a little ahead (`iat` in the future) is tolerated by default;
- an issuer spelled with a trailing slash is refused when the filter loads, naming the fix;
- Keycloak JWT RPTs must name the PEP's client in `aud` (and a permission ticket is no RPT).
"""

from __future__ import annotations

from urllib.parse import parse_qs

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.devas import ALL_SCOPES, ID_TOKEN_FORMAT, RESOURCES, UMA_GRANT
from support.envoy import Envoy, filter_config
from support.processes import poll_until
from support.uma_client import parse_challenge



DIALECTS = ["keycloak", "uma2"]
FORWARD_KEY = ed25519.Ed25519PrivateKey.generate()
FORWARD = {
    "alg": "EdDSA",
    "key_pem": FORWARD_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
}


def devas_for(request, profile: str):
    """The AS of a dialect, reset (the autouse reset sees only fixtures named in the signature)."""
    devas = request.getfixturevalue("keycloak_as" if profile == "keycloak" else "uma2_as")
    devas.reset()
    return devas


def identity(resp: requests.Response) -> dict:
    """The identity JWT the upstream received, verified with the forwarding key."""
    minted = resp.json()["headers"]["x-user-id"]
    return jwt.decode(minted, FORWARD_KEY.public_key(), algorithms=["EdDSA"], issuer="uma-pep")


def grant(devas, ticket: str, user: str, client: tuple[str, str] = ("demo-app", "demo-secret")) -> str:
    """The UMA grant as each server's own clients make it: Keycloak takes the user's access
    token as the bearer; Gluu/Janssen take the client's credentials and the user's ID token as
    the claim token (the only claim token format oxAuth supports)."""
    token_endpoint = devas.discovery["token_endpoint"]
    if devas.profile == "keycloak":
        access = devas.user_tokens(user)["access_token"]
        r = requests.post(token_endpoint, data={"grant_type": UMA_GRANT, "ticket": ticket},
                          headers={"Authorization": f"Bearer {access}"}, timeout=5)
    else:
        id_token = devas.user_tokens(user)["id_token"]
        r = requests.post(token_endpoint, data={"grant_type": UMA_GRANT, "ticket": ticket, "claim_token": id_token,
                                                "claim_token_format": ID_TOKEN_FORMAT}, auth=client, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def round_trip(envoy, devas, path: str, user: str, **kw) -> tuple[str, requests.Response]:
    first = requests.get(envoy.url(path), timeout=10)
    assert first.status_code == 401, (first.status_code, first.text, first.headers.get("warning"))
    ticket = parse_challenge(first.headers["www-authenticate"])["ticket"]
    rpt = grant(devas, ticket, user, **kw)
    return rpt, requests.get(envoy.url(path), headers={"Authorization": f"Bearer {rpt}"}, timeout=10)


@pytest.mark.parametrize("profile", DIALECTS)
def test_the_pat_request_follows_the_dialect(request, envoy_factory, echo, profile):
    devas = devas_for(request, profile)
    envoy = envoy_factory(filter_config(devas, resources=RESOURCES), devas.port, echo.port)
    resp = requests.get(envoy.url("/alice"), timeout=10)
    # With Keycloak's PAT refused, this was 403 + "AS unreachable" on every protected request.
    assert resp.status_code == 401, (resp.status_code, resp.headers.get("warning"), envoy.logs()[-1500:])
    parse_challenge(resp.headers["www-authenticate"])
    pat_calls = [c for c in devas.calls("token") if c.get("grant_type") == "client_credentials"]
    assert len(pat_calls) == 1
    form = parse_qs(pat_calls[0]["body"])
    if profile == "keycloak":
        assert "scope" not in form, form
    else:
        assert form["scope"] == ["uma_protection"], form


@pytest.mark.parametrize("profile", DIALECTS)
@pytest.mark.parametrize("local_jwt_validation", [True, False])
def test_the_forwarded_identity_names_the_user(request, envoy_factory, echo, profile, local_jwt_validation):
    devas = devas_for(request, profile)
    config = filter_config(devas, resources=RESOURCES, forward=FORWARD, local_jwt_validation=local_jwt_validation)
    envoy = envoy_factory(config, devas.port, echo.port)
    rpt, resp = round_trip(envoy, devas, "/alice/doc", "bob")
    assert resp.status_code == 200, resp.text
    claims = identity(resp)
    # bob, granted GET on Alice's space; never the client, never empty.
    assert claims["sub"] == "bob-0002", claims
    assert claims["client_id"] == "demo-app", claims
    assert claims.get("preferred_username") == "bob", claims
    assert claims["permissions"][0]["resource_id"] == "res-alice"
    introspected = len(devas.calls("introspection"))
    if profile == "keycloak" and local_jwt_validation:
        assert introspected == 0
    else:
        assert introspected == 1


def test_gluu_jwt_rpts_signed_with_the_client_secret_are_introspected(envoy_factory, uma2_as, echo):
    config = filter_config(uma2_as, resources=RESOURCES, forward=FORWARD)
    envoy = envoy_factory(config, uma2_as.port, echo.port)
    rpt, resp = round_trip(envoy, uma2_as, "/alice", "alice", client=("jwt-hs-app", "jwt-hs-secret"))
    header = jwt.get_unverified_header(rpt)
    assert header["alg"] == "HS256", header
    # Refused locally before, without asking the AS that could vouch for it.
    assert resp.status_code == 200, resp.text
    assert len(uma2_as.calls("introspection")) == 1
    claims = identity(resp)
    assert claims["sub"] == "alice-0001"
    assert claims["client_id"] == "jwt-hs-app"


@pytest.mark.parametrize("profile", DIALECTS)
def test_an_as_clock_ahead_is_tolerated_by_default(request, envoy_factory, echo, profile):
    devas = devas_for(request, profile)
    permissions = [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}]
    tolerant = envoy_factory(filter_config(devas, resources=RESOURCES), devas.port, echo.port)
    strict = envoy_factory(filter_config(devas, resources=RESOURCES, clock_skew_s=0), devas.port, echo.port)
    # Issued by an AS whose clock runs 20 s ahead: `iat` (and a `nbf` derived from it) is in
    # the future by this machine's clock.
    ahead = devas.mint_rpt("alice-0001", permissions, iat_in=20)
    auth = {"Authorization": f"Bearer {ahead}"}
    assert requests.get(tolerant.url("/alice"), headers=auth, timeout=10).status_code == 200
    # The knob still means what it says: no tolerance, no entry (a fresh ticket instead).
    assert requests.get(strict.url("/alice"), headers=auth, timeout=10).status_code == 401
    # Beyond the default 60 s the AS's clock is wrong, not ahead: refused.
    far = devas.mint_rpt("alice-0001", permissions, iat_in=120)
    assert requests.get(tolerant.url("/alice"), headers={"Authorization": f"Bearer {far}"},
                        timeout=10).status_code == 401


def test_an_issuer_with_a_trailing_slash_does_not_load(uma2_as, echo):
    config = filter_config(uma2_as, resources=RESOURCES, issuer=uma2_as.issuer + "/")
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        code = envoy.exited(timeout=20)
        logs = envoy.logs()
        assert "config key `issuer`" in logs, logs[-2000:]
        assert f'write "{uma2_as.issuer}"' in logs, logs[-2000:]
        assert code not in (None, 0)
    finally:
        envoy.stop()


def test_keycloak_jwt_rpts_must_name_the_pep_and_tickets_are_no_rpts(envoy_factory, keycloak_as, echo):
    envoy = envoy_factory(filter_config(keycloak_as, resources=RESOURCES), keycloak_as.port, echo.port)
    permissions = [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}]
    for_another = keycloak_as.mint_rpt("alice-0001", permissions, claims={"aud": ["some-other-app"]})
    resp = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {for_another}"}, timeout=10)
    assert resp.status_code == 401
    assert keycloak_as.calls("introspection") == []
    # Turned off explicitly, the same RPT is accepted (the AS signed it, for this resource).
    lax = envoy_factory(filter_config(keycloak_as, resources=RESOURCES, rpt_audience=None),
                        keycloak_as.port, echo.port)
    assert requests.get(lax.url("/alice"), headers={"Authorization": f"Bearer {for_another}"},
                        timeout=10).status_code == 200
    # The 401's ticket sent back as a bearer: Keycloak signs it HS512 (not verifiable with the
    # JWKS), so the AS is asked, and a ticket is no RPT.
    ticket = parse_challenge(requests.get(envoy.url("/alice"), timeout=10).headers["www-authenticate"])["ticket"]
    echo.reset()
    resp = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {ticket}"}, timeout=10)
    assert resp.status_code == 401
    assert echo.log() == []


@pytest.fixture(scope="module")
def janssen_as():
    from support.devas import DevAs
    service = DevAs("janssen")
    yield service
    service.stop()


def test_janssen_with_uma_switched_off_fails_closed_and_says_why(envoy_factory, janssen_as, echo):
    """Janssen ships with the UMA feature flag off: every UMA endpoint, discovery included,
    answers 403 access_denied. Nothing is forwarded, the log names the AS's refusal, and once the
    operator turns UMA on the PEP works without a restart."""
    janssen_as.reset()
    config = filter_config(janssen_as, resources=RESOURCES, forward=FORWARD)
    assert config["as_profile"] == "uma2"
    envoy = envoy_factory(config, janssen_as.port, echo.port)
    resp = requests.get(envoy.url("/alice"), timeout=10)
    assert resp.status_code == 403
    assert resp.headers["warning"] == '199 - "UMA Authorization Server Unreachable"'
    assert echo.log() == []
    assert "discovery failed: refused with status 403 (access_denied)" in envoy.logs(), envoy.logs()[-2000:]
    janssen_as.configure(uma_feature_enabled=True)
    resp = poll_until(envoy.url("/alice"), 401)
    assert resp.status_code == 401
    rpt, resp = round_trip(envoy, janssen_as, "/alice/doc", "alice")
    assert resp.status_code == 200, resp.text
    assert identity(resp)["sub"] == "alice-0001"
