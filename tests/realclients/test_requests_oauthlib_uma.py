"""requests-oauthlib-uma 0.1.3 (UMA2Session) as a UMA client of a service behind real Envoy
running the filter, against devas in both dialects: the 401 challenge is parsed by the
library, the ticket is traded at the AS the challenge names, and the request is retried.

The library is written for Keycloak: its UMA2Client authenticates with `Authorization: Bearer
<the session's current token>` and always sends that token as `rpt`. Keycloak takes both
(PermissionGrantType: the Bearer names the requesting party; `rpt` is any access token that
session.tokens().decode() accepts, its authorization claim, if any, being merged). Gluu and
Janssen do not: `rpt` must name an earlier RPT (UmaValidationService.validateRPT, else
400 invalid_rpt) and the party is named by a pushed claim token; the uma2 tests therefore give
the session a client (the library's `client=` parameter) that sends the grant that way."""

from __future__ import annotations

import pytest
from oauthlib.oauth2.rfc6749.errors import AccessDeniedError, OAuth2Error
from oauthlib.oauth2.rfc6749.parameters import prepare_token_request
from requests_oauthlib_uma import UMA2Client, UMA2Session

from support.envoy import filter_config
from realclients_support import APP_ID, APP_SECRET, ID_TOKEN_FORMAT, PROTECTED, SUBS, UMA_GRANT, form, jwt_parts


@pytest.fixture(scope="module")
def kc_envoy(envoy_factory, keycloak_as, echo):
    return envoy_factory(filter_config(keycloak_as, resources=PROTECTED), keycloak_as.port, echo.port)


@pytest.fixture(scope="module")
def uma2_envoy(envoy_factory, uma2_as, echo):
    return envoy_factory(filter_config(uma2_as, resources=PROTECTED), uma2_as.port, echo.port)


def uma_grants(devas) -> list[dict]:
    return [c for c in devas.calls("token") if c["grant_type"] == UMA_GRANT]


def keycloak_session(devas, user: str) -> tuple[UMA2Session, str]:
    login = devas.user_tokens(user)
    token = {"access_token": login["access_token"], "token_type": "Bearer"}
    return UMA2Session(client_id=APP_ID, token=token), login["access_token"]


class PushedClaimsClient(UMA2Client):
    """The UMA grant as Gluu oxAuth / Janssen take it (UmaTokenService.requestRpt): the client
    authenticates itself (client_secret_post), the user's ID token is pushed as claim token
    (ClaimTokenFormatType.ID_TOKEN), and `rpt` is sent only once the session holds an RPT."""

    def __init__(self, client_id: str, client_secret: str, id_token: str, token: dict):
        super().__init__(client_id, token=token)
        self.client_secret = client_secret
        self.id_token = id_token

    def prepare_request_body(self, ticket: str, body="", **kwargs) -> str:
        earlier_rpt = self.token.get("access_token") if "upgraded" in self.token else None
        kwargs.update(include_client_id=True, client_id=self.client_id, client_secret=self.client_secret,
                      claim_token=self.id_token, claim_token_format=ID_TOKEN_FORMAT)
        return prepare_token_request(self.grant_type, ticket=ticket, rpt=earlier_rpt, body=body, **kwargs)


def gluu_session(devas, user: str) -> tuple[UMA2Session, dict]:
    login = devas.user_tokens(user)
    token = {"access_token": login["access_token"], "token_type": "Bearer"}
    client = PushedClaimsClient(APP_ID, APP_SECRET, login["id_token"], token)
    return UMA2Session(client=client, token=token), login


# ---- Keycloak ---------------------------------------------------------------------------------

def test_keycloak_challenge_rpt_and_retry(kc_envoy, keycloak_as, echo):
    """One request: 401 + UMA challenge (parsed by the library's regex), the library reads the
    token endpoint from `{as_uri}/.well-known/uma2-configuration`, trades the ticket with
    `Authorization: Bearer <user token>` and `rpt=<user token>` (which Keycloak accepts: a
    validly signed access token without an authorization claim adds nothing), and the retry
    with the RPT reaches the upstream."""
    session, user_token = keycloak_session(keycloak_as, "alice")
    resp = session.get(kc_envoy.url("/alice/photos"), timeout=10)
    assert resp.status_code == 200, resp.text
    rpt = session.token["access_token"]
    assert rpt != user_token
    assert session.token["upgraded"] is True  # AuthorizationTokenService.isUpgraded: an `rpt` was sent
    assert resp.json()["headers"]["authorization"] == f"Bearer {rpt}"
    assert [r["path"] for r in echo.log()] == ["/alice/photos"]

    (call,) = uma_grants(keycloak_as)
    assert call["headers"]["authorization"] == f"Bearer {user_token}"
    fields = form(call)
    (ticket,) = fields["ticket"]
    assert fields["rpt"] == [user_token] and ticket
    (perm_call,) = keycloak_as.calls("permission")
    _, claims = jwt_parts(rpt)
    assert claims["sub"] == SUBS["alice"]
    assert [(p["rsid"], p.get("scopes")) for p in claims["authorization"]["permissions"]] == \
        [("res-alice", ["protected_get"])]


