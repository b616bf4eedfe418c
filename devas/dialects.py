"""The wire dialects of the development AS (development/test fixture, NOT for production): the
shared base. `keycloak.Keycloak` speaks Keycloak; `gluu.Gluu` (profile `uma2`) speaks Gluu oxAuth
4.x and `gluu.Janssen` (profile `janssen`) Janssen's jans-auth-server.

A dialect is the server: it lists its routes and answers them, with the store (state), the keys
and the token records the App binds to it. This module holds what all of them share: addresses,
the token endpoint's frame, client authentication, the password grant, userinfo and the JWKS.
Every behaviour is taken from the servers' sources; devas/README.md has the conformance table
(behaviour, Keycloak, Gluu/Janssen, source file and method).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from devas.httpcore import BadRequestBody, HttpError, Request, Response, json_response
from devas.store import Client, Party, TokenRecord, User, new_id, now

if TYPE_CHECKING:
    from devas.server import App

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"
JWT_FORMAT = "urn:ietf:params:oauth:token-type:jwt"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
RS_ALGS = ["RS256"]

Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    endpoint: str                 # the call-log / fault name
    pattern: re.Pattern[str]
    methods: dict[str, Handler]


def exact(*paths: str) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(p) for p in paths))


def compact(d: dict[str, Any]) -> dict[str, Any]:
    """Drops null fields (Keycloak's JSON mapper is NON_NULL)."""
    return {k: v for k, v in d.items() if v is not None}


def time_fields(perm: dict[str, Any]) -> dict[str, Any]:
    """Per-permission times: only /_devas/rpt sets them (a devas test extension)."""
    return {k: perm[k] for k in ("exp", "nbf", "iat") if k in perm}


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def split_scope(value: Any) -> list[str] | None:
    """A `scope` given as a space-separated string or as a list, in order, without repeats."""
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list):
        items = [v for v in value if isinstance(v, str)]
    else:
        return None
    return list(dict.fromkeys(items))


