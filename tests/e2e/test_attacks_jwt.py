"""End to end, attacks on local JWT RPT validation.

devas signs with a key of its own that a test cannot use, and serves only good keys. So the
filter is pointed (`endpoints.jwks`) at a JWKS that the test serves: a small proxy in front of
devas answers that one path itself and forwards everything else to devas. The tokens the test
signs with its own keys then stand for what the AS could sign (a ticket, a token without `iss`,
an ES256 RPT) or for a broken JWKS the AS could publish."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import filter_config
from support.uma_client import parse_challenge



JWKS_PATH = "/_test/jwks"
# The order of P-256's group.
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# The fuzz finding: an EdDSA header naming kid k1, an empty payload, a 3-byte signature.
EDDSA_PROBE = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.AAAA"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade",
              "proxy-connection", "te", "trailer"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JwksProxy:
    """Serves `jwks` at JWKS_PATH and forwards every other request to devas."""

    def __init__(self, upstream_port: int, jwks: dict):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.path.split("?")[0] == JWKS_PATH:
                    proxy.jwks_fetches += 1
                    self._answer(200, [("Content-Type", "application/json")], json.dumps(proxy.jwks).encode())
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    self._answer(resp.status, resp.getheaders(), resp.read())
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

        self.jwks = jwks
        self.jwks_fetches = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxies(keycloak_as):
    started: list[JwksProxy] = []

    def start(jwks: dict) -> JwksProxy:
        proxy = JwksProxy(keycloak_as.port, jwks)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key, kid: str) -> dict:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk, alg = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "RS256"
    else:
        jwk, alg = ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "ES256"
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


def rpt_claims(devas, **changes) -> dict:
    """A Keycloak RPT for alice on res-alice, as devas (and Keycloak) would sign it."""
    now = int(time.time())
    claims = {"iss": devas.issuer, "aud": "pep-client", "typ": "Bearer", "sub": "alice-0001",
              "azp": "demo-app", "iat": now, "exp": now + 300, "jti": f"t-{time.monotonic_ns()}",
              "authorization": {"permissions": [{"rsid": "res-alice", "scopes": ALL_SCOPES}]}}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def ticket_claims(devas, aud) -> dict:
    """Keycloak's permission ticket (PermissionTicketToken): top-level `permissions`, no `typ`."""
    now = int(time.time())
    return {"iss": devas.issuer, "aud": aud, "sub": "service-account-pep-client", "azp": "pep-client",
            "iat": now, "nbf": now, "exp": now + 300, "jti": f"t-{time.monotonic_ns()}",
            "permissions": [{"rsid": "res-alice", "scopes": ALL_SCOPES}]}


def get(envoy, path: str, token: str | None = None, method: str = "GET") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, envoy.url(path), headers=headers, timeout=10)


def start_envoy(envoy_factory, devas, proxy: JwksProxy, echo, **overrides):
    config = filter_config(devas, resources=RESOURCES, endpoints={"jwks": JWKS_PATH}, **overrides)
    return envoy_factory(config, proxy.port, echo.port)


# ---- only the dialect's RPT shape is an RPT -----------------------------------------

@pytest.mark.parametrize("aud, overrides", [
    ("ISSUER", {"rpt_audience": None}),
    ("pep-client", {}),
    (["pep-client"], {}),
], ids=["aud-issuer-audience-check-off", "aud-client", "aud-client-array"])
def test_a_ticket_signed_with_a_jwks_key_is_no_rpt(envoy_factory, keycloak_as, echo, proxies, rsa_key,
                                                   aud, overrides):
    proxy = proxies({"keys": [public_jwk(rsa_key, "as-rs")]})
    envoy = start_envoy(envoy_factory, keycloak_as, proxy, echo, **overrides)
    sign = lambda claims: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "as-rs"})  # noqa: E731
    # The key is the AS's, for this filter: a real RPT it signs is accepted locally.
    assert get(envoy, "/alice", sign(rpt_claims(keycloak_as))).status_code == 200
    echo.reset()
    ticket = sign(ticket_claims(keycloak_as, keycloak_as.issuer if aud == "ISSUER" else aud))
    for method in ("GET", "DELETE"):
        resp = get(envoy, "/alice", ticket, method)
        assert resp.status_code == 401, (method, resp.status_code, resp.text)
        assert parse_challenge(resp.headers["www-authenticate"])["ticket"]
    # Other tokens the AS signs with the same key: an access token without `authorization`, an
    # ID token.
    assert get(envoy, "/alice", sign(rpt_claims(keycloak_as, authorization=None))).status_code == 401
    assert get(envoy, "/alice", sign(rpt_claims(keycloak_as, typ="ID"))).status_code == 401
    assert echo.log() == []
    # Refused locally: the AS was not asked.
    assert keycloak_as.calls("introspection") == []


