"""What a UMA client does with a challenge, for the tests: parse `WWW-Authenticate` (both the
quoted UMA 2.0 form and EOEPCA's compact form), trade the ticket for an RPT at the AS, and send
a request exactly as written."""

from __future__ import annotations

import http.client
import re

import requests

from support.devas import APP_CLIENT, ID_TOKEN_FORMAT, UMA_GRANT, DevAs

UMA2_CHALLENGE = re.compile(r'^UMA realm="([^"]*)", as_uri="([^"]*)", ticket="([^"]+)"$')
COMPACT_CHALLENGE = re.compile(r"^UMA realm=([^,]*),as_uri=([^,]*),ticket=([^,]+)$")


def parse_challenge(value: str) -> dict:
    for pattern in (UMA2_CHALLENGE, COMPACT_CHALLENGE):
        m = pattern.match(value)
        if m:
            return {"realm": m.group(1), "as_uri": m.group(2), "ticket": m.group(3)}
    raise AssertionError(f"not a UMA challenge: {value!r}")


def rpt_for_ticket(devas: DevAs, ticket: str, user: str) -> requests.Response:
    """The UMA grant (UMA 2.0 Grant §3.3.1): the ticket and the user's ID token as claim token."""
    id_token = devas.user_tokens(user)["id_token"]
    return requests.post(devas.discovery["token_endpoint"], data={
        "grant_type": UMA_GRANT, "ticket": ticket,
        "claim_token": id_token, "claim_token_format": ID_TOKEN_FORMAT},
        auth=APP_CLIENT, timeout=5)


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
