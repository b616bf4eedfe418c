"""In-memory state of the development AS (development/test fixture, NOT for production):
settings, clients, users, resources, grants, permission tickets, issued tokens, initial access
tokens, PCTs and the seed's access policy. Everything here is dialect-neutral; the dialects
(keycloak.py, gluu.py) decide what it means on the wire.

The store is the authority on every token it issued, JWTs included: a token is valid only while
its record exists, is active and unexpired. `/_devas/reset` drops tickets and RPTs but keeps PATs
and user tokens; `{"forget_tokens": true}` (or `/_devas/revoke`) makes the AS forget those too.

Callers hold the application lock (server.App) around every use; the store itself is not locked.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from devas.seed import ANY_USER

UMA_PROTECTION = "uma_protection"
SESSION_KINDS = ("pat", "user")  # token kinds that survive a plain reset
DAY = 24 * 3600

# Keycloak 26: the realm's default client scopes (acr, basic, email, profile, roles, web-origins)
# and optional ones (address, microprofile-jwt, offline_access, organization, phone).
KEYCLOAK_CLIENT_SCOPES = ["profile", "email", "roles", "web-origins", "acr", "basic", "address", "phone",
                          "offline_access", "microprofile-jwt", "organization"]
# Gluu CE scopes.ldif / Jans scopes.ldif: scopes with defaultScope ("Allow for dynamic registration").
DCR_ALLOWED_SCOPES = ["openid", "oxd", "permission", "offline_access", "uma_protection", "jans_stat"]


def now() -> int:
    return int(time.time())


def new_id() -> str:
    return str(uuid.uuid4())


def internal_client_id(client_id: str) -> str:
    """Keycloak's internal client id (a UUID; clientId is the name): stable across resets."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "devas-client:" + client_id))


@dataclass
class Settings:
    """Knobs; seed keys of the same name, changeable with POST /_devas/config. Profile-dependent
    defaults come from `for_profile`."""
    pat_lifetime_s: int = 300
    rpt_lifetime_s: int = 300
    ticket_lifetime_s: int = 300
    user_token_lifetime_s: int = 3600
    resource_lifetime_s: int = 30 * DAY           # Gluu umaResourceLifetime (Janssen: 20 days)
    # Keycloak >= 26.6.2: introspection answers active only when the caller is in the token's aud.
    introspection_requires_aud: bool = True
    # Janssen FeatureFlagType.UMA; off in a fresh Janssen (403 access_denied on every UMA endpoint).
    uma_feature_enabled: bool = True
    client_scopes: list[str] = field(default_factory=lambda: list(KEYCLOAK_CLIENT_SCOPES))
    dcr_allowed_scopes: list[str] = field(default_factory=lambda: list(DCR_ALLOWED_SCOPES))
    registration_trusted_hosts: list[str] = field(default_factory=list)  # Keycloak "Trusted Hosts"
    error_reason_enabled: bool = False            # Gluu errorReasonEnabled
    restrict_resource_to_associated_client: bool = False  # Gluu umaRestrictResourceToAssociatedClient
    keep_expired_permissions: bool = False        # lenient: Gluu drops expired RPT permissions
    uma_validate_claim_token: bool = False        # Gluu umaValidateClaimToken (templates: false)
    # Gluu openidScopeBackwardCompatibility: an ID token from the password grant. Lenient, devas
    # only: the CE and Jans setups write false (then only a login through /authorize gives one).
    openid_scope_backward_compatibility: bool = True
    owner_has_access: bool = True                 # the seed realm's owner policy (see README)

    @classmethod
    def for_profile(cls, profile: str, seed: dict[str, Any]) -> "Settings":
        settings = cls()
        if profile == "janssen":
            settings.resource_lifetime_s = 20 * DAY
            settings.uma_feature_enabled = False
        settings.update({f.name: seed[f.name] for f in fields(cls) if f.name in seed})
        return settings

    def update(self, values: dict[str, Any]) -> None:
        """Raises ValueError naming the key that is unknown or of the wrong type."""
        known = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            current = known[name]
            if isinstance(current, list):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{name} must be a list of strings")
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be bool")
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be int")
        for name, value in values.items():
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Client:
    client_id: str
    client_secret: str | None                 # None: a public client
    id: str = ""                              # Keycloak's internal id
    resource_server: bool = False             # Keycloak: authorization services on (role uma_protection)
    scopes: frozenset[str] = frozenset()      # Gluu: the client's registered scopes
    grant_types: tuple[str, ...] = ()         # Gluu: the client's grant types
    service_accounts_enabled: bool = True     # Keycloak
    bearer_only: bool = False                 # Keycloak
    direct_access_grants: bool = True         # Keycloak: password grant allowed
    client_scopes: tuple[str, ...] | None = None  # Keycloak: its client scopes (None: all the realm's)
    introspection_without_aud_check: bool = False  # Keycloak client attribute
    rpt_as_jwt: bool = False                  # Gluu
    access_token_signing_alg: str = "RS256"   # Gluu: the alg of its JWT RPTs
    access_token_as_jwt: bool = True          # Gluu accessTokenAsJwt (the real default is false: see README)
    dynamic: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = self.id or internal_client_id(self.client_id)

    @property
    def public(self) -> bool:
        return self.client_secret is None


