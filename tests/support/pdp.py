"""A stand-in for the EOEPCA PDP (um-pdp-engine) that makes its policies count at the development
AS. In an EOEPCA deployment the PEP registers the default ownership policy of each resource at
the PDP (`POST {pdp}/pdp/policy/`), and Gluu's UMA RPT policy asks the PDP whether a party may
have a scope; devas has no PDP, so this turns each policy into a devas grant row
(`POST /_devas/grant`, devas/README.md "Grants"), which is what the AS then decides by:

- `{"EQUAL": {"id": <sub>}}` rules grant that user the policy's scopes on its resource;
- `{"EQUAL": {"isOperator": true}}` grants every operator of the seed (devas/seed.py);
- no rules at all grants anyone (`*`), as the old suite's read policy with `rules: []` did.

Every policy is kept in `policies`, with the `Authorization` it came with."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from support.devas import SUBS, DevAs

OPERATORS = [SUBS["admin"]]


def grantees(rules: list) -> list[str]:
    """The subs a policy's rules let in (see the module docstring)."""
    if not rules:
        return ["*"]
    out: list[str] = []
    for rule in rules:
        for clause in (rule.get("AND") or rule.get("OR") or [rule]) if isinstance(rule, dict) else []:
            equal = clause.get("EQUAL", {}) if isinstance(clause, dict) else {}
            if "id" in equal:
                out.append(str(equal["id"]))
            if equal.get("isOperator") is True:
                out.extend(OPERATORS)
    return out


class PdpStandIn:
    """`POST /pdp/policy/` (any path) answers `200 {"id": ...}` and grants at `devas`;
    `DELETE` answers 204 (the grant stays: devas has no way to take one back, and a deleted
    resource's grants name an id nobody asks for any more)."""

    def __init__(self, devas: DevAs):
        self.devas = devas
        self.policies: list[dict] = []
        self.authorizations: list[str] = []
        pdp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict | None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                policy = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                pdp.policies.append(policy)
                pdp.authorizations.append(self.headers.get("Authorization", ""))
                config = policy.get("config", {})
                for sub in grantees(config.get("rules", [])):
                    pdp.devas.grant(sub, config.get("resource_id", ""), list(policy.get("scopes", [])))
                self._answer(200, {"id": f"policy-{len(pdp.policies)}"})

            def do_DELETE(self):  # noqa: N802
                self._answer(204, None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def create_policy(self, body: dict, token: str) -> int:
        """What the old suite's `policy_handler.create_policy` did: POST the policy with the
        caller's token; the status."""
        r = requests.post(f"{self.url}/pdp/policy/", json=body,
                          headers={"Authorization": f"Bearer {token}"}, timeout=5)
        return r.status_code

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
