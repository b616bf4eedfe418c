"""What the EOEPCA PEP's existing clients do with its answers, as its own test suite
(EOEPCA/um-pep-engine v1.2 `tests/`) and the EOEPCA acceptance tests (EOEPCA/eoepca
`test/acceptance/01__UserManagement/01__LoginService/UMA_Flow.robot`) do it: the ticket cut out
of `WWW-Authenticate` after `ticket=`, the challenge split on `,` then `=`, and the UMA grant
sent as the old suite's form (the ID token as claim token, the client's credentials in the
body)."""

from __future__ import annotations

import requests

from support.devas import ID_TOKEN_FORMAT, UMA_GRANT, DevAs


def ticket_of(resp: requests.Response) -> str:
    """The old suite's parse: everything after `ticket=` (a quoted UMA 2.0 challenge would leave
    its closing quote on the ticket)."""
    return resp.headers["WWW-Authenticate"].split("ticket=")[1]


def challenge_fields(value: str) -> dict[str, str]:
    """The acceptance flow's parse (`UMA Get Ticket From Response`): split on `,`, each item on
    `=` into exactly two parts; `as_uri` and `ticket` must be there and not empty."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        parts = item.split("=")
        assert len(parts) == 2, f"{item!r} of {value!r} does not split into key=value"
        fields[parts[0]] = parts[1]
    assert fields.get("as_uri") and fields.get("ticket"), value
    return fields


def id_token(devas: DevAs, user: str) -> str:
    """The user's ID token from the password grant (the old suite logged its users in the same way)."""
    return devas.user_tokens(user)["id_token"]


# OpenID Connect scopes the old clients put in the UMA grant's `scope` (`openid`, `openid
# user_name`). devas answers as Gluu with `umaGrantAccessIfNoPolicies=false` (devas/README.md,
# "Grants"): a requested scope no policy grants is `forbidden_by_policy`. The EOEPCA
# deployments the old suite ran against granted them, so they are left out of the request.
OIDC_SCOPES = {"openid", "user_name", "profile", "email", "is_operator"}


def request_rpt(token_endpoint: str, id_token_: str, ticket: str, client: tuple[str, str],
                scope: str = "openid") -> requests.Response:
    """The old suite's UMA grant (its `rpt.sh` and `getRPT`): a form with the ID token as claim
    token, the ticket, and the client's id and secret in the body (`scope` without the
    OpenID Connect scopes, see `OIDC_SCOPES`)."""
    form = {"claim_token_format": ID_TOKEN_FORMAT, "claim_token": id_token_, "ticket": ticket,
            "grant_type": UMA_GRANT, "client_id": client[0], "client_secret": client[1]}
    uma_scopes = [s for s in scope.split() if s not in OIDC_SCOPES]
    if uma_scopes:
        form["scope"] = " ".join(uma_scopes)
    return requests.post(token_endpoint, headers={"cache-control": "no-cache"}, data=form, timeout=10)
