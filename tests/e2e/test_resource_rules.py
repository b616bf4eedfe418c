"""End to end, in both AS dialects: the resource rules of a filter `resources` entry
(docs/configuration.md "Resource rules") in real Envoy with the built filter, the development AS
and the echo upstream.

* `uri` patterns and their precedence: which resource a request is for shows in the ticket's
  `resource_id`, and in which resource's RPT opens it;
* `exact`; `methods` (a method not listed is 405, HEAD as GET, WebDAV's methods, also through
  `method_scopes`); `scopes_mode` `all` / `any` (the ticket asks for every scope either way);
* `enforcement` `permissive` (a denied request goes upstream marked `denied`, without identity)
  and `disabled`, `enforcement_header`; `cors_preflight` `pass` / `enforce`;
* two patterns of one shape refuse to load.

The resources live at the AS too (a seed file for devas: Keycloak refuses a ticket for a scope
its resource does not have), owned by the resource server, with grant rows for alice. The main
Envoy lets its HTTP/1 codec take any method (`allow_custom_methods`), for VERSION-CONTROL.

Found here and fixed: a uri spelling a literal `*` as `%2A` loaded but protected nothing (or
became a wildcard): fail open; a lower-case method in `methods` loaded but never matched; with
`access_tokens: decide` in the uma2 dialect, `any` acted as `all` (one ticket for every scope)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.devas import METHOD_SCOPES, SUBS, UMA_GRANT, DevAs
from support.echo import Echo
from support.envoy import Envoy, envoy_config, filter_config
from support.processes import free_port
from support.uma_client import parse_challenge, raw_request, rpt_for_ticket

UNREACHABLE = '199 - "UMA Authorization Server Unreachable"'
DECISION = "x-uma-pep-decision"

# The scopes of the resources below, at the AS and in the filter's tables.
SCOPES = ["read", "write", "audit", "admin", "dav_read", "dav_write", "dav_version", *METHOD_SCOPES.values()]
# The filter-wide table for resources without `methods`: the seed's verbs (PATCH left out) and
# two WebDAV methods (RFC 4918 PROPFIND, RFC 3253 VERSION-CONTROL: a token with a `-`).
GLOBAL_METHOD_SCOPES = {**{m: s for m, s in METHOD_SCOPES.items() if m != "PATCH"},
                        "PROPFIND": "dav_read", "VERSION-CONTROL": "dav_version"}
CRUD = {"GET": ["read"], "PUT": ["write"], "DELETE": ["admin"]}

RULES = [
    # Precedence: literal before {}/* before **, at equal rank the longer.
    {"id": "res-shop", "uri": "/shop"},                                # /shop and below (as /shop/**)
    {"id": "res-shop-item", "uri": "/shop/{item}", "methods": CRUD},   # one segment below, no more
    {"id": "res-shop-special", "uri": "/shop/special", "exact": True},  # that path alone
    {"id": "res-shop-reviews", "uri": "/shop/*/reviews/**"},
    {"id": "res-shop-latest", "uri": "/shop/{item}/reviews/latest"},
    {"id": "res-x", "uri": "/x"},
    {"id": "res-x-one", "uri": "/x/{p}"},
    {"id": "res-x-deep", "uri": "/x/{p}/**"},
    # exact, with nothing around it: /status/x is no resource's.
    {"id": "res-status", "uri": "/status", "exact": True},
    # WebDAV through `methods`, and through `method_scopes` (no `methods`).
    {"id": "res-dav", "uri": "/dav", "methods": {"GET": ["dav_read"], "PROPFIND": ["dav_read"],
                                                 "MKCOL": ["dav_write"], "VERSION-CONTROL": ["dav_version"]}},
    {"id": "res-files", "uri": "/files"},
    # scopes_mode.
    {"id": "res-any", "uri": "/any/{id}", "methods": {"GET": ["read"], "PUT": ["write", "audit"]},
     "scopes_mode": "any"},
    {"id": "res-all", "uri": "/all/{id}", "methods": {"GET": ["read"], "PUT": ["write", "audit"]}},
    # enforcement.
    {"id": "res-soft", "uri": "/soft", "methods": {"GET": ["read"], "POST": ["write"]},
     "enforcement": "permissive"},
    {"id": "res-off", "uri": "/off", "methods": {"GET": ["read"]}, "enforcement": "disabled"},
    {"id": "res-api", "uri": "/api", "methods": {"GET": ["read"], "OPTIONS": ["read"]}},
    {"id": "res-api-health", "uri": "/api/health", "exact": True, "enforcement": "disabled"},
]

KEY = ed25519.Ed25519PrivateKey.generate()
FORWARD = {"alg": "EdDSA", "aud": "svc", "key_pem": KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}

PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}


def seed_file(directory: Path) -> Path:
    """The resources above at the AS (merged into devas's built-in seed), owned by the resource
    server; alice may use `audit` on res-any and `write`+`audit` on res-all (grant rows)."""
    seed = {
        "resources": [{"_id": r["id"], "name": r["id"], "uris": [r["uri"]], "resource_scopes": SCOPES,
                       "owner": "pep-client"} for r in RULES],
        "grants": [{"sub": SUBS["alice"], "resource_id": "res-any", "scopes": ["audit"]},
                   {"sub": SUBS["alice"], "resource_id": "res-all", "scopes": ["write", "audit"]}],
    }
    path = directory / "seed.json"
    path.write_text(json.dumps(seed))
    return path


def rules_config(devas: DevAs, **extra) -> dict:
    # RPTs are introspected here in both dialects (so that the AS failing shows), as in
    # test_enforcement.py; test_hot_path.py covers local JWT validation.
    return filter_config(devas, **{"resources": RULES, "method_scopes": GLOBAL_METHOD_SCOPES,
                                   "authorize_path": "/authorize", "forward": FORWARD,
                                   "local_jwt_validation": False, **extra})


@dataclass
class Stack:
    as_: DevAs
    echo: Echo
    envoy: Envoy

    def request(self, method: str, path: str, token: str | None = None, envoy: Envoy | None = None,
                headers: dict | None = None) -> requests.Response:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, (envoy or self.envoy).url(path), headers=headers, timeout=10)

    def get(self, path: str, token: str | None = None, **kw) -> requests.Response:
        return self.request("GET", path, token, **kw)

    def rpt(self, resource_id: str, scopes: list[str], sub: str = SUBS["alice"]) -> str:
        return self.as_.mint_rpt(sub, [{"resource_id": resource_id, "resource_scopes": scopes}])

    def permission_requests(self) -> list[list[dict]]:
        return [json.loads(c["body"]) for c in self.as_.calls("permission")]

    def ticket_for(self, method: str, path: str, envoy: Envoy | None = None) -> tuple[str, list[dict]]:
        """The ticket a request without a token gets, and what the filter asked the AS for it."""
        before = len(self.as_.calls("permission"))
        resp = self.request(method, path, envoy=envoy)
        ticket = assert_challenge(resp, self)
        asked = self.permission_requests()[before:]
        assert len(asked) == 1, asked
        return ticket, asked[0]

    def decision_calls(self) -> list[dict]:
        return [c for c in self.as_.calls() if c["endpoint"] in ("permission", "introspection")
                or c.get("grant_type") == UMA_GRANT]


def assert_challenge(resp: requests.Response, stack: Stack) -> str:
    assert resp.status_code == 401, f"{resp.status_code} {resp.text}"
    challenge = parse_challenge(resp.headers["www-authenticate"])
    assert challenge["as_uri"] == stack.as_.issuer
    return challenge["ticket"]


def asked(resource_id: str, *scopes: str) -> list[dict]:
    return [{"resource_id": resource_id, "resource_scopes": list(scopes)}]


def forwarded_sub(seen: dict) -> str:
    minted = seen["headers"]["x-user-id"]
    return jwt.decode(minted, KEY.public_key(), algorithms=["EdDSA"], audience="svc", issuer="uma-pep")["sub"]


@pytest.fixture(scope="module", params=["uma2", "keycloak"])
def devas(request, tmp_path_factory):
    service = DevAs(request.param, seed=seed_file(tmp_path_factory.mktemp(f"seed-{request.param}")))
    yield service
    service.stop()


class CustomMethodsEnvoy(Envoy):
    """Envoy whose HTTP/1 codec takes any method token (`http_protocol_options.allow_custom_methods`):
    by default it knows a fixed list (WebDAV's PROPFIND, MKCOL, COPY, MOVE, LOCK, REPORT, ... are
    in it) and answers anything else, RFC 3253's VERSION-CONTROL included, with 400 itself."""

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        config = envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port, with_filter=with_filter)
        [listener] = config["static_resources"]["listeners"]
        [hcm] = listener["filter_chains"][0]["filters"]
        hcm["typed_config"]["http_protocol_options"] = {"allow_custom_methods": True}
        return config