def test_keycloak_second_resource_upgrades_the_rpt(kc_envoy, keycloak_as, echo):
    """A second resource gets a new challenge; the library sends its RPT as `rpt` and Keycloak
    merges the earlier permissions (AuthorizationTokenService: the authorization claim of an
    active `rpt`), answering upgraded=true. Both resources then pass without another grant."""
    session, _ = keycloak_session(keycloak_as, "alice")
    assert session.get(kc_envoy.url("/alice/photos"), timeout=10).status_code == 200
    first_rpt = session.token["access_token"]
    assert session.get(kc_envoy.url("/alice/docs/cv.pdf"), timeout=10).status_code == 200
    second = session.token
    assert second["upgraded"] is True
    assert form(uma_grants(keycloak_as)[-1])["rpt"] == [first_rpt]
    _, claims = jwt_parts(second["access_token"])
    assert {p["rsid"] for p in claims["authorization"]["permissions"]} == {"res-alice", "res-alice-docs"}
    for path in ("/alice/photos", "/alice/docs/cv.pdf"):
        assert session.get(kc_envoy.url(path), timeout=10).status_code == 200
    assert len(uma_grants(keycloak_as)) == 2
    assert len(echo.log()) == 4


def test_keycloak_refusal_reaches_the_client_as_request_submitted(kc_envoy, keycloak_as, echo):
    """Bob may read Alice's space, not delete in it. With a ticket and submit_request absent
    (default true), Keycloak refuses with 403 {"error":"access_denied",
    "error_description":"request_submitted"} (AuthorizationTokenService.authorize,
    KeycloakAuthorizationRequest.isSubmitRequest); the library raises it and never retries."""
    session, _ = keycloak_session(keycloak_as, "bob")
    with pytest.raises(AccessDeniedError) as err:
        session.delete(kc_envoy.url("/alice/photos"), timeout=10)
    assert err.value.description == "request_submitted"
    assert len(uma_grants(keycloak_as)) == 1
    assert echo.log() == []


# ---- Gluu / Janssen (uma2) ----------------------------------------------------------------------

def test_uma2_challenge_rpt_and_retry(uma2_envoy, uma2_as, echo):
    """The same library flow against the uma2 dialect, with the pushed-claims grant: the AS
    answers {access_token, token_type, pct, upgraded} (UmaTokenResponse, no expires_in) and the
    retry with the opaque RPT reaches the upstream."""
    session, login = gluu_session(uma2_as, "alice")
    resp = session.get(uma2_envoy.url("/alice/photos"), timeout=10)
    assert resp.status_code == 200, resp.text
    token = session.token
    assert token["token_type"] == "Bearer" and token["upgraded"] is False and token["pct"]
    assert "expires_in" not in token
    assert resp.json()["headers"]["authorization"] == f"Bearer {token['access_token']}"
    assert [r["path"] for r in echo.log()] == ["/alice/photos"]

    (call,) = uma_grants(uma2_as)
    fields = form(call)
    assert fields["claim_token"] == [login["id_token"]]
    assert fields["claim_token_format"] == [ID_TOKEN_FORMAT]
    assert fields["client_id"] == [APP_ID] and fields["ticket"][0]
    assert "rpt" not in fields
    assert len(uma2_as.calls("permission")) == 1


def test_uma2_refusal_is_forbidden_by_policy(uma2_envoy, uma2_as, echo):
    """Gluu: a policy refusal is 403 forbidden_by_policy (UmaTokenService / UmaExpressionService);
    the library raises it and nothing reaches the upstream."""
    session, _ = gluu_session(uma2_as, "bob")
    with pytest.raises(OAuth2Error) as err:
        session.delete(uma2_envoy.url("/alice/photos"), timeout=10)
    assert err.value.error == "forbidden_by_policy"
    assert echo.log() == []


def test_uma2_stock_library_cannot_get_an_rpt(uma2_envoy, uma2_as, echo):
    """The library as shipped sends no client credentials and `rpt=<user access token>`.
    Gluu oxAuth 4.x takes only `AccessToken <token>` (not Bearer) as client authentication at
    the token endpoint (AuthenticationFilter #686) and answers 401 invalid_client; Janssen does
    take a Bearer access token there and then refuses the non-RPT `rpt` with 400 invalid_rpt
    (UmaValidationService.validateRPT). Either way there is no RPT and no retry."""
    login = uma2_as.user_tokens("alice")
    session = UMA2Session(client_id=APP_ID, token={"access_token": login["access_token"], "token_type": "Bearer"})
    with pytest.raises(OAuth2Error) as err:
        session.get(uma2_envoy.url("/alice/photos"), timeout=10)
    assert err.value.error in ("invalid_client", "invalid_rpt")
    assert len(uma_grants(uma2_as)) == 1
    assert echo.log() == []
