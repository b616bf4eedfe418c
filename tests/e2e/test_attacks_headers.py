"""End to end, attacks through request headers, in real Envoy:

- the identity header in any spelling a CGI/WSGI upstream folds to `HTTP_X_USER_ID`
  (`x-user_id`, `x_user-id`, `X-USER_ID`) never reaches the upstream, matched or not;
- repeated `X-Original-URI` / `X-Original-Method` on a PARTIAL check are refused (400): Envoy
  keeps them apart and would hand the filter the first;
- method-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, any
  spelling) are stripped in FULL mode and make a PARTIAL check 400, unless `keep_method_override`."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.devas import RESOURCES
from support.envoy import Envoy, filter_config
from support.uma_client import raw_request



IDENTITY_SPELLINGS = ["x-user_id", "x_user-id", "X-USER_ID", "x_user_id", "X-User-Id"]
OVERRIDE_SPELLINGS = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
                      "x_http_method_override", "X-Http_Method", "x-method_override"]


def folded(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module")
def signing_key():
    return ed25519.Ed25519PrivateKey.generate()


def pep_config(uma2_as, signing_key, **extra) -> dict:
    pem = signing_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    return filter_config(uma2_as, resources=RESOURCES, authorize_path="/authorize",
                         forward={"alg": "EdDSA", "key_pem": pem, "aud": "app"}, **extra)


@pytest.fixture(scope="module")
def pep(envoy_factory, uma2_as, echo, signing_key) -> Envoy:
    return envoy_factory(pep_config(uma2_as, signing_key), uma2_as.port, echo.port)


@pytest.fixture(scope="module")
def keeping_pep(envoy_factory, uma2_as, echo, signing_key) -> Envoy:
    return envoy_factory(pep_config(uma2_as, signing_key, keep_method_override=True), uma2_as.port, echo.port)


def rpt(uma2_as, scopes, resource_id: str = "res-alice", sub: str = "alice-0001") -> str:
    return uma2_as.mint_rpt(sub, [{"resource_id": resource_id, "resource_scopes": list(scopes)}])


def send(envoy: Envoy, method: str, path: str, headers: list[tuple[str, str]], token: str | None = None):
    if token is not None:
        headers = [*headers, ("Authorization", f"Bearer {token}")]
    status, resp_headers, body = raw_request(envoy.port, method, path, headers)
    return status, resp_headers, body


def decision_calls(uma2_as) -> list[dict]:
    return [c for c in uma2_as.calls() if c["endpoint"] in ("permission", "introspection")]


# ---- identity header spellings (FULL) ------------------------------------------------------------

def test_no_spelling_of_the_identity_header_reaches_an_unmatched_upstream(pep, echo):
    status, _, body = send(pep, "GET", "/public/page", [(n, "admin-0003") for n in IDENTITY_SPELLINGS])
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert [n for n in seen if folded(n) == "x-user-id"] == [], seen


def test_only_the_minted_identity_reaches_an_allowed_upstream(pep, uma2_as, echo, signing_key):
    token = rpt(uma2_as, ["protected_get"])
    status, _, body = send(pep, "GET", "/alice/x", [(n, "admin-0003") for n in IDENTITY_SPELLINGS], token)
    assert status == 200, body
    seen = json.loads(body)["headers"]
    assert [n for n in seen if folded(n) == "x-user-id"] == ["x-user-id"], seen
    claims = jwt.decode(seen["x-user-id"], signing_key.public_key(), algorithms=["EdDSA"],
                        audience="app", issuer="uma-pep")
    assert claims["sub"] == "alice-0001"


def test_a_spoofed_spelling_on_a_denied_request_reaches_nothing(pep, echo):
    status, _, _ = send(pep, "GET", "/alice/x", [("x_user-id", "admin-0003")])
    assert status == 401
    assert echo.log() == []


# ---- method override (FULL) ----------------------------------------------------------

def test_method_override_headers_never_reach_the_upstream(pep, uma2_as, echo):
    # A POST-scoped RPT: with the override honoured upstream, this POST would be a DELETE.
    token = rpt(uma2_as, ["protected_post"])
    overrides = [(n, "DELETE") for n in OVERRIDE_SPELLINGS]
    status, _, body = send(pep, "POST", "/alice/x", overrides, token)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["method"] == "POST"
    overriding = {folded(n) for n in OVERRIDE_SPELLINGS}
    assert [n for n in seen["headers"] if folded(n) in overriding] == [], seen["headers"]
    # Unmatched requests too: the upstream behind the PEP may honour them anywhere.
    status, _, body = send(pep, "POST", "/public/x", overrides)
    assert status == 200, body
    assert [n for n in json.loads(body)["headers"] if folded(n) in overriding] == []


def test_keep_method_override_lets_them_through(keeping_pep, uma2_as, echo):
    token = rpt(uma2_as, ["protected_post"])
    status, _, body = send(keeping_pep, "POST", "/alice/x", [("X-HTTP-Method-Override", "PATCH")], token)
    assert status == 200, body
    assert json.loads(body)["headers"]["x-http-method-override"] == "PATCH"


# ---- repeated X-Original-* (PARTIAL) --------------------------------------------------------------

def test_envoy_keeps_repeated_original_headers_apart(pep, echo):
    # What Envoy does with them (why a count, not a `,` in the value, tells them apart): two
    # entries, of which the filter's header read returns the first.
    status, _, body = send(pep, "GET", "/public", [("X-Original-URI", "/a,b"), ("X-Original-URI", "/c")])
    assert status == 200, body
    assert json.loads(body)["headers"]["x-original-uri"] == ["/a,b", "/c"]


@pytest.mark.parametrize("headers", [
    # The first says unmatched (pass), the second is what an edge may act on.
    [("X-Original-URI", "/public"), ("X-Original-URI", "/alice/x"), ("X-Original-Method", "GET")],
    # The first method is covered by the RPT, the second is not.
    [("X-Original-URI", "/alice/x"), ("X-Original-Method", "GET"), ("X-Original-Method", "DELETE")],
    [("x-original-uri", "/alice/x"), ("X-ORIGINAL-URI", "/alice/x"), ("X-Original-Method", "GET")],
])
def test_repeated_original_headers_are_400(pep, uma2_as, echo, headers):
    token = rpt(uma2_as, ["protected_get"])
    for tok in (None, token):
        status, _, body = send(pep, "GET", "/authorize", headers, tok)
        assert status == 400, (headers, tok is not None, body)
    assert decision_calls(uma2_as) == []
    assert echo.log() == []


def test_single_original_headers_still_decide(pep, uma2_as):
    token = rpt(uma2_as, ["protected_get"])
    status, _, _ = send(pep, "GET", "/authorize", [("X-Original-URI", "/alice/x"), ("X-Original-Method", "GET")],
                        token)
    assert status == 200


# ---- method override (PARTIAL) -----------------------------------------------------------

@pytest.mark.parametrize("override", OVERRIDE_SPELLINGS)
def test_a_check_of_a_request_with_a_method_override_is_400(pep, uma2_as, echo, override):
    token = rpt(uma2_as, ["protected_post"])
    # nginx auth_request form: the original request's headers come with the check.
    original = [("X-Original-URI", "/alice/x"), ("X-Original-Method", "POST"), (override, "DELETE")]
    status, _, body = send(pep, "GET", "/authorize", original, token)
    assert status == 400, body
    # ext_authz form: the original path below authorize_path, with the original method.
    status, _, body = send(pep, "POST", "/authorize/alice/x", [(override, "DELETE")], token)
    assert status == 400, body
    # Unmatched: the check would pass it, and the edge would forward the override.
    status, _, body = send(pep, "GET", "/authorize",
                           [("X-Original-URI", "/public"), ("X-Original-Method", "POST"), (override, "DELETE")])
    assert status == 400, body
    assert decision_calls(uma2_as) == []
    assert echo.log() == []


def test_keep_method_override_vouches_for_such_checks(keeping_pep, uma2_as, echo):
    token = rpt(uma2_as, ["protected_post"])
    original = [("X-Original-URI", "/alice/x"), ("X-Original-Method", "POST"), ("X-HTTP-Method-Override", "PUT")]
    status, _, body = send(keeping_pep, "GET", "/authorize", original, token)
    assert status == 200, body
    status, _, body = send(keeping_pep, "POST", "/authorize/alice/x", [("X-Method-Override", "PUT")], token)
    assert status == 200, body
    assert echo.log() == []