@pytest.fixture(scope="module")
def stack(devas, echo) -> Stack:
    envoy = CustomMethodsEnvoy(rules_config(devas), devas.port, echo.port)
    yield Stack(devas, echo, envoy)
    envoy.stop()


# ---- uri patterns and their precedence ------------------------------------------------------------

# (path, the resource it is for)
PRECEDENCE = [
    ("/shop", "res-shop"),                          # {item} needs one more segment
    ("/shop/7", "res-shop-item"),                   # {item} before the plain uri's rest
    ("/shop/special", "res-shop-special"),          # a literal before {item}
    ("/shop/special/x", "res-shop"),                # exact covers nothing below; {item} one segment
    ("/shop/7/x", "res-shop"),
    ("/shop/7/reviews", "res-shop-reviews"),        # ** takes zero segments
    ("/shop/7/reviews/2024/05", "res-shop-reviews"),
    ("/shop/7/reviews/latest", "res-shop-latest"),  # a literal before **
    ("/shop/special/reviews", "res-shop-reviews"),  # * (as * matches special) before the plain rest
    ("/x", "res-x"),
    ("/x/1", "res-x-one"),                          # equal rank: the one that ends with the path
    ("/x/1/2", "res-x-deep"),                       # {p}/** is longer than /x's rest
    ("/x/1/2/3", "res-x-deep"),
]


