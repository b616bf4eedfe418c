"""The two wire dialects of the development AS (development/test fixture, NOT for production):
`Keycloak` and `Uma2` (the UMA 2.0 spec as Gluu oxAuth / Janssen speak it).

The endpoints (endpoints_*.py) hold the shared logic; a dialect only says where things live
and how they look on the wire: paths and discovery documents, error bodies and status codes,
token and ticket formats, introspection shapes, resource_set representations. Sources for each
difference: /work/shared/reference/uma-wire-formats.md §2 (Keycloak), §3 (Gluu), §6 (matrix).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from devas.httpcore import HttpError, Request, Response, empty_response, json_response
from devas.store import UMA_PROTECTION, Client, Resource, Store, TokenRecord

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"
JWT_FORMAT = "urn:ietf:params:oauth:token-type:jwt"
CLAIM_TOKEN_FORMATS = (ID_TOKEN_FORMAT, JWT_FORMAT)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
RS_ALGS = ["RS256"]


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drops null fields, as both servers' JSON mappers do."""
    return {k: v for k, v in d.items() if v is not None}


def _time_fields(perm: dict[str, Any]) -> dict[str, Any]:
    return {k: perm[k] for k in ("exp", "nbf", "iat") if k in perm}


def _scope_id(name: str) -> str:
    # Keycloak scopes have ids; a name-derived UUID keeps them stable across resources and resets.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "devas-scope:" + name))


def _uri_matches(pattern: str, uri: str) -> bool:
    """Keycloak `matchingUri=true`: exact, `/*` prefix (also the bare parent), `{param}` segment."""
    if pattern == uri:
        return True
    if pattern.endswith("/*"):
        parent = pattern[:-2]
        return uri == parent or uri.startswith(parent + "/")
    want, got = pattern.strip("/").split("/"), uri.strip("/").split("/")
    return len(want) == len(got) and all(w == g or (w.startswith("{") and w.endswith("}"))
                                         for w, g in zip(want, got))