class Dialect:
    """Shared behaviour; the subclasses set the knobs and implement the rest."""

    name = ""
    prefix = ""                               # every AS path starts with it
    paths: dict[str, str] = {}                # logical name -> path below `prefix`
    discovery_paths: tuple[str, ...] = ()     # absolute paths serving the uma2-configuration
    openid_discovery_paths: tuple[str, ...] = ()
    resources_expire = False
    head_as_get = False                       # JAX-RS answers HEAD with the GET method
    bad_user_credentials_status = 400
    app: "App"

    def __init__(self, base_url: str, realm: str):
        self.base_url = base_url.rstrip("/")
        self.realm = realm

    def bind(self, app: "App") -> None:
        self.app = app

    @property
    def store(self):  # noqa: ANN201 - devas.store.Store, re-read after every reset
        return self.app.store

    @property
    def settings(self):  # noqa: ANN201
        return self.app.store.settings

    # ---- addresses --------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        raise NotImplementedError

    def path(self, name: str) -> str:
        return self.prefix + self.paths[name]

    def url(self, name: str) -> str:
        return self.base_url + self.path(name)

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def common_routes(self) -> list[Route]:
        p = self.path
        return [
            Route("discovery", exact(*self.discovery_paths), {"GET": self.uma_configuration}),
            Route("discovery", exact(*self.openid_discovery_paths), {"GET": self.openid_configuration}),
            Route("token", exact(p("token")), {"POST": self.token}),
            Route("jwks", exact(p("jwks")), {"GET": self.jwks}),
            Route("userinfo", exact(p("userinfo")), {"GET": self.userinfo, "POST": self.userinfo}),
        ]

    # ---- errors -----------------------------------------------------------------------------
    def error(self, status: int, code: str, description: str | None = None, *,
              headers: dict[str, str] | None = None, **_: Any) -> HttpError:
        return HttpError(json_response(status, compact({"error": code, "error_description": description}),
                                       headers))

    def method_not_allowed(self) -> HttpError:
        return self.error(405, "unsupported_method_type", "Method not allowed for this resource.")

    # ---- documents --------------------------------------------------------------------------
    def uma_configuration(self, req: Request) -> Response:
        return json_response(200, self.uma_document())

    def openid_configuration(self, req: Request) -> Response:
        return json_response(200, self.openid_document())

    def endpoint_fields(self, *names: str) -> dict[str, str]:
        """`issuer` and a discovery field per logical endpoint name (`jwks` -> `jwks_uri`,
        `token` -> `token_endpoint`, ...)."""
        out = {"issuer": self.issuer}
        for name in names:
            out["jwks_uri" if name == "jwks" else f"{name}_endpoint"] = self.url(name)
        return out

    def uma_document(self) -> dict[str, Any]:
        raise NotImplementedError

    def openid_document(self) -> dict[str, Any]:
        raise NotImplementedError

    def jwks(self, req: Request) -> Response:
        return json_response(200, self.app.key.jwks())

    def userinfo(self, req: Request) -> Response:
        rec = self.app.tokens.resolve(req.bearer() or req.form1("access_token"))
        if rec is None or rec.kind not in ("user", "pat") or not rec.live(now()):
            raise HttpError(json_response(401, {"error": "invalid_token",
                                                "error_description": "Token verification failed"},
                                          {"WWW-Authenticate": 'Bearer error="invalid_token"'}))
        user = self.store.users.get(rec.sub or "")
        body = user.claims() if user else {"sub": rec.sub, "preferred_username": rec.username, "isOperator": False}
        return json_response(200, body)

    # ---- client authentication --------------------------------------------------------------
    def authenticate_client(self, req: Request) -> Client:
        """HTTP Basic (form-encoded id and secret, RFC 6749 §2.3.1) wins over the form fields
        `client_id`/`client_secret`. A Bearer header is no client authentication. Public clients
        (Keycloak) authenticate with their id alone."""
        basic = req.basic_credentials()
        client_id, secret = basic if basic else (req.form1("client_id"), req.form1("client_secret"))
        challenge = {"WWW-Authenticate": f'Basic realm="{self.realm}"'} if basic else None
        if not client_id:
            raise self.error(401, "invalid_client", "Client authentication required.", section="token")
        client = self.store.authenticate_client(client_id, secret)
        if client is None:
            raise self.error(401, "invalid_client", "Invalid client or Invalid client credentials",
                             headers=challenge, section="token")
        return client

    # ---- token endpoint ---------------------------------------------------------------------
    def grants(self) -> dict[str, Callable[[Request], dict[str, Any]]]:
        return {"client_credentials": self.grant_client_credentials, "password": self.grant_password,
                UMA_GRANT: self.grant_uma}

    def token(self, req: Request) -> Response:
        """Every token-endpoint answer is no-store (RFC 6749 §5.1, UMA Grant §3.3.6)."""
        grant_type = req.form1("grant_type") or ""
        try:
            handler = self.select_grant(req, grant_type)
            body = handler(req)
        except HttpError as err:
            err.response.headers.update(NO_STORE)
            raise
        self.store.count(f"tokens_issued.{GRANT_NAMES.get(grant_type, grant_type)}")
        if isinstance(body, Response):
            body.headers.update(NO_STORE)
            return body
        return json_response(200, body, NO_STORE)

    def select_grant(self, req: Request, grant_type: str) -> Callable[[Request], Any]:
        grant = self.grants().get(grant_type)
        if grant is None:
            if not grant_type:
                raise self.error(400, "invalid_request", "Missing form parameter: grant_type", section="token")
            raise self.error(400, "unsupported_grant_type", f"Unsupported grant_type {grant_type!r}",
                             section="token")
        return grant

    def grant_client_credentials(self, req: Request) -> dict[str, Any]:
        raise NotImplementedError

    def grant_uma(self, req: Request) -> Any:
        raise NotImplementedError

    def check_password_client(self, client: Client) -> None:
        """Dialect hook: may the client use the password grant?"""

    def grant_password(self, req: Request) -> dict[str, Any]:
        client = self.authenticate_client(req)
        self.check_password_client(client)
        user = self.store.check_password(req.form1("username"), req.form1("password"))
        if user is None:
            raise self.error(self.bad_user_credentials_status, "invalid_grant", "Invalid user credentials",
                             section="token")
        access, id_token, rec = self.app.tokens.issue_user_tokens(client, user,
                                                                  access_as_jwt=client.access_token_as_jwt)
        body = {"access_token": access, "id_token": id_token, "token_type": "Bearer",
                "expires_in": rec.exp - rec.iat, "scope": "openid profile"}
        if not self.settings.openid_scope_backward_compatibility:
            # TokenRestWebServiceImpl (ROPC): an ID token only with openidScopeBackwardCompatibility.
            del body["id_token"]
        return body

    # ---- helpers shared by the dialects -----------------------------------------------------
    @staticmethod
    def json_body(req: Request) -> Any:
        """The body as JSON; raises BadRequestBody when it is not."""
        return req.json()

    def party_of(self, claims: dict[str, Any], client_id: str | None = None) -> Party:
        """The requesting party named by verified token claims."""
        sub = claims.get("sub")
        user: User | None = self.store.users.get(sub) if isinstance(sub, str) else None
        username = claims.get("preferred_username") or (user.username if user else None)
        return Party(sub=sub if isinstance(sub, str) else None, username=username, claims=dict(claims),
                     client_id=client_id or claims.get("azp"))

    def new_pct(self, party: Party) -> str:
        code = new_id()
        self.store.pcts[code] = party
        return code

    def rpt_record(self, *, client_id: str, party: Party | None, permissions: list[dict[str, Any]],
                   as_jwt: bool, iat: int, exp: int, nbf: int | None = None,
                   audience: list[str] | None = None, extra: dict[str, Any] | None = None,
                   active: bool = True, pct: str | None = None) -> TokenRecord:
        """A fresh RPT record (not stored yet); `issue_rpt` of the dialect renders and stores it."""
        if audience is None:
            audience = sorted({r.client_id for p in permissions
                               if (r := self.store.resources.get(p["resource_id"])) is not None})
        return TokenRecord(kind="rpt", key=new_id(), jwt=as_jwt, client_id=client_id,
                           sub=party.sub if party else None, username=party.username if party else None,
                           iat=iat, exp=exp, nbf=nbf, active=active, permissions=permissions,
                           audience=audience or [self.store.default_rs], extra=dict(extra or {}), pct=pct)

    def issue_rpt(self, rec: TokenRecord) -> str:
        raise NotImplementedError

    def mint_party(self, sub: str) -> Party:
        """/_devas/rpt: the party of a minted RPT, with a user's claims when `sub` is a known user."""
        user = self.store.users.get(sub)
        claims: dict[str, Any] = user.claims() if user else {"sub": sub}
        return Party(sub=sub, username=user.username if user else None, claims=claims)


GRANT_NAMES = {"client_credentials": "client_credentials", "password": "password", UMA_GRANT: "uma-ticket"}


def parse_json_object(req: Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (malformed or another type)."""
    try:
        body = req.json()
    except BadRequestBody:
        return None
    return body if isinstance(body, dict) else None


def dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