def test_the_401s_ticket_sent_back_as_bearer_is_refused(envoy_factory, keycloak_as, echo):
    """As devas and Keycloak sign it (HS512, so it is introspected): never an RPT either."""
    envoy = envoy_factory(filter_config(keycloak_as, resources=RESOURCES), keycloak_as.port, echo.port)
    ticket = parse_challenge(get(envoy, "/alice").headers["www-authenticate"])["ticket"]
    for method in ("GET", "DELETE"):
        assert get(envoy, "/alice", ticket, method).status_code == 401
    assert echo.log() == []


# ---- a malformed JWKS key cannot kill the VM ------------------------------------------

def test_a_short_ed25519_key_in_the_jwks_does_not_kill_the_vm(envoy_factory, keycloak_as, echo, proxies,
                                                              rsa_key):
    proxy = proxies({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig", "x": b64url(b"\x07" * 16)},
        public_jwk(rsa_key, "as-rs"),
    ]})
    envoy = start_envoy(envoy_factory, keycloak_as, proxy, echo)
    for _ in range(3):
        resp = get(envoy, "/alice", EDDSA_PROBE)
        # Not a key the filter holds: the AS is asked, and says no.
        assert resp.status_code == 401, (resp.status_code, envoy.logs()[-3000:])
    assert proxy.jwks_fetches >= 1
    # The VM is alive: unprotected paths pass, protected ones are decided, the good key works.
    assert get(envoy, "/public").status_code == 200
    assert get(envoy, "/alice").status_code == 401
    sign = lambda claims: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "as-rs"})  # noqa: E731
    assert get(envoy, "/alice", sign(rpt_claims(keycloak_as))).status_code == 200
    assert envoy.alive()
    logs = envoy.logs()
    assert "JWKS key k1 dropped: Ed25519 x must be 32 bytes, not 16" in logs, logs[-3000:]
    assert "panicked" not in logs


# ---- `iss` and `aud` exactly ---------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"iss": None},
    {"iss": ["ISSUER"]},
    {"iss": 42},
    {"aud": None},
    {"aud": 42},
    {"aud": {"pep-client": True}},
    {"aud": [["pep-client"]]},
], ids=["no-iss", "iss-array", "iss-number", "no-aud", "aud-number", "aud-object", "aud-nested-array"])
def test_iss_and_aud_must_have_their_exact_shapes(envoy_factory, keycloak_as, echo, proxies, rsa_key, changes):
    proxy = proxies({"keys": [public_jwk(rsa_key, "as-rs")]})
    envoy = start_envoy(envoy_factory, keycloak_as, proxy, echo)
    sign = lambda claims: jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "as-rs"})  # noqa: E731
    assert get(envoy, "/alice", sign(rpt_claims(keycloak_as))).status_code == 200
    echo.reset()
    if changes.get("iss") == ["ISSUER"]:
        changes = {"iss": [keycloak_as.issuer]}
    claims = rpt_claims(keycloak_as)
    for key, value in changes.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    resp = get(envoy, "/alice", sign(claims))
    assert resp.status_code == 401, (changes, resp.status_code)
    assert echo.log() == []


# ---- ECDSA malleability ----------------------------------------------------------------

def es256_pair(key, claims: dict, kid: str) -> tuple[str, str]:
    """The same RPT signed once, as its low-S and its high-S (r, n - s) forms."""
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
    message, signature = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(signature + "==")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    low, high = min(s, P256_N - s), max(s, P256_N - s)
    form = lambda s_: f"{message}.{b64url(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"  # noqa: E731
    return form(low), form(high)


def test_the_high_s_twin_of_an_es256_rpt_is_refused(envoy_factory, keycloak_as, echo, proxies, ec_key):
    """devas signs RS256 only: the ES256 RPT is signed by the test, with a key the JWKS serves."""
    proxy = proxies({"keys": [public_jwk(ec_key, "as-es")]})
    envoy = start_envoy(envoy_factory, keycloak_as, proxy, echo, rpt_max_uses=1)
    # Both forms verify (checked with the library the AS would use): one RPT, two strings.
    low, high = es256_pair(ec_key, rpt_claims(keycloak_as), "as-es")
    for token in (low, high):
        jwt.decode(token, ec_key.public_key(), algorithms=["ES256"], audience="pep-client")
    assert get(envoy, "/alice", low).status_code == 200
    assert get(envoy, "/alice", low).status_code == 401   # rpt_max_uses: 1
    assert get(envoy, "/alice", high).status_code == 401  # not a second use
    assert len(echo.log()) == 1
    # A fresh RPT used in its high-S form first is refused too.
    echo.reset()
    _, high = es256_pair(ec_key, rpt_claims(keycloak_as), "as-es")
    assert get(envoy, "/alice", high).status_code == 401
    assert echo.log() == []
    assert keycloak_as.calls("introspection") == []
