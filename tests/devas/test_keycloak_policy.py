"""devas's Keycloak dialect (a development/test fixture, NOT for production): user-managed
permissions (the Policy API at `policy_endpoint`), the ticketless grant that evaluates every
permission, and the password login's answer. One test per refusal and per wire fact of
devas/README.md's conformance table (sources: keycloak/keycloak)."""

from __future__ import annotations

import jwt
import pytest
import requests
from devas_client import APP, PASSWORDS, PEP, T, UMA_GRANT, bearer, claims_of, get_pat, rs, user_tokens

from devas import server


@pytest.fixture(scope="module")
def kc_realm():
    """A realm whose users have roles and groups, for role and group user-managed permissions."""
    seed = {"users": [
        {"sub": "carol-0004", "username": "carol", "password": "carol-pw", "roles": ["auditor"],
         "groups": ["/staff/ops"]},
        {"sub": "dave-0005", "username": "dave", "password": "dave-pw", "groups": ["/staff"]}]}
    handle = server.start("keycloak", port=0, seed=seed)
    yield handle
    handle.stop()


@pytest.fixture
def realm(kc_realm):
    kc_realm.app.reset()
    return kc_realm


def policy_url(as_, ref: str = "") -> str:
    return as_.endpoint("policy") + (f"/{ref}" if ref else "")


