"""End to end, in both AS dialects, with two Envoy workers: `access_tokens: {"mode": "decide"}`
(docs/access-tokens.md). A Bearer token that is no RPT granting the request is the requesting
party's own token, and the AS decides for it:

* keycloak: `POST` token endpoint with the user's token as `Authorization: Bearer`,
  `grant_type=urn:ietf:params:oauth:grant-type:uma-ticket`, `audience=<client_id>`, ONE
  `permission=<resource id>#<scope>`, `response_mode=decision`;
* uma2 (Gluu/Janssen): a ticket (PAT), then the UMA grant with the PEP's client credentials,
  `ticket`, `claim_token=<the user's ID token>` in the ID-token format; the RPT is checked as
  usual, and with `return_rpt` handed back in `x-uma-rpt`.

Allowed: 200 with the forwarded identity of the token's user. Denied: 403 with a UMA challenge
whose ticket a UMA client can trade. A token the AS does not take: 401 with a ticket. The AS
failing: 403 + Warning. Decisions are cached per (token, resource, scope) and single-flight
across workers. Every user token here comes from a fresh login: the Envoys of this module keep
their caches from test to test."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import parse_qs

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.devas import ALL_SCOPES, ID_TOKEN_FORMAT, PEP_CLIENT, RESOURCES, SUBS, UMA_GRANT, DevAs
from support.echo import Echo
from support.envoy import Envoy, filter_config
from support.uma_client import parse_challenge, rpt_for_ticket

UNREACHABLE = '199 - "UMA Authorization Server Unreachable"'
WORKERS = 2
FORWARD_AUD = "svc"
KEY = ed25519.Ed25519PrivateKey.generate()
FORWARD = {"alg": "EdDSA", "aud": FORWARD_AUD, "key_pem": KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()}


def decide_config(devas: DevAs, **extra) -> dict:
    # Denials are remembered for negative_cache_ttl_s (default 5 s): 60 s here, so that a slow
    # machine never sees one lapse between two requests of a test.
    return filter_config(devas, **{"resources": RESOURCES, "authorize_path": "/authorize", "forward": FORWARD,
                                   "timeout_ms": 5000, "negative_cache_ttl_s": 60,
                                   "access_tokens": {"mode": "decide"}, **extra})


@dataclass
class Stack:
    as_: DevAs
    echo: Echo
    envoy: Envoy

    @property
    def keycloak(self) -> bool:
        return self.as_.profile == "keycloak"

    def user_token(self, user: str) -> str:
        """What a client of this AS holds after a login, as it sends it in decide mode: Keycloak,
        its access token; Gluu/Janssen, its ID token (the only claim token format Gluu takes)."""
        tokens = self.as_.user_tokens(user)
        return tokens["access_token"] if self.keycloak else tokens["id_token"]

    def get(self, path: str, token: str | None = None, method: str = "GET", envoy: Envoy | None = None,
            **headers: str) -> requests.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, (envoy or self.envoy).url(path), headers=headers, timeout=15)

    def check(self, path: str, method: str, token: str | None, envoy: Envoy | None = None) -> requests.Response:
        """PARTIAL mode: the check nginx `auth_request` makes."""
        return self.get("/authorize", token, envoy=envoy, **{"X-Original-URI": path, "X-Original-Method": method})

    def signed_id_token(self, exp_in: int = 600, **claims) -> str:
        """An ID token the AS signed, with exactly these claims over iss, iat, exp (devas control)."""
        r = requests.post(f"{self.as_.base}/_devas/id-token", json={"claims": claims, "exp_in": exp_in}, timeout=5)
        r.raise_for_status()
        return r.json()["id_token"]

    def grants(self) -> list[dict]:
        """The UMA-grant calls at the token endpoint (Keycloak: the decisions; Gluu: the grants)."""
        return [c for c in self.as_.calls("token") if c["grant_type"] == UMA_GRANT]

    def tickets(self) -> list[dict]:
        return self.as_.calls("permission")

    def decisions(self) -> int:
        return self.envoy.counters().get("decisions", 0)


def fault_grants(devas: DevAs, kind: str, delay_ms: int = 0) -> None:
    """A fault on the UMA grant only (the PAT, also from the token endpoint, stays served)."""
    r = requests.post(f"{devas.base}/_devas/fault", json={"endpoint": "token", "kind": kind, "times": -1,
                                                         "delay_ms": delay_ms, "grant_type": UMA_GRANT}, timeout=5)
    r.raise_for_status()


def form(call: dict) -> dict[str, list[str]]:
    return parse_qs(call["body"] or "", keep_blank_values=True)


def forwarded_sub(resp: requests.Response) -> str:
    """The `sub` of the identity the filter minted: in the check's answer (PARTIAL), or in what
    the echo upstream received (FULL)."""
    minted = resp.headers.get("x-user-id") or resp.json()["headers"]["x-user-id"]
    return jwt.decode(minted, KEY.public_key(), algorithms=["EdDSA"], audience=FORWARD_AUD, issuer="uma-pep")["sub"]


def assert_uma_challenge(resp: requests.Response, stack: Stack, status: int) -> str:
    assert resp.status_code == status, resp.text
    value = resp.headers["www-authenticate"]
    challenge = parse_challenge(value)
    assert value == f'UMA realm="eoepca", as_uri="{stack.as_.issuer}", ticket="{challenge["ticket"]}"'
    assert "warning" not in resp.headers
    return challenge["ticket"]


def assert_unreachable(resp: requests.Response) -> None:
    assert resp.status_code == 403, resp.text
    assert resp.headers["warning"] == UNREACHABLE
    assert "www-authenticate" not in resp.headers


@pytest.fixture(scope="module", params=["keycloak", "uma2"])
def stack(request, envoy_factory, echo) -> Stack:
    devas: DevAs = request.getfixturevalue(f"{request.param}_as")
    envoy = envoy_factory(decide_config(devas), devas.port, echo.port, concurrency=WORKERS)
    return Stack(devas, echo, envoy)


# ---- allowed, denied, refused -------------------------------------------------------------------

def test_a_user_the_as_allows_gets_through_with_their_identity(stack: Stack):
    token = stack.user_token("alice")
    before = stack.decisions()
    resp = stack.get("/alice/photos", token)
    assert resp.status_code == 200, resp.text
    assert forwarded_sub(resp) == SUBS["alice"]
    assert resp.json()["path"] == "/alice/photos"
    assert "x-uma-rpt" not in resp.headers   # return_rpt is off
    [grant] = stack.grants()
    if stack.keycloak:
        assert grant["headers"]["authorization"] == f"Bearer {token}"   # the user's token, no client auth
        assert form(grant)["grant_type"] == [UMA_GRANT]
        assert form(grant)["audience"] == [PEP_CLIENT[0]]
        assert form(grant)["permission"] == ["res-alice#protected_get"]   # one permission per call
        assert form(grant)["response_mode"] == ["decision"]
        assert stack.tickets() == []
    else:
        basic = base64.b64encode(f"{PEP_CLIENT[0]}:{PEP_CLIENT[1]}".encode()).decode()
        assert grant["headers"]["authorization"] == f"Basic {basic}"   # the PEP's own client
        fields = form(grant)
        assert fields["grant_type"] == [UMA_GRANT] and fields["ticket"][0]
        assert fields["claim_token"] == [token] and fields["claim_token_format"] == [ID_TOKEN_FORMAT]
        [ticket_call] = stack.tickets()
        assert ticket_call["headers"]["authorization"].startswith("Bearer ")   # the PAT
    assert stack.decisions() - before == 1
    assert len(stack.echo.log()) == 1


def test_a_user_the_as_denies_gets_403_with_a_ticket_a_uma_client_can_trade(stack: Stack):
    # Bob may read alice's space (a seed grant row) but not delete in it.
    bob = stack.user_token("bob")
    assert stack.get("/alice/x", bob).status_code == 200
    resp = stack.get("/alice/x", bob, method="DELETE")
    ticket = assert_uma_challenge(resp, stack, 403)
    asked = json.loads(stack.tickets()[-1]["body"])
    assert (asked if isinstance(asked, list) else [asked]) == [
        {"resource_id": "res-alice", "resource_scopes": ["protected_delete"]}]
    assert [r["method"] for r in stack.echo.log()] == ["GET"]
    # A UMA client (alice, the owner) trades the ticket for an RPT that then works here.
    grant = rpt_for_ticket(stack.as_, ticket, "alice")
    assert grant.status_code == 200, grant.text
    allowed = stack.get("/alice/x", grant.json()["access_token"], method="DELETE")
    assert allowed.status_code == 200 and forwarded_sub(allowed) == SUBS["alice"]


def test_a_stranger_is_denied_for_each_resource(stack: Stack):
    alice = stack.user_token("alice")
    assert_uma_challenge(stack.get("/bob/notes", alice), stack, 403)
    bob = stack.user_token("bob")
    assert_uma_challenge(stack.get("/alice/docs/cv.pdf", bob), stack, 403)
    assert stack.echo.log() == []


def test_a_token_the_as_does_not_take_gets_401_with_a_ticket(stack: Stack):
    for token in ("not-a-token-the-as-knows", "a.b.c"):
        assert_uma_challenge(stack.get("/alice", token), stack, 401)
    assert stack.echo.log() == []


def test_an_id_token_is_no_access_token_at_keycloak(stack: Stack):
    if not stack.keycloak:
        pytest.skip("Gluu takes the ID token (the other tests)")
    # Keycloak's bearer check wants typ Bearer (AuthenticationManager.verifyIdentityToken).
    id_token = stack.as_.user_tokens("alice")["id_token"]
    assert_uma_challenge(stack.get("/alice", id_token), stack, 401)
    assert stack.echo.log() == []


def test_a_token_the_filter_can_tell_is_bad_never_reaches_the_as(stack: Stack):
    # Gluu/Janssen ship with umaValidateClaimToken off: they would take any JWT's `sub`, forged or
    # expired (devas too: tests/devas/test_decide.py). So neither dialect is sent a token the
    # filter can refuse itself: `alg: none`, or the AS's own signature on an expired token.
    assert stack.as_.configure()["uma_validate_claim_token"] is False
    typ = {"typ": "Bearer", "azp": "demo-app"} if stack.keycloak else {"aud": "demo-app"}
    forged = jwt.encode({"iss": stack.as_.issuer, "sub": SUBS["alice"], "exp": int(time.time()) + 600, **typ},
                        key=None, algorithm="none")
    expired = stack.signed_id_token(exp_in=-60, sub=SUBS["alice"], **typ)
    for token in (forged, expired):
        assert_uma_challenge(stack.get("/alice", token, method="DELETE"), stack, 401)
    assert stack.grants() == []
    assert stack.echo.log() == []


def test_gluu_validating_claim_tokens_changes_nothing_for_genuine_ones(stack: Stack):
    if stack.keycloak:
        pytest.skip("Keycloak verifies the bearer token itself")
    # What docs/access-tokens.md tells Gluu operators to switch on.
    stack.as_.configure(uma_validate_claim_token=True)
    forged = jwt.encode({"iss": stack.as_.issuer, "sub": SUBS["alice"], "aud": "demo-app",
                         "exp": int(time.time()) + 600}, key=None, algorithm="none")
    assert_uma_challenge(stack.get("/alice", forged), stack, 401)
    resp = stack.get("/alice", stack.user_token("alice"))
    assert resp.status_code == 200 and forwarded_sub(resp) == SUBS["alice"]
    assert len(stack.echo.log()) == 1


def test_need_info_answers_403_with_the_new_ticket(stack: Stack):
    if stack.keycloak:
        pytest.skip("Keycloak never asks for claims")
    # A genuine ID token that names nobody: Gluu asks for claims (need_info) and changes the ticket.
    nameless = stack.signed_id_token(name="someone", aud="demo-app")
    ticket = assert_uma_challenge(stack.get("/alice", nameless), stack, 403)
    assert len(stack.grants()) == 1
    grant = rpt_for_ticket(stack.as_, ticket, "alice")   # the filter's first ticket is void now
    assert grant.status_code == 200, grant.text
    assert stack.echo.log() == []


# ---- the AS failing ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["drop", "status503", "garbage"])
def test_the_decision_call_failing_is_403_with_warning(stack: Stack, kind: str):
    token = stack.user_token("alice")
    assert stack.get("/bob", stack.user_token("bob")).status_code == 200   # the session is up
    stack.echo.reset()
    fault_grants(stack.as_, kind)
    assert_unreachable(stack.get("/alice", token))
    assert_unreachable(stack.check("/alice", "GET", token))
    assert stack.echo.log() == []


def test_the_as_down_is_403_with_warning(stack: Stack):
    token = stack.user_token("alice")
    assert stack.get("/bob", stack.user_token("bob")).status_code == 200
    stack.echo.reset()
    stack.as_.fault("any", "drop")
    assert_unreachable(stack.get("/alice/x", token))
    assert stack.echo.log() == []
    stack.as_.clear_faults()
    assert stack.get("/alice/x", token).status_code == 200   # nothing bad was remembered


# ---- caching and single flight ----------------------------------------------------------------

def test_twenty_concurrent_first_requests_make_one_decision(stack: Stack):
    token = stack.user_token("alice")
    before = stack.decisions()
    # The AS takes its time: the 20 requests (both workers) are all waiting for one decision.
    fault_grants(stack.as_, "delay", delay_ms=400)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: stack.get(f"/alice/{i}", token), range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    assert {forwarded_sub(r) for r in answers} == {SUBS["alice"]}
    assert len(stack.grants()) == 1
    if not stack.keycloak:
        assert len(stack.tickets()) == 1
    assert stack.decisions() - before == 1


def test_the_same_token_again_is_served_from_the_cache_per_resource_and_scope(stack: Stack):
    token = stack.user_token("alice")
    for _ in range(3):
        assert stack.get("/alice/a", token).status_code == 200
    assert len(stack.grants()) == 1
    # Another scope of the same resource, and another resource: a decision each.
    assert stack.get("/alice/a", token, method="PUT").status_code == 200
    assert stack.get("/alice/docs/a", token).status_code == 200
    assert len(stack.grants()) == 3
    if stack.keycloak:
        assert [form(g)["permission"] for g in stack.grants()] == [
            ["res-alice#protected_get"], ["res-alice#protected_put"], ["res-alice-docs#protected_get"]]
    assert stack.get("/alice/docs/b", token).status_code == 200
    assert len(stack.grants()) == 3


def test_a_denial_is_remembered(stack: Stack):
    bob = stack.user_token("bob")
    assert_uma_challenge(stack.get("/alice/docs", bob), stack, 403)
    assert_uma_challenge(stack.get("/alice/docs/y", bob), stack, 403)
    assert len(stack.grants()) == 1


# ---- RPTs and the default mode ----------------------------------------------------------------

def test_an_rpt_still_works_with_no_decision_call(stack: Stack):
    rpt = stack.as_.mint_rpt(SUBS["bob"], [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}])
    before = stack.decisions()
    resp = stack.get("/alice/z", rpt, method="DELETE")
    assert resp.status_code == 200, resp.text
    assert forwarded_sub(resp) == SUBS["bob"]
    assert stack.grants() == [] and stack.decisions() == before


def test_an_rpt_lacking_the_permission_is_decided_as_the_users_token(stack: Stack):
    rpt = stack.as_.mint_rpt(SUBS["alice"], [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}])
    resp = stack.get("/alice/docs/q", rpt)
    if stack.keycloak:
        # A Keycloak RPT is an access token of alice's: Keycloak decides for her (she owns it).
        assert resp.status_code == 200 and forwarded_sub(resp) == SUBS["alice"]
        assert len(stack.grants()) == 1
    else:
        # A Gluu RPT is no ID token: the grant refuses it as a claim token (invalid_claim_token).
        assert_uma_challenge(resp, stack, 401)


def test_uma_mode_still_answers_an_access_token_with_401(stack: Stack, envoy_factory):
    uma = envoy_factory(decide_config(stack.as_, access_tokens={"mode": "uma"}), stack.as_.port, stack.echo.port)
    plain = envoy_factory(filter_config(stack.as_, resources=RESOURCES), stack.as_.port, stack.echo.port)
    try:
        for envoy in (uma, plain):
            token = stack.user_token("alice")
            assert_uma_challenge(stack.get("/alice", token, envoy=envoy), stack, 401)
            assert_uma_challenge(stack.check("/alice", "GET", token, envoy=uma), stack, 401)
        assert stack.grants() == []
        assert stack.echo.log() == []
    finally:
        uma.stop()
        plain.stop()


# ---- PARTIAL mode ------------------------------------------------------------------------------

def test_partial_mode_answers_alike(stack: Stack):
    alice, bob = stack.user_token("alice"), stack.user_token("bob")
    ok = stack.check("/alice/x", "GET", alice)
    assert ok.status_code == 200, ok.text
    assert forwarded_sub(ok) == SUBS["alice"]
    assert_uma_challenge(stack.check("/alice/x", "DELETE", bob), stack, 403)
    assert len(stack.grants()) == 2
    assert stack.check("/alice/y", "GET", alice).status_code == 200   # the decision, cached
    assert len(stack.grants()) == 2
    assert_uma_challenge(stack.check("/alice/x", "GET", "not-a-token"), stack, 401)
    assert stack.echo.log() == []


# ---- return_rpt (uma2) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def returning(envoy_factory, uma2_as, echo) -> Stack:
    config = decide_config(uma2_as, access_tokens={"mode": "decide", "return_rpt": True})
    return Stack(uma2_as, echo, envoy_factory(config, uma2_as.port, echo.port, concurrency=WORKERS))


def test_return_rpt_hands_back_a_working_rpt(returning: Stack, uma2_as: DevAs, echo: Echo):
    token = returning.user_token("alice")
    resp = returning.get("/alice/one", token)
    assert resp.status_code == 200, resp.text
    rpt = resp.headers["x-uma-rpt"]
    assert rpt and rpt != token
    assert "x-uma-rpt" not in {k.lower() for k in resp.json()["headers"]}   # for the client, not upstream
    assert forwarded_sub(resp) == SUBS["alice"]
    grants, tickets = len(returning.grants()), len(returning.tickets())
    assert (grants, tickets) == (1, 1)
    # The client uses it as an RPT: no decision call, no ticket.
    again = returning.get("/alice/two", rpt)
    assert again.status_code == 200 and forwarded_sub(again) == SUBS["alice"]
    assert (len(returning.grants()), len(returning.tickets())) == (1, 1)
    # It covers what was decided (res-alice, GET), no more; and as no ID token it decides nothing.
    assert_uma_challenge(returning.get("/alice/docs/x", rpt), returning, 401)
    other = returning.get("/alice/docs/x", token)   # the user's token: a decision, a new RPT
    assert other.status_code == 200 and other.headers["x-uma-rpt"] not in (rpt, token)


def test_return_rpt_in_partial_mode_is_on_the_check_answer(returning: Stack):
    token = returning.user_token("alice")
    ok = returning.check("/alice/x", "GET", token)
    assert ok.status_code == 200, ok.text
    rpt = ok.headers["x-uma-rpt"]
    assert returning.check("/alice/y", "GET", rpt).status_code == 200
    assert len(returning.grants()) == 1
    denied = returning.check("/alice/x", "DELETE", returning.user_token("bob"))
    assert denied.status_code == 403 and "x-uma-rpt" not in denied.headers
