"""End to end with several Envoy workers: what the AS is asked. One introspection per RPT per
Envoy, one PAT per Envoy, single flight per worker, exact use counts across workers, local
validation of JWT RPTs (no AS call, forgeries refused) and cache expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import filter_config
from support.uma_client import parse_challenge



WORKERS = 4


def get(envoy, path: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(envoy.url(path), headers=headers, timeout=10)


def rpt(devas, resource_id="res-alice", sub="alice-0001", **kw) -> str:
    return devas.mint_rpt(sub, [{"resource_id": resource_id, "resource_scopes": ALL_SCOPES}], **kw)


def parallel(fn, items, threads=16):
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))


def pat_requests(devas) -> list[dict]:
    return [c for c in devas.calls("token") if c.get("grant_type") == "client_credentials"]


@pytest.fixture(scope="module")
def gluu_envoy(envoy_factory, uma2_as, echo):
    uma2_as.reset()
    config = filter_config(uma2_as, resources=RESOURCES, rpt_max_uses=0)
    return envoy_factory(config, uma2_as.port, echo.port, concurrency=WORKERS)


def test_one_pat_and_one_discovery_per_envoy(envoy_factory, uma2_as, echo):
    # An Envoy of its own, started after this test's reset of the AS's call log (the module's
    # Envoy may have fetched its session before that reset); every worker needs the session.
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES), uma2_as.port, echo.port,
                          concurrency=WORKERS)
    statuses = parallel(lambda _: get(envoy, "/bob/x").status_code, range(40))
    assert set(statuses) == {401}
    assert len(pat_requests(uma2_as)) == 1
    assert len(uma2_as.calls("discovery")) == 1


def test_pat_is_refreshed_in_the_background_once_per_envoy(envoy_factory, uma2_as, echo):
    # PATs that live 4 s: refreshed at 80% by one worker, while requests go on with the old one.
    uma2_as.configure(pat_lifetime_s=4)
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES), uma2_as.port, echo.port,
                          concurrency=WORKERS)
    statuses, start = [], time.time()
    while time.time() - start < 9:
        statuses += parallel(lambda _: get(envoy, "/bob/x").status_code, range(8), threads=8)
        time.sleep(0.1)
    assert set(statuses) == {401}, statuses
    # About one PAT per 3.2 s for the whole Envoy: 3 or 4 in 9 s, one per worker would be 12 or
    # more. On a loaded 2-core machine a refresh lease can lapse once, hence the room.
    assert 2 <= len(pat_requests(uma2_as)) <= 6


def test_many_requests_with_one_rpt_make_one_introspection(gluu_envoy, uma2_as):
    token = rpt(uma2_as)
    assert get(gluu_envoy, "/alice", token).status_code == 200
    statuses = parallel(lambda _: get(gluu_envoy, "/alice/x", token).status_code, range(60))
    assert set(statuses) == {200}
    assert len(uma2_as.calls("introspection")) == 1
    assert gluu_envoy.counters()["cache_hits"] >= 60


def test_concurrent_first_requests_make_at_most_one_introspection_per_worker(gluu_envoy, uma2_as):
    token = rpt(uma2_as)
    uma2_as.fault("introspection", "delay", delay_ms=300, times=-1)
    statuses = parallel(lambda _: get(gluu_envoy, "/alice/y", token).status_code, range(32), threads=32)
    assert set(statuses) == {200}
    assert 1 <= len(uma2_as.calls("introspection")) <= WORKERS


def test_the_cached_decision_covers_every_resource_and_scope_of_the_rpt(gluu_envoy, uma2_as):
    token = uma2_as.mint_rpt("alice-0001", [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}])
    assert get(gluu_envoy, "/alice", token).status_code == 200
    # Same RPT, a scope it lacks: decided from the cache, answered with a ticket.
    resp = requests.delete(gluu_envoy.url("/alice"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 401
    parse_challenge(resp.headers["www-authenticate"])
    assert len(uma2_as.calls("introspection")) == 1


def test_cache_never_outlives_the_rpt(gluu_envoy, uma2_as):
    # exp in 8 s, margin 5 s: accepted for about 3 s, then refused without a new introspection
    # answer being able to change that.
    token = rpt(uma2_as, exp_in=8)
    assert get(gluu_envoy, "/alice", token).status_code == 200
    time.sleep(4)
    assert get(gluu_envoy, "/alice", token).status_code == 401


def test_inactive_rpts_are_remembered_briefly(gluu_envoy, uma2_as):
    token = "unknown-opaque-token"
    for _ in range(5):
        assert get(gluu_envoy, "/alice", token).status_code == 401
    # Each worker may ask once; then the negative answer is cached.
    assert len(uma2_as.calls("introspection")) <= WORKERS


def test_rpt_max_uses_is_exact_across_workers(envoy_factory, uma2_as, echo):
    config = filter_config(uma2_as, resources=RESOURCES, rpt_max_uses=7)
    envoy = envoy_factory(config, uma2_as.port, echo.port, concurrency=WORKERS)
    token = rpt(uma2_as)
    statuses = parallel(lambda _: get(envoy, "/alice", token).status_code, range(40), threads=20)
    assert statuses.count(200) == 7
    assert statuses.count(401) == 33
    assert len(echo.log()) == 7


def test_a_used_up_rpt_never_gets_uses_back_when_slots_collide(envoy_factory, uma2_as, echo):
    # 16 slots (the minimum) for 24 RPTs: counts must share slots. An RPT whose count cannot be
    # kept is refused (fail closed); one that was used up stays used up.
    config = filter_config(uma2_as, resources=RESOURCES, rpt_max_uses=1, cache_slots=16)
    envoy = envoy_factory(config, uma2_as.port, echo.port, concurrency=2)
    tokens = [rpt(uma2_as, sub=f"user-{i}") for i in range(24)]
    first = [get(envoy, "/alice", t).status_code for t in tokens]
    assert first.count(200) >= 8
    assert set(first) <= {200, 401}
    again = [get(envoy, "/alice", t).status_code for t, status in zip(tokens, first) if status == 200]
    assert set(again) == {401}
    assert len(echo.log()) == first.count(200)


# ---- JWT RPTs, validated locally --------------------------------------------------------------

@pytest.fixture(scope="module")
def keycloak_envoy(envoy_factory, keycloak_as, echo):
    config = filter_config(keycloak_as, resources=RESOURCES)
    return envoy_factory(config, keycloak_as.port, echo.port, concurrency=2)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_jwt_rpts_are_validated_without_an_as_call(keycloak_envoy, keycloak_as):
    token = rpt(keycloak_as)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    statuses = [get(keycloak_envoy, "/alice/z", token).status_code for _ in range(10)]
    assert statuses == [200] * 10
    assert keycloak_as.calls("introspection") == []
    # Only the JWKS was fetched (at most once per worker, and only once a JWT was seen).
    assert len(keycloak_as.calls("jwks")) <= 2


def test_jwt_rpt_for_another_resource_gets_a_ticket(keycloak_envoy, keycloak_as):
    token = rpt(keycloak_as, resource_id="res-bob")
    assert get(keycloak_envoy, "/alice", token).status_code == 401
    assert keycloak_as.calls("introspection") == []


def test_forged_jwt_rpts_are_refused(keycloak_envoy, keycloak_as, echo):
    good = rpt(keycloak_as)
    head, payload, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    header = jwt.get_unverified_header(good)

    tampered = f"{head}.{b64({**claims, 'sub': 'admin-0003', 'authorization': {'permissions': [{'rsid': 'res-bob'}]}})}.{sig}"
    alg_none = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{payload}."
    wrong_iss = rpt(keycloak_as, claims={"iss": "http://evil.example/realms/eoepca"})
    assert jwt.decode(wrong_iss, options={"verify_signature": False})["iss"] == "http://evil.example/realms/eoepca"
    expired = rpt(keycloak_as, exp_in=-30)
    # HS256 keyed with the AS's public key (the classic confusion attack), built by hand:
    # PyJWT rightly refuses to do it.
    jwks = requests.get(keycloak_as.issuer + "/protocol/openid-connect/certs", timeout=5).json()
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': header['kid']})}.{payload}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    # Verifiably bad with what the JWKS holds: refused without asking the AS.
    for name, token in [("tampered", tampered), ("alg none", alg_none), ("wrong iss", wrong_iss),
                        ("expired", expired)]:
        resp = get(keycloak_envoy, "/bob", token)
        assert resp.status_code == 401, name
        parse_challenge(resp.headers["www-authenticate"])
    assert keycloak_as.calls("introspection") == []
    # A symmetric algorithm cannot be checked with a JWKS (Gluu signs HS256 RPTs with the
    # client secret): the AS decides, and it refuses the forgery. Never verified locally with
    # the public key as the secret.
    resp = get(keycloak_envoy, "/bob", hs256)
    assert resp.status_code == 401
    parse_challenge(resp.headers["www-authenticate"])
    assert len(keycloak_as.calls("introspection")) == 1
    assert echo.log() == []


def test_unknown_kid_causes_one_jwks_refresh_then_introspection(keycloak_envoy, keycloak_as):
    assert get(keycloak_envoy, "/alice", rpt(keycloak_as)).status_code == 200
    before = len(keycloak_as.calls("jwks"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = jwt.decode(rpt(keycloak_as), options={"verify_signature": False})
    stranger = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-the-as-key"})
    statuses = [get(keycloak_envoy, "/alice", stranger).status_code for _ in range(6)]
    assert statuses == [401] * 6
    # Rate limited: at most one refresh per worker.
    assert len(keycloak_as.calls("jwks")) - before <= 2
    # A key the JWKS lacks even after the refresh: only the AS can tell, and it says inactive
    # (remembered briefly, so once per worker at most).
    assert 1 <= len(keycloak_as.calls("introspection")) <= 2


def test_gluu_jwt_rpts_with_top_level_permissions(envoy_factory, uma2_as, echo):
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES), uma2_as.port, echo.port)
    token = rpt(uma2_as, jwt=True)
    assert token.count(".") == 2
    assert "permissions" in jwt.decode(token, options={"verify_signature": False})
    assert get(envoy, "/alice", token).status_code == 200
    assert uma2_as.calls("introspection") == []


def test_forced_introspection_switch(envoy_factory, keycloak_as, echo):
    config = filter_config(keycloak_as, resources=RESOURCES, local_jwt_validation=False)
    envoy = envoy_factory(config, keycloak_as.port, echo.port)
    assert get(envoy, "/alice", rpt(keycloak_as)).status_code == 200
    assert len(keycloak_as.calls("introspection")) == 1
    assert keycloak_as.calls("jwks") == []
