"""The Keycloak dialect of the development AS (development/test fixture, NOT for production).

Behaviour, status codes and messages are those of keycloak/keycloak's sources (paths below
services/src/main/java/org/keycloak/); devas/README.md cites file and method per behaviour:
the PAT (`OAuth2GrantTypeBase.getRequestedScopes`, `ClientCredentialsGrantType.process`), the
protection API (`ProtectionService`, `KeycloakIdentity`, `ResourceService`, `ResourceSetService`,
`AbstractPermissionService`), the UMA grant (`PermissionGrantType`, `AuthorizationTokenService`),
introspection (`TokenIntrospectionEndpoint`, `RPTIntrospectionProvider`); client registration is
in keycloak_registration.py, user-managed permissions (`/authz/protection/uma-policy`) in
keycloak_policy.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from urllib.parse import unquote
from typing import Any

from devas.dialects import (ID_TOKEN_FORMAT, JWT_FORMAT, RS_ALGS, UMA_GRANT, Dialect, Route, compact, exact,
                            time_fields)
from devas.httpcore import BadRequestBody, HttpError, Request, Response, empty_response, json_response
from devas.keycloak_policy import KeycloakUserManagedPermissions, scope_id
from devas.keycloak_registration import OPTIONAL_IN_TOKEN_SCOPE, KeycloakRegistration
from devas.store import UMA_PROTECTION, Client, Party, Resource, TokenRecord, new_id, now

PKG = "org.keycloak.representations.idm"
UMA_RESOURCE_CLASS = "org.keycloak.authorization.protection.resource.UmaResourceRepresentation"
RESOURCE_CLASS = f"{PKG}.authorization.ResourceRepresentation"
SCOPE_CLASS = f"{PKG}.authorization.ScopeRepresentation"
OWNER_CLASS = f"{PKG}.authorization.ResourceOwnerRepresentation"
PERMISSION_REQUEST_CLASS = f"{PKG}.authorization.PermissionRequest"
RESOURCE_FIELDS = {"_id", "name", "uris", "uri", "type", "scopes", "resource_scopes", "icon_uri", "owner",
                   "ownerManagedAccess", "displayName", "attributes"}
SCOPE_FIELDS = {"id", "name", "iconUri", "policies", "resources", "displayName"}
OWNER_FIELDS = {"id", "name"}
PERMISSION_REQUEST_FIELDS = {"resource_id", "resource_scopes", "resource_server_id", "claims"}
DEFAULT_MAX_RESULTS = 100              # org.keycloak.models.Constants.DEFAULT_MAX_RESULTS
REFRESH_LIFETIME_S = 1800              # SSO session idle default
CANNOT_PARSE = "Cannot parse the JSON"  # KeycloakErrorHandler.getResponse for JsonProcessingException
SERVER_LOG = "For more on this error consult the server log."


# ---- matchingUri: org.keycloak.common.util.PathMatcher (common/), as ResourceSetService.find uses it ----

def _java_split(text: str, sep: str) -> list[str]:
    """Java's String.split: trailing empty strings dropped (an empty input stays one element)."""
    if text == "":
        return [""]
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _strip_matrix(path: str) -> str:
    return "/".join(seg.split(";", 1)[0] for seg in path.split("/"))


def _collapse(path: str) -> str:
    while "//" in path:
        path = path.replace("//", "/")
    return path


def _dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == len(segments) - 1:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def normalize_uri(uri: str) -> str:
    """PathMatcher.normalizeUri (the path only): query and fragment dropped, matrix parameters
    stripped, `//` collapsed, dot segments resolved and escapes decoded (URI.normalize().getPath()),
    the cleanup repeated on the decoded path, a trailing `/` dropped."""
    path = uri.split("?", 1)[0].split("#", 1)[0]
    path = _collapse(_strip_matrix(path))
    path = _collapse(_strip_matrix(unquote(_dot_segments(path))))
    path = _dot_segments(path)
    return path[:-1] if len(path) > 1 and path.endswith("/") else path


def _exact_match(expected: str, target: str) -> bool:
    """PathMatcher.exactMatch: equal; a trailing `*` takes what starts with the text before it,
    and the path without its last character (`/a/*` takes `/a`); `/*.ext` takes that suffix."""
    if target == expected:
        return True
    if expected.endswith("*"):
        root = expected[:-1]
        return target.startswith(root) or target == root[:-1]
    at = expected.find("/*.")
    return at != -1 and target.endswith(expected[at + 2:])


def _from_template(template: str, target: str) -> str | None:
    """PathMatcher.buildUriFromTemplate for parameters that are whole segments: each `{name}` takes
    the target's segment at its place (a trailing `/*` is kept); None when the target is shorter or
    the text before the first `{` differs."""
    start = template.find("{")
    expected = template[:-2] if template.endswith("/*") else template
    if start == -1 or start >= len(target):
        return None
    if len(_java_split(expected, "/")) > len(_java_split(target, "/")):
        return None
    if template[:start] != target[:start]:
        return None
    got = target.split("/")
    out = [got[i] if seg.startswith("{") and seg.endswith("}") and i < len(got) else seg
           for i, seg in enumerate(template.split("/"))]
    return "/".join(out)


