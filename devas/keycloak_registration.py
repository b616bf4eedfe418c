"""Keycloak's client registration in the development AS (development/test fixture, NOT for
production): `/realms/{realm}/clients-registrations/openid-connect` and `/default`, their
authentication (initial access tokens) and the realm's default registration policies.

Sources (keycloak/keycloak, services/src/main/java/org/keycloak/services/clientregistration/):
`ClientRegistrationAuth`, `ClientRegistrationTokenUtils`, `AbstractClientRegistrationProvider`,
`DefaultClientRegistrationProvider`, `oidc/OIDCClientRegistrationProvider`,
`oidc/DescriptionConverter`, `policy/DefaultClientRegistrationPolicies`,
`policy/impl/TrustedHostClientRegistrationPolicy`, `policy/impl/ClientScopesClientRegistrationPolicy`.
A mixin of `keycloak.Keycloak`, which provides `error`, `mismatch`, `check_fields`, `body_json`
and `server_error`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from devas.dialects import compact, split_scope
from devas.httpcore import HttpError, Request, Response, json_response
from devas.store import Client, InitialAccessToken, new_id, now

CLIENT_CLASS = "org.keycloak.representations.idm.ClientRepresentation"
CLIENT_FIELDS = {
    "id", "clientId", "name", "description", "type", "rootUrl", "adminUrl", "baseUrl", "surrogateAuthRequired",
    "enabled", "alwaysDisplayInConsole", "clientAuthenticatorType", "secret", "registrationAccessToken",
    "defaultRoles", "redirectUris", "webOrigins", "notBefore", "bearerOnly", "consentRequired",
    "standardFlowEnabled", "implicitFlowEnabled", "directAccessGrantsEnabled", "serviceAccountsEnabled",
    "authorizationServicesEnabled", "directGrantsOnly", "publicClient", "frontchannelLogout", "protocol",
    "attributes", "authenticationFlowBindingOverrides", "fullScopeAllowed", "nodeReRegistrationTimeout",
    "registeredNodes", "protocolMappers", "clientTemplate", "useTemplateConfig", "useTemplateScope",
    "useTemplateMappers", "defaultClientScopes", "optionalClientScopes", "authorizationSettings", "access",
    "origin"}
OPTIONAL_IN_TOKEN_SCOPE = ("address", "phone", "offline_access", "microprofile-jwt", "organization")
AUTHENTICATED = "authenticated"
ANONYMOUS = "anonymous"
INITIAL_ACCESS_TYPE = "InitialAccessToken"     # ClientRegistrationTokenUtils.TYPE_INITIAL_ACCESS_TOKEN
REGISTRATION_ACCESS_TYPE = "RegistrationAccessToken"


class KeycloakRegistration:
    """Client registration; mixed into keycloak.Keycloak."""

    def policy_error(self, policy: str, details: str) -> HttpError:
        """ClientRegistrationAuth.forbidden with ClientRegistrationPolicyException.getMessage."""
        return self.error(403, "insufficient_scope",
                          f"Policy '{policy}' rejected request to client-registration service. Details: {details}")

    def initial_access_token(self, token: str) -> InitialAccessToken | None:
        literal = next((t for t in self.store.initial_access_tokens.values() if t.token == token), None)
        if literal is not None:
            return literal
        claims = self.app.key.verify_internal(token)
        if claims is None or claims.get("typ") != INITIAL_ACCESS_TYPE:
            return None
        found = self.store.initial_access_tokens.get(str(claims.get("jti")))
        if found is None:
            raise self.error(401, "invalid_token", "Initial Access Token not found")
        return found

    def registration_auth(self, req: Request) -> tuple[str, InitialAccessToken | None]:
        """ClientRegistrationAuth.requireCreate: an initial access token authenticates; a bearer
        access token needs realm-management's manage-clients or create-client role (no devas user
        or client has it); without a bearer the request is anonymous."""
        header = req.header("authorization")
        scheme, _, token = (header or "").strip().partition(" ")
        if header and scheme.lower() == "bearer":
            token = token.strip()
            iat = self.initial_access_token(token)
            if iat is not None:
                if iat.count <= 0:
                    raise self.error(401, "invalid_token", "No remaining count on initial access token")
                if iat.expiration_s and iat.timestamp + iat.expiration_s <= now():
                    raise self.error(401, "invalid_token", "Expired initial access token")
                return AUTHENTICATED, iat
            internal = self.app.key.verify_internal(token)
            if internal is not None and internal.get("typ") == REGISTRATION_ACCESS_TYPE:
                return ANONYMOUS, None
            rec = self.app.tokens.resolve(token)
            if rec is not None and rec.live(now()) and rec.kind in ("pat", "user"):
                raise self.error(403, "insufficient_scope", "Forbidden")
            raise self.error(401, "invalid_token", "Failed decode token")
        return ANONYMOUS, None

    def check_policies(self, req: Request, auth: str, urls: list[str], requested_scopes: list[str]) -> None:
        """DefaultClientRegistrationPolicies: anonymous requests meet "Trusted Hosts" (no trusted
        host by default); both kinds meet "Allowed Client Scopes" (the realm's client scopes)."""
        if auth == ANONYMOUS:
            trusted = self.settings.registration_trusted_hosts
            if req.remote_addr not in trusted:
                raise self.policy_error("Trusted Hosts", "Host not trusted.")
            for url in urls:
                host = re.sub(r"^[a-z]+://([^/:]*).*$", r"\1", url)
                if host not in trusted:
                    raise self.policy_error("Trusted Hosts", "URI doesn't match any trusted host or trusted domain")
        allowed = set(self.settings.client_scopes)
        if any(s not in allowed for s in requested_scopes):
            raise self.policy_error("Allowed Client Scopes", "Not permitted to use specified clientScope")

    def registration_access_token(self, auth: str) -> str:
        at = now()
        return self.app.key.sign_internal({"jti": new_id(), "typ": REGISTRATION_ACCESS_TYPE, "iat": at,
                                           "iss": self.issuer, "aud": self.issuer, "registration_auth": auth})

    def add_client(self, client: Client, iat: InitialAccessToken | None) -> None:
        if client.client_id in self.store.clients:
            raise self.error(400, "invalid_client_metadata", "Client Identifier in use")
        client.dynamic = True
        self.store.clients[client.client_id] = client
        if iat is not None:
            iat.count -= 1   # decreaseRemainingCount after a successful create

    def registration_body(self, req: Request) -> dict[str, Any]:
        body = self.body_json(req)
        if not isinstance(body, dict):
            raise self.mismatch(CLIENT_CLASS, body)
        return body

    def register_oidc(self, req: Request) -> Response:
        """OIDCClientRegistrationProvider.createOIDC: `scope` becomes the client's optional client
        scopes (DescriptionConverter.toInternal); authorization services cannot be enabled here, so
        the client is no resource server."""
        body = self.registration_body(req)
        if body.get("client_id") is not None:
            raise self.error(400, "invalid_client_metadata", "Client Identifier included")
        method = body.get("token_endpoint_auth_method") or "client_secret_basic"
        if method not in ("none", "client_secret_basic", "client_secret_post", "client_secret_jwt",
                          "private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"):
            raise self.error(400, "invalid_client_metadata", "Client metadata invalid")
        scopes = split_scope(body.get("scope")) if body.get("scope") is not None else None
        grant_types = body.get("grant_types") if isinstance(body.get("grant_types"), list) else []
        redirect_uris = [u for u in body.get("redirect_uris") or [] if isinstance(u, str)]
        auth, iat = self.registration_auth(req)
        self.check_policies(req, auth, redirect_uris, scopes or [])
        client = Client(client_id=new_id(), client_secret=None if method == "none" else secrets.token_urlsafe(24),
                        resource_server=False, service_accounts_enabled="client_credentials" in grant_types,
                        direct_access_grants="password" in grant_types,
                        client_scopes=tuple(scopes) if scopes is not None else None)
        self.add_client(client, iat)
        uri = f"{self.url('registration')}/{client.client_id}"
        answer = compact({
            "redirect_uris": redirect_uris, "token_endpoint_auth_method": method,
            "grant_types": ["authorization_code", "refresh_token"]
            + (["client_credentials"] if client.service_accounts_enabled else []),
            "response_types": ["code", "none"], "client_id": client.client_id, "client_secret": client.client_secret,
            "client_name": body.get("client_name"), "client_uri": body.get("client_uri"),
            "scope": " ".join(scopes if scopes is not None else
                              [s for s in self.settings.client_scopes if s in OPTIONAL_IN_TOKEN_SCOPE]),
            "subject_type": "public", "tls_client_certificate_bound_access_tokens": False,
            "client_id_issued_at": now(), "client_secret_expires_at": 0 if client.client_secret else None,
            "registration_client_uri": uri, "registration_access_token": self.registration_access_token(auth),
            "backchannel_logout_session_required": True, "backchannel_logout_revoke_offline_tokens": False})
        client.metadata = answer
        return json_response(201, answer, {"Location": uri})

    def register_default(self, req: Request) -> Response:
        """DefaultClientRegistrationProvider.createDefault with a ClientRepresentation; with
        `authorizationServicesEnabled: true` AbstractClientRegistrationProvider.create calls
        RepresentationToModel.createResourceServer: service account on, client role
        uma_protection granted to it, remote resource management on (confidential clients only)."""
        body = self.registration_body(req)
        self.check_fields(body, CLIENT_FIELDS, CLIENT_CLASS)
        auth, iat = self.registration_auth(req)
        default_scopes = body.get("defaultClientScopes") or []
        optional_scopes = body.get("optionalClientScopes") or []
        urls = [u for u in (body.get("redirectUris") or []) + [body.get(k) for k in ("rootUrl", "baseUrl", "adminUrl")]
                if isinstance(u, str) and u.startswith(("http://", "https://"))]
        self.check_policies(req, auth, urls, [*default_scopes, *optional_scopes])
        public, bearer_only = bool(body.get("publicClient")), bool(body.get("bearerOnly"))
        authz = body.get("authorizationServicesEnabled") is True
        if authz and (public or bearer_only):
            raise self.server_error()  # "Only confidential clients are allowed to set authorization settings"
        client_id = body.get("clientId") or new_id()
        client = Client(client_id=str(client_id),
                        client_secret=None if public else str(body.get("secret") or secrets.token_urlsafe(24)),
                        resource_server=authz, bearer_only=bearer_only,
                        service_accounts_enabled=authz or bool(body.get("serviceAccountsEnabled")),
                        direct_access_grants=bool(body.get("directAccessGrantsEnabled")),
                        client_scopes=tuple(default_scopes + optional_scopes) or None)
        self.add_client(client, iat)
        uri = f"{self.url('registration_default')}/{client.client_id}"
        answer = compact({
            "id": client.id, "clientId": client.client_id, "name": body.get("name"),
            "description": body.get("description"), "surrogateAuthRequired": False, "enabled": True,
            "alwaysDisplayInConsole": False, "clientAuthenticatorType": "client-secret", "secret": client.client_secret,
            "registrationAccessToken": self.registration_access_token(auth),
            "redirectUris": body.get("redirectUris") or [], "webOrigins": body.get("webOrigins") or [],
            "notBefore": 0, "bearerOnly": bearer_only, "consentRequired": False,
            "standardFlowEnabled": body.get("standardFlowEnabled", True) is not False,
            "implicitFlowEnabled": bool(body.get("implicitFlowEnabled")),
            "directAccessGrantsEnabled": False,   # create() sets it false on the answer
            "serviceAccountsEnabled": client.service_accounts_enabled,
            "authorizationServicesEnabled": True if authz else None, "publicClient": public,
            "frontchannelLogout": True, "protocol": "openid-connect", "attributes": body.get("attributes") or {},
            "authenticationFlowBindingOverrides": {}, "fullScopeAllowed": True, "nodeReRegistrationTimeout": -1,
            "defaultClientScopes": default_scopes or [s for s in self.settings.client_scopes
                                                      if s not in OPTIONAL_IN_TOKEN_SCOPE],
            "optionalClientScopes": optional_scopes or [s for s in self.settings.client_scopes
                                                        if s in OPTIONAL_IN_TOKEN_SCOPE]})
        client.metadata = answer
        return json_response(201, answer, {"Location": uri})

    def mint_initial_access_token(self, count: int, expiration_s: int) -> dict[str, Any]:
        """What the admin console's "Create initial access token" answers (the realm HMAC key signs it)."""
        at = now()
        tid = new_id()
        token = self.app.key.sign_internal(compact({"jti": tid, "typ": INITIAL_ACCESS_TYPE, "iat": at,
                                                    "exp": at + expiration_s if expiration_s else None,
                                                    "iss": self.issuer, "aud": self.issuer}))
        self.store.initial_access_tokens[tid] = InitialAccessToken(id=tid, token=token, count=count,
                                                                   expiration_s=expiration_s, timestamp=at)
        return {"id": tid, "token": token, "timestamp": at, "expiration": expiration_s, "count": count,
                "remainingCount": count}