@dataclass
class User:
    sub: str
    username: str
    password: str
    is_operator: bool = False
    roles: tuple[str, ...] = ()     # Keycloak realm roles (beyond the realm's default roles)
    groups: tuple[str, ...] = ()    # Keycloak group paths, e.g. "/staff/ops"

    def claims(self) -> dict[str, Any]:
        return {"sub": self.sub, "preferred_username": self.username, "isOperator": self.is_operator}


@dataclass
class Resource:
    id: str
    name: str
    client_id: str            # the resource server that registered it
    owner: str | None         # Keycloak: a user's sub or the RS's internal id; Gluu: seed only
    scopes: list[str]
    uris: list[str] = field(default_factory=list)
    type: str | None = None
    icon_uri: str | None = None
    description: str | None = None
    scope_expression: str | None = None
    display_name: str | None = None
    owner_managed_access: bool = False
    attributes: dict[str, list[str]] = field(default_factory=dict)
    iat: int = 0
    exp: int | None = None    # Gluu resources expire; None = never

    def alive(self, at: int) -> bool:
        return self.exp is None or self.exp > at


@dataclass
class UmaPolicy:
    """A Keycloak user-managed permission (type "uma", UMAPolicyProviderFactory): an owner's
    policy on one of their resources. `clauses` are its associated policies, each
    (kind, values): kind `users` (user ids), `clients` (internal client ids), `roles`, `groups`
    (paths) or `condition` (a script policy type); combined by `decision_strategy`."""
    id: str
    name: str
    client_id: str                    # the resource server
    owner: str                        # KeycloakIdentity.getId() of the creator
    resources: list[str]
    scopes: list[str]
    clauses: list[tuple[str, list[str]]]
    description: str | None = None
    logic: str = "POSITIVE"
    decision_strategy: str = "UNANIMOUS"


@dataclass
class Grant:
    sub: str
    resource_id: str
    scopes: list[str]


@dataclass
class Permission:
    resource_id: str | None   # Keycloak: None for a scopes-only permission
    scopes: list[str]
    params: dict[str, Any] | None = None   # Gluu
    exp: int | None = None                 # Gluu: the permission's (ticket's) expiry


@dataclass
class Ticket:
    id: str
    client_id: str
    permissions: list[Permission]
    exp: int
    pct: str | None = None


@dataclass
class TokenRecord:
    kind: str                  # "pat" | "user" | "rpt"
    key: str                   # the opaque token itself, or the JWT's jti
    jwt: bool
    client_id: str
    sub: str | None
    iat: int
    exp: int
    nbf: int | None = None
    scopes: frozenset[str] = frozenset()
    active: bool = True
    username: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)       # the JWT payload (also for opaque)
    extra: dict[str, Any] = field(default_factory=dict)        # test-supplied extra claims
    # RPT only: [{"resource_id","resource_name","resource_scopes", optional "exp","nbf","iat","params"}]
    permissions: list[dict[str, Any]] = field(default_factory=list)
    audience: list[str] = field(default_factory=list)
    pct: str | None = None     # Gluu: the PCT whose claims the RPT carries
    token: str | None = None   # the token as issued (Gluu looks a JWT RPT up by its whole text)

    def live(self, at: int) -> bool:
        return self.active and self.exp > at and (self.nbf is None or self.nbf <= at)


