"""Small helpers shared by the real-client tests: the seeded parties of the development AS, the
user logins the client libraries start from, and the AS's test-control calls they need."""

from __future__ import annotations

import base64
import json

import requests

from harness import DevAs

REALM = "eoepca"
RS_ID, RS_SECRET = "pep-client", "pep-secret"      # the seeded resource server (holds PATs)
APP_ID, APP_SECRET = "demo-app", "demo-secret"     # the seeded requesting-party client
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}
SUBS = {"alice": "alice-0001", "bob": "bob-0002", "admin": "admin-0003"}
UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"
PROTECTED = [{"id": "res-alice", "uri": "/alice"}, {"id": "res-alice-docs", "uri": "/alice/docs"},
             {"id": "res-bob", "uri": "/bob"}]


def uma_configuration(devas: DevAs) -> dict:
    r = requests.get(devas.issuer + "/.well-known/uma2-configuration", timeout=5)
    r.raise_for_status()
    return r.json()


def user_login(devas: DevAs, user: str, client: tuple[str, str] = (APP_ID, APP_SECRET)) -> dict:
    """A password-grant login: what a UMA client application starts from."""
    r = requests.post(uma_configuration(devas)["token_endpoint"], data={
        "grant_type": "password", "username": user, "password": PASSWORDS[user], "scope": "openid"},
        auth=client, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def grant(devas: DevAs, sub: str, resource_id: str, scopes: list[str]) -> None:
    """Adds a policy grant (stands in for the real server's policy administration)."""
    requests.post(f"{devas.base}/_devas/grant", json={"sub": sub, "resource_id": resource_id, "scopes": scopes},
                  timeout=5).raise_for_status()


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, unverified."""
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    pieces = token.split(".")
    assert len(pieces) == 3, f"not a compact JWS: {token[:40]}..."
    return part(pieces[0]), part(pieces[1])


def form(call: dict) -> dict[str, list[str]]:
    """The form fields of a logged AS call."""
    from urllib.parse import parse_qs
    return parse_qs(call["body"] or "", keep_blank_values=True)