@pytest.mark.parametrize("path,resource_id", PRECEDENCE)
def test_a_path_is_for_the_pattern_of_highest_precedence(stack: Stack, path: str, resource_id: str):
    _, permission = stack.ticket_for("GET", path)
    scope = "read" if resource_id == "res-shop-item" else "protected_get"
    assert permission == asked(resource_id, scope)
    assert stack.echo.log() == []


def test_an_rpt_for_the_broader_pattern_does_not_open_the_more_specific_one(stack: Stack):
    # The plain /shop covers /shop/7/x, but /shop/7 is {item}'s and /shop/7/reviews/latest is the
    # literal's: an RPT for the broader resource is refused there (a ticket for the right one).
    broad = stack.rpt("res-shop", ["protected_get", "read"])
    assert stack.get("/shop/7/x", broad).status_code == 200
    for path, resource_id, scope in [("/shop/7", "res-shop-item", "read"),
                                     ("/shop/7/reviews/latest", "res-shop-latest", "protected_get"),
                                     ("/shop/special", "res-shop-special", "protected_get")]:
        before = len(stack.as_.calls("permission"))
        assert_challenge(stack.get(path, broad), stack)
        assert stack.permission_requests()[before:] == [asked(resource_id, scope)], path
    # Each specific resource's own RPT opens it, and only it.
    latest = stack.rpt("res-shop-latest", ["protected_get"])
    assert stack.get("/shop/7/reviews/latest", latest).status_code == 200
    assert_challenge(stack.get("/shop/7/reviews/older", latest), stack)   # res-shop-reviews'
    reviews = stack.rpt("res-shop-reviews", ["protected_get"])
    assert stack.get("/shop/7/reviews/older", reviews).status_code == 200
    assert stack.get("/shop/special/reviews", reviews).status_code == 200
    assert_challenge(stack.get("/shop/7/reviews/latest", reviews), stack)
    seen = [r["path"] for r in stack.echo.log()]
    assert seen == ["/shop/7/x", "/shop/7/reviews/latest", "/shop/7/reviews/older", "/shop/special/reviews"]


@pytest.mark.parametrize("uri,covered,not_covered", [
    ("/subs/a%2Az", ["/subs/a*z", "/subs/a%2Az", "/subs/a*z/doc"], []),
    ("/files/%2A", ["/files/*", "/files/*/doc"], ["/files/x"]),
], ids=["star-inside-a-segment", "star-segment"])
def test_a_literal_star_in_a_uri_protects_that_path(uma2_as, echo, uri, covered, not_covered):
    # `*` is a sub-delimiter, legal and literal in a path (RFC 3986 §3.3), and `%2A` is the same
    # path (README, "Matching"). A uri that spells one with `%2A` (a raw one is now a pattern
    # mistake) must protect that path and what is below it, or refuse to load: never load and
    # protect nothing, nor turn into a one-segment wildcard.
    config = filter_config(uma2_as, resources=[{"id": "res-bob", "uri": uri}], local_jwt_validation=False)
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        try:
            envoy.wait_ready()
        except RuntimeError:   # refused: fine, if it names the key
            assert "config key `resources[0].uri`" in envoy.logs()
            return
        for path in covered:
            status, _, body = raw_request(envoy.port, "GET", path)
            assert status == 401, f"{uri}: GET {path} without a token: {status} {body!r}"
        for path in not_covered:
            status, _, _ = raw_request(envoy.port, "GET", path)
            assert status == 200, f"{uri}: GET {path} is not below {uri}: {status}"
    finally:
        envoy.stop()


def test_a_pattern_matches_normalised_paths_and_forwards_them_so(stack: Stack):
    item = stack.rpt("res-shop-item", ["read"])
    status, _, body = raw_request(stack.envoy.port, "GET", "/shop//x/../%37?q=1",
                                  [("Authorization", f"Bearer {item}")])
    assert status == 200, body
    assert json.loads(body)["path"] == "/shop/7?q=1"
    # A trailing slash is the same path: still {item}, not the plain uri's rest.
    assert stack.get("/shop/7/", item).status_code == 200


# ---- exact ---------------------------------------------------------------------------------------