class Dialect:
    """Shared behaviour and the knobs the subclasses set."""

    name = ""
    prefix = ""                               # every AS path starts with it
    paths: dict[str, str] = {}                # logical name -> path below `prefix`
    discovery_paths: tuple[str, ...] = ()     # absolute paths serving the uma2-configuration
    openid_discovery_paths: tuple[str, ...] = ()
    pat_is_jwt = False
    ticket_is_jws = False
    permission_accepts_object = True          # Keycloak's mapper wants an array
    resource_id_may_be_name = False           # Keycloak resolves a name too
    permission_requires_protection_scope = True
    grant_requires_all_scopes = True          # Gluu: every ticket scope, or forbidden_by_policy
    empty_scopes_grant_all = False            # Keycloak: a permission with no scopes means all
    bearer_identifies_party = False           # Keycloak: Authorization: Bearer <user token> at the grant
    resources_expire = False
    resource_names_unique = False             # Keycloak: 409 on a duplicate name per owner
    head_as_get = False                       # JAX-RS answers HEAD with the GET method
    bad_user_credentials_status = 400
    default_claim_token_format: str | None = None
    bad_claim_format_error = "invalid_claim_token_format"
    issues_pct = False                        # Gluu returns a persisted claims token (pct)

    def __init__(self, base_url: str, realm: str):
        self.base_url = base_url.rstrip("/")
        self.realm = realm

    # ---- addresses --------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        raise NotImplementedError

    def path(self, name: str) -> str:
        return self.prefix + self.paths[name]

    def url(self, name: str) -> str:
        return self.base_url + self.path(name)

    def discovery(self) -> dict[str, Any]:
        raise NotImplementedError

    def openid_configuration(self) -> dict[str, Any]:
        raise NotImplementedError

    # ---- errors -----------------------------------------------------------------------------
    def error(self, status: int, code: str, description: str | None = None,
              reason: str | None = None, headers: dict[str, str] | None = None) -> HttpError:
        return HttpError(json_response(status, _compact({"error": code, "error_description": description}),
                                       headers))

    def protection_missing_token(self) -> HttpError:
        raise NotImplementedError

    def protection_bad_token(self) -> HttpError:
        raise NotImplementedError

    def protection_scope_missing(self) -> HttpError:
        raise NotImplementedError

    def method_not_allowed(self) -> HttpError:
        return self.error(405, "unsupported_method_type", "Method not allowed for this resource.")

    def not_found(self) -> HttpError:
        return self.error(404, "not_found", "Resource not found.")

    # ---- tokens -----------------------------------------------------------------------------
    def pat_scopes(self, client: Client, requested: list[str]) -> frozenset[str]:
        raise NotImplementedError

    def pat_claims(self, rec: TokenRecord) -> dict[str, Any]:
        raise NotImplementedError

    def token_response_extras(self, rec: TokenRecord) -> dict[str, Any]:
        return {}

    def rpt_as_jwt(self, client: Client) -> bool:
        raise NotImplementedError

    def rpt_claims(self, rec: TokenRecord) -> dict[str, Any]:
        raise NotImplementedError

    def rpt_response(self, token: str, rec: TokenRecord, upgraded: bool, pct: str | None) -> dict[str, Any]:
        raise NotImplementedError

    # ---- UMA grant --------------------------------------------------------------------------
    def ticket_rejected(self, expired: bool) -> HttpError:
        raise NotImplementedError

    def grant_denied(self) -> HttpError:
        raise NotImplementedError

    def need_info(self, ticket: str) -> HttpError:
        raise NotImplementedError

    def invalid_claim_token(self, description: str) -> HttpError:
        raise NotImplementedError

    def invalid_rpt(self) -> HttpError:
        raise NotImplementedError

    # ---- permission endpoint ------------------------------------------------------------------
    def permission_items(self, body: Any) -> list[Any]:
        if isinstance(body, dict) and self.permission_accepts_object:
            body = [body]
        if not isinstance(body, list) or not body:
            wanted = "an object or a non-empty array" if self.permission_accepts_object else "a non-empty array"
            raise self.error(400, "invalid_permission_request", f"Invalid permission request: expected {wanted}.")
        return body

    # ---- introspection ----------------------------------------------------------------------
    introspection_auth = "pat"  # or "client"

    def introspect(self, rec: TokenRecord | None, hint: str | None, caller: str, at: int,
                   require_aud: bool) -> dict[str, Any]:
        raise NotImplementedError

    # ---- resource_set -------------------------------------------------------------------------
    def parse_resource(self, store: Store, body: dict[str, Any], client_id: str, at: int) -> dict[str, Any]:
        raise NotImplementedError

    def render_resource(self, store: Store, res: Resource) -> dict[str, Any]:
        raise NotImplementedError

    def created(self, store: Store, res: Resource) -> Response:
        raise NotImplementedError

    def updated(self, res: Resource) -> Response:
        raise NotImplementedError

    def list_resources(self, store: Store, resources: list[Resource], req: Request) -> Response:
        raise NotImplementedError

    @staticmethod
    def _scope_names(raw: Any) -> list[str] | None:
        """`resource_scopes` as names: strings or `{name}` objects; None if malformed."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            return None
        names = [s.get("name") if isinstance(s, dict) else s for s in raw]
        return names if all(isinstance(n, str) and n for n in names) else None

    @staticmethod
    def _uris(body: dict[str, Any], *singles: str) -> list[str]:
        uris = body.get("uris")
        if isinstance(uris, list):
            return [u for u in uris if isinstance(u, str)]
        return [body[k] for k in singles if isinstance(body.get(k), str)][:1]

    @staticmethod
    def _owner_ref(raw: Any) -> str | None:
        if isinstance(raw, dict):
            return raw.get("id") or raw.get("name")
        return raw if isinstance(raw, str) and raw else None


class Keycloak(Dialect):
    name = "keycloak"
    paths = {
        "token": "/protocol/openid-connect/token",
        "introspection": "/protocol/openid-connect/token/introspect",
        "jwks": "/protocol/openid-connect/certs",
        "userinfo": "/protocol/openid-connect/userinfo",
        "authorization": "/protocol/openid-connect/auth",
        "end_session": "/protocol/openid-connect/logout",
        "resource_set": "/authz/protection/resource_set",
        "permission": "/authz/protection/permission",
        "policy": "/authz/protection/uma-policy",
        "registration": "/clients-registrations/openid-connect",
    }
    pat_is_jwt = True
    ticket_is_jws = True
    permission_accepts_object = False
    resource_id_may_be_name = True
    # ProtectionService checks the uma_protection role for resource_set only.
    permission_requires_protection_scope = False
    grant_requires_all_scopes = False
    empty_scopes_grant_all = True
    bearer_identifies_party = True
    resource_names_unique = True
    head_as_get = True
    bad_user_credentials_status = 401
    default_claim_token_format = JWT_FORMAT
    bad_claim_format_error = "invalid_request"
    introspection_auth = "client"

    def __init__(self, base_url: str, realm: str):
        super().__init__(base_url, realm)
        self.prefix = f"/realms/{realm}"
        self.discovery_paths = (self.prefix + "/.well-known/uma2-configuration",)
        self.openid_discovery_paths = (self.prefix + "/.well-known/openid-configuration",)

    @property
    def issuer(self) -> str:
        return self.base_url + self.prefix

    def _oidc_common(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("authorization"),
            "token_endpoint": self.url("token"),
            "introspection_endpoint": self.url("introspection"),
            "end_session_endpoint": self.url("end_session"),
            "frontchannel_logout_session_supported": True,
            "frontchannel_logout_supported": True,
            "jwks_uri": self.url("jwks"),
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password",
                                      "client_credentials", UMA_GRANT],
            "response_types_supported": ["code", "none", "id_token", "token", "id_token token",
                                         "code id_token", "code token", "code id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "registration_endpoint": self.url("registration"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": RS_ALGS,
            "scopes_supported": ["openid", "profile", "email", "roles", "web-origins"],
        }

    def discovery(self) -> dict[str, Any]:
        # UmaConfiguration: copied OIDC fields plus the protection API; no uma_profiles_supported,
        # no claims_interaction_endpoint, no userinfo_endpoint.
        return {**self._oidc_common(),
                "resource_registration_endpoint": self.url("resource_set"),
                "permission_endpoint": self.url("permission"),
                "policy_endpoint": self.url("policy")}

    def openid_configuration(self) -> dict[str, Any]:
        return {**self._oidc_common(),
                "userinfo_endpoint": self.url("userinfo"),
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": RS_ALGS,
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "preferred_username", "isOperator"]}

    # -- errors
    def protection_missing_token(self) -> HttpError:
        return self.error(403, "invalid_bearer_token", "Bearer token required.")

    def protection_bad_token(self) -> HttpError:
        return self.error(403, "invalid_bearer_token", "Invalid bearer token.")

    def protection_scope_missing(self) -> HttpError:
        return self.error(403, "invalid_scope", "Requires uma_protection scope.")

    def method_not_allowed(self) -> HttpError:
        return HttpError(empty_response(405))

    def not_found(self) -> HttpError:
        return HttpError(empty_response(404))  # ResourceService: 404 with an empty body

    # -- tokens
    def pat_scopes(self, client: Client, requested: list[str]) -> frozenset[str]:
        # The `scope` parameter is ignored; the client role decides.
        return frozenset({UMA_PROTECTION}) if client.uma_protection else frozenset()

    def pat_claims(self, rec: TokenRecord) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "exp": rec.exp, "iat": rec.iat, "jti": rec.key, "iss": self.issuer, "aud": "account",
            "sub": rec.sub, "typ": "Bearer", "azp": rec.client_id, "scope": "profile email",
            "clientId": rec.client_id, "preferred_username": rec.username,
        }
        if UMA_PROTECTION in rec.scopes:
            claims["resource_access"] = {rec.client_id: {"roles": [UMA_PROTECTION]}}
        return claims

    def token_response_extras(self, rec: TokenRecord) -> dict[str, Any]:
        return {"refresh_expires_in": 0, "not-before-policy": 0,
                "scope": rec.claims.get("scope", "profile email")}

    def rpt_as_jwt(self, client: Client) -> bool:
        return True

    @staticmethod
    def _permission(p: dict[str, Any]) -> dict[str, Any]:
        out = {"rsid": p["resource_id"], "rsname": p.get("resource_name", p["resource_id"])}
        if p["resource_scopes"]:
            out["scopes"] = list(p["resource_scopes"])  # Permission.scopes is NON_EMPTY
        return {**out, **_time_fields(p)}

    def rpt_claims(self, rec: TokenRecord) -> dict[str, Any]:
        aud: Any = rec.audience[0] if len(rec.audience) == 1 else list(rec.audience)
        claims = _compact({
            "exp": rec.exp, "iat": rec.iat, "nbf": rec.nbf, "jti": rec.key, "iss": self.issuer,
            "aud": aud, "sub": rec.sub, "typ": "Bearer", "azp": rec.client_id,
            "preferred_username": rec.username,
            "authorization": {"permissions": [self._permission(p) for p in rec.permissions]},
        })
        return {**claims, **rec.extra}

    def rpt_response(self, token: str, rec: TokenRecord, upgraded: bool, pct: str | None) -> dict[str, Any]:
        return {"upgraded": upgraded, "access_token": token, "expires_in": max(rec.exp - rec.iat, 0),
                "refresh_expires_in": 0, "token_type": "Bearer", "not-before-policy": 0}

    # -- grant
    def ticket_rejected(self, expired: bool) -> HttpError:
        return self.error(403, "invalid_ticket", "Ticket expired." if expired else "Ticket verification failed.")

    def grant_denied(self) -> HttpError:
        return self.error(403, "access_denied", "not_authorized")

    def need_info(self, ticket: str) -> HttpError:  # Keycloak never asks for more claims
        return self.grant_denied()

    def invalid_claim_token(self, description: str) -> HttpError:
        return self.error(400, "invalid_grant", description)

    def invalid_rpt(self) -> HttpError:
        return self.error(400, "invalid_grant", "Invalid RPT")

    # -- introspection
    KNOWN_HINTS = (None, "", "access_token", "refresh_token", "id_token", "requesting_party_token")

    def introspect(self, rec: TokenRecord | None, hint: str | None, caller: str, at: int,
                   require_aud: bool) -> dict[str, Any]:
        if hint not in self.KNOWN_HINTS:
            raise self.error(400, "invalid_request", f"Unsupported token type [{hint}].")
        if rec is None or not rec.live(at):
            return {"active": False}
        aud = rec.claims.get("aud")
        if require_aud and caller not in (aud if isinstance(aud, list) else [aud]):
            return {"active": False}
        claims = dict(rec.claims)
        if hint == "requesting_party_token":
            # RPTIntrospectionProvider: the authorization claim becomes top-level permissions,
            # each in both naming styles.
            claims.pop("authorization", None)
            claims["permissions"] = [{**self._permission(p), "resource_id": p["resource_id"],
                                      "resource_scopes": list(p["resource_scopes"])}
                                     for p in rec.permissions]
        else:
            claims.setdefault("client_id", rec.client_id)
            if rec.username:
                claims.setdefault("username", rec.username)
            claims.setdefault("token_type", "Bearer")
        claims["active"] = True
        return claims

    # -- resource_set
    def parse_resource(self, store: Store, body: dict[str, Any], client_id: str, at: int) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise self.error(400, "invalid_request", "Resource name is required.")
        scopes = self._scope_names(body.get("resource_scopes"))
        if scopes is None:
            raise self.error(400, "invalid_request", "Invalid resource_scopes.")
        owner = client_id
        ref = self._owner_ref(body.get("owner"))
        if ref is not None and ref != client_id:
            user = store.find_user(ref)
            if user is None:
                raise self.error(400, "invalid_request", f"Owner [{ref}] not found.")
            owner = user.sub
        attributes = body.get("attributes") if isinstance(body.get("attributes"), dict) else {}
        return {"name": name, "scopes": scopes, "uris": self._uris(body, "uri"), "owner": owner,
                "type": body.get("type"), "icon_uri": body.get("icon_uri"),
                "display_name": body.get("displayName"),
                "owner_managed_access": bool(body.get("ownerManagedAccess", False)),
                "attributes": attributes, "iat": at, "exp": None}

    def render_resource(self, store: Store, res: Resource) -> dict[str, Any]:
        owner_user = store.users.get(res.owner or "")
        owner = {"id": res.owner, "name": owner_user.username if owner_user else res.owner}
        return _compact({
            "_id": res.id, "name": res.name, "type": res.type, "owner": owner,
            "ownerManagedAccess": res.owner_managed_access, "displayName": res.display_name,
            "uris": list(res.uris), "resource_scopes": [{"id": _scope_id(s), "name": s} for s in res.scopes],
            "icon_uri": res.icon_uri, "attributes": dict(res.attributes),
        })

    def created(self, store: Store, res: Resource) -> Response:
        return json_response(201, self.render_resource(store, res))  # full object, no Location

    def updated(self, res: Resource) -> Response:
        return empty_response(204)

    def list_resources(self, store: Store, resources: list[Resource], req: Request) -> Response:
        q = req.query1
        name, uri, owner, rtype, scope, rid = q("name"), q("uri"), q("owner"), q("type"), q("scope"), q("_id")
        exact, matching, deep = (q(k) == "true" for k in ("exactName", "matchingUri", "deep"))
        try:
            first, limit = int(q("first") or 0), int(q("max") or -1)
        except ValueError:
            raise self.error(400, "invalid_request", "first and max must be integers.") from None

        def keep(r: Resource) -> bool:
            owner_user = store.users.get(r.owner or "")
            return ((not rid or r.id == rid)
                    and (not name or (r.name == name if exact else name.lower() in r.name.lower()))
                    and (not uri or any((_uri_matches(u, uri) if matching else u == uri) for u in r.uris))
                    and (not owner or owner in (r.owner, owner_user.username if owner_user else None))
                    and (not rtype or r.type == rtype)
                    and (not scope or scope in r.scopes))

        found = [r for r in sorted(resources, key=lambda r: r.name) if keep(r)]
        found = found[first:first + limit if limit >= 0 else None]
        return json_response(200, [self.render_resource(store, r) for r in found] if deep
                             else [r.id for r in found])


class Uma2(Dialect):
    name = "uma2"
    prefix = "/oxauth/restv1"
    paths = {
        "token": "/token",
        "introspection": "/rpt/status",
        "jwks": "/jwks",
        "userinfo": "/userinfo",
        "authorization": "/authorize",
        "end_session": "/end_session",
        "resource_set": "/host/rsrc/resource_set",
        "permission": "/host/rsrc_pr",
        "registration": "/register",
        "scope": "/uma/scopes",
        "claims_interaction": "/uma/gather_claims",
    }
    discovery_paths = ("/.well-known/uma2-configuration", "/oxauth/restv1/uma2-configuration")
    openid_discovery_paths = ("/.well-known/openid-configuration",)
    resources_expire = True
    issues_pct = True

    @property
    def issuer(self) -> str:
        return self.base_url

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("authorization"),
            "token_endpoint": self.url("token"),
            "jwks_uri": self.url("jwks"),
            "registration_endpoint": self.url("registration"),
            "response_types_supported": ["code", "id_token", "token"],
            "grant_types_supported": ["authorization_code", "implicit", "client_credentials", "password",
                                      UMA_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": RS_ALGS,
            "ui_locales_supported": ["en"],
            "introspection_endpoint": self.url("introspection"),
            "claims_interaction_endpoint": self.url("claims_interaction"),
            "uma_profiles_supported": [],
            "permission_endpoint": self.url("permission"),
            "resource_registration_endpoint": self.url("resource_set"),
            "scope_endpoint": self.url("scope"),
        }

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.url("authorization"),
            "token_endpoint": self.url("token"),
            "userinfo_endpoint": self.url("userinfo"),
            "jwks_uri": self.url("jwks"),
            "registration_endpoint": self.url("registration"),
            "end_session_endpoint": self.url("end_session"),
            "scopes_supported": ["openid", "profile", "uma_protection", "permission", "is_operator"],
            "response_types_supported": ["code", "id_token", "token"],
            "grant_types_supported": ["authorization_code", "client_credentials", "password", UMA_GRANT],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": RS_ALGS,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["sub", "preferred_username", "isOperator"],
        }

    # -- errors: Gluu's UMA error bodies carry a `reason` too
    def error(self, status: int, code: str, description: str | None = None,
              reason: str | None = None, headers: dict[str, str] | None = None) -> HttpError:
        return HttpError(json_response(status, _compact(
            {"error": code, "error_description": description, "reason": reason}), headers))

    def protection_missing_token(self) -> HttpError:
        return self.error(401, "unauthorized_client", "The client is not authorized.",
                          reason="Authorization header is missing or is not a Bearer token.")

    def protection_bad_token(self) -> HttpError:
        return self.error(401, "access_denied", "The resource owner or authorization server denied the request.",
                          reason="Unknown or expired PAT.")

    def protection_scope_missing(self) -> HttpError:
        return self.error(406, "invalid_client_scope", "Requested scope value is invalid.",
                          reason="The PAT does not carry the uma_protection scope.")

    # -- tokens
    def pat_scopes(self, client: Client, requested: list[str]) -> frozenset[str]:
        # Gluu grants the requested scopes the client is allowed; uma_protection only if asked.
        return frozenset(s for s in requested if s != UMA_PROTECTION or client.uma_protection)

    def pat_claims(self, rec: TokenRecord) -> dict[str, Any]:
        return {"client_id": rec.client_id, "sub": rec.sub, "scope": " ".join(sorted(rec.scopes)),
                "iat": rec.iat, "exp": rec.exp, "iss": self.issuer}

    def token_response_extras(self, rec: TokenRecord) -> dict[str, Any]:
        return {"scope": " ".join(sorted(rec.scopes))}

    def rpt_as_jwt(self, client: Client) -> bool:
        return client.rpt_as_jwt

    @staticmethod
    def _permission(p: dict[str, Any], token_exp: int) -> dict[str, Any]:
        return {"resource_id": p["resource_id"], "resource_scopes": list(p["resource_scopes"]),
                "exp": token_exp, **_time_fields(p)}

    def rpt_claims(self, rec: TokenRecord) -> dict[str, Any]:
        # UmaRptService.createRptJwt: top-level permissions, aud = client_id.
        claims = {"iss": self.issuer, "client_id": rec.client_id, "aud": rec.client_id, "sub": rec.sub,
                  "exp": rec.exp, "iat": rec.iat, "nbf": rec.nbf if rec.nbf is not None else rec.iat,
                  "jti": rec.key, "permissions": [self._permission(p, rec.exp) for p in rec.permissions],
                  "pct_claims": rec.pct_claims}
        return {**claims, **rec.extra}

    def rpt_response(self, token: str, rec: TokenRecord, upgraded: bool, pct: str | None) -> dict[str, Any]:
        return _compact({"access_token": token, "token_type": "Bearer", "pct": pct, "upgraded": upgraded})

    # -- grant
    def ticket_rejected(self, expired: bool) -> HttpError:
        if expired:
            return self.error(400, "expired_ticket", "The ticket has expired.")
        return self.error(400, "invalid_ticket", "The ticket is invalid or has been used.")

    def grant_denied(self) -> HttpError:
        return self.error(403, "forbidden_by_policy", "Forbidden by policy (policy returned false).")

    def need_info(self, ticket: str) -> HttpError:
        body = {"error": "need_info", "ticket": ticket,
                "required_claims": [{"claim_token_format": [ID_TOKEN_FORMAT], "claim_type": "string",
                                     "friendly_name": "sub", "issuer": [self.issuer], "name": "sub"}],
                "redirect_user": f"{self.url('claims_interaction')}?ticket={ticket}"}
        return HttpError(json_response(403, body))

    def invalid_claim_token(self, description: str) -> HttpError:
        return self.error(400, "invalid_claim_token", description)

    def invalid_rpt(self) -> HttpError:
        return self.error(400, "invalid_rpt", "The RPT is invalid.")

    # -- introspection
    def introspect(self, rec: TokenRecord | None, hint: str | None, caller: str, at: int,
                   require_aud: bool) -> dict[str, Any]:
        # The hint is ignored; only RPTs are known here (PATs introspect as inactive).
        if rec is None or rec.kind != "rpt" or not rec.live(at):
            return {"active": False}
        body = {"active": True, "exp": rec.exp, "iat": rec.iat,
                "nbf": rec.nbf if rec.nbf is not None else rec.iat,
                "permissions": [self._permission(p, rec.exp) for p in rec.permissions],
                "client_id": rec.client_id, "sub": rec.sub, "aud": rec.client_id, "iss": self.issuer,
                "jti": rec.key, "pct_claims": rec.pct_claims}
        return {**body, **rec.extra}

    # -- resource_set
    def parse_resource(self, store: Store, body: dict[str, Any], client_id: str, at: int) -> dict[str, Any]:
        scopes = self._scope_names(body.get("resource_scopes"))
        expression = body.get("scope_expression")
        if isinstance(expression, dict):
            expression = json.dumps(expression)
        if scopes is None or (expression is not None and not isinstance(expression, str)):
            raise self.error(400, "invalid_scope", "Invalid resource_scopes or scope_expression.")
        if not scopes:
            if not expression:
                raise self.error(400, "invalid_scope", "resource_scopes and scope_expression are both empty.")
            try:  # the scopes of an expression are its `data`
                scopes = [s for s in json.loads(expression).get("data", []) if isinstance(s, str)]
            except (ValueError, AttributeError):
                raise self.error(400, "invalid_scope", "scope_expression is not valid JSON.") from None
        exp = body.get("exp")
        name = body.get("name")
        return {"name": name if isinstance(name, str) else "", "scopes": scopes,
                # EOEPCA keeps the protected path in icon_uri; uris/uri are accepted as well.
                "uris": self._uris(body, "uri", "icon_uri"),
                "owner": self._owner_ref(body.get("owner")), "type": body.get("type"),
                "icon_uri": body.get("icon_uri"), "description": body.get("description"),
                "scope_expression": expression,
                "iat": body["iat"] if isinstance(body.get("iat"), int) else at,
                "exp": exp if isinstance(exp, int) and not isinstance(exp, bool) else store.resource_exp(at)}

    def render_resource(self, store: Store, res: Resource) -> dict[str, Any]:
        return _compact({"_id": res.id, "name": res.name, "description": res.description,
                         # EOEPCA reads the protected path back from icon_uri
                         "icon_uri": res.icon_uri or next(iter(res.uris), None),
                         "resource_scopes": list(res.scopes), "scope_expression": res.scope_expression,
                         "type": res.type, "iat": res.iat, "exp": res.exp})

    def created(self, store: Store, res: Resource) -> Response:
        return json_response(201, {"_id": res.id},
                             {"Location": f"{self.url('resource_set')}/{res.id}"})

    def updated(self, res: Resource) -> Response:
        return json_response(200, {"_id": res.id})

    def list_resources(self, store: Store, resources: list[Resource], req: Request) -> Response:
        scope = req.query1("scope")
        return json_response(200, [r.id for r in resources if not scope or scope in r.scopes])


PROFILES: dict[str, type[Dialect]] = {"keycloak": Keycloak, "uma2": Uma2}


def make(profile: str, base_url: str, realm: str) -> Dialect:
    try:
        return PROFILES[profile](base_url, realm)
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}") from None