@dataclass
class Party:
    """The requesting party of a UMA grant: a user, or a client's service account."""
    sub: str | None
    username: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)   # the claim token's claims
    client_id: str | None = None   # the client the identity token was issued to (azp)


@dataclass
class InitialAccessToken:
    """Keycloak's ClientInitialAccessModel: a remaining use count and an optional expiration."""
    id: str
    token: str
    count: int
    expiration_s: int = 0
    timestamp: int = 0


def _owner_of(raw: Any) -> str | None:
    return raw.get("id") if isinstance(raw, dict) else raw


class Store:
    PURGE_EVERY = 1000

    def __init__(self, seed: dict[str, Any], profile: str, resources_expire: bool):
        self.seed = seed
        self.profile = profile
        self.resources_expire = resources_expire  # Gluu resources carry iat/exp; Keycloak's do not
        self.reset()

    def reset(self, forget_sessions: bool = False) -> None:
        """Re-applies the seed and drops tickets, RPTs and runtime registrations. PATs and user
        tokens of clients that still exist survive (a PEP under test keeps its PAT across test
        cases) unless `forget_sessions`, which forgets every token as a restarted AS would."""
        kept = {} if forget_sessions else {k: t for k, t in getattr(self, "tokens", {}).items()
                                           if t.kind in SESSION_KINDS}
        self._apply_seed()
        self.tokens.update({k: t for k, t in kept.items() if t.client_id in self.clients})

    def _apply_seed(self) -> None:
        seed = self.seed
        self.settings = Settings.for_profile(self.profile, seed)
        self.clients = {c["client_id"]: client_from_seed(c) for c in seed.get("clients", [])}
        self.users = {u["sub"]: User(sub=u["sub"], username=u["username"], password=u["password"],
                                     is_operator=bool(u.get("isOperator", False)),
                                     roles=tuple(u.get("roles", ())), groups=tuple(u.get("groups", ())))
                      for u in seed.get("users", [])}
        self.default_rs = next(iter(self.clients), "pep-client")
        at = now()
        self.resources: dict[str, Resource] = {}
        for r in seed.get("resources", []):
            rs = r.get("client_id", self.default_rs)
            owner = _owner_of(r.get("owner"))
            if owner in self.clients:
                owner = self.clients[owner].id
            self.resources[r["_id"]] = Resource(
                id=r["_id"], name=r.get("name", r["_id"]), client_id=rs, owner=owner,
                scopes=list(r.get("resource_scopes", [])), uris=list(r.get("uris", [])), type=r.get("type"),
                icon_uri=r.get("icon_uri"), description=r.get("description"), iat=at,
                exp=self.resource_exp(at, r.get("exp_in")))
        self.grants = [Grant(g["sub"], g["resource_id"], list(g.get("scopes", [])))
                       for g in seed.get("grants", [])]
        self.initial_access_tokens = {t.id: t for t in map(initial_access_token_from_seed,
                                                            seed.get("initial_access_tokens", []))}
        # Gluu: every scope id in the scopes branch (OAuth scopes and auto-added UMA scopes).
        self.known_scopes: set[str] = set(DCR_ALLOWED_SCOPES) | {"profile", "email"}
        self.known_scopes.update(s for r in self.resources.values() for s in r.scopes)
        self.uma_policies: dict[str, UmaPolicy] = {}   # Keycloak user-managed permissions
        self.tickets: dict[str, Ticket] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.pcts: dict[str, Party] = {}
        self.counters: dict[str, int] = {}

    # ---- counters -----------------------------------------------------------------------
    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---- clients and users ------------------------------------------------------------------
    def authenticate_client(self, client_id: str, secret: str | None) -> Client | None:
        client = self.clients.get(client_id)
        if client is None:
            return None
        return client if client.public or secret == client.client_secret else None

    def client_by_internal_id(self, internal: str) -> Client | None:
        return next((c for c in self.clients.values() if c.id == internal), None)

    def check_password(self, username: str | None, password: str | None) -> User | None:
        for user in self.users.values():
            if user.username == username and user.password == password:
                return user
        return None

    def find_user(self, ref: str) -> User | None:
        """A user by id (sub) or by username (Keycloak accepts either as a resource owner)."""
        return self.users.get(ref) or next((u for u in self.users.values() if u.username == ref), None)

    # ---- resources ----------------------------------------------------------------------
    def resource_exp(self, at: int, exp_in: int | None = None) -> int | None:
        if not self.resources_expire:
            return None
        return at + (self.settings.resource_lifetime_s if exp_in is None else exp_in)

    def live_resources(self, client_id: str | None = None) -> list[Resource]:
        """Resources not expired (expired ones are dropped: Gluu resources disappear)."""
        at = now()
        for rid in [rid for rid, r in self.resources.items() if not r.alive(at)]:
            del self.resources[rid]
        return [r for r in self.resources.values() if client_id is None or r.client_id == client_id]

    def resource(self, rid: str | None, client_id: str | None = None) -> Resource | None:
        return next((r for r in self.live_resources(client_id) if r.id == rid), None)

    # ---- policy -------------------------------------------------------------------------
    def allowed_scopes(self, sub: str | None, resource: Resource, identity_id: str | None = None) -> set[str] | None:
        """The scopes `sub` may use on `resource` under the seed's policy: all of them for the owner
        (`sub`, or the identity's id: a Keycloak RS's service account owns the RS's resources) while
        `owner_has_access`, else the union of the matching grant rows (sub or "*"); None when the
        party has no relation to the resource."""
        if sub is None:
            return None
        # A resource without an owner (every Gluu resource registered through its API) is owned by
        # nobody: a party with no id of its own must not pass for its owner.
        owned = resource.owner is not None and resource.owner in (sub, identity_id)
        if owned and self.settings.owner_has_access:
            return set(resource.scopes)
        rows = [g for g in self.grants if g.resource_id == resource.id and g.sub in (sub, ANY_USER)]
        if not rows:
            return None
        return {s for g in rows for s in g.scopes} & set(resource.scopes)

    # ---- tokens and tickets -------------------------------------------------------------
    def add_token(self, record: TokenRecord) -> None:
        self.tokens[record.key] = record
        if len(self.tokens) % self.PURGE_EVERY == 0:  # keeps a long `make run` bounded
            at = now()
            self.tokens = {k: t for k, t in self.tokens.items() if t.exp > at - 3600}

    def add_ticket(self, ticket: Ticket) -> None:
        self.tickets[ticket.id] = ticket
        if len(self.tickets) % self.PURGE_EVERY == 0:
            at = now()
            self.tickets = {k: t for k, t in self.tickets.items() if t.exp > at}