def test_exact_covers_its_own_path_only(stack: Stack):
    _, permission = stack.ticket_for("GET", "/status")
    assert permission == asked("res-status", "protected_get")
    assert stack.get("/status", stack.rpt("res-status", ["protected_get"])).status_code == 200
    # Below it no resource matches: unmatched (allow), passed through without an AS call.
    stack.as_.reset()
    resp = stack.get("/status/details")
    assert resp.status_code == 200 and resp.json()["path"] == "/status/details"
    assert stack.decision_calls() == []
    # An exact literal inside a broader resource: the broader one takes what is below it.
    _, permission = stack.ticket_for("GET", "/shop/special/offers")
    assert permission == asked("res-shop", "protected_get")


# ---- methods -------------------------------------------------------------------------------------

def test_each_listed_method_asks_for_its_scopes(stack: Stack):
    for method, scope in [("GET", "read"), ("PUT", "write"), ("DELETE", "admin")]:
        _, permission = stack.ticket_for(method, "/shop/7")
        assert permission == asked("res-shop-item", scope), method
    writer = stack.rpt("res-shop-item", ["write"])
    assert stack.request("PUT", "/shop/7", writer).status_code == 200
    assert_challenge(stack.request("DELETE", "/shop/7", writer), stack)
    assert [r["method"] for r in stack.echo.log()] == ["PUT"]


@pytest.mark.parametrize("method,path", [
    ("POST", "/shop/7"),      # method_scopes has POST, but the resource's `methods` replace it
    ("PATCH", "/shop/7"),
    ("OPTIONS", "/shop/7"),   # not a CORS preflight (no Origin / Access-Control-Request-Method)
    ("PROPFIND", "/shop/7"),  # in method_scopes, not in this resource's methods
    ("PATCH", "/shop/x/y"),   # no `methods`: method_scopes, which lacks PATCH
    ("MKCOL", "/files/new"),
    ("DELETE", "/any/1"),
])
def test_a_method_not_listed_is_405_without_an_as_call(stack: Stack, method: str, path: str):
    rpt = stack.rpt("res-shop-item", SCOPES)
    for token in (None, rpt):
        resp = stack.request(method, path, token)
        assert resp.status_code == 405, f"{method} {path}: {resp.status_code} {resp.text}"
    assert stack.decision_calls() == []
    assert stack.echo.log() == []


def test_a_lower_case_method_in_methods_is_not_silently_unreachable(uma2_as, echo):
    # `method_scopes` upper-cases its methods (`get` is GET). A resource's `methods` must either
    # do the same, or refuse to load naming the key: never load a rule no request can meet.
    # res-alice: a resource the AS knows, so a ticket can be had for it.
    config = filter_config(uma2_as, resources=[{"id": "res-alice", "uri": "/x", "methods": {"get": ["protected_get"]}}])
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        try:
            envoy.wait_ready()
        except RuntimeError:   # refused: fine, if it names the key
            assert "config key `resources[0].methods.get`" in envoy.logs()
            return
        resp = requests.get(envoy.url("/x"), timeout=10)
        assert resp.status_code == 401, f"GET on `methods: {{get: ...}}`: {resp.status_code}"
    finally:
        envoy.stop()


def test_head_uses_gets_entry_when_not_listed(stack: Stack):
    _, permission = stack.ticket_for("HEAD", "/shop/7")
    assert permission == asked("res-shop-item", "read")
    assert stack.request("HEAD", "/shop/7", stack.rpt("res-shop-item", ["read"])).status_code == 200
    assert [r["method"] for r in stack.echo.log()] == ["HEAD"]


def test_webdav_methods_through_the_resources_methods(stack: Stack):
    for method, scope in [("PROPFIND", "dav_read"), ("MKCOL", "dav_write"), ("VERSION-CONTROL", "dav_version")]:
        _, permission = stack.ticket_for(method, "/dav/docs/a.txt")
        assert permission == asked("res-dav", scope), method
    reader = stack.rpt("res-dav", ["dav_read"])
    status, _, body = raw_request(stack.envoy.port, "PROPFIND", "/dav/docs",
                                  [("Authorization", f"Bearer {reader}"), ("Depth", "1")])
    assert status == 200, body
    assert json.loads(body)["method"] == "PROPFIND"
    for method in ("MKCOL", "VERSION-CONTROL"):
        status, headers, _ = raw_request(stack.envoy.port, method, "/dav/docs/new",
                                         [("Authorization", f"Bearer {reader}")])
        assert status == 401, method
        parse_challenge(headers["www-authenticate"])
    versioner = stack.rpt("res-dav", ["dav_version"])
    status, _, body = raw_request(stack.envoy.port, "VERSION-CONTROL", "/dav/docs/a.txt",
                                  [("Authorization", f"Bearer {versioner}")])
    assert status == 200, body
    assert [r["method"] for r in stack.echo.log()] == ["PROPFIND", "VERSION-CONTROL"]


