"""Keycloak's user-managed permissions in the development AS (development/test fixture, NOT for
production): the Policy API advertised as `policy_endpoint`
(`/realms/{realm}/authz/protection/uma-policy`), and how its policies take part in the UMA grant.

Sources (keycloak/keycloak): services/.../authorization/protection/policy/UserManagedPermissionService
(create, update, delete, findById, find, checkRequest, getPolicy), .../admin/PolicyService (create:
name conflict; findAll: filters, 204 when a resource or scope filter matches nothing),
.../admin/PolicyResourceService (update answers 201, delete 204), authz/policy/common/.../permission/
UMAPolicyProviderFactory (one associated policy per role, group, client and user on create; one
per kind after an update; the representation), UMAPolicyProvider (the owner is granted),
AbstractPermissionProvider, user/UserPolicyProviderFactory (users by id or username; unknown ->
RuntimeException -> 500), server-spi-private/.../evaluation/AbstractDecisionCollector.isGranted
(UNANIMOUS, AFFIRMATIVE, CONSENSUS over the associated policies), DecisionPermissionCollector
(a granted "uma" policy on an ownerManagedAccess resource grants its scopes, within the
requested ones). core/.../UmaPermissionRepresentation, AbstractPolicyRepresentation (defaults
POSITIVE, UNANIMOUS).

A mixin of `keycloak.Keycloak`, which provides `identity`, `identity_id`, `error`, `mismatch`,
`check_fields`, `body_json`, `server_error`, `parse_string_set`, `string_field`, `rs_scopes`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from devas.dialects import Route, compact
from devas.httpcore import BadRequestBody, HttpError, Request, Response, empty_response, json_response
from devas.store import Client, Party, Resource, UmaPolicy, new_id

UMA_PERMISSION_CLASS = "org.keycloak.representations.idm.authorization.UmaPermissionRepresentation"
UMA_PERMISSION_FIELDS = {"id", "name", "description", "type", "policies", "resources", "scopes", "logic",
                         "decisionStrategy", "owner", "resourceType", "resourcesData", "scopesData", "roles",
                         "groups", "clients", "users", "condition"}
SET_FIELDS = ("policies", "resources", "scopes", "roles", "groups", "clients", "users")
KINDS = ("roles", "groups", "clients", "users")       # UMAPolicyProviderFactory.onCreate order
CONDITION = "condition"
DEFAULT_POLICY_SCRIPT = "script-scripts/default-policy.js"   # the deployed "grant" script
ENUMS = {"logic": ("org.keycloak.representations.idm.authorization.Logic", ("POSITIVE", "NEGATIVE")),
         "decisionStrategy": ("org.keycloak.representations.idm.authorization.DecisionStrategy",
                              ("UNANIMOUS", "AFFIRMATIVE", "CONSENSUS"))}
DEFAULT_MAX_RESULTS = 100
# Every Keycloak user holds the realm's default role, a composite of these two.
DEFAULT_REALM_ROLES = ("offline_access", "uma_authorization")


def scope_id(rs: str, name: str) -> str:
    """Keycloak scopes have ids per resource server; a name-derived UUID keeps them stable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"devas-scope:{rs}:{name}"))


