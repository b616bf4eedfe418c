"""End to end: the JWT the filter mints for the upstream (`forward`). Verified here with PyJWT
and the public key from `cryptography` — a verifier independent of the minting code — for each
alg; header hygiene; one signature per RPT; no cross-token leak across two workers; PARTIAL
mode; the JWKS the filter serves; the signing cost of each alg inside V8, as the filter logs it."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import filter_config
from support.processes import ROOT
from support.uma_client import parse_challenge



ALGS = ["RS256", "ES256", "EdDSA"]
MINT_LOG = re.compile(r"minted forwarded JWT alg=(\w+) in (\d+) us")


def private_key(alg: str):
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def pkcs8_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module", params=ALGS)
def forwarding(request, envoy_factory, uma2_as, echo):
    alg = request.param
    key = private_key(alg)
    forward = {"alg": alg, "key_pem": pkcs8_pem(key), "aud": "ades", "jwks_path": "/.well-known/pep-jwks"}
    # RS256 stalls a worker ~12 ms per signature: AS calls queued behind 40 of them need room.
    config = filter_config(uma2_as, resources=RESOURCES, authorize_path="/authorize", forward=forward,
                           timeout_ms=5000)
    # The mint lines `test_record_signing_cost` reads are per request: at `debug`.
    envoy = envoy_factory(config, uma2_as.port, echo.port, concurrency=2, wasm_log_level="debug")
    return alg, key.public_key(), envoy


def rpt(devas, sub: str, resource_id: str = "res-alice", exp_in: int = 120, **kw) -> str:
    return devas.mint_rpt(sub, [{"resource_id": resource_id, "resource_scopes": ALL_SCOPES}], exp_in=exp_in, **kw)


def verify(token: str, alg: str, public_key) -> dict:
    return jwt.decode(token, public_key, algorithms=[alg], audience="ades", issuer="uma-pep")


def test_upstream_gets_a_verifiable_jwt_for_the_right_user(forwarding, uma2_as, echo):
    alg, public_key, envoy = forwarding
    token = rpt(uma2_as, "alice-0001", exp_in=120, client_id="demo-app")
    before = time.time()
    resp = requests.get(envoy.url("/alice/doc"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    minted = resp.json()["headers"]["x-user-id"]
    claims = verify(minted, alg, public_key)
    assert claims["sub"] == "alice-0001"
    assert claims["exp"] <= int(before) + 120 + 1
    assert claims["iat"] >= int(before) - 1
    assert claims["permissions"] == [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}]
    header = jwt.get_unverified_header(minted)
    assert header["alg"] == alg
    # The RPT stays in Authorization by default, as the seed did.
    assert resp.json()["headers"]["authorization"] == f"Bearer {token}"


def test_a_tampered_token_does_not_verify(forwarding, uma2_as):
    alg, public_key, envoy = forwarding
    token = rpt(uma2_as, "bob-0002")
    minted = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {token}"},
                          timeout=10).json()["headers"]["x-user-id"]
    head, payload, sig = minted.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin-0003"
    forged = head + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + sig
    with pytest.raises(jwt.InvalidSignatureError):
        verify(forged, alg, public_key)


def test_spoofed_header_is_removed_everywhere(forwarding, uma2_as, echo):
    alg, public_key, envoy = forwarding
    spoof = {"X-User-Id": "forged"}
    # Protected, valid RPT: the header is the PEP's, not the client's.
    resp = requests.get(envoy.url("/alice"), headers={**spoof, "Authorization": f"Bearer {rpt(uma2_as, 'bob-0002')}"},
                        timeout=10)
    assert verify(resp.json()["headers"]["x-user-id"], alg, public_key)["sub"] == "bob-0002"
    # Protected, no RPT: a challenge, nothing forwarded.
    assert requests.get(envoy.url("/alice"), headers=spoof, timeout=10).status_code == 401
    # Unmatched: passed through without the header.
    unmatched = requests.get(envoy.url("/public"), headers=spoof, timeout=10)
    assert unmatched.status_code == 200
    assert "x-user-id" not in unmatched.json()["headers"]
    assert [r["path"] for r in echo.log()] == ["/alice", "/public"]


def test_one_signature_per_rpt(forwarding, uma2_as):
    alg, public_key, envoy = forwarding
    token = rpt(uma2_as, "alice-0001")
    before = envoy.counters().get("jwt_minted", 0)
    minted = set()
    for _ in range(8):
        resp = requests.get(envoy.url("/alice/x"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
        minted.add(resp.json()["headers"]["x-user-id"])
    assert len(minted) == 1
    assert envoy.counters()["jwt_minted"] - before == 1
    # Another resource is another permission set: its own token.
    other = requests.get(envoy.url("/alice/docs/x"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert other.status_code == 401  # the RPT only covers res-alice


def test_no_cross_token_leak_with_many_users_on_two_workers(forwarding, uma2_as):
    alg, public_key, envoy = forwarding
    users = [f"user-{i:03d}" for i in range(40)]
    tokens = {u: rpt(uma2_as, u) for u in users}

    def call(user: str) -> tuple[str, str]:
        resp = requests.get(envoy.url(f"/alice/{user}"), headers={"Authorization": f"Bearer {tokens[user]}"}, timeout=20)
        assert resp.status_code == 200, resp.text
        return user, verify(resp.json()["headers"]["x-user-id"], alg, public_key)["sub"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, users * 3))
    assert all(user == sub for user, sub in results)


def test_partial_mode_returns_the_header(forwarding, uma2_as, echo):
    alg, public_key, envoy = forwarding
    resp = requests.get(envoy.url("/authorize"), timeout=10, headers={
        "X-Original-URI": "/alice/x", "X-Original-Method": "PUT",
        "Authorization": f"Bearer {rpt(uma2_as, 'alice-0001')}"})
    assert resp.status_code == 200
    assert verify(resp.headers["x-user-id"], alg, public_key)["sub"] == "alice-0001"
    denied = requests.get(envoy.url("/authorize"), headers={"X-Original-URI": "/alice/x", "X-Original-Method": "GET"},
                          timeout=10)
    assert denied.status_code == 401
    assert "x-user-id" not in denied.headers
    parse_challenge(denied.headers["www-authenticate"])
    assert echo.log() == []


def test_filter_serves_the_jwks_that_verifies(forwarding, uma2_as):
    alg, public_key, envoy = forwarding
    jwks = requests.get(envoy.url("/.well-known/pep-jwks"), timeout=10).json()
    minted = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {rpt(uma2_as, 'alice-0001')}"},
                          timeout=10).json()["headers"]["x-user-id"]
    kid = jwt.get_unverified_header(minted)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    key = jwt.PyJWK(jwk).key
    assert verify(minted, alg, key)["sub"] == "alice-0001"


def test_record_signing_cost(forwarding, uma2_as):
    """Mints fresh tokens and records what the filter measured (in V8) for the closing note."""
    alg, public_key, envoy = forwarding
    for i in range(5):
        requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {rpt(uma2_as, f'cost-{i}')}"}, timeout=10)
    costs = [int(us) for a, us in MINT_LOG.findall(envoy.logs()) if a == alg]
    assert len(costs) >= 5
    out = ROOT / "target" / "signing-cost.json"
    data = json.loads(out.read_text()) if out.exists() else {}
    data[alg] = {"samples_us": costs, "median_us": sorted(costs)[len(costs) // 2]}
    out.write_text(json.dumps(data, indent=1))


def test_strip_authorization_option(envoy_factory, uma2_as, echo):
    key = private_key("EdDSA")
    config = filter_config(uma2_as, resources=RESOURCES,
                           forward={"alg": "EdDSA", "key_pem": pkcs8_pem(key), "strip_authorization": True})
    envoy = envoy_factory(config, uma2_as.port, echo.port)
    resp = requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {rpt(uma2_as, 'alice-0001')}"},
                        timeout=10)
    assert resp.status_code == 200
    seen = resp.json()["headers"]
    assert "authorization" not in seen
    claims = jwt.decode(seen["x-user-id"], key.public_key(), algorithms=["EdDSA"], issuer="uma-pep")
    assert claims["sub"] == "alice-0001"


def test_a_key_that_does_not_fit_the_alg_is_a_config_error(uma2_as, echo):
    from support.envoy import Envoy
    config = filter_config(uma2_as, resources=RESOURCES,
                           forward={"alg": "RS256", "key_pem": pkcs8_pem(private_key("EdDSA"))})
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        assert envoy.exited(timeout=20) not in (None, 0)
        assert "config key `forward.key_pem`" in envoy.logs()
    finally:
        envoy.stop()

