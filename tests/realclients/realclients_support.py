"""What only the real-client tests need beyond tests/support: the seed's parties under the
names the client libraries use, and reading what a client sent."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

from support.devas import APP_CLIENT, ID_TOKEN_FORMAT, PASSWORDS, PEP_CLIENT, RESOURCES, SUBS, UMA_GRANT  # noqa: F401

REALM = "eoepca"
RS_ID, RS_SECRET = PEP_CLIENT      # the seeded resource server (holds PATs)
APP_ID, APP_SECRET = APP_CLIENT    # the seeded requesting-party client
PROTECTED = RESOURCES


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, unverified."""
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
    pieces = token.split(".")
    assert len(pieces) == 3, f"not a compact JWS: {token[:40]}..."
    return part(pieces[0]), part(pieces[1])


def form(call: dict) -> dict[str, list[str]]:
    """The form fields of a logged AS call."""
    return parse_qs(call["body"] or "", keep_blank_values=True)
