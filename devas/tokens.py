"""Token records of the development AS (development/test fixture, NOT for production).

Every token gets a store record. The key is the opaque token itself, a JWT's `jti`, or (Gluu JWT
RPTs, which have no `jti`: `UmaRptService.createRptJwt`) the whole JWT text. A presented token is
resolved by lookup, then by signature + `jti`; a JWT's `jti` alone is never a valid opaque token.
Tickets and the dialect-specific token shapes live in the dialects.
"""

from __future__ import annotations

from typing import Any

from devas.dialects import looks_like_jwt
from devas.keys import SigningKey
from devas.store import Client, Store, TokenRecord, User, new_id, now


class Tokens:
    def __init__(self, store: Store, key: SigningKey, issuer: str):
        self.store = store
        self.key = key
        self.issuer = issuer

    def emit(self, rec: TokenRecord, token: str | None = None) -> str:
        """Stores the record and returns the token: the given text, the signed claims (JWT) or
        the opaque key."""
        if token is None:
            token = self.key.sign(rec.claims) if rec.jwt else rec.key
        rec.token = token
        self.store.add_token(rec)
        return token

    def issue_user_tokens(self, client: Client, user: User, scope: str = "openid profile",
                          sid: str | None = None, access_as_jwt: bool = True) -> tuple[str, str, TokenRecord]:
        """An access token (recorded: usable at userinfo and as Keycloak's grant bearer) and an
        ID token (stateless: only ever used as a claim token, checked by signature and time).
        `sid` names the login session (Keycloak's `session_state`). Without `access_as_jwt` the
        access token is an opaque UUID (Gluu/Janssen `AuthorizationGrant.createAccessToken` for a
        client whose `accessTokenAsJwt` is off); its record keeps the claims for userinfo."""
        at = now()
        exp = at + self.store.settings.user_token_lifetime_s
        common = {"iss": self.issuer, "aud": client.client_id, "azp": client.client_id,
                  "iat": at, "exp": exp, **({"sid": sid} if sid else {}), **user.claims()}
        rec = TokenRecord(kind="user", key=new_id(), jwt=access_as_jwt, client_id=client.client_id, sub=user.sub,
                          username=user.username, iat=at, exp=exp, scopes=frozenset(scope.split()))
        rec.claims = {**common, "jti": rec.key, "typ": "Bearer", "acr": "1", "scope": scope}
        id_token = self.key.sign({**common, "jti": new_id(), "typ": "ID", "user_name": user.username})
        return self.emit(rec), id_token, rec

    def resolve(self, token: str | None) -> TokenRecord | None:
        """The record of a token this AS issued (live or not), else None."""
        if not token:
            return None
        rec = self.store.tokens.get(token)
        if rec is not None and (not rec.jwt or rec.token == token):
            return rec
        if looks_like_jwt(token):
            claims = self.key.verify(token)
            rec = self.store.tokens.get(str(claims.get("jti"))) if claims else None
            return rec if rec is not None and rec.jwt and rec.token == token else None
        return None

    def verify_id_token(self, token: str) -> dict[str, Any] | None:
        """Claims of an unexpired ID or access token signed by this AS for this issuer."""
        claims = self.key.verify(token) if looks_like_jwt(token) else None
        if (not claims or claims.get("iss") != self.issuer or not isinstance(claims.get("sub"), str)
                or not isinstance(claims.get("exp"), int) or claims["exp"] <= now()):
            return None
        return claims