def test_envoy_itself_refuses_a_method_its_codec_does_not_know(stack: Stack, strict_cors: Envoy):
    # strict_cors runs Envoy's default HTTP/1 options: VERSION-CONTROL never reaches the filter
    # (docs/configuration.md, `methods`: allow_custom_methods).
    token = stack.rpt("res-dav", ["dav_version"])
    status, _, _ = raw_request(strict_cors.port, "VERSION-CONTROL", "/dav/a", [("Authorization", f"Bearer {token}")])
    assert status == 400
    status, _, _ = raw_request(strict_cors.port, "PROPFIND", "/dav/a", [("Authorization", f"Bearer {token}")])
    assert status == 401   # on the codec's list: decided (the RPT lacks dav_read)
    assert stack.echo.log() == []


def test_webdav_methods_through_method_scopes(stack: Stack):
    _, permission = stack.ticket_for("PROPFIND", "/files/a")
    assert permission == asked("res-files", "dav_read")
    _, permission = stack.ticket_for("VERSION-CONTROL", "/files/a")
    assert permission == asked("res-files", "dav_version")
    token = stack.rpt("res-files", ["dav_read", "dav_version"])
    for method in ("PROPFIND", "VERSION-CONTROL"):
        status, _, body = raw_request(stack.envoy.port, method, "/files/a", [("Authorization", f"Bearer {token}")])
        assert status == 200, f"{method}: {body!r}"
    assert [r["method"] for r in stack.echo.log()] == ["PROPFIND", "VERSION-CONTROL"]


# ---- scopes_mode ---------------------------------------------------------------------------------

@pytest.mark.parametrize("resource_id,path", [("res-any", "/any/1"), ("res-all", "/all/1")])
def test_the_ticket_asks_for_every_scope_in_either_mode(stack: Stack, resource_id: str, path: str):
    _, permission = stack.ticket_for("PUT", path)
    assert permission == asked(resource_id, "write", "audit")


def test_any_needs_one_of_the_scopes_and_all_needs_every_one(stack: Stack):
    for one in ("write", "audit"):
        assert stack.request("PUT", "/any/1", stack.rpt("res-any", [one])).status_code == 200, one
        before = len(stack.as_.calls("permission"))
        assert_challenge(stack.request("PUT", "/all/1", stack.rpt("res-all", [one])), stack)
        assert stack.permission_requests()[before:] == [asked("res-all", "write", "audit")]
    assert stack.request("PUT", "/all/1", stack.rpt("res-all", ["write", "audit"])).status_code == 200
    # Neither scope: refused in both modes.
    assert_challenge(stack.request("PUT", "/any/1", stack.rpt("res-any", ["read"])), stack)
    assert [r["path"] for r in stack.echo.log()] == ["/any/1", "/any/1", "/all/1"]


def test_the_ticket_of_all_trades_for_an_rpt_that_opens_it(stack: Stack):
    ticket, _ = stack.ticket_for("PUT", "/all/9")
    grant = rpt_for_ticket(stack.as_, ticket, "alice")
    assert grant.status_code == 200, grant.text
    assert stack.request("PUT", "/all/9", grant.json()["access_token"]).status_code == 200


def test_the_ticket_of_any_for_a_party_holding_one_scope(stack: Stack):
    # alice may use only `audit` on res-any. The ticket asks for write and audit (the issue's
    # rule). Keycloak grants what it can (an RPT with audit, which `any` accepts); Gluu/Janssen
    # refuse a grant unless the party holds every scope of the ticket (forbidden_by_policy).
    ticket, _ = stack.ticket_for("PUT", "/any/9")
    grant = rpt_for_ticket(stack.as_, ticket, "alice")
    if stack.as_.profile == "keycloak":
        assert grant.status_code == 200, grant.text
        assert stack.request("PUT", "/any/9", grant.json()["access_token"]).status_code == 200
    else:
        assert grant.status_code == 403, grant.text
        assert grant.json()["error"] == "forbidden_by_policy"


# ---- enforcement: permissive -----------------------------------------------------------------------

SPOOFS = {"X-User-Id": "admin-0003", "X-Uma-Pep-Decision": "allowed"}


def test_permissive_forwards_a_request_without_a_token_marked_denied(stack: Stack):
    resp = stack.get("/soft/page", headers=SPOOFS)
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert seen["path"] == "/soft/page"
    assert seen["headers"][DECISION] == "denied"
    assert "x-user-id" not in seen["headers"]
    assert "www-authenticate" not in resp.headers
    assert stack.decision_calls() == []   # no ticket asked for