class KeycloakUserManagedPermissions:
    """The Policy API and the evaluation of its policies; mixed into keycloak.Keycloak."""

    def policy_routes(self) -> list[Route]:
        base = re.escape(self.path("policy"))
        return [
            Route("policy", re.compile(base + "/?"), {"GET": self.find_policies}),
            Route("policy", re.compile(base + "/(?P<ref>[^/]+)"),
                  {"POST": self.create_policy, "GET": self.read_policy, "PUT": self.update_policy,
                   "DELETE": self.delete_policy}),
        ]

    # ---- the representation --------------------------------------------------------------------
    def parse_uma_permission(self, body: Any) -> dict[str, Any]:
        """An UmaPermissionRepresentation as Jackson reads it: unknown fields and wrong types
        refused (400 `Unrecognized field` / `Cannot deserialize`)."""
        if not isinstance(body, dict):
            raise self.mismatch(UMA_PERMISSION_CLASS, body)
        self.check_fields(body, UMA_PERMISSION_FIELDS, UMA_PERMISSION_CLASS)
        rep: dict[str, Any] = {}
        for name, value in body.items():
            if value is None:
                continue
            if name in SET_FIELDS:
                rep[name] = self.parse_string_set(value)
            elif name in ENUMS:
                java_type, allowed = ENUMS[name]
                if value not in allowed:
                    raise self.jackson_error(f"Cannot deserialize value of type `{java_type}` from String "
                                             f"\"{value}\": not one of the values accepted for Enum class: "
                                             f"[{', '.join(allowed)}]")
                rep[name] = value
            elif name in ("resourcesData", "scopesData"):
                if not isinstance(value, list):
                    raise self.mismatch("java.util.Set", value)
            else:
                rep[name] = self.string_field(body, name)
        return rep

    def render_policy(self, policy: UmaPolicy) -> dict[str, Any]:
        """UMAPolicyProviderFactory.toRepresentation + ModelToRepresentation: users by username,
        clients by clientId, groups by path; absent kinds are left out (NON_NULL)."""
        kinds: dict[str, list[str]] = {}
        condition = None
        for kind, values in policy.clauses:
            if kind == CONDITION:
                condition = values[0]
                continue
            shown = kinds.setdefault(kind, [])
            for value in values:
                if kind == "users":
                    user = self.store.users.get(value)
                    value = user.username if user else value
                elif kind == "clients":
                    client = self.store.client_by_internal_id(value)
                    value = client.client_id if client else value
                if value not in shown:
                    shown.append(value)
        return compact({"id": policy.id, "name": policy.name, "description": policy.description, "type": "uma",
                        "logic": policy.logic, "decisionStrategy": policy.decision_strategy,
                        "owner": policy.owner, "scopes": list(policy.scopes),
                        **{k: kinds[k] for k in KINDS if k in kinds}, "condition": condition})

    # ---- checks (UserManagedPermissionService.checkRequest, getPolicy) --------------------------
    def check_policy_request(self, rs: Client, ident: str | None, rid: str,
                             rep: dict[str, Any] | None) -> Resource:
        res = self.store.resource(rid, rs.client_id)
        if res is None:
            raise self.error(400, "invalid_request", f"Resource [{rid}] cannot be found")
        if res.owner != ident:
            raise self.error(400, "invalid_request", f"Only resource owner can access policies for resource [{rid}]")
        if not res.owner_managed_access:
            raise self.error(400, "invalid_request", "Only resources with owner managed accessed can have policies")
        if rep is not None:
            scopes = rep.get("scopes") or list(res.scopes)
            if any(s not in res.scopes for s in scopes):
                raise self.error(400, "invalid_request",
                                 f"Some of the scopes [{', '.join(scopes)}] are not valid for resource [{rid}]")
        return res

    def stored_policy(self, rs: Client, pid: str) -> UmaPolicy:
        policy = self.store.uma_policies.get(pid)
        if policy is None or policy.client_id != rs.client_id:
            raise self.error(404, "invalid_request", f"Policy with [{pid}] does not exist")
        return policy

    def policy_identity(self, req: Request) -> tuple[Client, str | None]:
        """ProtectionService.policy: createIdentity(false), no uma_protection role needed."""
        rec, rs = self.identity(req, check_protection_scope=False)
        return rs, self.identity_id(rec.sub, rs)

    # ---- members of the associated policies ------------------------------------------------------
    def realm_roles(self) -> set[str]:
        return {f"default-roles-{self.realm}", *DEFAULT_REALM_ROLES,
                *(r for u in self.store.users.values() for r in u.roles)}

    def realm_groups(self) -> set[str]:
        paths = set()
        for user in self.store.users.values():
            for path in user.groups:
                parts = path.strip("/").split("/")
                paths.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return paths

    def member_id(self, kind: str, ref: str) -> str:
        """What an associated policy stores for `ref`; an unknown one makes the policy provider
        throw (RuntimeException "... could not be found." -> 500)."""
        found: str | None = None
        if kind == "users":
            user = self.store.find_user(ref)
            found = user.sub if user else None
        elif kind == "clients":
            client = self.store.clients.get(ref) or self.store.client_by_internal_id(ref)
            found = client.id if client else None
        elif kind == "roles":
            client_id, _, role = ref.partition("/")
            client = self.store.clients.get(client_id) if role else None
            known = (client is not None and client.resource_server and role == "uma_protection") \
                or ref in self.realm_roles()
            found = ref if known else None
        elif kind == "groups":
            found = ref if ref in self.realm_groups() else None
        elif kind == CONDITION:
            found = ref if ref == DEFAULT_POLICY_SCRIPT else None
        if found is None:
            raise self.server_error()
        return found

    def new_clauses(self, rep: dict[str, Any]) -> list[tuple[str, list[str]]]:
        """UMAPolicyProviderFactory.onCreate: one associated policy per listed value."""
        clauses = [(kind, [self.member_id(kind, v)]) for kind in KINDS for v in rep.get(kind, [])]
        if rep.get(CONDITION) is not None:
            clauses.append((CONDITION, [self.member_id(CONDITION, rep[CONDITION])]))
        return clauses

    def updated_clauses(self, policy: UmaPolicy, rep: dict[str, Any]) -> list[tuple[str, list[str]]]:
        """UMAPolicyProviderFactory.onUpdate: an existing associated policy of a kind takes all the
        values now listed (none listed: it is deleted); a kind that had none gets one per value."""
        clauses: list[tuple[str, list[str]]] = []
        had = {kind for kind, _ in policy.clauses}
        for kind, _ in policy.clauses:
            if kind == CONDITION:
                if rep.get(CONDITION) is not None:
                    clauses.append((CONDITION, [self.member_id(CONDITION, rep[CONDITION])]))
            elif rep.get(kind):
                clauses.append((kind, [self.member_id(kind, v) for v in rep[kind]]))
        for kind in KINDS:
            if kind not in had:
                clauses.extend((kind, [self.member_id(kind, v)]) for v in rep.get(kind, []))
        if CONDITION not in had and rep.get(CONDITION) is not None:
            clauses.append((CONDITION, [self.member_id(CONDITION, rep[CONDITION])]))
        return clauses

    # ---- the API ---------------------------------------------------------------------------------
    def create_policy(self, req: Request, ref: str) -> Response:
        """POST /uma-policy/{resource_id} -> 200 with the stored policy (findById)."""
        rs, ident = self.policy_identity(req)
        body = self.body_json(req)
        rep = self.parse_uma_permission(body)
        if rep.get("id") is not None:
            raise self.error(400, "invalid_request", "Newly created uma policies should not have an id")
        res = self.check_policy_request(rs, ident, ref, rep)
        resources = [res.id] + [r for r in rep.get("resources", []) if r != res.id]
        for other in resources[1:]:
            self.check_policy_request(rs, ident, other, None)
        name = rep.get("name")
        if any(p.name == name and p.client_id == rs.client_id for p in self.store.uma_policies.values()):
            raise self.error(409, f"Policy with name [{name}] already exists", "Conflicting policy")
        if name is None:
            raise self.server_error()   # the model refuses a policy without a name
        policy = UmaPolicy(id=new_id(), name=name, client_id=rs.client_id, owner=ident or "", resources=resources,
                           scopes=rep.get("scopes") or list(res.scopes), clauses=self.new_clauses(rep),
                           description=rep.get("description"), logic=rep.get("logic", "POSITIVE"),
                           decision_strategy=rep.get("decisionStrategy", "UNANIMOUS"))
        self.store.uma_policies[policy.id] = policy
        return json_response(200, self.render_policy(policy))

    def read_policy(self, req: Request, ref: str) -> Response:
        rs, ident = self.policy_identity(req)
        policy = self.stored_policy(rs, ref)
        self.check_policy_request(rs, ident, policy.resources[0], None)
        return json_response(200, self.render_policy(policy))

    def update_policy(self, req: Request, ref: str) -> Response:
        """PUT /uma-policy/{policy_id}: the body read with JsonSerialization (any failure: 400
        invalid_request "Failed to parse representation"), checked against the policy's resource,
        applied by PolicyResourceService.update: 201 with no body."""
        rs, ident = self.policy_identity(req)
        try:
            rep = self.parse_uma_permission(req.json())
        except (BadRequestBody, HttpError):
            raise self.error(400, "invalid_request", "Failed to parse representation") from None
        policy = self.stored_policy(rs, ref)
        self.check_policy_request(rs, ident, policy.resources[0], rep)
        if rep.get("resources") and set(rep["resources"]) != set(policy.resources):
            raise self.error(400, "invalid_request", "Uma permission resources can not be changed")
        if rep.get("name") is None:
            raise self.server_error()
        clauses = self.updated_clauses(policy, rep)
        policy.name, policy.description = rep["name"], rep.get("description")
        policy.logic = rep.get("logic", "POSITIVE")
        policy.decision_strategy = rep.get("decisionStrategy", "UNANIMOUS")
        if rep.get("scopes"):
            policy.scopes = list(rep["scopes"])
        policy.clauses = clauses
        if not clauses:   # the last associated policy went: so does the permission
            del self.store.uma_policies[policy.id]
            return empty_response(404)
        return empty_response(201)

    def delete_policy(self, req: Request, ref: str) -> Response:
        rs, ident = self.policy_identity(req)
        policy = self.stored_policy(rs, ref)
        self.check_policy_request(rs, ident, policy.resources[0], None)
        del self.store.uma_policies[policy.id]
        return empty_response(204)

    def find_policies(self, req: Request) -> Response:
        """GET /uma-policy: the caller's own uma policies (owner = the identity), by name
        (case-insensitive substring), resource (id, else the first resource whose name contains
        it) and scope (id, else the first scope whose name contains it), sorted by name; first/max
        (default 100). A resource or scope filter that finds nothing answers 204."""
        rs, ident = self.policy_identity(req)
        q = req.query1
        name, resource, scope = q("name"), q("resource"), q("scope")
        try:
            first = int(q("first") or 0)
            limit = int(q("max")) if q("max") else DEFAULT_MAX_RESULTS
        except ValueError:
            raise self.error(400, "invalid_request", "first and max must be integers.") from None
        found = sorted((p for p in self.store.uma_policies.values() if p.client_id == rs.client_id
                        and p.owner == ident), key=lambda p: p.name)
        if name and name.strip():
            found = [p for p in found if name.lower() in p.name.lower()]
        if resource and resource.strip():
            rid = self.first_match_resource(rs, ident, resource)
            if rid is None:
                return empty_response(204)
            found = [p for p in found if rid in p.resources]
        if scope and scope.strip():
            scope_name = self.first_match_scope(rs, scope)
            if scope_name is None:
                return empty_response(204)
            found = [p for p in found if scope_name in p.scopes]
        found = found[max(first, 0):max(first, 0) + limit if limit >= 0 else None]
        return json_response(200, [self.render_policy(p) for p in found])

    def first_match_resource(self, rs: Client, owner: str | None, ref: str) -> str | None:
        if self.store.resource(ref, rs.client_id) is not None:
            return ref
        named = sorted((r for r in self.store.live_resources(rs.client_id)
                        if ref.lower() in r.name.lower() and r.owner == owner), key=lambda r: r.name)
        return named[0].id if named else None

    def first_match_scope(self, rs: Client, ref: str) -> str | None:
        names = sorted(self.rs_scopes(rs))
        by_id = next((s for s in names if scope_id(rs.client_id, s) == ref), None)
        return by_id or next((s for s in names if ref.lower() in s.lower()), None)

    def forget_resource_policies(self, rid: str) -> None:
        """A deleted resource takes the user-managed permissions that named only it along."""
        for policy in list(self.store.uma_policies.values()):
            if rid in policy.resources:
                policy.resources.remove(rid)
                if not policy.resources:
                    del self.store.uma_policies[policy.id]

    # ---- evaluation --------------------------------------------------------------------------------
    def identity_roles(self, party: Party) -> set[str]:
        user = self.store.users.get(party.sub or "")
        roles = {f"default-roles-{self.realm}", *DEFAULT_REALM_ROLES, *(user.roles if user else ())}
        account = (party.sub or "").removeprefix("service-account-")
        client = self.store.clients.get(account) if party.sub != account else None
        if client is not None and client.resource_server:
            roles.add(f"{client.client_id}/uma_protection")
        return roles

    def clause_grants(self, kind: str, values: list[str], party: Party) -> bool:
        """The associated policy's provider: user (the identity's id), client (the client the
        identity's token was issued to), role, group (member of the path), the default script."""
        if kind == "users":
            return party.sub in values
        if kind == "clients":
            client = self.store.clients.get(party.client_id or "")
            return client is not None and client.id in values
        if kind == "roles":
            return bool(self.identity_roles(party) & set(values))
        if kind == "groups":
            user = self.store.users.get(party.sub or "")
            return user is not None and bool(set(user.groups) & set(values))
        return kind == CONDITION and values == [DEFAULT_POLICY_SCRIPT]

    def policy_grants(self, policy: UmaPolicy, party: Party, ident: str | None, res: Resource) -> bool:
        """UMAPolicyProvider (the owner: granted with no associated results), else
        AbstractDecisionCollector.isGranted over the associated policies' effects."""
        if res.owner == ident:
            effects: list[bool] = []
        else:
            effects = [self.clause_grants(kind, values, party) for kind, values in policy.clauses]
            if not effects:
                return False   # no associated policy: no decision at all
        if policy.decision_strategy == "AFFIRMATIVE":
            return any(effects)
        if policy.decision_strategy == "CONSENSUS":
            return sum(effects) > len(effects) - sum(effects)
        return all(effects)

    def user_managed_scopes(self, party: Party, ident: str | None, res: Resource) -> set[str]:
        """DecisionPermissionCollector: a granted "uma" policy on an ownerManagedAccess resource
        grants its own scopes (the evaluation then keeps those requested)."""
        if not res.owner_managed_access:
            return set()
        granted: set[str] = set()
        for policy in self.store.uma_policies.values():
            if res.id in policy.resources and policy.client_id == res.client_id \
                    and self.policy_grants(policy, party, ident, res):
                granted.update(s for s in policy.scopes if s in res.scopes)
        return granted