def login(as_, user: str, password: str | None = None, client=PEP, scope: str | None = "openid") -> dict:
    data = {"grant_type": "password", "username": user, "password": password or PASSWORDS[user]}
    r = requests.post(as_.endpoint("token"), data=data | ({"scope": scope} if scope else {}), auth=client, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def new_resource(as_, **fields) -> str:
    body = {"name": "album", "resource_scopes": ["view", "edit"], "ownerManagedAccess": True} | fields
    r = requests.post(rs(as_), json=body, headers=bearer(get_pat(as_)), timeout=T)
    assert r.status_code == 201, r.text
    return r.json()["_id"]


def create(as_, rid: str, body: dict, token: str | None = None) -> requests.Response:
    return requests.post(policy_url(as_, rid), json=body, headers=bearer(token or get_pat(as_)), timeout=T)


def decide(as_, token: str, permission: str | None = None, mode: str = "permissions") -> requests.Response:
    data = {"grant_type": UMA_GRANT, "audience": "pep-client", "response_mode": mode}
    return requests.post(as_.endpoint("token"), data=data | ({"permission": permission} if permission else {}),
                         headers=bearer(token), timeout=T)


# ---- the Policy API --------------------------------------------------------------------------------

def test_policy_create_refusals(kc):
    """UserManagedPermissionService.create/checkRequest, PolicyService.create, Jackson."""
    plain = new_resource(kc, name="plain", ownerManagedAccess=False)
    oma = new_resource(kc)
    alices = new_resource(kc, name="alices", owner="alice")
    cases = [
        (oma, {"id": "x", "name": "n"}, 400, "Newly created uma policies should not have an id"),
        ("no-such", {"name": "n"}, 400, "Resource [no-such] cannot be found"),
        (alices, {"name": "n"}, 400, f"Only resource owner can access policies for resource [{alices}]"),
        (plain, {"name": "n"}, 400, "Only resources with owner managed accessed can have policies"),
        (oma, {"name": "n", "scopes": ["view", "zzz"]}, 400, f"Some of the scopes [view, zzz] are not valid for "
                                                              f"resource [{oma}]"),
    ]
    for rid, body, status, description in cases:
        r = create(kc, rid, body)
        assert (r.status_code, r.json()) == (status, {"error": "invalid_request", "error_description": description})
    r = create(kc, oma, {"name": "n", "colour": "red"})
    assert r.status_code == 400 and r.json()["error"].startswith('Unrecognized field "colour" (class '
                                                                  'org.keycloak.representations.idm.authorization.'
                                                                  'UmaPermissionRepresentation)')
    assert create(kc, oma, {"name": "n", "decisionStrategy": "MOST"}).json()["error"].startswith(
        "Cannot deserialize value of type `org.keycloak.representations.idm.authorization.DecisionStrategy`")
    for member in ({"users": ["nobody"]}, {"clients": ["nope"]}, {"roles": ["nope"]}, {"groups": ["/nope"]},
                   {"condition": "$evaluation.grant()"}):
        r = create(kc, oma, {"name": "n"} | member)   # the policy provider throws: RuntimeException
        assert (r.status_code, r.json()["error"]) == (500, "unknown_error"), member
    assert create(kc, oma, {"name": "n", "users": ["bob"]}).status_code == 200
    r = create(kc, oma, {"name": "n", "users": ["bob"]})
    assert (r.status_code, r.json()) == (409, {"error": "Policy with name [n] already exists",
                                               "error_description": "Conflicting policy"})


def test_policy_representation_update_and_delete(kc):
    """create answers findById (200): type uma, POSITIVE/UNANIMOUS, the owner's id, the
    resource's scopes when none were given, users by username, clients by clientId. PUT -> 201
    with no body (PolicyResourceService.update); a body JsonSerialization cannot read -> 400
    "Failed to parse representation". DELETE -> 204, then 404 "Policy with [id] does not exist"."""
    rid = new_resource(kc)
    r = create(kc, rid, {"name": "Friends", "description": "d", "users": ["bob", "alice-0001"],
                         "clients": ["demo-app"]})
    assert r.status_code == 200, r.text
    policy = r.json()
    rs_id = kc.app.store.clients["pep-client"].id
    assert policy == {"id": policy["id"], "name": "Friends", "description": "d", "type": "uma", "logic": "POSITIVE",
                      "decisionStrategy": "UNANIMOUS", "owner": rs_id, "scopes": ["view", "edit"],
                      "clients": ["demo-app"], "users": ["bob", "alice"]}
    h = bearer(get_pat(kc))
    assert requests.get(policy_url(kc, policy["id"]), headers=h, timeout=T).json() == policy

    r = requests.put(policy_url(kc, policy["id"]), json={**policy, "scopes": ["view"], "decisionStrategy":
                                                         "AFFIRMATIVE"}, headers=h, timeout=T)
    assert (r.status_code, r.content) == (201, b"")
    got = requests.get(policy_url(kc, policy["id"]), headers=h, timeout=T).json()
    assert got["scopes"] == ["view"] and got["decisionStrategy"] == "AFFIRMATIVE"
    r = requests.put(policy_url(kc, policy["id"]), json={**policy, "colour": "red"}, headers=h, timeout=T)
    assert r.json() == {"error": "invalid_request", "error_description": "Failed to parse representation"}

    assert requests.delete(policy_url(kc, policy["id"]), headers=h, timeout=T).status_code == 204
    for method in ("get", "put", "delete"):
        r = requests.request(method, policy_url(kc, policy["id"]), json=policy, headers=h, timeout=T)
        assert (r.status_code, r.json()) == (404, {"error": "invalid_request",
                                                   "error_description": f"Policy with [{policy['id']}] does not exist"})


def test_policy_update_replaces_each_kind_and_the_last_one_removes_the_policy(kc):
    """UMAPolicyProviderFactory.onUpdate: a kind left out of the body loses its associated
    policy; when none is left the permission goes too (404)."""
    rid = new_resource(kc)
    h = bearer(get_pat(kc))
    policy = create(kc, rid, {"name": "p", "users": ["bob"], "clients": ["demo-app"]}).json()
    r = requests.put(policy_url(kc, policy["id"]), json={"name": "p", "users": ["admin"]}, headers=h, timeout=T)
    assert r.status_code == 201
    got = requests.get(policy_url(kc, policy["id"]), headers=h, timeout=T).json()
    assert got["users"] == ["admin"] and "clients" not in got
    r = requests.put(policy_url(kc, policy["id"]), json={"name": "p"}, headers=h, timeout=T)
    assert r.status_code == 404
    assert requests.get(policy_url(kc, policy["id"]), headers=h, timeout=T).status_code == 404


def test_policy_query(kc):
    """find -> PolicyService.findAll: type uma, owner = the caller, name a case-insensitive
    substring, resource and scope by id or else the first whose name contains the value (none:
    204, no body), first/max, sorted by name."""
    rid = new_resource(kc)
    other = new_resource(kc, name="other", resource_scopes=["print"])
    h = bearer(get_pat(kc))
    for name, rref, scopes in (("b-view", rid, ["view"]), ("a-edit", rid, ["edit"]), ("c-print", other, ["print"])):
        assert create(kc, rref, {"name": name, "scopes": scopes, "users": ["bob"]}).status_code == 200

    def q(**params) -> requests.Response:
        return requests.get(policy_url(kc), params=params, headers=h, timeout=T)
    assert [p["name"] for p in q().json()] == ["a-edit", "b-view", "c-print"]
    assert [p["name"] for p in q(name="EDIT").json()] == ["a-edit"]
    assert [p["name"] for p in q(resource=rid).json()] == ["a-edit", "b-view"]
    assert [p["name"] for p in q(resource="oth").json()] == ["c-print"]
    assert [p["name"] for p in q(scope="view").json()] == ["b-view"]
    assert [p["name"] for p in q(first=1, max=1).json()] == ["b-view"]
    assert q(max=0).json() == []
    for params in ({"resource": "nothing"}, {"scope": "nothing"}):
        r = q(**params)
        assert (r.status_code, r.content) == (204, b""), params
    alice = login(kc, "alice")["access_token"]
    assert requests.get(policy_url(kc), headers=bearer(alice), timeout=T).json() == []   # not hers


def test_policy_api_wants_a_resource_server_token_not_the_role(kc):
    """ProtectionService.policy: createIdentity(false): a user token of the RS's client works,
    one of another client does not (403 invalid_clientId)."""
    rid = new_resource(kc, owner="alice")
    alice = login(kc, "alice")["access_token"]
    assert create(kc, rid, {"name": "mine", "users": ["bob"]}, token=alice).json()["owner"] == "alice-0001"
    other = login(kc, "alice", client=APP)["access_token"]
    r = create(kc, rid, {"name": "via demo-app", "users": ["bob"]}, token=other)
    assert (r.status_code, r.json()["error"]) == (403, "invalid_clientId")


def test_deleting_the_resource_deletes_its_policies(kc):
    rid = new_resource(kc)
    h = bearer(get_pat(kc))
    pid = create(kc, rid, {"name": "p", "users": ["bob"]}).json()["id"]
    assert requests.delete(f"{rs(kc)}/{rid}", headers=h, timeout=T).status_code == 204
    assert requests.get(policy_url(kc, pid), headers=h, timeout=T).status_code == 404


# ---- evaluation of user-managed permissions -------------------------------------------------------

def test_a_user_named_in_a_policy_gets_its_scopes_only(kc):
    """DecisionPermissionCollector: a granted uma policy on an ownerManagedAccess resource grants
    its scopes (within those asked); others get nothing; the owner is granted (UMAPolicyProvider)."""
    rid = new_resource(kc, owner="alice")
    alice = login(kc, "alice")["access_token"]
    assert create(kc, rid, {"name": "bob views", "scopes": ["view"], "users": ["bob"]}, token=alice).status_code == 200
    bob = login(kc, "bob")["access_token"]
    assert decide(kc, bob, rid).json() == [{"rsid": rid, "rsname": "album", "scopes": ["view"]}]
    assert decide(kc, bob, f"{rid}#view", "decision").json() == {"result": True}
    assert decide(kc, bob, f"{rid}#edit").status_code == 403
    assert decide(kc, login(kc, "admin")["access_token"], rid).status_code == 403
    control_off = requests.post(f"{kc.url}/_devas/config", json={"owner_has_access": False}, timeout=T)
    assert control_off.status_code == 200
    assert decide(kc, alice, rid).json() == [{"rsid": rid, "rsname": "album", "scopes": ["view"]}]


def test_a_policy_counts_only_while_the_resource_is_owner_managed(kc):
    rid = new_resource(kc)
    assert create(kc, rid, {"name": "p", "users": ["bob"]}).status_code == 200
    bob = login(kc, "bob")["access_token"]
    assert decide(kc, bob, rid).status_code == 200
    h = bearer(get_pat(kc))
    current = requests.get(f"{rs(kc)}/{rid}", headers=h, timeout=T).json()
    update = {k: current[k] for k in ("name", "uris", "owner")} | {"scopes": ["view", "edit"],
                                                                  "ownerManagedAccess": False}
    assert requests.put(f"{rs(kc)}/{rid}", json=update, headers=h, timeout=T).status_code == 204
    assert decide(kc, bob, rid).status_code == 403


def test_policy_kinds_and_decision_strategies(realm):
    """One associated policy per listed value on create, combined UNANIMOUS by default
    (AbstractDecisionCollector.isGranted); AFFIRMATIVE: any; roles (the realm's default roles
    included), group paths (members only, not of sub-groups), clients (the token's azp), the
    deployed default script."""
    rid = new_resource(realm)
    carol = login(realm, "carol", "carol-pw")["access_token"]
    dave = login(realm, "dave", "dave-pw")["access_token"]
    bob = login(realm, "bob")["access_token"]

    def allowed(token: str) -> bool:
        return decide(realm, token, rid, "decision").status_code == 200

    def only(body: dict) -> None:
        for p in realm.app.store.uma_policies.copy().values():
            realm.app.store.uma_policies.pop(p.id)
        assert create(realm, rid, {"name": "p"} | body).status_code == 200, body

    only({"users": ["carol", "bob"]})        # two user policies, both must grant: nobody
    assert (allowed(carol), allowed(bob)) == (False, False)
    only({"users": ["carol", "bob"], "decisionStrategy": "AFFIRMATIVE"})
    assert (allowed(carol), allowed(bob), allowed(dave)) == (True, True, False)
    only({"roles": ["auditor"]})
    assert (allowed(carol), allowed(dave)) == (True, False)
    only({"roles": ["uma_authorization"]})
    assert (allowed(carol), allowed(dave), allowed(bob)) == (True, True, True)
    only({"groups": ["/staff"]})
    assert (allowed(carol), allowed(dave)) == (False, True)
    only({"clients": ["pep-client"]})
    assert allowed(bob) and not allowed(login(realm, "bob", client=APP)["access_token"])
    only({"condition": "script-scripts/default-policy.js"})
    assert allowed(bob)


# ---- the ticketless grant without `permission` (evaluateAllPermissions) ---------------------------

def test_ticketless_grant_without_permission_evaluates_the_rs_and_own_resources(kc):
    """Permissions.all: the resource server's resources and the identity's own; another user's
    resource is not evaluated even when a policy would grant it (bob's seed grant on res-alice)."""
    bob = login(kc, "bob")["access_token"]
    assert {p["rsid"] for p in decide(kc, bob).json()} == {"res-bob", "res-readonly", "res-public"}
    assert decide(kc, bob, "res-alice#protected_get").json() == [
        {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"]}]
    pat = get_pat(kc)   # the RS's service account: its own resources only
    assert {p["rsid"] for p in decide(kc, pat).json()} == {"res-readonly", "res-public"}
    r = decide(kc, bob, "Alice space#protected_get")   # by name: only his own and the RS's
    assert (r.status_code, r.json()["error"]) == (400, "invalid_resource")


def test_nothing_to_evaluate_is_not_authorized():
    """A resource server without resources of its own and a user without any: nothing to
    evaluate, nothing granted (isGranted: no permission) -> 403 not_authorized."""
    seed = {"replace_defaults": True,
            "clients": [{"client_id": "pep-client", "client_secret": "pep-secret"},
                        {"client_id": "demo-app", "client_secret": "demo-secret", "uma_protection": False}],
            "users": [{"sub": "alice-0001", "username": "alice", "password": "alice-pw"},
                      {"sub": "bob-0002", "username": "bob", "password": "bob-pw"}],
            "resources": [{"_id": "res-alice", "name": "Alice space", "resource_scopes": ["view"],
                           "owner": "alice-0001"}]}
    handle = server.start("keycloak", port=0, seed=seed)
    try:
        r = decide(handle, login(handle, "bob")["access_token"])
        assert (r.status_code, r.json()) == (403, {"error": "access_denied", "error_description": "not_authorized"})
        assert decide(handle, login(handle, "alice")["access_token"]).json() == [
            {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["view"]}]
    finally:
        handle.stop()


# ---- the password login --------------------------------------------------------------------------

def test_password_login_answers_as_keycloak(kc):
    """ResourceOwnerPasswordCredentialsGrantType: a session (`session_state`, `sid`), a refresh
    token (HS512, typ Refresh), `not-before-policy`, `refresh_expires_in`; `id_token` only with
    `openid`; the scope is validated as for the PAT."""
    body = login(kc, "alice")
    assert set(body) == {"access_token", "expires_in", "refresh_expires_in", "refresh_token", "token_type",
                         "id_token", "not-before-policy", "session_state", "scope"}
    assert body["token_type"] == "Bearer" and body["not-before-policy"] == 0 and body["refresh_expires_in"] == 1800
    assert body["scope"] == "openid profile email"
    access = claims_of(body["access_token"])
    assert access["sid"] == body["session_state"] and access["scope"] == body["scope"]
    assert jwt.get_unverified_header(body["refresh_token"])["alg"] == "HS512"
    refresh = claims_of(body["refresh_token"])
    assert refresh["typ"] == "Refresh" and refresh["sid"] == body["session_state"] and refresh["azp"] == "pep-client"
    assert "id_token" not in login(kc, "alice", scope=None)
    r = requests.post(kc.endpoint("token"), data={"grant_type": "password", "username": "alice",
                                                  "password": "alice-pw", "scope": "uma_protection"},
                      auth=PEP, timeout=T)
    assert r.json() == {"error": "invalid_scope", "error_description": "Invalid scopes: uma_protection"}


def test_refresh_grant_is_refused_as_a_session_that_ended(kc):
    """devas keeps no sessions: TokenManager.refreshAccessToken's validateToken answers
    "Session not active" for every refresh token it issued; a forged one is "Invalid refresh
    token"; none at all "No refresh token"."""
    body = user_tokens(kc, "alice")

    def refresh(**data) -> requests.Response:
        return requests.post(kc.endpoint("token"), data={"grant_type": "refresh_token", **data}, auth=APP, timeout=T)
    assert refresh(refresh_token=body["refresh_token"]).json() == {"error": "invalid_grant",
                                                                   "error_description": "Session not active"}
    assert refresh(refresh_token=body["access_token"]).json()["error_description"] == "Invalid refresh token"
    assert refresh().json() == {"error": "invalid_request", "error_description": "No refresh token"}
