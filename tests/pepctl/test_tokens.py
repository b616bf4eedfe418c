"""Caller identity on the Resource API: only tokens the AS signed, for this issuer, unexpired,
from `Authorization`, count; a forged `isOperator` is refused."""

import base64
import json
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from support.devas import DevAs
from support.pepctl import Pepctl

CREATE = {"name": "Ops", "icon_uri": "/ops"}


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def as_kid(devas) -> str:
    return jwt.get_unverified_header(devas.user_token("admin"))["kid"]


def jwks_n(devas) -> str:
    return requests.get(devas.discovery["jwks_uri"], timeout=5).json()["keys"][0]["n"]


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_genuine_operator_token_works(server, devas):
    r = server.request("POST", "/resources", devas.user_token("admin"), json=CREATE)
    assert r.status_code == 200, r.text


def test_forged_tokens_are_refused(server, devas):
    alice = devas.user_token("alice")
    header, payload, sig = alice.split(".")
    forged_claims = {**claims_of(alice), "isOperator": True, "sub": "admin-0003"}
    own_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    cases = {
        "forged isOperator, original signature": f"{header}.{b64(forged_claims)}.{sig}",
        "alg none": f"{b64({'alg': 'none', 'kid': as_kid(devas)})}.{b64(forged_claims)}.",
        "self-signed with the AS's kid": jwt.encode(forged_claims, own_key, algorithm="RS256",
                                                    headers={"kid": as_kid(devas)}),
        "self-signed, seed style kid RSA1": jwt.encode(forged_claims, own_key, algorithm="RS256",
                                                       headers={"kid": "RSA1"}),
        "HS256 keyed with the AS public key": jwt.encode(
            forged_claims, jwks_n(devas).encode(), algorithm="HS256", headers={"kid": as_kid(devas)}),
        "garbage": "a.b.c",
        "opaque nonsense": "not-a-token-at-all",
    }
    for what, token in cases.items():
        r = server.request("POST", "/resources", token, json=CREATE)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
        assert r.json()["error"] == "invalid_token", what
    assert server.request("GET", "/resources", devas.user_token("admin")).json() == [], "nothing was created"


def test_token_only_from_authorization(server, devas):
    admin = devas.user_token("admin")
    for headers in ({"X-Auth-Token": f"Bearer {admin}"}, {"Cookie": f"token=Bearer {admin}"},
                    {"Authorization": f"Basic {admin}"}):
        r = server.request("POST", "/resources", json=CREATE, headers=headers)
        assert r.status_code == 401, headers
    r = server.request("POST", "/resources?access_token=" + admin, json=CREATE)
    assert r.status_code == 401


def test_foreign_issuer_is_refused(server, devas):
    other = DevAs(devas.profile)
    try:
        r = server.request("POST", "/resources", other.user_token("admin"), json=CREATE)
        assert r.status_code == 401, r.text
    finally:
        other.stop()


@pytest.mark.parametrize("devas", ["keycloak"], indirect=True)
def test_expired_token_is_refused(tmp_path, devas):
    # Long enough that a slow machine still uses the token before it lapses (a 1 s token, with
    # exp counted in whole seconds, could be stale by its first use); then wait past its own exp.
    short = DevAs("keycloak", seed=_seed(tmp_path, user_token_lifetime_s=6))
    try:
        p = Pepctl(tmp_path, short)
        p.use_seeded_client()
        server = p.serve("--leeway-s", "0")
        try:
            token = short.user_token("admin")
            r = server.request("GET", "/resources", token)
            assert r.status_code == 200, r.text
            time.sleep(max(0.0, claims_of(token)["exp"] - time.time()) + 1.5)
            r = server.request("GET", "/resources", token)
            assert r.status_code == 401, r.text
        finally:
            server.stop()
    finally:
        short.stop()


def test_audience_is_enforced_when_configured(pepctl, devas):
    pepctl.use_seeded_client()
    admin = devas.user_token("admin")
    assert claims_of(admin)["aud"] in ("demo-app", ["demo-app"])
    strict = pepctl.serve("--audience", "pepctl")
    try:
        assert strict.request("GET", "/resources", admin).status_code == 401
    finally:
        strict.stop()
    right = pepctl.serve("--audience", "demo-app")
    try:
        assert right.request("GET", "/resources", admin).status_code == 200
    finally:
        right.stop()


def _seed(tmp_path, **settings):
    path = tmp_path / "devas-seed.json"
    path.write_text(json.dumps(settings))
    return path


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_opaque_token_is_resolved_by_userinfo(server, devas):
    """Gluu PATs are opaque: pepctl asks the AS's userinfo who the caller is. A client's own token
    names no user there (`sub: null`, as oxAuth answers for a client_credentials grant), so it is
    no caller at all."""
    pat = devas.pat()
    assert pat.count(".") != 2
    before = len(devas.calls("userinfo"))
    assert server.request("GET", "/resources", pat).status_code == 401
    assert len(devas.calls("userinfo")) > before, "resolved at the AS's userinfo"
    assert server.request("POST", "/resources", pat, json=CREATE).status_code == 401
    assert server.request("GET", "/resources", "0123456789abcdef").status_code == 401
