"""Issuing and resolving the development AS's tokens and permission tickets (development/test
fixture, NOT for production).

Every token gets a store record (key = the opaque token, or the JWT's `jti`); the dialect decides
the wire form (JWT or opaque) and the claims. A presented token is resolved by signature + `jti`
for JWTs and by lookup for opaque ones, and never across the two kinds, so a JWT's `jti` is not
itself a valid opaque token.
"""

from __future__ import annotations

from typing import Any

from devas.dialects import Dialect
from devas.keys import SigningKey
from devas.store import Client, Party, Permission, Store, Ticket, TokenRecord, User, new_id, now


class TicketRejected(Exception):
    def __init__(self, expired: bool):
        super().__init__("expired" if expired else "invalid")
        self.expired = expired


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Tokens:
    def __init__(self, store: Store, key: SigningKey, dialect: Dialect):
        self.store = store
        self.key = key
        self.dialect = dialect

    def _emit(self, rec: TokenRecord) -> str:
        self.store.add_token(rec)
        return self.key.sign(rec.claims) if rec.jwt else rec.key

    # ---- PAT and user tokens ----------------------------------------------------------------
    def issue_pat(self, client: Client, requested: list[str]) -> tuple[str, TokenRecord]:
        at = now()
        rec = TokenRecord(kind="pat", key=new_id(), jwt=self.dialect.pat_is_jwt, client_id=client.client_id,
                          sub=f"service-account-{client.client_id}", username=f"service-account-{client.client_id}",
                          iat=at, exp=at + self.store.settings.pat_lifetime_s,
                          scopes=self.dialect.pat_scopes(client, requested))
        rec.claims = self.dialect.pat_claims(rec)
        return self._emit(rec), rec

    def issue_user_tokens(self, client: Client, user: User) -> tuple[str, str, TokenRecord]:
        """An access token (recorded: usable at userinfo and as Keycloak's grant bearer) and an
        ID token (stateless: only ever used as a claim token, checked by signature and time)."""
        at = now()
        exp = at + self.store.settings.user_token_lifetime_s
        common = {"iss": self.dialect.issuer, "aud": client.client_id, "azp": client.client_id,
                  "iat": at, "exp": exp, **user.claims()}
        rec = TokenRecord(kind="user", key=new_id(), jwt=True, client_id=client.client_id, sub=user.sub,
                          username=user.username, iat=at, exp=exp, scopes=frozenset({"openid", "profile"}))
        rec.claims = {**common, "jti": rec.key, "typ": "Bearer", "scope": "openid profile"}
        id_token = self.key.sign({**common, "jti": new_id(), "typ": "ID", "user_name": user.username})
        return self._emit(rec), id_token, rec

    # ---- RPTs -----------------------------------------------------------------------------------
    def issue_rpt(self, *, client_id: str, party: Party, permissions: list[dict[str, Any]], as_jwt: bool,
                  iat: int, exp: int, nbf: int | None = None, audience: list[str] | None = None,
                  extra: dict[str, Any] | None = None, active: bool = True) -> tuple[str, TokenRecord]:
        if audience is None:
            audience = sorted({r.client_id for p in permissions
                               if (r := self.store.resources.get(p["resource_id"])) is not None})
        rec = TokenRecord(kind="rpt", key=new_id(), jwt=as_jwt, client_id=client_id, sub=party.sub,
                          username=party.username, iat=iat, exp=exp, nbf=nbf, active=active,
                          permissions=permissions, audience=audience or [self.store.default_rs],
                          pct_claims=party.claims, extra=dict(extra or {}))
        rec.claims = self.dialect.rpt_claims(rec)
        return self._emit(rec), rec

    # ---- resolution ---------------------------------------------------------------------------
    def resolve(self, token: str | None) -> TokenRecord | None:
        """The record of a token this AS issued (live or not), else None."""
        if not token:
            return None
        if _looks_like_jwt(token):
            claims = self.key.verify(token)
            rec = self.store.tokens.get(str(claims.get("jti"))) if claims else None
            return rec if rec is not None and rec.jwt else None
        rec = self.store.tokens.get(token)
        return rec if rec is not None and not rec.jwt else None

    def verify_claim_token(self, token: str) -> dict[str, Any] | None:
        """Claims of an unexpired ID or access token signed by this AS for this issuer."""
        claims = self.key.verify(token) if _looks_like_jwt(token) else None
        if (not claims or claims.get("iss") != self.dialect.issuer or not isinstance(claims.get("sub"), str)
                or not isinstance(claims.get("exp"), int) or claims["exp"] <= now()):
            return None
        return claims

    # ---- permission tickets ---------------------------------------------------------------------
    def issue_ticket(self, client_id: str, permissions: list[Permission], *, pat: TokenRecord | None = None) -> str:
        at = now()
        if self.dialect.ticket_is_jws and pat is not None:
            exp = pat.exp  # Keycloak copies the PAT's times: the ticket dies with the PAT
        else:
            exp = at + self.store.settings.ticket_lifetime_s
        ticket = Ticket(id=new_id(), client_id=client_id, permissions=permissions, exp=exp)
        self.store.add_ticket(ticket)
        self.store.count("tickets_issued")
        if not self.dialect.ticket_is_jws:
            return ticket.id
        claims = {
            "permissions": [{"rsid": p.resource_id, "scopes": list(p.scopes)} for p in permissions],
            "jti": ticket.id, "iss": self.dialect.issuer, "aud": self.dialect.issuer, "azp": client_id,
            "exp": exp, "iat": pat.iat if pat else at,
        }
        if pat is not None and pat.sub:
            claims["sub"] = pat.sub
        return self.key.sign(claims)

    def redeem_ticket(self, value: str | None) -> Ticket:
        """Consumes a ticket (single use, valid or not); raises TicketRejected."""
        ticket_id = value
        if value and self.dialect.ticket_is_jws:
            claims = self.key.verify(value)
            ticket_id = str(claims.get("jti")) if claims else None
        ticket = self.store.tickets.pop(ticket_id, None) if ticket_id else None
        if ticket is None:
            raise TicketRejected(expired=False)
        if ticket.exp <= now():
            raise TicketRejected(expired=True)
        return ticket