def path_matcher(entries: list[tuple[str, Any]], target_uri: str) -> Any | None:
    """PathMatcher.matches over (uri, value) entries: an exact path, a template (`{id}`: one segment;
    of several, the one with more segments or fewer parameters) or a trailing `/*` (the path and
    below; of several, the deepest). Returns the value of the entry that wins, or None."""
    target = normalize_uri(target_uri)
    pattern_count = brackets_count = 0
    matching_path = any_suffix = None
    any_path: tuple[str, Any] | None = None
    for expected, value in entries:
        if not expected:
            continue
        matching = expected if _exact_match(expected, target) else None
        if "{" in expected:
            built = _from_template(expected, target)
            if built is not None:
                length, brackets = len(_java_split(expected, "/")), len(_java_split(expected, "{"))
                if _exact_match(built, target) and (pattern_count == 0 or length > pattern_count
                                                    or brackets < brackets_count):
                    matching, pattern_count, brackets_count = built, length, brackets
        if matching is None:
            continue
        base = expected
        if "/*" in base:
            base = base[:base.index("/*")]
        if "{" in base:
            base = base[:base.index("{")]
        if matching == target or (base or "/") == target:
            if pattern_count == 0:
                return value
            matching_path = value
        if expected.endswith("*"):
            if any_path is None or len(_java_split(any_path[0], "/")) < len(_java_split(matching, "/")):
                any_path = (expected, value)
        else:
            at = expected.find("*.")
            if at != -1 and target.endswith(expected[at + 1:]):
                any_suffix = value
    if matching_path is not None:
        return matching_path
    if any_suffix is not None:
        return any_suffix
    return any_path[1] if any_path else None


def json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "Object value (token `JsonToken.START_OBJECT`)"
    if isinstance(value, list):
        return "Array value (token `JsonToken.START_ARRAY`)"
    return "String value (token `JsonToken.VALUE_STRING`)" if isinstance(value, str) else "value"