def client_from_seed(c: dict[str, Any]) -> Client:
    """A seed client. `uma_protection` (default true) makes it a Keycloak resource server and adds
    the scope to its Gluu registered scopes; `scopes` overrides those (default openid, profile)."""
    rs = bool(c.get("uma_protection", True))
    scopes = c.get("scopes")
    if scopes is None:
        scopes = ["openid", "profile"] + ([UMA_PROTECTION] if rs else [])
    client_scopes = c.get("client_scopes")
    return Client(
        client_id=c["client_id"], client_secret=None if c.get("public_client") else c.get("client_secret"),
        resource_server=rs, scopes=frozenset(scopes),
        grant_types=tuple(c.get("grant_types", ("authorization_code", "client_credentials", "password",
                                                 "urn:ietf:params:oauth:grant-type:uma-ticket"))),
        service_accounts_enabled=bool(c.get("service_accounts_enabled", True)),
        bearer_only=bool(c.get("bearer_only", False)),
        direct_access_grants=bool(c.get("direct_access_grants_enabled", True)),
        client_scopes=tuple(client_scopes) if client_scopes is not None else None,
        introspection_without_aud_check=bool(c.get("allow_introspection_without_audience_check", False)),
        rpt_as_jwt=bool(c.get("rpt_as_jwt", False)),
        access_token_signing_alg=c.get("access_token_signing_alg", "RS256"),
        access_token_as_jwt=bool(c.get("access_token_as_jwt", True)))


def initial_access_token_from_seed(raw: Any) -> InitialAccessToken:
    """`"token"` (one use) or `{"token", "count"?: 1, "expiration_s"?: 0}`."""
    spec = {"token": raw} if isinstance(raw, str) else dict(raw)
    return InitialAccessToken(id=spec["token"], token=spec["token"], count=int(spec.get("count", 1)),
                              expiration_s=int(spec.get("expiration_s", 0)), timestamp=now())
