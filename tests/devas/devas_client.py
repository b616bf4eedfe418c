"""What the devas tests say to the development AS (a development/test fixture, NOT for production):
PATs, user tokens, tickets, the UMA grant, introspection and the control API, per dialect."""

from __future__ import annotations

import jwt
import requests

from support.devas import ALL_SCOPES as ALL
from support.devas import APP_CLIENT as APP
from support.devas import ID_TOKEN_FORMAT, PASSWORDS, UMA_GRANT  # noqa: F401
from support.devas import PEP_CLIENT as PEP

JWT_FORMAT = "urn:ietf:params:oauth:token-type:jwt"  # RFC 8693 §3
T = 5  # seconds, every HTTP call


def is_kc(as_) -> bool:
    return as_.profile == "keycloak"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def pat_response(as_, auth=PEP, scope: str | None = None) -> requests.Response:
    data = {"grant_type": "client_credentials"} | ({"scope": scope} if scope is not None else {})
    return requests.post(as_.endpoint("token"), data=data, auth=auth, timeout=T)


def get_pat(as_, auth=PEP, scope: str | None = "default") -> str:
    """A PAT the way each server wants it asked: Keycloak without `scope` (uma_protection is a
    client role there), Gluu/Janssen with `scope=uma_protection`."""
    if scope == "default":
        scope = None if is_kc(as_) else "uma_protection"
    r = pat_response(as_, auth, scope)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def user_tokens(as_, user: str, auth=APP) -> dict:
    r = requests.post(as_.endpoint("token"), data={"grant_type": "password", "username": user,
                                                   "password": PASSWORDS[user], "scope": "openid"},
                      auth=auth, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def ask_ticket(as_, perms, pat=None) -> requests.Response:
    return requests.post(as_.endpoint("permission"), json=perms, headers=bearer(pat or get_pat(as_)), timeout=T)


def ticket_for(as_, rid="res-alice", scopes=("protected_get",), pat=None) -> str:
    r = ask_ticket(as_, [{"resource_id": rid, "resource_scopes": list(scopes)}], pat)
    assert r.status_code == 201, r.text
    return r.json()["ticket"]


def uma_grant(as_, ticket: str | None, user: str | None = "alice", auth=APP, **extra) -> requests.Response:
    data = {"grant_type": UMA_GRANT, **({"ticket": ticket} if ticket is not None else {}), **extra}
    if user:
        data |= {"claim_token": user_tokens(as_, user)["id_token"], "claim_token_format": ID_TOKEN_FORMAT}
    return requests.post(as_.endpoint("token"), data=data, auth=auth, timeout=T)


def introspect(as_, token: str, hint: str | None = None, **kw) -> requests.Response:
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    if is_kc(as_):
        kw.setdefault("auth", PEP)
    elif "headers" not in kw:
        kw["headers"] = bearer(get_pat(as_))
    return requests.post(as_.endpoint("introspection"), data=data, timeout=T, **kw)


def mint(as_, **body) -> str:
    r = requests.post(as_.url + "/_devas/rpt", json=body, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()["rpt"]


def control(as_, name: str, body=None) -> requests.Response:
    return requests.post(f"{as_.url}/_devas/{name}", json=body or {}, timeout=T)


def calls(as_, **params) -> list[dict]:
    return requests.get(as_.url + "/_devas/calls", params=params, timeout=T).json()


def rs(as_) -> str:
    return as_.endpoint("resource_set")


def error_of(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json()["error"]