class Keycloak(KeycloakRegistration, KeycloakUserManagedPermissions, Dialect):
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
        "registration_default": "/clients-registrations/default",
    }
    head_as_get = True
    bad_user_credentials_status = 401

    def __init__(self, base_url: str, realm: str):
        super().__init__(base_url, realm)
        self.prefix = f"/realms/{realm}"
        self.discovery_paths = (self.prefix + "/.well-known/uma2-configuration",)
        self.openid_discovery_paths = (self.prefix + "/.well-known/openid-configuration",)

    @property
    def issuer(self) -> str:
        return self.base_url + self.prefix   # Urls.realmIssuer: no trailing slash

    def routes(self) -> list[Route]:
        p = self.path
        rs = re.escape(p("resource_set"))
        return self.common_routes() + [
            Route("introspection", exact(p("introspection")), {"POST": self.introspect}),
            Route("registration", exact(p("registration")), {"POST": self.register_oidc}),
            Route("registration", exact(p("registration_default")), {"POST": self.register_default}),
            Route("permission", exact(p("permission")), {"POST": self.permission}),
            Route("resource_set", re.compile(rs + "/?"), {"GET": self.list_resources, "POST": self.create_resource}),
            Route("resource_set", re.compile(rs + "/(?P<rid>[^/]+)"),
                  {"GET": self.read_resource, "PUT": self.update_resource, "DELETE": self.delete_resource}),
            *self.policy_routes(),
        ]

    # ---- documents (UmaConfiguration.create copies the OIDC fields and adds the protection API) --
    def _oidc_common(self) -> dict[str, Any]:
        return {
            **self.endpoint_fields("authorization", "token", "introspection", "end_session", "jwks",
                                   "registration"),
            "frontchannel_logout_session_supported": True,
            "frontchannel_logout_supported": True,
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token", "password",
                                      "client_credentials", UMA_GRANT],
            "response_types_supported": ["code", "none", "id_token", "token", "id_token token",
                                         "code id_token", "code token", "code id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
                                                      "client_secret_post", "tls_client_auth", "client_secret_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": RS_ALGS,
            "scopes_supported": ["openid", *self.settings.client_scopes],
        }

    def uma_document(self) -> dict[str, Any]:
        # No uma_profiles_supported, claims_interaction_endpoint or userinfo_endpoint.
        return {**self._oidc_common(),
                "resource_registration_endpoint": self.url("resource_set"),
                "permission_endpoint": self.url("permission"),
                "policy_endpoint": self.url("policy")}

    def openid_document(self) -> dict[str, Any]:
        return {**self._oidc_common(),
                "userinfo_endpoint": self.url("userinfo"),
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": RS_ALGS,
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "preferred_username", "isOperator"]}

    # ---- errors -------------------------------------------------------------------------------
    def method_not_allowed(self) -> HttpError:
        return HttpError(empty_response(405))

    def jackson_error(self, message: str) -> HttpError:
        """A body Jackson cannot map: KeycloakErrorHandler answers 400 with the mapper's message as
        `error` (python-keycloak's tests assert the `{"error":"Unrecognized field` prefix)."""
        return self.error(400, message, CANNOT_PARSE)

    def unrecognized(self, name: str, cls: str) -> HttpError:
        return self.jackson_error(f'Unrecognized field "{name}" (class {cls}), not marked as ignorable')

    def mismatch(self, java_type: str, value: Any) -> HttpError:
        return self.jackson_error(f"Cannot deserialize value of type `{java_type}` from {json_kind(value)}")

    def check_fields(self, body: dict[str, Any], known: set[str], cls: str) -> None:
        for name in body:
            if name not in known:
                raise self.unrecognized(name, cls)

    def body_json(self, req: Request, *, empty_ok: bool = False) -> Any:
        if not req.body.strip():
            if empty_ok:
                return None
            raise HttpError(empty_response(400))
        try:
            return req.json()
        except BadRequestBody:
            raise self.error(400, "invalid_request", CANNOT_PARSE) from None

    def server_error(self) -> HttpError:
        """An uncaught exception (KeycloakErrorHandler: 500 unknown_error)."""
        return self.error(500, "unknown_error", SERVER_LOG)

    # ---- PAT: client_credentials --------------------------------------------------------------
    def check_client(self, client: Client) -> None:
        """OAuth2GrantTypeBase.checkClient."""
        if client.bearer_only:
            raise self.error(400, "invalid_client", "Bearer-only not allowed")

    def valid_scopes(self, client: Client) -> set[str]:
        return set(client.client_scopes if client.client_scopes is not None else self.settings.client_scopes)

    def service_account(self, client: Client) -> Party:
        """ClientCredentialsGrantType.process: who a client acting for itself is."""
        if client.public:
            raise self.error(401, "unauthorized_client", "Public client not allowed to retrieve service account")
        if not client.service_accounts_enabled:
            raise self.error(401, "unauthorized_client", "Client not enabled to retrieve service account")
        account = f"service-account-{client.client_id}"
        return Party(sub=account, username=account, claims={"sub": account}, client_id=client.client_id)

    def requested_scope(self, req: Request, client: Client) -> tuple[bool, str]:
        """OAuth2GrantTypeBase.getRequestedScopes -> TokenManager.isValidScope: every requested
        scope but openid is a client scope of the client (uma_protection is a client ROLE, never a
        client scope). Returns (openid asked, the token's `scope`: the default client scopes
        profile and email, plus the optional ones asked)."""
        scope = req.form1("scope")
        requested = (scope or "").split()
        if any(s != "openid" and s not in self.valid_scopes(client) for s in requested):
            raise self.error(400, "invalid_scope", f"Invalid scopes: {scope}")
        openid = "openid" in requested
        return openid, " ".join((["openid"] if openid else []) + ["profile", "email"]
                                + [s for s in requested if s in OPTIONAL_IN_TOKEN_SCOPE])

    def grant_client_credentials(self, req: Request) -> dict[str, Any]:
        client = self.authenticate_client(req)
        self.check_client(client)
        self.service_account(client)
        openid, token_scope = self.requested_scope(req, client)
        at = now()
        account = f"service-account-{client.client_id}"
        rec = TokenRecord(kind="pat", key=new_id(), jwt=True, client_id=client.client_id, sub=account,
                          username=account, iat=at, exp=at + self.settings.pat_lifetime_s,
                          scopes=frozenset({UMA_PROTECTION}) if client.resource_server else frozenset())
        rec.claims = {"exp": rec.exp, "iat": at, "jti": rec.key, "iss": self.issuer, "aud": "account",
                      "sub": account, "typ": "Bearer", "azp": client.client_id, "acr": "1",
                      "scope": token_scope, "clientId": client.client_id, "preferred_username": account}
        if client.resource_server:  # createResourceServer grants the client role to the service account
            rec.claims["resource_access"] = {client.client_id: {"roles": [UMA_PROTECTION]}}
        body: dict[str, Any] = {"access_token": self.app.tokens.emit(rec), "expires_in": rec.exp - at,
                                "refresh_expires_in": 0, "token_type": "Bearer"}
        if openid:  # TokenUtil.isOIDCRequest
            body["id_token"] = self.app.key.sign({**rec.claims, "jti": new_id(), "typ": "ID",
                                                  "aud": client.client_id})
        return {**body, "not-before-policy": 0, "scope": token_scope}

    def check_password_client(self, client: Client) -> None:
        self.check_client(client)
        if not client.direct_access_grants:
            raise self.error(400, "unauthorized_client", "Client not allowed for direct access grants")

    def grants(self) -> dict[str, Any]:
        return {**super().grants(), "refresh_token": self.grant_refresh}

    def grant_password(self, req: Request) -> dict[str, Any]:
        """ResourceOwnerPasswordCredentialsGrantType.process: a user session; the answer
        (TokenManager.AccessTokenResponseBuilder.build) has a refresh token and `session_state`,
        and an `id_token` only when `openid` was asked (TokenUtil.isOIDCRequest)."""
        client = self.authenticate_client(req)
        self.check_password_client(client)
        openid, token_scope = self.requested_scope(req, client)
        user = self.store.check_password(req.form1("username"), req.form1("password"))
        if user is None:
            raise self.error(401, "invalid_grant", "Invalid user credentials")
        sid = new_id()
        access, id_token, rec = self.app.tokens.issue_user_tokens(client, user, token_scope, sid)
        body: dict[str, Any] = {"access_token": access, "expires_in": rec.exp - rec.iat,
                                "refresh_expires_in": REFRESH_LIFETIME_S,
                                "refresh_token": self.refresh_token(rec.iat, user.sub, client.client_id, sid,
                                                                    scope=token_scope),
                                "token_type": "Bearer"}
        if openid:
            body["id_token"] = id_token
        return {**body, "not-before-policy": 0, "session_state": sid, "scope": token_scope}

    def refresh_token(self, at: int, sub: str | None, client_id: str, sid: str | None,
                      **claims: Any) -> str:
        """A RefreshToken (category INTERNAL: HS512 with the realm HMAC key), `typ: Refresh`,
        `aud` = the issuer, living the SSO session idle time."""
        return self.app.key.sign_internal(compact({
            "exp": at + REFRESH_LIFETIME_S, "iat": at, "jti": new_id(), "iss": self.issuer, "aud": self.issuer,
            "sub": sub, "typ": "Refresh", "azp": client_id, "sid": sid, **claims}))

    def grant_refresh(self, req: Request) -> dict[str, Any]:
        """RefreshTokenGrantType -> TokenManager.refreshAccessToken. devas keeps no user sessions,
        so a refresh token it issued, once verified, always meets validateToken's "Session not
        active" (a refused refresh; clients such as python-keycloak then log in again)."""
        self.authenticate_client(req)
        token = req.form1("refresh_token")
        if token is None:
            raise self.error(400, "invalid_request", "No refresh token")
        claims = self.app.key.verify_internal(token)
        if claims is None or claims.get("typ") not in ("Refresh", "Offline"):
            raise self.error(400, "invalid_grant", "Invalid refresh token")   # verifyRefreshToken
        if isinstance(claims.get("exp"), int) and claims["exp"] <= now():
            raise self.error(400, "invalid_grant", "Refresh token expired")
        raise self.error(400, "invalid_grant", "Session not active")

    # ---- protection API identity (ProtectionService, KeycloakIdentity) ------------------------
    def identity(self, req: Request, check_protection_scope: bool) -> tuple[TokenRecord, Client]:
        rec = self.app.tokens.resolve(req.bearer())
        if rec is None or not rec.live(now()):
            raise self.error(403, "invalid_bearer_token", "Could not obtain bearer access_token from request.")
        client = self.store.clients.get(rec.client_id)   # getResourceServer: the token's azp
        if client is None:
            raise self.error(400, "invalid_clientId",
                             f"Client application with id [{rec.client_id}] does not exist in realm [{self.realm}]")
        if not client.resource_server:
            raise self.error(403, "invalid_clientId",
                             f"Client application [{client.client_id}] is not registered as a resource server.")
        if check_protection_scope and UMA_PROTECTION not in rec.scopes:
            raise self.error(403, "invalid_scope", "Requires uma_protection scope.")
        return rec, client

    @staticmethod
    def is_resource_server(sub: str | None, rs: Client) -> bool:
        """KeycloakIdentity.isResourceServer: the identity is the RS client's service account."""
        return sub == f"service-account-{rs.client_id}"

    def identity_id(self, sub: str | None, rs: Client) -> str | None:
        """KeycloakIdentity.getId: the RS's internal id for its service account, else the user id."""
        return rs.id if self.is_resource_server(sub, rs) else sub

    # ---- resource_set -------------------------------------------------------------------------
    def parse_scopes(self, raw: Any) -> list[str]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.mismatch(f"java.util.HashSet<{SCOPE_CLASS}>", raw)
        names: list[str] = []
        for item in raw:
            if isinstance(item, dict):
                self.check_fields(item, SCOPE_FIELDS, SCOPE_CLASS)
                item = item.get("name")
            if isinstance(item, (dict, list)):
                raise self.mismatch("java.lang.String", item)
            if item is not None and str(item) not in names:
                names.append(str(item))
        return names

    def string_field(self, body: dict[str, Any], name: str) -> str | None:
        value = body.get(name)
        if isinstance(value, (dict, list)):
            raise self.mismatch("java.lang.String", value)
        return None if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    def parse_resource(self, body: Any, cls: str) -> dict[str, Any]:
        """A ResourceRepresentation: unknown fields are refused; `scopes` and `resource_scopes` (strings
        or objects) set the same field, as do `uris` and the deprecated `uri`."""
        if not isinstance(body, dict):
            raise self.mismatch(cls, body)
        self.check_fields(body, RESOURCE_FIELDS, cls)
        out: dict[str, Any] = {"scopes": [], "uris": []}
        for key, value in body.items():
            if key in ("scopes", "resource_scopes"):
                out["scopes"] = self.parse_scopes(value)
            elif key == "uris":
                if value is not None and not isinstance(value, list):
                    raise self.mismatch("java.util.Set<java.lang.String>", value)
                out["uris"] = [str(u) for u in value or [] if isinstance(u, (str, int)) and str(u).strip()]
            elif key == "uri":
                uri = self.string_field(body, "uri")
                if uri and uri.strip():
                    out["uris"] = [uri]
            elif key == "owner":
                if isinstance(value, dict):
                    self.check_fields(value, OWNER_FIELDS, OWNER_CLASS)
                    out["owner"] = value.get("id")   # only the id counts: ResourceService.create
                elif isinstance(value, list):
                    raise self.mismatch(OWNER_CLASS, value)
                else:
                    out["owner"] = None if value is None else str(value)  # ResourceOwnerRepresentation(String id)
                out["owner_given"] = True
            elif key == "attributes":
                if value is not None and not isinstance(value, dict):
                    raise self.mismatch("java.util.Map<java.lang.String,java.util.List<java.lang.String>>", value)
                out["attributes"] = {k: [str(x) for x in (v if isinstance(v, list) else [v])]
                                     for k, v in (value or {}).items()}
            elif key == "ownerManagedAccess":
                out["owner_managed_access"] = bool(value)
            else:
                out[{"displayName": "display_name", "icon_uri": "icon_uri", "type": "type", "name": "name",
                     "_id": "id"}[key]] = self.string_field(body, key)
        if out.get("type") is not None and not out["type"].strip():
            out["type"] = None
        return out

    def scope_objects(self, res: Resource, with_ids: bool) -> list[dict[str, str]]:
        return [{"id": scope_id(res.client_id, s), "name": s} if with_ids else {"name": s} for s in res.scopes]

    def owner_object(self, res: Resource, with_name: bool) -> dict[str, str | None]:
        owner: dict[str, str | None] = {"id": res.owner}
        if with_name:
            rs = self.store.client_by_internal_id(res.owner or "")
            user = self.store.users.get(res.owner or "")
            owner["name"] = rs.client_id if rs else user.username if user else None
        return compact(owner)

    def render_resource(self, res: Resource, *, created: bool = False, deep_list: bool = False) -> dict[str, Any]:
        """The three shapes: the create answer (UmaResourceRepresentation of the admin representation:
        owner with name, scopes with ids, no attributes), GET /{id} (UmaResourceRepresentation of the
        model: owner id only, scope names, attributes) and a deep list (the admin
        ResourceRepresentation: `scopes` only). UmaResourceRepresentation's getter writes
        `resource_scopes`; the annotated field of the parent also writes `scopes` (NON_EMPTY)."""
        with_ids = created or deep_list
        scopes = self.scope_objects(res, with_ids)
        body: dict[str, Any] = compact({
            "name": res.name, "type": res.type, "owner": self.owner_object(res, with_name=with_ids),
            "ownerManagedAccess": res.owner_managed_access, "displayName": res.display_name,
            "attributes": None if created else dict(res.attributes), "_id": res.id, "uris": list(res.uris),
            "icon_uri": res.icon_uri})
        if not deep_list:
            body["resource_scopes"] = scopes
        if scopes:
            body["scopes"] = scopes
        return body

    def resolve_owner(self, ref: str | None, pat: TokenRecord, rs: Client) -> str:
        """RepresentationToModel.toModel: the RS itself (its internal id), else a user by id, then
        by username; anything else throws (500)."""
        if ref is None:
            ref = self.identity_id(pat.sub, rs)
        if ref == rs.id:
            return rs.id
        user = self.store.find_user(ref or "")
        if user is None:
            raise self.server_error()  # "Owner must be a valid username or user identifier..."
        return user.sub

    def own_resource(self, rs: Client, rid: str) -> Resource:
        res = self.store.resource(rid, rs.client_id)
        if res is None:
            raise HttpError(empty_response(404))  # ResourceSetService: 404 with an empty body
        return res

    def create_resource(self, req: Request) -> Response:
        pat, rs = self.identity(req, check_protection_scope=True)
        body = self.body_json(req)
        if body is None:
            raise HttpError(empty_response(400))
        fields = self.parse_resource(body, UMA_RESOURCE_CLASS)
        owner = self.resolve_owner(fields.get("owner"), pat, rs)
        name = fields.get("name")
        if any(r.name == name and r.owner == owner for r in self.store.live_resources(rs.client_id)):
            raise self.error(409, "invalid_request", f"Resource with name [{name}] already exists.")
        if name is None:
            raise self.server_error()  # the model refuses a resource without a name
        rid = fields.get("id") or new_id()
        res = Resource(id=rid, name=name, client_id=rs.client_id, owner=owner, scopes=fields["scopes"],
                       uris=fields["uris"], type=fields.get("type"), icon_uri=fields.get("icon_uri"),
                       display_name=fields.get("display_name"),
                       owner_managed_access=fields.get("owner_managed_access", False),
                       attributes=fields.get("attributes", {}), iat=now())
        self.store.resources[rid] = res
        return json_response(201, self.render_resource(res, created=True))  # no Location

    def read_resource(self, req: Request, rid: str) -> Response:
        _, rs = self.identity(req, check_protection_scope=True)
        return json_response(200, self.render_resource(self.own_resource(rs, rid)))

    def update_resource(self, req: Request, rid: str) -> Response:
        """ResourceSetService.update: 204; the owner stays; no duplicate-name check (toModel by id)."""
        _, rs = self.identity(req, check_protection_scope=True)
        fields = self.parse_resource(self.body_json(req), RESOURCE_CLASS)
        res = self.own_resource(rs, rid)
        if fields.get("name") is None:
            raise self.server_error()
        res.name, res.scopes, res.uris = fields["name"], fields["scopes"], fields["uris"]
        res.type, res.icon_uri = fields.get("type"), fields.get("icon_uri")
        res.display_name = fields.get("display_name")
        res.owner_managed_access = fields.get("owner_managed_access", False)
        if "attributes" in fields:
            res.attributes = fields["attributes"]
        return empty_response(204)

    def delete_resource(self, req: Request, rid: str) -> Response:
        _, rs = self.identity(req, check_protection_scope=True)
        del self.store.resources[self.own_resource(rs, rid).id]
        self.forget_resource_policies(rid)
        return empty_response(204)

    def list_resources(self, req: Request) -> Response:
        """ResourceService.find: ids unless deep=true; first/max (default 100); name and scope match
        case-insensitively as substrings (exactName=true: equal); owner is a clientId or username;
        `uri` is equal to one of a resource's uris, ignoring case. Only when that finds nothing does
        `matchingUri=true` match patterns (ResourceSetService.find): over the resources the resource
        server owns (owner filter only, the other filters ignored), PathMatcher picks one."""
        _, rs = self.identity(req, check_protection_scope=True)
        q = req.query1
        name, uri, owner, rtype, scope, rid = q("name"), q("uri"), q("owner"), q("type"), q("scope"), q("_id")
        exact_name, matching, deep = (q(k) == "true" for k in ("exactName", "matchingUri", "deep"))
        try:
            first = int(q("first") or 0)
            limit = int(q("max")) if q("max") else DEFAULT_MAX_RESULTS
        except ValueError:
            raise self.error(400, "invalid_request", "first and max must be integers.") from None
        if owner:
            client = self.store.clients.get(owner)
            user = self.store.find_user(owner)
            owner = client.id if client else user.sub if user else owner

        def keep(r: Resource) -> bool:
            return ((not rid or r.id == rid)
                    and (not name or (r.name == name if exact_name else name.lower() in r.name.lower()))
                    and (not uri or any(u.lower() == uri.lower() for u in r.uris))
                    and (not owner or r.owner == owner)
                    and (not rtype or r.type == rtype)
                    and (not scope or any(scope.lower() in s.lower() for s in r.scopes)))

        found = [r for r in sorted(self.store.live_resources(rs.client_id), key=lambda r: r.name) if keep(r)]
        found = found[max(first, 0):max(first, 0) + limit if limit >= 0 else None]
        if matching and uri and not found:
            own = [r for r in sorted(self.store.live_resources(rs.client_id), key=lambda r: r.name)
                   if r.owner == rs.id and r.uris]
            own = own[max(first, 0):max(first, 0) + int(q("max")) if q("max") and int(q("max")) >= 0 else None]
            best = path_matcher([(u, r) for r in own for u in r.uris], uri)
            found = [best] if best is not None else []
        return json_response(200, [self.render_resource(r, deep_list=True) for r in found] if deep
                             else [r.id for r in found])

    # ---- permission endpoint (AbstractPermissionService) --------------------------------------
    def rs_scopes(self, rs: Client) -> set[str]:
        return {s for r in self.store.live_resources(rs.client_id) for s in r.scopes}

    def find_by_name(self, name: str, owner: str | None, rs: Client) -> Resource | None:
        return next((r for r in self.store.live_resources(rs.client_id) if r.name == name and r.owner == owner), None)

    def permission(self, req: Request) -> Response:
        pat, rs = self.identity(req, check_protection_scope=False)  # createIdentity(false)
        body = self.body_json(req, empty_ok=True)
        if body is not None and not isinstance(body, list):
            raise self.mismatch(f"java.util.ArrayList<{PERMISSION_REQUEST_CLASS}>", body)
        if not body:
            raise self.error(400, "invalid_permission_request", "Invalid permission request.")
        permissions: list[dict[str, Any]] = []
        claims: dict[str, Any] = {}
        for item in body:
            if not isinstance(item, dict):
                raise self.mismatch(PERMISSION_REQUEST_CLASS, item)
            self.check_fields(item, PERMISSION_REQUEST_FIELDS, PERMISSION_REQUEST_CLASS)
            permissions.extend(self.requested_permissions(item, pat, rs))
            if isinstance(item.get("claims"), dict):
                claims.update(item["claims"])
        ticket = compact({"permissions": permissions, "jti": new_id(), "exp": pat.exp, "nbf": pat.nbf,
                          "iat": pat.iat, "sub": pat.sub, "azp": pat.client_id, "aud": self.issuer,
                          "claims": claims or None})
        self.store.count("tickets_issued")
        return json_response(201, {"ticket": self.app.key.sign_internal(ticket)})

    def requested_permissions(self, item: dict[str, Any], pat: TokenRecord, rs: Client) -> list[dict[str, Any]]:
        ref = item.get("resource_id")
        scopes = self.parse_string_set(item.get("resource_scopes"))
        if ref is None:
            if not scopes:
                raise self.error(400, "invalid_resource_id", "Resource id or name not provided.")
            known = self.rs_scopes(rs)
            for s in scopes:
                if s not in known:
                    raise self.error(400, "invalid_scope", f"Scope [{s}] is invalid")
            return [{"scopes": scopes}]
        ref = str(ref)
        found = [r] if (r := self.store.resource(ref, rs.client_id)) else []
        if not found:
            if (own := self.find_by_name(ref, self.identity_id(pat.sub, rs), rs)) is not None:
                found.append(own)
            if not self.is_resource_server(pat.sub, rs) and (srv := self.find_by_name(ref, rs.id, rs)):
                found.append(srv)
        if not found:
            raise self.error(400, "invalid_resource_id",
                             f"Resource set with id [{ref}] does not exists in this server.")
        out = []
        for res in found:
            for s in scopes:
                if s not in res.scopes:
                    raise self.error(400, "invalid_scope", f"Scope [{s}] is invalid")
            out.append(compact({"rsid": res.id, "scopes": scopes or None}))
        return out

    def parse_string_set(self, raw: Any) -> list[str]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.mismatch("java.util.Set<java.lang.String>", raw)
        return list(dict.fromkeys(str(s) for s in raw if not isinstance(s, (dict, list))))

    # ---- UMA grant (PermissionGrantType, AuthorizationTokenService) ---------------------------
    def grant_uma(self, req: Request) -> Any:
        auth = req.header("authorization") or ""
        bearer = req.bearer() if auth.lower().startswith("bearer") else None
        claim_token = req.form1("claim_token")
        fmt = req.form1("claim_token_format") or (ID_TOKEN_FORMAT if claim_token else None)
        subject: Party | None = None
        if bearer is not None:
            rec = self.app.tokens.resolve(bearer)
            client = self.store.clients.get(rec.client_id) if rec is not None else None
            if rec is None or not rec.live(now()) or client is None:   # any access token of the realm
                raise self.error(401, "invalid_grant", "Invalid bearer token")
            subject = Party(sub=rec.sub, username=rec.username, claims=rec.claims, client_id=rec.client_id)
            subject_token: str | None = None
        else:
            client = self.authenticate_client(req)
            self.check_client(client)
            id_format = (fmt or "").lower() == ID_TOKEN_FORMAT.lower()
            subject_token = claim_token if id_format else req.form1("subject_token")
            if subject_token is None:
                subject = self.service_account(client)
        previous = self.previous_rpt(req.form1("rpt"))
        ticket_text = req.form1("ticket")
        if claim_token is not None and client.public and ticket_text is None:
            raise self.error(403, "invalid_grant", "Public clients are not allowed to send claims")
        ticket = self.verify_ticket(ticket_text) if ticket_text is not None else None
        rs = self.resource_server_of(ticket["azp"] if ticket else req.form1("audience"))
        identity = self.evaluation_identity(fmt, claim_token, subject, subject_token)
        requested = ticket.get("permissions", []) if ticket else self.permission_params(req)
        if ticket is None and not requested and previous is None:   # evaluateAllPermissions
            to_evaluate = self.all_permissions(identity, rs)
        else:
            to_evaluate = self.create_permissions(requested, identity, rs, req.form1("scope"), previous)
        granted = self.evaluate(identity, to_evaluate)
        granted_ids = {g["resource_id"] for g in granted}
        denied_by_rpt = previous is not None and any(p.get("rsid") not in granted_ids for p in requested)
        if granted and not denied_by_rpt:
            return self.authorization_response(req, identity, client, rs, granted, previous)
        submitted = req.form1("submit_request")
        submit = True if submitted is None else submitted.lower() == "true"
        raise self.error(403, "access_denied", "request_submitted" if submit and ticket else "not_authorized")

    def previous_rpt(self, rpt: str | None) -> list[dict[str, Any]] | None:
        if rpt is None:
            return None
        claims = self.app.key.verify(rpt)
        if claims is None:
            raise self.error(403, "invalid_rpt", "RPT signature is invalid")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= now():
            return []  # an inactive RPT adds nothing (createPermissions: rpt.isActive())
        perms = (claims.get("authorization") or {}).get("permissions") or []
        return [p for p in perms if isinstance(p, dict)]

    def verify_ticket(self, ticket: str) -> dict[str, Any]:
        claims = self.app.key.verify_internal(ticket)   # the realm HMAC key, not the JWKS
        if claims is None:
            raise self.error(403, "invalid_ticket", "Ticket verification failed")
        at = now()
        if (isinstance(claims.get("exp"), int) and claims["exp"] <= at) or \
                (isinstance(claims.get("nbf"), int) and claims["nbf"] > at):
            raise self.error(403, "invalid_ticket", "Invalid permission ticket.")
        return claims

    def resource_server_of(self, issued_for: str | None) -> Client:
        if issued_for is None:
            raise self.error(400, "invalid_request", "You must provide the issuedFor")
        client = self.store.clients.get(issued_for)
        if client is None:
            raise self.error(400, "invalid_request", f"Unknown resource server id: [{issued_for}]")
        if not client.resource_server:
            raise self.error(400, "invalid_request", "Client does not support permissions")
        return client

    def evaluation_identity(self, fmt: str | None, claim_token: str | None, subject: Party | None,
                            subject_token: str | None) -> Party:
        """createEvaluationContext: the ID-token format makes the subject token the identity; the
        JWT format is base64url JSON claims pushed for the policies, the identity staying the
        subject (bearer, subject_token or the client's service account)."""
        fmt = fmt or ID_TOKEN_FORMAT
        if fmt == JWT_FORMAT:
            if claim_token is None:
                raise self.error(400, "invalid_request", "Claim token can not be null")
            try:
                pushed = json.loads(base64.urlsafe_b64decode(claim_token + "=" * (-len(claim_token) % 4)))
            except (binascii.Error, ValueError):
                raise self.error(400, "invalid_request", "Invalid claims") from None
            if not isinstance(pushed, dict):
                raise self.error(400, "invalid_request", "Invalid claims")
        elif fmt.lower() != ID_TOKEN_FORMAT.lower():
            raise self.error(400, "invalid_request", f"Claim token format [{fmt}] not supported")
        if subject is not None:
            return subject
        claims = self.app.tokens.verify_id_token(subject_token or "")
        if claims is None:
            if fmt == JWT_FORMAT:
                raise self.error(400, "unauthorized_client", "Invalid identity")
            raise self.error(400, "unauthorized_client", "Invalid signature")
        return self.party_of(claims)

    @staticmethod
    def permission_params(req: Request) -> list[dict[str, Any]]:
        """`permission=RESOURCE#scope1,scope2` (repeatable; `#scopes` alone names no resource)."""
        out = []
        for value in req.form().get("permission", []):
            resource, _, scopes = value.partition("#")
            out.append(compact({"rsid": resource or None,
                                "scopes": [s for s in scopes.split(",") if s] or None}))
        return out

    def create_permissions(self, requested: list[dict[str, Any]], identity: Party, rs: Client,
                           scope_param: str | None, previous: list[dict[str, Any]] | None
                           ) -> dict[str, tuple[Resource, list[str]]]:
        """AuthorizationTokenService.createPermissions: resources by id, else by name (the
        identity's own, then the RS's when the identity is not the RS); scopes by name in the RS's
        scope store, the `scope` parameter added to each; the previous RPT's permissions join."""
        to_evaluate: dict[str, tuple[Resource, list[str]]] = {}
        known = self.rs_scopes(rs)
        ident = self.identity_id(identity.sub, rs)
        for perm in requested:
            scopes = list(perm.get("scopes") or []) + (scope_param.split() if scope_param else [])
            ref = perm.get("rsid")
            resources: list[Resource] = []
            if ref is not None:
                if "-" in ref and (res := self.store.resource(ref, rs.client_id)) is not None:
                    resources.append(res)
                else:
                    if (own := self.find_by_name(ref, ident, rs)) is not None:
                        resources.append(own)
                    if not self.is_resource_server(identity.sub, rs) and (srv := self.find_by_name(ref, rs.id, rs)):
                        resources.append(srv)
            valid = [s for s in scopes if s in known]
            if ref is not None and not resources:
                raise self.error(400, "invalid_resource", f"Resource with id [{ref}] does not exist.")
            if scopes and not valid:
                names = ", ".join(perm.get("scopes") or scopes)   # Java's Set.toString
                raise self.error(400, "invalid_scope", f"One of the given scopes [{names}] is invalid")
            if ref is None:  # scopes only: every resource of the RS with one of them
                resources = [r for r in self.store.live_resources(rs.client_id) if set(valid) & set(r.scopes)]
            for res in resources:
                merged = to_evaluate.get(res.id, (res, []))[1]
                to_evaluate[res.id] = (res, merged + [s for s in valid if s not in merged])
        for perm in previous or []:
            res = self.store.resource(perm.get("rsid"), rs.client_id)
            if res is not None:
                merged = to_evaluate.get(res.id, (res, []))[1]
                to_evaluate[res.id] = (res, merged + [s for s in perm.get("scopes") or [] if s not in merged])
        return to_evaluate

    def all_permissions(self, identity: Party, rs: Client) -> dict[str, tuple[Resource, list[str]]]:
        """Permissions.all: the resources the RS owns, then (unless the identity is the RS) the
        identity's own, each with all its scopes. Resources of other owners are not evaluated,
        whatever the policies say (nor are permission tickets, which devas does not model)."""
        ident = self.identity_id(identity.sub, rs)
        owners = [rs.id] + ([ident] if ident != rs.id else [])
        live = self.store.live_resources(rs.client_id)
        return {r.id: (r, list(r.scopes)) for owner in owners for r in live if r.owner == owner}

    def evaluate(self, identity: Party, to_evaluate: dict[str, tuple[Resource, list[str]]]) -> list[dict[str, Any]]:
        """The seed's policy and the user-managed permissions (uma-policy) decide per resource; a
        permission keeps the granted scopes (no scopes asked = every allowed scope of the
        resource)."""
        granted = []
        for res, scopes in to_evaluate.values():
            rs = self.store.clients.get(res.client_id)
            ident = self.identity_id(identity.sub, rs) if rs else None
            allowed = self.store.allowed_scopes(identity.sub, res, ident)
            managed = self.user_managed_scopes(identity, ident, res)
            if allowed is None and not managed:
                continue
            allowed = (allowed or set()) | managed
            kept = [s for s in (scopes or res.scopes) if s in allowed]
            if (scopes or res.scopes) and not kept:
                continue
            granted.append({"resource_id": res.id, "resource_name": res.name, "resource_scopes": kept})
        return granted

    def authorization_response(self, req: Request, identity: Party, client: Client, rs: Client,
                               granted: list[dict[str, Any]], previous: list[dict[str, Any]] | None) -> Any:
        mode = req.form1("response_mode")
        if mode == "decision":
            return {"result": True}
        if mode == "permissions":
            with_name = (req.form1("response_include_resource_name") or "true").lower() != "false"
            return json_response(200, [compact({**self.permission_claim(p), "rsname": None})
                                       if not with_name else self.permission_claim(p) for p in granted])
        if mode is not None:
            raise self.error(400, "invalid_request", "Invalid response_mode")
        at = now()
        rec = self.rpt_record(client_id=identity.client_id or client.client_id, party=identity, permissions=granted,
                              as_jwt=True, iat=at, exp=at + self.settings.rpt_lifetime_s, audience=[rs.client_id])
        access = self.issue_rpt(rec)
        upgraded = previous is not None and all(p.get("rsid") in {g["resource_id"] for g in granted} for p in previous)
        refresh = self.refresh_token(at, identity.sub, rec.client_id, None,
                                     authorization=rec.claims["authorization"])
        return {"upgraded": upgraded, "access_token": access, "expires_in": rec.exp - at,
                "refresh_expires_in": REFRESH_LIFETIME_S, "refresh_token": refresh, "token_type": "Bearer",
                "not-before-policy": 0}

    @staticmethod
    def permission_claim(p: dict[str, Any]) -> dict[str, Any]:
        out = {"rsid": p["resource_id"], "rsname": p.get("resource_name", p["resource_id"])}
        if p["resource_scopes"]:
            out["scopes"] = list(p["resource_scopes"])  # Permission.scopes is NON_EMPTY
        return {**out, **time_fields(p)}

    def issue_rpt(self, rec: TokenRecord) -> str:
        """An access token of the identity's session for the requesting client, with
        `authorization.permissions`; createAuthorizationResponse sets `aud` to the RS (audience()
        replaces the array)."""
        aud: Any = rec.audience[0] if len(rec.audience) == 1 else list(rec.audience)
        rec.claims = {**compact({
            "exp": rec.exp, "iat": rec.iat, "nbf": rec.nbf, "jti": rec.key, "iss": self.issuer, "aud": aud,
            "sub": rec.sub, "typ": "Bearer", "azp": rec.client_id, "acr": "1", "scope": "openid profile email",
            "preferred_username": rec.username,
            "authorization": {"permissions": [self.permission_claim(p) for p in rec.permissions]},
        }), **rec.extra}
        return self.app.tokens.emit(rec)

    # ---- introspection (TokenIntrospectionEndpoint) -------------------------------------------
    KNOWN_HINTS = ("access_token", "refresh_token", "id_token", "requesting_party_token")
    RPT_FIELDS = ("jti", "acr", "typ", "exp", "iat", "aud", "nbf")

    def introspect(self, req: Request) -> Response:
        client = self.authenticate_client(req)
        if client.public:
            raise self.error(403, "invalid_request", "Client not allowed.")
        token = req.form1("token")
        if not token:
            raise self.error(400, "invalid_request", "Token not provided.")
        hint = req.form1("token_type_hint") or "access_token"
        if hint not in self.KNOWN_HINTS:
            raise self.error(400, "invalid_request", f"Unsupported token type [{hint}].")
        self.store.count("introspections")
        return json_response(200, self.introspection_body(self.app.tokens.resolve(token), hint, client))

    def introspection_body(self, rec: TokenRecord | None, hint: str, caller: Client) -> dict[str, Any]:
        if rec is None or not rec.live(now()):
            return {"active": False}
        aud = rec.claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        # 26.6.2+: AccessTokenIntrospectionProvider.verifyAudience
        if (self.settings.introspection_requires_aud and not caller.introspection_without_aud_check
                and caller.client_id not in audiences):
            return {"active": False}
        if hint == "requesting_party_token":  # RPTIntrospectionProvider
            body = {k: rec.claims[k] for k in self.RPT_FIELDS if rec.claims.get(k) is not None}
            authorization = rec.claims.get("authorization")
            if isinstance(authorization, dict):
                body["permissions"] = [{**p, "resource_id": p.get("rsid"), "resource_scopes": p.get("scopes", [])}
                                       for p in authorization.get("permissions") or []]
            return {**body, "active": True}
        claims = dict(rec.claims)
        claims.setdefault("client_id", rec.client_id)
        if rec.username:
            claims.setdefault("username", rec.username)
        claims.setdefault("token_type", "Bearer")
        return {**claims, "active": True}

    # ---- /_devas/rpt ----------------------------------------------------------------------------
    def mint_rpt(self, client_id: str, party: Party, permissions: list[dict[str, Any]], as_jwt: bool | None,
                 iat: int, exp: int, nbf: int | None, extra: dict[str, Any], active: bool) -> TokenRecord:
        rec = self.rpt_record(client_id=client_id, party=party, permissions=permissions, as_jwt=True, iat=iat,
                              exp=exp, nbf=nbf, extra=extra, active=active)
        self.issue_rpt(rec)
        return rec
