"""The Gluu oxAuth (profile `uma2`) and Janssen (profile `janssen`) dialects of the development AS
(development/test fixture, NOT for production).

Behaviour, status codes and bodies are those of GluuFederation/oxAuth (Server/src/main/java/org/
gluu/oxauth) and JanssenProject/jans (jans-auth-server/server/src/main/java/io/jans/as/server),
whose UMA code is the same line for line; devas/README.md cites file and method per behaviour:
`UmaValidationService`, `UmaResourceRegistrationWS`, `UmaPermissionRegistrationWS`,
`UmaRptIntrospectionWS`, `UmaTokenService`, `UmaRptService`, `UmaPctService`, `ScopeChecker`,
`RegisterRestWebServiceImpl`, `ErrorResponseFactory`. Janssen adds the UMA feature flag (off in a
fresh install) and `authorization_challenge_endpoint`.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from typing import Any

import jwt

from devas.dialects import (ID_TOKEN_FORMAT, RS_ALGS, UMA_GRANT, Dialect, Route, exact, parse_json_object,
                            split_scope, time_fields)
from devas.httpcore import BadRequestBody, HttpError, Request, Response, empty_response, json_response
from devas.keys import HMAC_ALGS, header_of, sign_hmac
from devas.store import UMA_PROTECTION, Client, Party, Permission, Resource, Ticket, TokenRecord, new_id, now

# The error descriptions of oxauth-errors.json / jans-errors.json per section
# (ErrorResponseFactory.getErrorResponse); an id missing from its section gets its own id as the
# description (ErrorResponseFactory.getError).
DESCRIPTIONS = {
    "uma": {
        "invalid_request": "The request is missing a required parameter, includes an unsupported parameter or "
                           "parameter value, or is otherwise malformed.",
        "unauthorized_client": "The client is not authorized to request an access token using this method.",
        "disabled_client": "The client is disabled and can't request an access token using this method.",
        "access_denied": "The resource owner or AM server denied the request.",
        "invalid_client_scope": "The requested scope is invalid, unknown, or malformed.",
        "server_error": "The AM server encountered an unexpected condition which prevented it from fulfilling "
                        "the request.",
        "not_found": "The resource set requested from the AM cannot be found.",
        "unsupported_method_type": "The host request used an unsupported HTTP method.",
        "invalid_scope": "At least one of the scopes included in the request was not registered previously by "
                         "this host.",
    },
    "token": {
        "invalid_request": "The request is missing a required parameter, includes an unsupported parameter or "
                           "parameter value, repeats a parameter, includes multiple credentials, utilizes more "
                           "than one mechanism for authenticating the client, or is otherwise malformed.",
        "invalid_client": "Client authentication failed (e.g. unknown client, no client authentication included, "
                          "or unsupported authentication method). The authorization server MAY return an HTTP 401 "
                          "(Unauthorized) status code to indicate which HTTP authentication schemes are supported. "
                          "If the client attempted to authenticate via the Authorization request header field, the "
                          "authorization server MUST respond with an HTTP 401 (Unauthorized) status code, and "
                          "include the WWW-Authenticate response header field matching the authentication scheme "
                          "used by the client.",
        "invalid_grant": "The provided authorization grant is invalid, expired, revoked, does not match the "
                         "redirection URI used in the authorization request, or was issued to another client.",
        "unauthorized_client": "The authenticated client is not authorized to use this authorization grant type.",
        "unsupported_grant_type": "The authorization grant type is not supported by the authorization server.",
        "invalid_scope": "The requested scope is invalid, unknown, malformed, or exceeds the scope granted by the "
                         "resource owner.",
    },
    "register": {
        "invalid_request": "The request is missing a required parameter, includes an unsupported parameter or "
                           "parameter value, or is otherwise malformed.",
        "invalid_client_metadata": "The value of one of the Client Metadata fields is invalid and the server has "
                                   "rejected this request. Note that an Authorization Server MAY choose to "
                                   "substitute a valid value for any requested parameter of a Client's Metadata.",
    },
}
TRAILING_COMMA = re.compile(r",\s*([\]}])")
INTROSPECTION_FIELDS = ("active", "exp", "iat", "nbf", "permissions", "client_id", "sub", "aud", "iss", "jti",
                        "pct_claims")   # RptIntrospectionResponse, nulls serialized


def java_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)


def claims_as_lists(claims: dict[str, Any]) -> dict[str, list[str]]:
    """JwtClaimSet.toMap: every PCT claim becomes a list of strings (RptIntrospectionResponse
    declares pct_claims as Map<String, List<String>>)."""
    return {k: [java_string(x) for x in v] if isinstance(v, list) else [java_string(v)]
            for k, v in claims.items() if v is not None}


def unverified_claims(token: str) -> dict[str, Any] | None:
    """Jwt.parse: the claims of any well-formed JWT, signed or not."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def valid_scope_expression(expression: str) -> bool:
    """JsonLogicNodeParser.isNodeValid: a JSON object with a `rule` object and a `data` array."""
    try:
        node = json.loads(expression)
    except ValueError:
        return False
    return isinstance(node, dict) and isinstance(node.get("rule"), dict) and isinstance(node.get("data"), list)


