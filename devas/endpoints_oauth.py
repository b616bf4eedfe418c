"""OAuth/OIDC endpoints of the development AS (development/test fixture, NOT for production):
discovery, JWKS, userinfo, dynamic client registration (RFC 7591) and the token endpoint with
its three grants: client_credentials (PAT), password (user tokens) and the UMA grant
(ticket -> RPT, UMA 2.0 Grant §3.3, with each dialect's answers).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any, Callable

from devas.auth import authenticate_client
from devas.dialects import CLAIM_TOKEN_FORMATS, NO_STORE, UMA_GRANT
from devas.httpcore import HttpError, Request, Response, json_response
from devas.store import Client, Party, Permission, new_id, now
from devas.tokens import TicketRejected

if TYPE_CHECKING:
    from devas.server import App


# ---- discovery, keys, userinfo ------------------------------------------------------------------

def discovery(app: "App", req: Request) -> Response:
    return json_response(200, app.dialect.discovery())


def openid_configuration(app: "App", req: Request) -> Response:
    return json_response(200, app.dialect.openid_configuration())


def jwks(app: "App", req: Request) -> Response:
    return json_response(200, app.key.jwks())


def userinfo(app: "App", req: Request) -> Response:
    rec = app.tokens.resolve(req.bearer() or req.form1("access_token"))
    if rec is None or rec.kind not in ("user", "pat") or not rec.live(now()):
        raise HttpError(json_response(401, {"error": "invalid_token", "error_description": "Token verification failed"},
                                      {"WWW-Authenticate": 'Bearer error="invalid_token"'}))
    user = app.store.users.get(rec.sub or "")
    body = user.claims() if user else {"sub": rec.sub, "preferred_username": rec.username, "isOperator": False}
    return json_response(200, body)


# ---- dynamic client registration --------------------------------------------------------------

_TRAILING_COMMA = re.compile(r",\s*([\]}])")


def _registration_body(app: "App", req: Request) -> dict[str, Any]:
    text = req.text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        # oxAuth's lenient parser takes EOEPCA's hand-built body with a trailing comma.
        try:
            body = json.loads(_TRAILING_COMMA.sub(r"\1", text)) if app.dialect.name == "uma2" else None
        except json.JSONDecodeError:
            body = None
    if not isinstance(body, dict):
        raise app.dialect.error(400, "invalid_client_metadata", "The request body is not a JSON object.")
    return body


def registration(app: "App", req: Request) -> Response:
    body = _registration_body(app, req)
    scope = body.get("scope")
    scopes = scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else None
    client = Client(client_id=new_id(), client_secret=secrets.token_urlsafe(24),
                    # No `scope` means "the defaults", which include uma_protection here so that a
                    # control plane registering itself can manage resources right away.
                    uma_protection=scopes is None or "uma_protection" in scopes,
                    rpt_as_jwt=bool(body.get("rpt_as_jwt", False)), dynamic=True, metadata=body)
    app.store.clients[client.client_id] = client
    return json_response(201, {
        **body,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "client_id_issued_at": now(),
        "client_secret_expires_at": 0,
        "grant_types": body.get("grant_types") or ["authorization_code"],
        "token_endpoint_auth_method": body.get("token_endpoint_auth_method") or "client_secret_basic",
        "registration_access_token": secrets.token_urlsafe(24),
        "registration_client_uri": f"{app.dialect.url('registration')}/{client.client_id}",
    })


# ---- token endpoint -----------------------------------------------------------------------------

def token(app: "App", req: Request) -> Response:
    grant_type = req.form1("grant_type")
    grant = GRANTS.get(grant_type or "")
    try:
        if grant is None:
            if not grant_type:
                raise app.dialect.error(400, "invalid_request", "Missing form parameter: grant_type")
            raise app.dialect.error(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}")
        body = grant(app, req)
    except HttpError as err:  # every token-endpoint answer is no-store (RFC 6749 §5.1, UMA Grant §3.3.6)
        err.response.headers.update(NO_STORE)
        raise
    app.store.count(f"tokens_issued.{GRANT_NAMES[grant_type or '']}")
    return json_response(200, body, NO_STORE)


def _client_credentials(app: "App", req: Request) -> dict[str, Any]:
    client = authenticate_client(app, req)
    access, rec = app.tokens.issue_pat(client, (req.form1("scope") or "").split())
    return {"access_token": access, "token_type": "Bearer", "expires_in": rec.exp - rec.iat,
            **app.dialect.token_response_extras(rec)}


def _password(app: "App", req: Request) -> dict[str, Any]:
    client = authenticate_client(app, req)
    user = app.store.check_password(req.form1("username"), req.form1("password"))
    if user is None:
        raise app.dialect.error(app.dialect.bad_user_credentials_status, "invalid_grant", "Invalid user credentials")
    access, id_token, rec = app.tokens.issue_user_tokens(client, user)
    return {"access_token": access, "id_token": id_token, "token_type": "Bearer",
            "expires_in": rec.exp - rec.iat, "scope": "openid profile"}


def _party(app: "App", claims: dict[str, Any]) -> Party:
    """The requesting party named by a verified claim token; its claims become the pct_claims."""
    user = app.store.users.get(claims["sub"])
    username = claims.get("preferred_username") or (user.username if user else None)
    operator = claims.get("isOperator", user.is_operator if user else False)
    pct_claims = {"sub": claims["sub"], "isOperator": operator}
    if username:
        pct_claims["preferred_username"] = username
    return Party(sub=claims["sub"], username=username, claims=pct_claims)


def _requesting_party(app: "App", req: Request) -> tuple[Client, Party | None]:
    dialect = app.dialect
    bearer = req.bearer()
    if bearer and dialect.bearer_identifies_party:
        # Keycloak: `Authorization: Bearer <user access token>`; the client is the token's azp.
        rec = app.tokens.resolve(bearer)
        client = app.store.clients.get(rec.client_id) if rec is not None else None
        if rec is None or rec.kind != "user" or not rec.live(now()) or client is None:
            raise dialect.invalid_claim_token("Invalid bearer token")
        return client, _party(app, rec.claims)
    client = authenticate_client(app, req)
    claim_token = req.form1("claim_token")
    if claim_token:
        fmt = req.form1("claim_token_format") or dialect.default_claim_token_format
        if fmt not in CLAIM_TOKEN_FORMATS:
            raise dialect.error(400, dialect.bad_claim_format_error, f"Unsupported claim_token_format [{fmt}]")
        claims = app.tokens.verify_claim_token(claim_token)
        if claims is None:
            raise dialect.invalid_claim_token("Invalid claim token")
        return client, _party(app, claims)
    pct = req.form1("pct")
    if pct and dialect.issues_pct:
        party = app.store.pcts.get(pct)
        if party is None:
            raise dialect.error(400, "invalid_pct", "The pct is invalid.")
        return client, party
    if dialect.bearer_identifies_party:  # Keycloak: the client alone acts as its service account
        account = f"service-account-{client.client_id}"
        return client, Party(sub=account, username=account, claims={"sub": account})
    return client, None


def _evaluate(app: "App", party: Party, requested: list[Permission]) -> tuple[list[dict[str, Any]], bool]:
    """Applies the policy (store.allowed_scopes) to the ticket's permissions. Returns the granted
    RPT permissions and whether every requested scope was granted."""
    granted: list[dict[str, Any]] = []
    complete = True
    for perm in requested:
        res = app.store.resource(perm.resource_id)
        allowed = app.store.allowed_scopes(party.sub, res) if res is not None else None
        if res is None or allowed is None:
            complete = False
            continue
        if perm.scopes:
            scopes = [s for s in perm.scopes if s in allowed]
            complete = complete and len(scopes) == len(perm.scopes)
            if not scopes:
                continue
        else:
            scopes = sorted(allowed) if app.dialect.empty_scopes_grant_all else []
        granted.append({"resource_id": res.id, "resource_name": res.name, "resource_scopes": scopes})
    return granted, complete


def _upgrade_base(app: "App", rpt: str | None) -> list[dict[str, Any]]:
    """Permissions of the RPT being upgraded (UMA Grant §3.3.1: it may have expired)."""
    if not rpt:
        return []
    rec = app.tokens.resolve(rpt)
    if rec is None or rec.kind != "rpt":
        raise app.dialect.invalid_rpt()
    return [{k: p[k] for k in ("resource_id", "resource_name", "resource_scopes")} for p in rec.permissions]


def _merge(base: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for p in base + new:
        if p["resource_id"] in merged:
            scopes = merged[p["resource_id"]]["resource_scopes"]
            scopes.extend(s for s in p["resource_scopes"] if s not in scopes)
        else:
            merged[p["resource_id"]] = {**p, "resource_scopes": list(p["resource_scopes"])}
    return list(merged.values())


def _uma_ticket(app: "App", req: Request) -> dict[str, Any]:
    dialect = app.dialect
    client, party = _requesting_party(app, req)
    try:
        ticket = app.tokens.redeem_ticket(req.form1("ticket"))
    except TicketRejected as rejected:
        raise dialect.ticket_rejected(rejected.expired) from None
    if party is None:  # Gluu: no claims about the requesting party yet
        raise dialect.need_info(app.tokens.issue_ticket(ticket.client_id, ticket.permissions))
    base = _upgrade_base(app, req.form1("rpt"))
    granted, complete = _evaluate(app, party, ticket.permissions)
    if not granted or (dialect.grant_requires_all_scopes and not complete):
        raise dialect.grant_denied()
    at = now()
    access, rec = app.tokens.issue_rpt(client_id=client.client_id, party=party, permissions=_merge(base, granted),
                                       as_jwt=dialect.rpt_as_jwt(client), iat=at,
                                       exp=at + app.store.settings.rpt_lifetime_s)
    pct = None
    if dialect.issues_pct:
        pct = new_id()
        app.store.pcts[pct] = party
    return dialect.rpt_response(access, rec, upgraded=bool(base), pct=pct)


GRANTS: dict[str, Callable[["App", Request], dict[str, Any]]] = {
    "client_credentials": _client_credentials,
    "password": _password,
    UMA_GRANT: _uma_ticket,
}
GRANT_NAMES = {"client_credentials": "client_credentials", "password": "password", UMA_GRANT: "uma-ticket"}
