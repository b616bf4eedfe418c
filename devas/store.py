"""In-memory state of the development AS (development/test fixture, NOT for production):
settings, clients, users, resources, grants, permission tickets, issued tokens, and the
access policy. Everything here is dialect-neutral; dialects.py decides how it looks on the wire.

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


def now() -> int:
    return int(time.time())


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Settings:
    """Lifetimes and knobs; seed keys of the same name, changeable with POST /_devas/config."""
    pat_lifetime_s: int = 300
    rpt_lifetime_s: int = 300
    ticket_lifetime_s: int = 300
    user_token_lifetime_s: int = 3600
    resource_lifetime_s: int = 30 * 24 * 3600
    # Keycloak >= 26.6.2: introspection answers active only when the caller is in the token's aud.
    introspection_requires_aud: bool = False

    @classmethod
    def from_seed(cls, seed: dict[str, Any]) -> "Settings":
        settings = cls()
        settings.update({f.name: seed[f.name] for f in fields(cls) if f.name in seed})
        return settings

    def update(self, values: dict[str, Any]) -> None:
        """Raises ValueError naming the key that is unknown or of the wrong type."""
        known = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            wanted = bool if known[name] in ("bool", bool) else int
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be {wanted.__name__}")
        for name, value in values.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Client:
    client_id: str
    client_secret: str
    uma_protection: bool = True  # may hold a PAT (Keycloak role / Gluu allowed scope)
    rpt_as_jwt: bool = False     # uma2 profile: RPTs for this client are JWTs
    dynamic: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class User:
    sub: str
    username: str
    password: str
    is_operator: bool = False

    def claims(self) -> dict[str, Any]:
        return {"sub": self.sub, "preferred_username": self.username, "isOperator": self.is_operator}


@dataclass
class Resource:
    id: str
    name: str
    client_id: str            # the resource server that registered it
    owner: str | None         # a user's sub, or the resource server's client id
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
    exp: int | None = None    # uma2 resources expire; None = never

    def alive(self, at: int) -> bool:
        return self.exp is None or self.exp > at


@dataclass
class Grant:
    sub: str
    resource_id: str
    scopes: list[str]


@dataclass
class Permission:
    resource_id: str
    scopes: list[str]


@dataclass
class Ticket:
    id: str
    client_id: str
    permissions: list[Permission]
    exp: int


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
    # RPT only: [{"resource_id","resource_name","resource_scopes", optional "exp","nbf","iat"}]
    permissions: list[dict[str, Any]] = field(default_factory=list)
    audience: list[str] = field(default_factory=list)
    pct_claims: dict[str, Any] = field(default_factory=dict)

    def live(self, at: int) -> bool:
        return self.active and self.exp > at and (self.nbf is None or self.nbf <= at)


@dataclass
class Party:
    """The requesting party of a UMA grant."""
    sub: str
    username: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)


def _owner_of(raw: Any) -> str | None:
    return raw.get("id") if isinstance(raw, dict) else raw


class Store:
    PURGE_EVERY = 1000

    def __init__(self, seed: dict[str, Any], resources_expire: bool):
        self.seed = seed
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
        self.settings = Settings.from_seed(seed)
        self.clients = {c["client_id"]: Client(
            client_id=c["client_id"], client_secret=c["client_secret"],
            uma_protection=c.get("uma_protection", True), rpt_as_jwt=c.get("rpt_as_jwt", False))
            for c in seed.get("clients", [])}
        self.users = {u["sub"]: User(sub=u["sub"], username=u["username"], password=u["password"],
                                     is_operator=bool(u.get("isOperator", False)))
                      for u in seed.get("users", [])}
        default_rs = next(iter(self.clients), "pep-client")
        self.default_rs = default_rs
        at = now()
        self.resources: dict[str, Resource] = {}
        for r in seed.get("resources", []):
            self.resources[r["_id"]] = Resource(
                id=r["_id"], name=r.get("name", r["_id"]), client_id=r.get("client_id", default_rs),
                owner=_owner_of(r.get("owner")), scopes=list(r.get("resource_scopes", [])),
                uris=list(r.get("uris", [])), type=r.get("type"), icon_uri=r.get("icon_uri"),
                description=r.get("description"), iat=at, exp=self.resource_exp(at, r.get("exp_in")))
        self.grants = [Grant(g["sub"], g["resource_id"], list(g.get("scopes", [])))
                       for g in seed.get("grants", [])]
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
        return client if client is not None and secret == client.client_secret else None

    def check_password(self, username: str | None, password: str | None) -> User | None:
        for user in self.users.values():
            if user.username == username and user.password == password:
                return user
        return None

    def find_user(self, ref: str) -> User | None:
        """A user by sub or by username (Keycloak accepts either as a resource owner)."""
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

    def resource(self, rid: str, client_id: str | None = None, by_name: bool = False) -> Resource | None:
        for r in self.live_resources(client_id):
            if r.id == rid:
                return r
        if by_name:
            return next((r for r in self.live_resources(client_id) if r.name == rid), None)
        return None

    # ---- policy -------------------------------------------------------------------------
    def allowed_scopes(self, sub: str, resource: Resource) -> set[str] | None:
        """The scopes `sub` may use on `resource`: all of them for the owner, else the union of the
        matching grant rows (sub or "*"); None when the party has no relation to the resource."""
        if resource.owner == sub:
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