class Gluu(Dialect):
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
        "authorization_challenge": "/authorize-challenge",
    }
    discovery_paths = ("/.well-known/uma2-configuration", "/oxauth/restv1/uma2-configuration")
    openid_discovery_paths = ("/.well-known/openid-configuration",)
    resources_expire = True
    feature_flag = False   # Janssen: FeatureFlagType.UMA

    @property
    def issuer(self) -> str:
        return self.base_url   # CE template "https://%(hostname)s": no trailing slash

    def routes(self) -> list[Route]:
        p = self.path
        rs = re.escape(p("resource_set"))
        refused = {"HEAD": self.refuse_method, "OPTIONS": self.refuse_method}
        return self.common_routes() + [
            Route("introspection", exact(p("introspection")), {"POST": self.introspect, "GET": self.introspect}),
            Route("registration", exact(p("registration")), {"POST": self.register}),
            Route("permission", exact(p("permission")), {"POST": self.permission}),
            Route("resource_set", re.compile(rs + "/?"),
                  {"GET": self.list_resources, "POST": self.create_resource, **refused}),
            Route("resource_set", re.compile(rs + "/(?P<rid>[^/]+)"),
                  {"GET": self.read_resource, "PUT": self.update_resource, "DELETE": self.delete_resource,
                   **refused}),
        ]

    # ---- documents (UmaMetadataWS) ------------------------------------------------------------
    def uma_configuration(self, req: Request) -> Response:
        self.check_uma_enabled()
        return super().uma_configuration(req)

    def uma_document(self) -> dict[str, Any]:
        doc = {
            **self.endpoint_fields("authorization", "token", "jwks", "registration"),
            "response_types_supported": ["code", "id_token", "token"],
            "grant_types_supported": ["authorization_code", "implicit", "client_credentials", UMA_GRANT],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                      "client_secret_jwt", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["HS256", "HS384", "HS512", "RS256"],
            "service_documentation": "http://gluu.org/docs",
            "ui_locales_supported": ["en"],
            **self.endpoint_fields("introspection", "claims_interaction"),
            "uma_profiles_supported": [],
            "permission_endpoint": self.url("permission"),
            "resource_registration_endpoint": self.url("resource_set"),
            **self.endpoint_fields("scope"),
        }
        if self.feature_flag:
            doc["authorization_challenge_endpoint"] = self.url("authorization_challenge")
        return doc

    def openid_document(self) -> dict[str, Any]:
        return {
            **self.endpoint_fields("authorization", "token", "userinfo", "jwks", "registration", "end_session"),
            "scopes_supported": ["openid", "profile", "email", UMA_PROTECTION, "permission", "offline_access"],
            "response_types_supported": ["code", "id_token", "token"],
            "grant_types_supported": ["authorization_code", "client_credentials", "password", UMA_GRANT],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": RS_ALGS,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["sub", "preferred_username", "isOperator"],
        }

    # ---- errors (ErrorResponseFactory; ErrorResponse.toJSonString) -----------------------------
    def error(self, status: int, code: str, description: str | None = None, *, reason: str | None = None,
              section: str = "uma", headers: dict[str, str] | None = None, **_: Any) -> HttpError:
        """`{"error", "error_description"}`: the description comes from the errors file, never from
        the code path; the code path's text is the `reason`, sent only when errorReasonEnabled."""
        body = {"error": code, "error_description": DESCRIPTIONS.get(section, {}).get(code, code)}
        reason = reason or description
        if reason and self.settings.error_reason_enabled:
            body["reason"] = reason
        return HttpError(json_response(status, body, headers))

    def method_not_allowed(self) -> HttpError:
        return self.error(405, "unsupported_method_type")

    def refuse_method(self, req: Request, rid: str | None = None) -> Response:
        raise self.error(405, "unsupported_method_type", reason="HEAD and OPTIONS are not supported.")

    def check_uma_enabled(self) -> None:
        """Janssen: ErrorResponseFactory.validateFeatureEnabled(FeatureFlagType.UMA); the error is
        TokenErrorResponseType.ACCESS_DENIED, absent from the token section (description = id)."""
        if self.feature_flag and not self.settings.uma_feature_enabled:
            raise self.error(403, "access_denied", reason="Feature flag is disabled on server.", section="token")

    # ---- PAT: client_credentials (TokenRestWebServiceImpl, ScopeChecker) ----------------------
    def grant_client_credentials(self, req: Request) -> dict[str, Any]:
        client = self.authenticate_client(req)
        if "client_credentials" not in client.grant_types:
            raise self.error(400, "invalid_grant", reason="grant_type is not present in client.", section="token")
        scope = req.form1("scope")
        # ScopeChecker.checkScopesPolicy: requested scopes the client is not registered for are
        # dropped silently; no scope parameter, no scope at all (then every protection call is 406).
        granted = [s for s in split_scope(scope) or [] if s in client.scopes] if scope and scope.strip() else []
        at = now()
        rec = TokenRecord(kind="pat", key=new_id(), jwt=False, client_id=client.client_id, sub=None,
                          iat=at, exp=at + self.settings.pat_lifetime_s, scopes=frozenset(granted))
        body: dict[str, Any] = {"access_token": self.app.tokens.emit(rec), "token_type": "Bearer",
                                "expires_in": rec.exp - at}
        if scope and scope.strip():
            body["scope"] = " ".join(granted)
        return body

    def select_grant(self, req: Request, grant_type: str) -> Any:
        """TokenRestWebServiceImpl: a non-blank `ticket` goes to the UMA token service, whatever the
        grant_type (which UmaValidationService.validateGrantType then refuses if it is wrong)."""
        if (req.form1("ticket") or "").strip():
            return self.grant_uma
        return super().select_grant(req, grant_type)

    # ---- the protection API's PAT (UmaValidationService.validateAuthorization) ----------------
    def protection(self, req: Request) -> TokenRecord:
        header = req.header("authorization")
        if not header or not header.strip():
            raise self.error(401, "unauthorized_client", reason="Authorization header is blank.")
        token = req.bearer()
        if not token:
            raise self.error(401, "unauthorized_client", reason="Token is invalid.")
        rec = self.app.tokens.resolve(token)
        if rec is None or rec.kind not in ("pat", "user") or not rec.live(now()):
            raise self.error(401, "access_denied", reason="Unable to find authorization grant by token.")
        if UMA_PROTECTION not in rec.scopes:
            raise self.error(406, "invalid_client_scope", reason=f"Client does not have scope: {UMA_PROTECTION}")
        return rec

    # ---- resource_set (UmaResourceRegistrationWS) ---------------------------------------------
    def validate_resource(self, req: Request) -> dict[str, Any]:
        """UmaValidationService.validateResource: a valid JsonLogic scope_expression, scopes created
        automatically (umaAddScopesAutomatically), not both empty. Unknown fields are ignored
        (UmaResource is @JsonIgnoreProperties(ignoreUnknown = true)): no uri(s), no owner."""
        body = parse_json_object(req)
        if body is None:
            raise self.error(400, "invalid_request", reason="The body is not a UMA resource.")
        scopes = body.get("resource_scopes") or []
        expression = body.get("scope_expression")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes) \
                or not isinstance(expression, (str, type(None))):
            raise self.error(400, "invalid_request", reason="resource_scopes or scope_expression is malformed.")
        if expression and expression.strip() and not valid_scope_expression(expression):
            raise self.error(400, "invalid_scope", reason=f"Scope expression is invalid. Expression: {expression}")
        scopes = list(dict.fromkeys(scopes))
        if not scopes and not (expression or "").strip():
            raise self.error(400, "invalid_scope",
                             reason="Invalid resource. Both `scope` and `scope_expression` are blank.")
        self.store.known_scopes.update(scopes)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            # the persistence layer refuses a resource without a name; createResource answers 500
            raise self.error(500, "server_error", reason="name is required")
        return {"name": name, "scopes": scopes, "scope_expression": expression,
                "description": body.get("description"), "icon_uri": body.get("icon_uri"), "type": body.get("type"),
                "iat": body.get("iat"), "exp": body.get("exp")}

    def resource_by_id(self, rid: str) -> Resource:
        """UmaResourceService.getResourceById: 404 not_found, from any client's resources."""
        res = self.store.resource(rid)
        if res is None:
            raise self.error(404, "not_found", reason=f"Failed to find resource set with id: {rid}")
        return res

    def restricted(self, pat: TokenRecord, rid: str) -> None:
        """UmaValidationService.validateRestrictedByClient (umaRestrictResourceToAssociatedClient)."""
        if self.settings.restrict_resource_to_associated_client and self.resource_by_id(rid).client_id != pat.client_id:
            raise self.error(403, "access_denied", reason="Access to resource is denied because resource associated "
                                                          "client does not match PAT client.")

    @staticmethod
    def epoch(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def create_resource(self, req: Request) -> Response:
        self.check_uma_enabled()
        pat = self.protection(req)
        fields = self.validate_resource(req)
        at = now()
        iat = self.epoch(fields["iat"]) or at
        exp = self.epoch(fields["exp"]) or at + self.settings.resource_lifetime_s
        if exp <= at:  # UmaResourceService.addResource: Preconditions "UMA Resource expired"
            raise self.error(500, "server_error", reason="UMA Resource expired")
        res = Resource(id=new_id(), name=fields["name"], client_id=pat.client_id, owner=None,
                       scopes=fields["scopes"], type=fields["type"], icon_uri=fields["icon_uri"],
                       description=fields["description"], scope_expression=fields["scope_expression"], iat=iat, exp=exp)
        self.store.resources[res.id] = res
        return json_response(201, {"_id": res.id, "user_access_policy_uri": None})  # no Location

    def update_resource(self, req: Request, rid: str) -> Response:
        self.check_uma_enabled()
        pat = self.protection(req)
        fields = self.validate_resource(req)
        self.restricted(pat, rid)
        res = self.resource_by_id(rid)
        res.name, res.description, res.icon_uri = fields["name"], fields["description"], fields["icon_uri"]
        res.scopes, res.scope_expression, res.type = fields["scopes"], fields["scope_expression"], fields["type"]
        if self.epoch(fields["exp"]):
            res.exp = fields["exp"]
        return json_response(200, {"_id": res.id, "user_access_policy_uri": None})

    def read_resource(self, req: Request, rid: str) -> Response:
        self.check_uma_enabled()
        pat = self.protection(req)
        self.restricted(pat, rid)
        res = self.resource_by_id(rid)
        return json_response(200, {"_id": res.id, "name": res.name, "icon_uri": res.icon_uri,
                                   "resource_scopes": list(res.scopes), "description": res.description,
                                   "type": res.type, "scope_expression": res.scope_expression,
                                   "iat": res.iat, "exp": res.exp})

    def delete_resource(self, req: Request, rid: str) -> Response:
        self.check_uma_enabled()
        pat = self.protection(req)
        self.restricted(pat, rid)
        del self.store.resources[self.resource_by_id(rid).id]
        return empty_response(204)

    def list_resources(self, req: Request) -> Response:
        """Ids of the resources associated with the PAT's client; `scope` filters (a Gluu extension)."""
        self.check_uma_enabled()
        pat = self.protection(req)
        scope = req.query1("scope")
        return json_response(200, [r.id for r in self.store.live_resources(pat.client_id)
                                   if not scope or scope in r.scopes])

    # ---- permission endpoint (UmaPermissionRegistrationWS) ------------------------------------
    def permission(self, req: Request) -> Response:
        self.check_uma_enabled()
        pat = self.protection(req)
        try:
            body = req.json()
        except BadRequestBody:
            body = None
        items = [body] if isinstance(body, dict) else body
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise self.error(400, "invalid_permission_request", reason="Failed to parse permission request.")
        at = now()
        exp = at + self.settings.ticket_lifetime_s
        permissions = [self.validate_permission(item, exp) for item in items]
        ticket = Ticket(id=new_id(), client_id=pat.client_id, permissions=permissions, exp=exp)
        self.store.add_ticket(ticket)
        self.store.count("tickets_issued")
        return json_response(201, {"ticket": ticket.id})

    def validate_permission(self, item: dict[str, Any], exp: int) -> Permission:
        """UmaValidationService.validatePermission: a blank id is 400; an unknown one is the 404 of
        getResourceById; a scope not on the resource passes if it exists at all (getOrCreate)."""
        rid = item.get("resource_id")
        if not isinstance(rid, str) or not rid.strip():
            raise self.error(400, "invalid_resource_id", reason="Resource id is empty")
        res = self.resource_by_id(rid)
        scopes = item.get("resource_scopes") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise self.error(400, "invalid_permission_request", reason="resource_scopes must be strings.")
        for s in scopes:
            if s not in res.scopes and s not in self.store.known_scopes:
                raise self.error(400, "invalid_scope", reason="At least one of the scopes isn't registered")
        params = item.get("params") if isinstance(item.get("params"), dict) else None
        return Permission(resource_id=res.id, scopes=list(dict.fromkeys(scopes)), params=params, exp=exp)

    # ---- introspection (UmaRptIntrospectionWS) ------------------------------------------------
    def introspect(self, req: Request) -> Response:
        self.check_uma_enabled()
        self.protection(req)
        token = req.form1("token") if req.method == "POST" else req.query1("token")
        self.store.count("introspections")
        rec = self.app.tokens.resolve(token)
        if rec is None or rec.kind != "rpt" or not rec.live(now()):
            return json_response(200, dict.fromkeys(INTROSPECTION_FIELDS) | {"active": False},
                                 {"Cache-Control": "no-store"})
        return json_response(200, {**self.introspection_body(rec), **rec.extra}, {"Cache-Control": "no-store"})

    def valid_permissions(self, rec: TokenRecord) -> list[dict[str, Any]]:
        """Expired permissions are left out (isValid(permission)) unless keep_expired_permissions."""
        at = now()
        return [p for p in rec.permissions if self.settings.keep_expired_permissions or p.get("exp", rec.exp) > at]

    @staticmethod
    def permission_json(p: dict[str, Any]) -> dict[str, Any]:
        """io.jans.as.model.uma.UmaPermission as ServerUtil.asJson writes it (nulls included)."""
        return {"resource_id": p["resource_id"], "resource_scopes": list(p["resource_scopes"]),
                "exp": p.get("exp"), "params": p.get("params"), **{k: v for k, v in time_fields(p).items()
                                                                    if k != "exp"}}

    def pct_claims(self, rec: TokenRecord) -> dict[str, Any] | None:
        party = self.store.pcts.get(rec.pct or "")
        return None if party is None else party.claims

    def introspection_body(self, rec: TokenRecord) -> dict[str, Any]:
        """sub is the RPT's user id, which UmaRptService.createRPTAndPersist always passes as null;
        nbf, iss and jti are never set; aud is the RPT's client_id."""
        claims = self.pct_claims(rec)
        return {"active": True, "exp": rec.exp, "iat": rec.iat, "nbf": None,
                "permissions": [self.permission_json(p) for p in self.valid_permissions(rec)],
                "client_id": rec.client_id, "sub": None, "aud": rec.client_id, "iss": None, "jti": None,
                "pct_claims": None if claims is None else claims_as_lists(claims)}

    # ---- UMA grant (UmaTokenService.requestRpt) -----------------------------------------------
    def grant_uma(self, req: Request) -> dict[str, Any]:
        client = self.authenticate_client(req)   # the client filter runs before the web service
        self.check_uma_enabled()
        if req.form1("grant_type") != UMA_GRANT:
            raise self.error(400, "invalid_resource_id", reason=f"No required grant_type: {UMA_GRANT}")
        ticket = self.validate_ticket(req.form1("ticket"))
        id_claims = self.validate_claim_token(req.form1("claim_token"), req.form1("claim_token_format"))
        pct_code = self.validate_pct(req.form1("pct"))
        rpt = self.validate_rpt(req.form1("rpt"))
        requested = [s for s in split_scope(req.form1("scope")) or [] if s in self.store.known_scopes]
        all_scopes = list(dict.fromkeys(requested + [s for p in ticket.permissions for s in p.scopes]))
        if not all_scopes:
            raise self.error(400, "invalid_scope", reason="There are no any scopes requested in give request.")
        pct_code = self.update_pct(pct_code or ticket.pct, id_claims)
        party = self.store.pcts[pct_code]
        if not party.sub:
            raise self.need_info(ticket, pct_code)
        for perm in ticket.permissions:
            res = self.store.resource(perm.resource_id)
            allowed = self.store.allowed_scopes(party.sub, res) if res is not None else None
            if allowed is None or not set(perm.scopes + requested) <= allowed:
                raise self.error(403, "forbidden_by_policy", reason="Authorization policy denied the request.")
        # updatePermissionsWithClientRequestedScope: every permission gets every scope of the request
        granted = [{"resource_id": p.resource_id, "resource_name": res.name if (res := self.store.resources.get(
            p.resource_id or "")) else p.resource_id, "resource_scopes": list(all_scopes), "exp": p.exp,
            "params": p.params} for p in ticket.permissions]
        if rpt is not None:   # addPermissionToRPT: the same RPT comes back, upgraded
            rpt.permissions.extend(granted)
            return {"access_token": rpt.token, "token_type": "Bearer", "pct": pct_code, "upgraded": True}
        at = now()
        rec = self.rpt_record(client_id=client.client_id, party=None, permissions=granted,
                              as_jwt=client.rpt_as_jwt, iat=at, exp=at + self.settings.rpt_lifetime_s, pct=pct_code)
        return {"access_token": self.issue_rpt(rec), "token_type": "Bearer", "pct": pct_code, "upgraded": False}

    def validate_ticket(self, value: str | None) -> Ticket:
        if not value or not value.strip():
            raise self.error(400, "invalid_ticket", reason="Ticket is null or blank.")
        ticket = self.store.tickets.get(value)
        if ticket is None:
            raise self.error(400, "invalid_ticket",
                             reason=f"Unable to find permissions registered for given ticket:{value}")
        if ticket.exp <= now():
            raise self.error(400, "expired_ticket", reason="Permission is not valid.")
        return ticket   # not consumed: it is valid until it expires (or need_info changes it)

    def validate_claim_token(self, token: str | None, fmt: str | None) -> dict[str, Any] | None:
        """Only the ID-token format. The token is parsed as a JWT (any JWT, signed or not, expired
        or not); its expiry, issuer and signature are checked only when umaValidateClaimToken
        (false in the CE and Jans templates). A failed check and an unparsable token get the same
        answer: the check's own exception is caught by the parse's catch-all."""
        if token and token.strip():
            if fmt != ID_TOKEN_FORMAT:
                raise self.error(400, "invalid_claim_token_format",
                                 reason=f"claim_token_format is unsupported. Supported format is {ID_TOKEN_FORMAT}")
            claims = unverified_claims(token)
            if claims is not None and self.settings.uma_validate_claim_token and not self.id_token_valid(token):
                claims = None
            if claims is None:
                raise self.error(400, "invalid_claim_token", reason="Failed to parse claim_token as valid id_token.")
            return claims
        if fmt and fmt.strip():
            raise self.error(400, "invalid_claim_token", reason="claim_token is blank but claim_token_format is not "
                                                                "blank. Both must be blank or both must be not blank")
        return None

    def id_token_valid(self, token: str) -> bool:
        """UmaValidationService.isIdTokenValid: `exp` not passed, `iss` the server's issuer, and an
        RSA signature by the server's key that the header's `kid` names. Nothing else: not `aud`
        (an ID token of any client of the AS passes), not `typ` (a JWT access token passes too),
        not `sub`."""
        claims = self.app.key.verify(token) if header_of(token).get("kid") == self.app.key.kid else None
        return (claims is not None and isinstance(claims.get("exp"), (int, float)) and claims["exp"] >= now()
                and claims.get("iss") == self.issuer)

    def validate_pct(self, code: str | None) -> str | None:
        if code and code.strip():
            if code not in self.store.pcts:
                raise self.error(401, "invalid_pct", reason=f"Failed to find PCT with pctCode: {code}")
            return code
        return None

    def validate_rpt(self, code: str | None) -> TokenRecord | None:
        if code and code.strip():
            rec = self.app.tokens.resolve(code)
            if rec is None or rec.kind != "rpt" or not rec.live(now()):
                raise self.error(400, "invalid_rpt", reason=f"RPT is not valid. rptCode: {code}")
            return rec
        return None

    def update_pct(self, code: str | None, id_claims: dict[str, Any] | None) -> str:
        """UmaPctService.updateClaims: the PCT (created when none is given) takes every claim of the
        ID token."""
        if code is None:
            code = self.new_pct(Party(sub=None))
        party = self.store.pcts[code]
        if id_claims:
            party.claims.update(id_claims)
            fresh = self.party_of(party.claims)
            party.sub, party.username, party.client_id = fresh.sub, fresh.username, fresh.client_id
        return code

    def need_info(self, ticket: Ticket, pct: str) -> HttpError:
        """UmaNeedsInfoService.checkNeedsInfo: 403 need_info with a NEW ticket
        (permissionService.changeTicket: the old one stops working)."""
        del self.store.tickets[ticket.id]
        ticket.id, ticket.pct = new_id(), pct
        self.store.add_ticket(ticket)
        body = {"error": "need_info", "ticket": ticket.id,
                "required_claims": [{"claim_token_format": [ID_TOKEN_FORMAT], "claim_type": "string",
                                     "friendly_name": "sub", "issuer": [self.issuer], "name": "sub"}],
                "redirect_user": f"{self.url('claims_interaction')}?ticket={ticket.id}"}
        return HttpError(json_response(403, body))

    def issue_rpt(self, rec: TokenRecord) -> str:
        """UmaRptService.createRPTAndPersist: `UUID_8digits`, or for rpt_as_jwt clients createRptJwt:
        typ JWT, the client's access_token_signing_alg (HS* with the client secret), claims iss,
        client_id, exp, iat, aud = client_id, pct_claims, permissions; no sub, jti or nbf."""
        client = self.store.clients.get(rec.client_id)
        if not rec.jwt:
            rec.key = f"{uuid.uuid4()}_{secrets.randbelow(10 ** 8):08d}"
            return self.app.tokens.emit(rec)
        claims: dict[str, Any] = {"iss": self.issuer, "client_id": rec.client_id, "exp": rec.exp, "iat": rec.iat,
                                  "aud": rec.client_id}
        if (pct := self.pct_claims(rec)) is not None:
            claims["pct_claims"] = pct
        if rec.permissions:
            claims["permissions"] = [self.permission_json(p) for p in rec.permissions]
        rec.claims = {**claims, **rec.extra}
        alg = client.access_token_signing_alg if client else "RS256"
        if alg in HMAC_ALGS and client is not None and client.client_secret:
            token = sign_hmac(rec.claims, client.client_secret, alg)
        else:
            token = self.app.key.sign(rec.claims)
        rec.key = token   # no jti: the record is found by the token itself
        return self.app.tokens.emit(rec, token)

    # ---- dynamic client registration (RegisterRestWebServiceImpl) -----------------------------
    def register(self, req: Request) -> Response:
        """`scope` is honoured only for scopes allowed for dynamic registration (the rest is dropped
        silently); no `scope` gives every allowed scope. The answer's `scope` says what was granted."""
        text = req.text()
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            try:  # the org.json parser takes EOEPCA's hand-built body with a trailing comma
                body = json.loads(TRAILING_COMMA.sub(r"\1", text))
            except json.JSONDecodeError:
                body = None
        if not isinstance(body, dict):
            raise self.error(400, "invalid_client_metadata", reason="The request body is not a JSON object.",
                             section="register")
        allowed = self.settings.dcr_allowed_scopes
        requested = split_scope(body.get("scope"))
        scopes = [s for s in requested if s in allowed] if requested is not None else list(allowed)
        grant_types = [g for g in body.get("grant_types") or ["authorization_code"] if isinstance(g, str)]
        client = Client(client_id=new_id(), client_secret=new_id(), scopes=frozenset(scopes),
                        grant_types=tuple(grant_types), rpt_as_jwt=bool(body.get("rpt_as_jwt", False)),
                        access_token_signing_alg=str(body.get("access_token_signing_alg") or "RS256"), dynamic=True)
        self.store.clients[client.client_id] = client
        answer = {**{k: v for k, v in body.items() if k not in ("scope", "scopes")},
                  "client_id": client.client_id, "client_secret": client.client_secret,
                  "registration_access_token": new_id(),
                  "registration_client_uri": f"{self.url('registration')}?client_id={client.client_id}",
                  "client_id_issued_at": now(), "client_secret_expires_at": 0,
                  "grant_types": grant_types, "response_types": body.get("response_types") or ["code"],
                  "token_endpoint_auth_method": body.get("token_endpoint_auth_method") or "client_secret_basic",
                  "scope": " ".join(scopes)}
        client.metadata = answer
        return json_response(201, answer)

    # ---- /_devas/rpt ----------------------------------------------------------------------------
    def mint_rpt(self, client_id: str, party: Party, permissions: list[dict[str, Any]], as_jwt: bool | None,
                 iat: int, exp: int, nbf: int | None, extra: dict[str, Any], active: bool) -> TokenRecord:
        """The minted RPT has no user (sub null); `sub` goes to the PCT's claims, as a grant with
        that user's ID token as claim token would put it."""
        client = self.store.clients.get(client_id)
        if as_jwt is None:
            as_jwt = client.rpt_as_jwt if client else False
        perms = [{**p, "exp": p.get("exp", exp), "params": None} for p in permissions]
        rec = self.rpt_record(client_id=client_id, party=None, permissions=perms, as_jwt=as_jwt, iat=iat, exp=exp,
                              nbf=nbf, extra=extra, active=active, pct=self.new_pct(party))
        self.issue_rpt(rec)
        return rec


class Janssen(Gluu):
    """jans-auth-server: the oxAuth logic under /jans-auth/restv1, the UMA feature flag (off by
    default: jans-linux-setup's featureFlags lack "uma") and 20-day resources."""
    name = "janssen"
    prefix = "/jans-auth/restv1"
    discovery_paths = ("/.well-known/uma2-configuration", "/jans-auth/restv1/uma2-configuration")
    openid_discovery_paths = ("/.well-known/openid-configuration", "/jans-auth/.well-known/openid-configuration")
    feature_flag = True