def test_permissive_forwards_an_insufficient_rpt_marked_denied_without_identity(stack: Stack):
    for token in (stack.rpt("res-soft", ["write"]), stack.rpt("res-shop", ["read"]), "no-such-token-permissive"):
        status, _, body = raw_request(stack.envoy.port, "GET", "/soft", [
            ("Authorization", f"Bearer {token}"), ("x_user_id", "admin-0003"), ("X-User-Id", "admin-0003"),
            ("x_uma_pep_decision", "allowed")])
        assert status == 200, body
        headers = json.loads(body)["headers"]
        assert headers[DECISION] == "denied", token
        assert "x-user-id" not in headers and "x_user_id" not in headers and "x_uma_pep_decision" not in headers
    assert stack.as_.calls("permission") == []   # no ticket asked for
    assert len(stack.as_.calls("introspection")) == 3   # but decided as usual


def test_permissive_allows_as_usual_and_strips_the_clients_decision_header(stack: Stack):
    status, _, body = raw_request(stack.envoy.port, "GET", "/soft", [
        ("Authorization", f"Bearer {stack.rpt('res-soft', ['read'])}"),
        ("X-Uma-Pep-Decision", "denied"), ("x_uma_pep_decision", "denied"), ("X-User-Id", "admin-0003")])
    assert status == 200, body
    seen = json.loads(body)
    assert DECISION not in seen["headers"] and "x_uma_pep_decision" not in seen["headers"]
    assert forwarded_sub(seen) == SUBS["alice"]   # the identity the filter minted, not the client's


def test_the_clients_decision_header_is_stripped_everywhere(stack: Stack):
    # Unmatched, open-by-disabled and enforcing resources too: only the filter sets it.
    for path, token in [("/public", None), ("/off/x", None), ("/shop/7", stack.rpt("res-shop-item", ["read"]))]:
        status, _, body = raw_request(stack.envoy.port, "GET", path, [
            *([("Authorization", f"Bearer {token}")] if token else []),
            ("X-UMA-PEP-DECISION", "allowed"), ("x_uma_pep_decision", "allowed")])
        assert status == 200, f"{path}: {body!r}"
        headers = json.loads(body)["headers"]
        assert DECISION not in headers and "x_uma_pep_decision" not in headers, path


def test_permissive_keeps_405_for_a_method_not_listed(stack: Stack):
    assert stack.request("DELETE", "/soft").status_code == 405
    assert stack.echo.log() == []


@pytest.mark.parametrize("endpoint,kind", [("introspection", "drop"), ("introspection", "status503"),
                                           ("introspection", "garbage"), ("any", "drop")])
def test_permissive_still_fails_closed_when_the_as_fails(stack: Stack, endpoint: str, kind: str):
    # Nothing is forwarded on an error, permissive or not: only a decision is.
    token = stack.rpt("res-soft", ["read"])
    stack.as_.fault(endpoint, kind)
    resp = stack.get("/soft", token)
    assert resp.status_code == 403, resp.text
    assert resp.headers["warning"] == UNREACHABLE
    assert "www-authenticate" not in resp.headers
    assert stack.echo.log() == []
    stack.as_.clear_faults()
    resp = stack.get("/soft", token)
    assert resp.status_code == 200 and DECISION not in resp.json()["headers"]


def test_permissive_in_partial_mode_answers_200_with_the_decision(stack: Stack):
    check = {"X-Original-URI": "/soft/x", "X-Original-Method": "GET"}
    resp = stack.get("/authorize", headers=check)
    assert resp.status_code == 200, resp.text
    assert resp.headers[DECISION] == "denied"
    assert "www-authenticate" not in resp.headers and "x-user-id" not in resp.headers
    allowed = stack.get("/authorize", stack.rpt("res-soft", ["read"]), headers=check)
    assert allowed.status_code == 200
    assert DECISION not in allowed.headers
    assert stack.echo.log() == []


# ---- enforcement: disabled -----------------------------------------------------------------------

def test_disabled_passes_without_a_token_and_strips_identity_headers(stack: Stack):
    for method in ("GET", "DELETE", "PROPFIND"):   # whatever `methods` lists
        status, _, body = raw_request(stack.envoy.port, method, "/off/x", [
            ("X-User-Id", "admin-0003"), ("x_user_id", "admin-0003"), ("X-Uma-Pep-Decision", "allowed")])
        assert status == 200, f"{method}: {body!r}"
        headers = json.loads(body)["headers"]
        assert "x-user-id" not in headers and "x_user_id" not in headers and DECISION not in headers
    # A token changes nothing and is not looked at; no identity is minted either.
    resp = stack.get("/off", stack.rpt("res-off", ["read"]))
    assert resp.status_code == 200 and "x-user-id" not in resp.json()["headers"]
    assert stack.get("/off", "no-such-token-disabled").status_code == 200
    # PARTIAL mode: the check passes.
    check = stack.get("/authorize", headers={"X-Original-URI": "/off/y", "X-Original-Method": "DELETE"})
    assert check.status_code == 200 and DECISION not in check.headers
    assert stack.decision_calls() == []
    assert len(stack.echo.log()) == 5


