"""End to end: the Resource API takes the tokens EOEPCA services hold, with the same ownership and
operator rules as a user's own token (real pepctl against devas; the filter's identity JWT from a
real Envoy):

* a JWT RPT whose party pushed `isOperator: true` (Gluu/Janssen `rpt_as_jwt`: the party's claims
  are in `pct_claims`, the RPT has no `sub`) is an operator;
* an opaque RPT (Gluu/Janssen), as a service behind the PEP received it in `Authorization`, is
  resolved by introspection at the AS;
* the identity JWT the filter minted (`forward`, in `x-user-id`), as the service received it, is
  verified with the forward key (its `iss`, `aud` and `exp` too).

Each is attacked: a forged signature, an expired or misdirected token, an inactive RPT."""

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
import requests

from support.echo import Echo
from support.envoy import WASM, Envoy, filter_config
from support.processes import ROOT

FORWARD_KEY = ROOT / "control-plane/tests/keys/p256.pem"
OTHER_KEY = ROOT / "control-plane/tests/keys/ed25519.pem"
AUDIENCE = "resource-api"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def with_payload(token: str, claims: dict) -> str:
    """`token` with its payload replaced and its signature kept: a forgery."""
    header, _, signature = token.split(".")
    return f"{header}.{b64(json.dumps(claims).encode())}.{signature}"


def home_for(server, admin_token: str, owner: str, path: str) -> None:
    r = server.request("POST", "/resources", admin_token, json={"name": f"Home {owner}", "icon_uri": path,
                                                               "uuid": owner})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_a_jwt_rpt_whose_party_pushed_is_operator_is_an_operator(server, devas):
    admin_rpt = devas.mint_rpt("admin-0003", [], jwt=True)
    claims = claims_of(admin_rpt)
    assert "sub" not in claims and claims["pct_claims"]["isOperator"] is True, claims

    # Operator only: creating for another user, anywhere.
    r = server.request("POST", "/resources", admin_rpt, json={"name": "Carol", "icon_uri": "/carol",
                                                             "uuid": "carol-0004"})
    assert r.status_code == 200, (r.status_code, r.headers.get("Error"), r.text)
    assert r.json()["ownership_id"] == "carol-0004"
    r = server.request("GET", "/resources", admin_rpt)
    assert r.status_code == 200 and [x["icon_uri"] for x in r.json()] == ["/carol"], r.text

    # The party of a JWT RPT is its pushed sub: alice is no operator, and owns what she creates.
    alice_rpt = devas.mint_rpt("alice-0001", [], jwt=True)
    r = server.request("POST", "/resources", alice_rpt, json={"name": "X", "icon_uri": "/x", "uuid": "carol-0004"})
    assert r.status_code == 403, r.text
    assert server.request("GET", "/resources", alice_rpt).json() == []

    # Attacks: alice's RPT with isOperator pushed in afterwards (signature kept), or re-signed
    # with a key the AS never published.
    forged = with_payload(alice_rpt, {**claims_of(alice_rpt),
                                      "pct_claims": {"sub": "alice-0001", "isOperator": True}})
    self_signed = jwt.encode({**claims_of(alice_rpt), "pct_claims": {"sub": "admin-0003", "isOperator": True}},
                             FORWARD_KEY.read_text(), algorithm="ES256",
                             headers={"kid": jwt.get_unverified_header(admin_rpt)["kid"]})
    for token in (forged, self_signed):
        r = server.request("POST", "/resources", token, json={"name": "Evil", "icon_uri": "/evil"})
        assert r.status_code == 401 and r.headers["Error"] == "invalid token", r.text
    expired = devas.mint_rpt("admin-0003", [], jwt=True, exp_in=-60)
    assert server.request("GET", "/resources", expired).status_code == 401


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_an_opaque_rpt_is_resolved_by_introspection(server, devas):
    admin_rpt = devas.mint_rpt("admin-0003", [], jwt=False)
    assert admin_rpt.count(".") != 2, "opaque"
    home_for(server, admin_rpt, "alice-0001", "/home/alice")

    alice_rpt = devas.mint_rpt("alice-0001", [{"resource_id": "res-alice", "resource_scopes": ["protected_get"]}],
                               jwt=False)
    r = server.request("POST", "/resources", alice_rpt, json={"name": "Doc", "icon_uri": "/home/alice/doc"})
    assert r.status_code == 200, (r.status_code, r.headers.get("Error"), r.text)
    assert r.json()["ownership_id"] == "alice-0001"
    r = server.request("GET", "/resources", alice_rpt)
    assert sorted(x["icon_uri"] for x in r.json()) == ["/home/alice", "/home/alice/doc"], r.text
    bob_rpt = devas.mint_rpt("bob-0002", [], jwt=False)
    r = server.request("POST", "/resources", bob_rpt, json={"name": "B", "icon_uri": "/home/alice/b"})
    assert r.status_code == 403, r.text
    assert any(c["endpoint"] == "introspection" for c in devas.calls()), "resolved at the AS"

    # Inactive, unknown or revoked: refused.
    inactive = devas.mint_rpt("admin-0003", [], jwt=False, active=False)
    for token in (inactive, "0d6c5a3e-9b1f-4c55-8f5b-000000000000_12345678"):
        r = server.request("GET", "/resources", token)
        assert r.status_code == 401 and r.headers["Error"] == "invalid token", r.text
    requests.post(f"{devas.base}/_devas/revoke", json={"kind": "rpt"}, timeout=5).raise_for_status()
    assert server.request("GET", "/resources", alice_rpt).status_code == 401


