"""The UMA flow of the EOEPCA acceptance tests (EOEPCA/eoepca
`test/acceptance/01__UserManagement/01__LoginService/UMA_Flow.robot` with `UMA_Library.robot`):

- UMA Get Endpoints: the token endpoint from the AS's `/.well-known/uma2-configuration`;
- UMA Ticket Test: a check at the PEP's `/authorize` answers 401, and its `WWW-Authenticate`
  splits on `,` then each item on `=` into exactly two parts, with `as_uri` and `ticket`;
- UMA RPT Test: the token endpoint found from that `as_uri` gives an RPT for the ticket and
  user A's ID token;
- Authorized, Unauthorized, Forbidden Access: user A with the RPT gets 200, no token 401, and
  user B is refused at the token endpoint (403, which the user agent in front passes on).

Fixtures: the robot flow sent its check with `X-Request-Uri`/`X-Request-Method`, headers the
old PEP never read (it then checked `/`, protected in that deployment); here the check names
the resource with the headers the PEP reads, `X-Original-Uri`/`X-Original-Method`. The
client of the UMA grant is the requesting party's (`demo-app`, the robot's `DemoClient`)."""

from __future__ import annotations

import requests

from support.devas import APP_CLIENT
from support.eoepca_client import challenge_fields, id_token, request_rpt

RESOURCE = "/test/FileAuthorizePEP101"


def token_endpoint(as_uri: str) -> str:
    r = requests.get(f"{as_uri}/.well-known/uma2-configuration", timeout=10)
    assert r.status_code == 200
    endpoint = r.json()["token_endpoint"]
    assert endpoint
    return endpoint


def get_ticket(stack, token: str | None, uri: str = RESOURCE, method: str = "GET") -> dict[str, str]:
    headers = {"X-Original-Uri": uri, "X-Original-Method": method}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    resp = requests.get(f"{stack.pep}/authorize", headers=headers, timeout=10)
    assert resp.status_code == 401
    return challenge_fields(resp.headers["Www-Authenticate"])


def test_uma_get_endpoints(stack):
    token_endpoint(stack.gluu.issuer)


def test_uma_ticket(stack):
    fields = get_ticket(stack, "not-an-rpt")
    assert fields["as_uri"] == stack.gluu.issuer
    assert fields["UMA realm"] == "eoepca"


def test_uma_rpt_and_access(stack):
    fields = get_ticket(stack, None)
    endpoint = token_endpoint(fields["as_uri"])
    r = request_rpt(endpoint, id_token(stack.gluu, "admin"), fields["ticket"], APP_CLIENT)
    assert r.status_code == 200, r.text
    rpt = r.json()["access_token"]
    assert rpt
    # Authorized Access (through the check, as the user agent does, and straight through the proxy).
    check = requests.get(f"{stack.pep}/authorize", timeout=10, headers={
        "X-Original-Uri": RESOURCE, "X-Original-Method": "GET", "Authorization": f"Bearer {rpt}"})
    assert check.status_code == 200
    assert requests.get(f"{stack.pep}{RESOURCE}", headers={"Authorization": f"Bearer {rpt}"},
                        timeout=10).status_code == 200


def test_unauthorized_access(stack):
    assert requests.get(f"{stack.pep}{RESOURCE}", timeout=10).status_code == 401


def test_forbidden_access(stack):
    fields = get_ticket(stack, None)
    r = request_rpt(token_endpoint(fields["as_uri"]), id_token(stack.gluu, "bob"), fields["ticket"], APP_CLIENT)
    assert r.status_code == 403
    assert r.json()["error"] == "forbidden_by_policy"