def test_a_disabled_exact_path_inside_an_enforced_resource(stack: Stack):
    assert stack.get("/api/health").status_code == 200
    _, permission = stack.ticket_for("GET", "/api/health/deep")
    assert permission == asked("res-api", "read")
    assert [r["path"] for r in stack.echo.log()] == ["/api/health"]


# ---- cors_preflight ------------------------------------------------------------------------------

def test_a_cors_preflight_passes_without_a_token_by_default(stack: Stack):
    for path in ("/api/orders", "/shop/7", "/all/1"):   # OPTIONS listed, or not: still a preflight
        resp = stack.request("OPTIONS", path, headers={**PREFLIGHT, "X-User-Id": "admin-0003"})
        assert resp.status_code == 200, f"{path}: {resp.text}"
        assert "x-user-id" not in resp.json()["headers"]
    assert stack.decision_calls() == []
    assert [r["method"] for r in stack.echo.log()] == ["OPTIONS"] * 3


def test_a_cors_preflight_check_passes_in_partial_mode(stack: Stack):
    # nginx auth_request: the subrequest carries the original headers, the method in X-Original-Method.
    check = {"X-Original-URI": "/api/orders", "X-Original-Method": "OPTIONS", **PREFLIGHT}
    assert stack.get("/authorize", headers=check).status_code == 200
    # Envoy ext_authz: the check's own method and path.
    assert stack.request("OPTIONS", "/authorize/api/orders", headers=PREFLIGHT).status_code == 200
    assert stack.decision_calls() == []
    assert stack.echo.log() == []


def test_an_options_request_that_is_no_preflight_is_decided(stack: Stack):
    for headers in ({"Origin": "https://app.example"}, {"Access-Control-Request-Method": "PUT"}):
        before = len(stack.as_.calls("permission"))
        assert_challenge(stack.request("OPTIONS", "/api/orders", headers=headers), stack)
        assert stack.permission_requests()[before:] == [asked("res-api", "read")]
        assert stack.request("OPTIONS", "/shop/7", headers=headers).status_code == 405
    assert stack.echo.log() == []


@pytest.fixture(scope="module")
def strict_cors(stack: Stack, envoy_factory) -> Envoy:
    config = rules_config(stack.as_, cors_preflight="enforce")
    return envoy_factory(config, stack.as_.port, stack.echo.port)


def test_cors_preflight_enforce_decides_a_preflight_like_any_request(stack: Stack, strict_cors: Envoy):
    before = len(stack.as_.calls("permission"))
    assert_challenge(stack.request("OPTIONS", "/api/orders", envoy=strict_cors, headers=PREFLIGHT), stack)
    assert stack.permission_requests()[before:] == [asked("res-api", "read")]
    assert stack.request("OPTIONS", "/shop/7", envoy=strict_cors, headers=PREFLIGHT).status_code == 405
    assert stack.echo.log() == []
    token = stack.rpt("res-api", ["read"])
    assert stack.request("OPTIONS", "/api/orders", token, envoy=strict_cors, headers=PREFLIGHT).status_code == 200
    assert [r["method"] for r in stack.echo.log()] == ["OPTIONS"]


# ---- enforcement_header, and the AS down from the start --------------------------------------------

def test_enforcement_header_renames_the_decision_header(stack: Stack, envoy_factory):
    config = rules_config(stack.as_, enforcement_header="X-Authz-Verdict")
    envoy = envoy_factory(config, stack.as_.port, stack.echo.port)
    headers = {"X-Authz-Verdict": "allowed", "x_authz_verdict": "allowed"}
    denied = stack.get("/soft", envoy=envoy, headers=headers).json()["headers"]
    assert denied["x-authz-verdict"] == "denied"
    assert DECISION not in denied and "x_authz_verdict" not in denied
    allowed = stack.get("/soft", stack.rpt("res-soft", ["read"]), envoy=envoy, headers=headers).json()["headers"]
    assert "x-authz-verdict" not in allowed and "x_authz_verdict" not in allowed


def test_permissive_with_the_as_down_from_the_start(stack: Stack, envoy_factory):
    port = free_port()   # nothing listens there
    config = rules_config(stack.as_, issuer=f"http://127.0.0.1:{port}", timeout_ms=500)
    envoy = envoy_factory(config, port, stack.echo.port)
    # A token needs the AS: denied, 403 + Warning, never forwarded.
    resp = stack.get("/soft", "some-rpt-permissive", envoy=envoy)
    assert resp.status_code == 403 and resp.headers["warning"] == UNREACHABLE
    assert stack.echo.log() == []
    # No token: nothing to ask the AS (no ticket in permissive): forwarded, marked denied.
    seen = stack.get("/soft", envoy=envoy).json()
    assert seen["headers"][DECISION] == "denied"