@pytest.mark.parametrize("devas", ["uma2", "keycloak"], indirect=True)
def test_the_filters_identity_jwt_is_a_caller(pepctl, devas, tmp_path):
    if not WASM.exists():
        pytest.fail(f"{WASM} is missing: build the filter first (or set UMA_PEP_WASM)")
    pepctl.use_seeded_client()
    echo = Echo()
    server = pepctl.serve("--forward-jwks", str(FORWARD_KEY), "--forward-audience", AUDIENCE)
    forward = {"key_pem": FORWARD_KEY.read_text(), "alg": "ES256", "aud": AUDIENCE}
    envoy = Envoy(filter_config(devas, resources=[{"id": "res-alice", "uri": "/alice"},
                                                  {"id": "res-admin", "uri": "/admin"}], forward=forward),
                  devas.port, echo.port)
    try:
        def identity_jwt(sub: str, resource: str, path: str) -> str:
            # Keycloak: EOEPCA's realm maps the user attribute isOperator into the token; Gluu: the
            # party's claims are pushed (pct_claims), which the filter copies into its JWT.
            extra = {"claims": {"isOperator": sub == "admin-0003"}} if devas.profile == "keycloak" else {}
            rpt = devas.mint_rpt(sub, [{"resource_id": resource, "resource_scopes": ["protected_get"]}], **extra)
            r = requests.get(envoy.url(path), headers={"Authorization": f"Bearer {rpt}"}, timeout=5)
            assert r.status_code == 200, (r.status_code, r.text)
            return r.json()["headers"]["x-user-id"]

        admin_tokens = identity_jwt("admin-0003", "res-admin", "/admin/x")
        alice_token = identity_jwt("alice-0001", "res-alice", "/alice/x")
        assert claims_of(alice_token)["aud"] == AUDIENCE

        def call(method: str, path: str, token: str, **kw) -> requests.Response:
            return requests.request(method, server.base + path, headers={"x-user-id": token}, timeout=10, **kw)

        # The operator creates alice's home for her; alice then creates under it and sees hers.
        r = call("POST", "/resources", admin_tokens, json={"name": "Home", "icon_uri": "/home/alice",
                                                           "uuid": "alice-0001"})
        assert r.status_code == 200, (r.status_code, r.text, claims_of(admin_tokens), server.proc.output()[-3000:])
        r = call("POST", "/resources", alice_token, json={"name": "Doc", "icon_uri": "/home/alice/doc"})
        assert r.status_code == 200, (r.text, claims_of(alice_token), server.proc.output()[-3000:])
        assert r.json()["ownership_id"] == "alice-0001"
        assert call("POST", "/resources", alice_token, json={"name": "X", "icon_uri": "/x"}).status_code == 403
        assert len(call("GET", "/resources", alice_token).json()) == 2

        # Attacks, each a 401: forged with another key (with the forward key's kid), expired,
        # for another audience, of another issuer, an AS token in the identity header, unsigned.
        key = FORWARD_KEY.read_text()
        kid = jwt.get_unverified_header(alice_token)["kid"]
        base = {**claims_of(admin_tokens), "exp": int(time.time()) + 60}
        attacks = {
            "forged": jwt.encode(base, OTHER_KEY.read_text(), algorithm="EdDSA", headers={"kid": kid}),
            "payload swapped": with_payload(alice_token, {**claims_of(alice_token), "isOperator": True,
                                                          "sub": "admin-0003"}),
            "expired": jwt.encode({**base, "exp": int(time.time()) - 120}, key, algorithm="ES256",
                                  headers={"kid": kid}),
            "wrong aud": jwt.encode({**base, "aud": "another-service"}, key, algorithm="ES256",
                                    headers={"kid": kid}),
            "wrong iss": jwt.encode({**base, "iss": devas.issuer}, key, algorithm="ES256", headers={"kid": kid}),
            "the AS's token": devas.user_token("admin"),
            "unsigned": f"{b64(json.dumps({'alg': 'none', 'kid': kid}).encode())}.{b64(json.dumps(base).encode())}.",
        }
        for what, token in attacks.items():
            r = call("POST", "/resources", token, json={"name": "Evil", "icon_uri": "/evil"})
            assert r.status_code == 401, (what, r.status_code, r.text)
            assert r.headers["Error"] == "invalid token", (what, r.headers)
        assert call("GET", "/resources", admin_tokens).status_code == 200, "the genuine one still works"
    finally:
        envoy.stop()
        server.stop()
        echo.stop()


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_identity_jwts_are_refused_unless_pepctl_is_told_the_forward_key(server):
    token = jwt.encode({"iss": "uma-pep", "sub": "admin-0003", "aud": AUDIENCE, "exp": int(time.time()) + 60,
                        "isOperator": True}, Path(FORWARD_KEY).read_text(), algorithm="ES256")
    r = requests.get(server.base + "/resources", headers={"x-user-id": token}, timeout=5)
    assert r.status_code == 401, r.text
