"""What a UMA client does with a challenge, for the tests: parse `WWW-Authenticate` (both the
quoted UMA 2.0 form and EOEPCA's compact form) and trade the ticket for an RPT at the AS."""

from __future__ import annotations

import http.client
import re

import requests

from harness import DevAs

UMA2_CHALLENGE = re.compile(r'^UMA realm="([^"]*)", as_uri="([^"]*)", ticket="([^"]+)"$')
COMPACT_CHALLENGE = re.compile(r"^UMA realm=([^,]*),as_uri=([^,]*),ticket=([^,]+)$")

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}


def parse_challenge(value: str) -> dict:
    for pattern in (UMA2_CHALLENGE, COMPACT_CHALLENGE):
        m = pattern.match(value)
        if m:
            return {"realm": m.group(1), "as_uri": m.group(2), "ticket": m.group(3)}
    raise AssertionError(f"not a UMA challenge: {value!r}")


def discovery(devas: DevAs) -> dict:
    return requests.get(devas.issuer + "/.well-known/uma2-configuration", timeout=5).json()


def user_tokens(devas: DevAs, user: str) -> dict:
    r = requests.post(discovery(devas)["token_endpoint"], data={
        "grant_type": "password", "username": user, "password": USERS[user], "scope": "openid"},
        auth=("demo-app", "demo-secret"), timeout=5)
    r.raise_for_status()
    return r.json()


def rpt_for_ticket(devas: DevAs, ticket: str, user: str) -> requests.Response:
    """The UMA grant (§3.3.1): the ticket and the user's ID token as claim token."""
    id_token = user_tokens(devas, user)["id_token"]
    return requests.post(discovery(devas)["token_endpoint"], data={
        "grant_type": UMA_GRANT, "ticket": ticket,
        "claim_token": id_token, "claim_token_format": ID_TOKEN_FORMAT},
        auth=("demo-app", "demo-secret"), timeout=5)


def raw_request(port: int, method: str, path: str, headers: list[tuple[str, str | bytes]] | None = None,
                body: bytes | None = None) -> tuple[int, dict, bytes]:
    """Sends exactly this request line and these headers (requests would re-encode them)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", "pep.test")
    for name, value in headers or []:
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    out = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, out, data