# ---- scopes_mode with ordinary access tokens (access_tokens: decide) ------------------------------------

@pytest.fixture(scope="module")
def deciding(stack: Stack, envoy_factory) -> Envoy:
    # Denials remembered 60 s: a slow machine never sees one lapse within a test.
    config = rules_config(stack.as_, access_tokens={"mode": "decide"}, local_jwt_validation=True,
                          timeout_ms=5000, negative_cache_ttl_s=60)
    return envoy_factory(config, stack.as_.port, stack.echo.port)


def user_token(stack: Stack, user: str) -> str:
    """A fresh login (the Envoy keeps decisions per token): Keycloak's access token, Gluu's ID token."""
    tokens = stack.as_.user_tokens(user)
    return tokens["access_token"] if stack.as_.profile == "keycloak" else tokens["id_token"]


def uma_grants(stack: Stack) -> list[str]:
    """The UMA-grant calls: Keycloak, one `permission` a call (response_mode=decision); Gluu, the
    ticket's grant."""
    calls = [c for c in stack.as_.calls("token") if c.get("grant_type") == UMA_GRANT]
    return [",".join(parse_qs(c["body"]).get("permission", ["ticket"])) for c in calls]


def test_decide_all_needs_every_scope(stack: Stack, deciding: Envoy):
    # alice holds write and audit on res-all, bob neither.
    resp = stack.request("PUT", "/all/1", user_token(stack, "alice"), envoy=deciding)
    assert resp.status_code == 200, resp.text
    assert forwarded_sub(resp.json()) == SUBS["alice"]
    keycloak = stack.as_.profile == "keycloak"
    assert uma_grants(stack) == (["res-all#write", "res-all#audit"] if keycloak else ["ticket"])
    stack.as_.reset()
    resp = stack.request("PUT", "/all/1", user_token(stack, "bob"), envoy=deciding)
    assert resp.status_code == 403, resp.text
    # Keycloak: the first refusal ends it.
    assert uma_grants(stack) == (["res-all#write"] if keycloak else ["ticket"])
    assert [r["path"] for r in stack.echo.log()] == ["/all/1"]


def test_decide_any_needs_one_scope(stack: Stack, deciding: Envoy):
    # alice holds only audit on res-any: `any` lets her PUT. Keycloak is asked one scope a call
    # (write refused, then audit granted). Gluu/Janssen grant a ticket's scopes all or none (as
    # test_the_ticket_of_any_for_a_party_holding_one_scope shows), so each scope gets its own
    # ticket and grant: write refused, then audit granted.
    keycloak = stack.as_.profile == "keycloak"
    resp = stack.request("PUT", "/any/1", user_token(stack, "alice"), envoy=deciding)
    assert resp.status_code == 200, f"{resp.status_code} {resp.text} {uma_grants(stack)}"
    assert uma_grants(stack) == (["res-any#write", "res-any#audit"] if keycloak else ["ticket", "ticket"])
    if not keycloak:
        asked_scopes = [json.loads(c["body"])[0]["resource_scopes"] for c in stack.as_.calls("permission")]
        assert asked_scopes == [["write"], ["audit"]], asked_scopes
    stack.as_.reset()
    resp = stack.request("PUT", "/any/1", user_token(stack, "bob"), envoy=deciding)
    assert resp.status_code == 403, resp.text
    assert uma_grants(stack) == (["res-any#write", "res-any#audit"] if keycloak else ["ticket", "ticket"])


# ---- two patterns of one shape ---------------------------------------------------------------------

@pytest.mark.parametrize("table,line", [
    ([{"id": "a", "uri": "/a/{id}"}, {"id": "b", "uri": "/a/*"}],
     'config key `resources[1].uri`: "/a/*" and resources[0] "/a/{id}" match the same paths with the same '
     "precedence: keep one"),
    ([{"id": "a", "uri": "/a"}, {"id": "b", "uri": "/a/**"}],
     'config key `resources[1].uri`: "/a/**" and resources[0] "/a" match the same paths with the same '
     "precedence: keep one"),
    ([{"id": "a", "uri": "/o/{x}/i", "exact": True}, {"id": "b", "uri": "/o/{y}/i", "exact": True}],
     'config key `resources[1].uri`: "/o/{y}/i" and resources[0] "/o/{x}/i" match the same paths with the '
     "same precedence: keep one"),
], ids=["param-and-star", "plain-and-rest", "two-params"])
def test_two_patterns_of_one_shape_do_not_load(uma2_as, echo, table, line):
    config = filter_config(uma2_as, resources=table)
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        code = envoy.exited(timeout=20)
        logs = envoy.logs()
        assert f"uma-pep: invalid configuration: {line}" in logs, logs[-2000:]
        assert code not in (None, 0)
    finally:
        envoy.stop()
