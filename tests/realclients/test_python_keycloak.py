"""python-keycloak 7.1.1 (KeycloakUMA, KeycloakOpenID), whose own test suite runs against real
Keycloak 22-26 (marcospereirampj/python-keycloak tests/test_keycloak_uma.py and
tests/test_keycloak_openid.py, tag v7.1.1), driven against devas in the Keycloak dialect with the
seeded resource server's client credentials. Each test asserts what those tests, or Keycloak's
own source, say a real Keycloak answers."""

from __future__ import annotations

import json
import re

import pytest
import requests
from keycloak import KeycloakOpenID, KeycloakOpenIDConnection, KeycloakUMA
from keycloak.exceptions import (
    KeycloakDeleteError,
    KeycloakGetError,
    KeycloakPostError,
    KeycloakPutError,
    KeycloakRPTNotFound,
)
from keycloak.uma_permissions import UMAPermission

from realclients_support import PASSWORDS, REALM, RS_ID, RS_SECRET, SUBS, UMA_GRANT, form, jwt_parts

SEED_NAMES = {"res-alice": "Alice space", "res-alice-docs": "Alice documents", "res-bob": "Bob space",
              "res-admin": "Admin area", "res-readonly": "Read-only data", "res-public": "Public"}
# A ticketless grant without `permission` evaluates the resource server's resources and the
# user's own (Keycloak Permissions.all): for alice her two and the RS's two shared areas, which
# the seed's policy opens to her (owner rule; `*` rows on res-readonly and res-public).
ALICE_MAY = {"res-alice", "res-alice-docs", "res-readonly", "res-public"}


@pytest.fixture
def conn(keycloak_as) -> KeycloakOpenIDConnection:
    # As python-keycloak's own `oid_connection_with_authz` fixture: the resource server's credentials.
    return KeycloakOpenIDConnection(server_url=keycloak_as.base, realm_name=REALM, client_id=RS_ID,
                                    client_secret_key=RS_SECRET, timeout=10)


@pytest.fixture
def uma(conn) -> KeycloakUMA:
    return KeycloakUMA(connection=conn)


@pytest.fixture
def oid(keycloak_as) -> KeycloakOpenID:
    # As `oid_with_credentials_authz`: users log in through the resource server's own client.
    return KeycloakOpenID(server_url=keycloak_as.base, realm_name=REALM, client_id=RS_ID,
                          client_secret_key=RS_SECRET, timeout=10)


def login(oid: KeycloakOpenID, user: str) -> dict:
    return oid.token(username=user, password=PASSWORDS[user])


def token_calls(devas, grant_type: str) -> list[dict]:
    return [c for c in devas.calls("token") if c["grant_type"] == grant_type]


# ---- discovery and the PAT -----------------------------------------------------------------

def test_uma_well_known_is_keycloaks(uma: KeycloakUMA, keycloak_as):
    """test_keycloak_uma.py::test_uma_well_known; Keycloak UmaConfiguration.create."""
    wk = uma.uma_well_known
    assert wk["issuer"] == keycloak_as.issuer == f"{keycloak_as.base}/realms/{REALM}"
    base = f"{keycloak_as.issuer}/authz/protection"
    assert wk["resource_registration_endpoint"] == f"{base}/resource_set"
    assert wk["permission_endpoint"] == f"{base}/permission"
    assert wk["policy_endpoint"] == f"{base}/uma-policy"
    assert wk["token_endpoint"] == f"{keycloak_as.issuer}/protocol/openid-connect/token"
    assert wk["introspection_endpoint"] == f"{keycloak_as.issuer}/protocol/openid-connect/token/introspect"
    assert "uma_profiles_supported" not in wk and "claims_interaction_endpoint" not in wk


def test_the_pat_python_keycloak_asks_for_is_accepted(uma: KeycloakUMA, keycloak_as):
    """KeycloakOpenIDConnection gets its token with client_credentials and scope=openid (plus
    empty username/password/code/redirect_uri fields). Keycloak accepts `openid` (TokenManager
    .isValidScope skips it) and the token carries the client role uma_protection
    (resource_access.<client>.roles), which ProtectionService demands on resource_set."""
    assert set(uma.resource_set_list_ids()) == set(SEED_NAMES)
    (call,) = token_calls(keycloak_as, "client_credentials")
    fields = form(call)
    assert fields["scope"] == ["openid"] and fields["client_id"] == [RS_ID]
    _, claims = jwt_parts(uma.connection.token["access_token"])
    assert claims["azp"] == RS_ID
    assert "uma_protection" in claims["resource_access"][RS_ID]["roles"]


# ---- resource sets (test_keycloak_uma.py::test_uma_resource_sets) ---------------------------

def test_resource_set_queries(uma: KeycloakUMA):
    """The list is ids, filtered as python-keycloak's test expects of a real Keycloak: `name` is a
    case-insensitive substring unless exactName=true; unknown scope/owner/type/uri give nothing;
    first and max page it (ResourceService.find without deep=true maps each resource to its id)."""
    resources = list(uma.resource_set_list())
    assert {r["_id"]: r["name"] for r in resources} == SEED_NAMES
    all_ids = uma.resource_set_list_ids()
    assert sorted(all_ids) == sorted(SEED_NAMES) and all(isinstance(i, str) for i in all_ids)
    assert sorted(uma.resource_set_list_ids(name="alice")) == ["res-alice", "res-alice-docs"]
    assert uma.resource_set_list_ids(name="Alice space") == ["res-alice"]
    assert uma.resource_set_list_ids(name="Alice", exact_name=True) == []
    assert uma.resource_set_list_ids(name="Alice space", exact_name=True) == ["res-alice"]
    assert len(uma.resource_set_list_ids(first=1)) == len(SEED_NAMES) - 1
    assert uma.resource_set_list_ids(first=len(SEED_NAMES)) == []
    assert uma.resource_set_list_ids(maximum=0) == []
    assert len(uma.resource_set_list_ids(maximum=2)) == 2
    for kw in ({"scope": "Invalid"}, {"owner": "Invalid"}, {"resource_type": "Invalid"},
               {"name": "Invalid"}, {"uri": "Invalid"}):
        assert uma.resource_set_list_ids(**kw) == [], kw
    assert uma.resource_set_list_ids(uri="/alice") == ["res-alice"]
    assert sorted(uma.resource_set_list_ids(owner="alice")) == ["res-alice", "res-alice-docs"]


def test_resource_set_create_answers_with_scopes_as_sent(uma: KeycloakUMA):
    """python-keycloak creates with `scopes` (ResourceRepresentation's own property name;
    `resource_scopes` is only a setter alias) and asserts that every key it sent comes back in
    the 201 body: a real Keycloak answers with both `scopes` and `resource_scopes`
    (UmaResourceRepresentation overrides the getter as resource_scopes while the inherited field
    keeps @JsonProperty("scopes"))."""
    resource_to_create = {"name": "mytest", "scopes": ["test:read", "test:write"], "type": "urn:test"}
    created = uma.resource_set_create(resource_to_create)
    assert created["_id"]
    assert set(resource_to_create).issubset(set(created)), created
    assert {s["name"] for s in created["scopes"]} == {"test:read", "test:write"}
    stored = uma.resource_set_read(created["_id"])
    assert {s["name"] for s in stored["resource_scopes"]} == {"test:read", "test:write"}
    assert stored["type"] == "urn:test" and stored["owner"]["id"]


def test_resource_set_lifecycle(uma: KeycloakUMA):
    """Create, 409 on a duplicate, read, PUT of what was read (204, empty dict), DELETE (204),
    then 404 with an empty body on read and on a second delete: test_uma_resource_sets
    verbatim, with resource_scopes on create so that this part does not depend on the `scopes`
    alias."""
    created = uma.resource_set_create({"name": "mytest", "resource_scopes": ["test:read", "test:write"],
                                       "type": "urn:test", "uris": ["/mytest"]})
    with pytest.raises(KeycloakPostError) as err:
        uma.resource_set_create({"name": "mytest", "resource_scopes": ["test:read"], "type": "urn:test"})
    assert err.match(re.escape('409: b\'{"error":"invalid_request","error_description":'
                               '"Resource with name [mytest] already exists."}\''))

    latest = uma.resource_set_read(created["_id"])
    assert latest["name"] == "mytest" and latest["uris"] == ["/mytest"]
    latest["name"] = "New Resource Name"
    assert uma.resource_set_update(created["_id"], latest) == {}
    updated = uma.resource_set_read(created["_id"])
    assert updated["name"] == "New Resource Name"
    assert {s["name"] for s in updated["resource_scopes"]} == {"test:read", "test:write"}

    assert uma.resource_set_delete(resource_id=created["_id"]) == {}
    with pytest.raises(KeycloakGetError) as err:
        uma.resource_set_read(created["_id"])
    assert err.match("404: b''")
    with pytest.raises(KeycloakDeleteError) as err:
        uma.resource_set_delete(resource_id=created["_id"])
    assert err.match("404: b''")


def test_resource_set_update_with_an_unknown_field_is_refused(uma: KeycloakUMA):
    """test_uma_resource_sets: `resource_set_update(id, {"wrong": "payload"})` must raise
    `400: b'{"error":"Unrecognized field` (Jackson FAIL_ON_UNKNOWN_PROPERTIES on
    ResourceRepresentation)."""
    created = uma.resource_set_create({"name": "strict", "resource_scopes": ["read"]})
    with pytest.raises(KeycloakPutError) as err:
        uma.resource_set_update(resource_id=created["_id"], payload={"wrong": "payload"})
    assert err.match('400: b\'{"error":"Unrecognized field')
    assert uma.resource_set_read(created["_id"])["name"] == "strict"


def test_resource_set_create_with_description_is_refused(uma: KeycloakUMA):
    """Keycloak's ResourceRepresentation has no `description`, and POST deserialises
    into the same class (UmaResourceRepresentation extends it), so the unknown field gets the
    400 python-keycloak's test asserts for PUT. Nothing is created."""
    with pytest.raises(KeycloakPostError) as err:
        uma.resource_set_create({"name": "described", "description": "a field Keycloak does not have",
                                 "resource_scopes": ["read"]})
    assert err.value.response_code == 400
    assert json.loads(err.value.response_body)["error"].startswith('Unrecognized field "description"')
    assert uma.resource_set_list_ids(name="described") == []


# ---- permission tickets (test_keycloak_uma.py::test_uma_permission_ticket) -----------------

def test_permission_ticket_trades_for_an_rpt(uma: KeycloakUMA, keycloak_as):
    """permission_ticket_create looks the resource up by exact name, POSTs a JSON array and gets
    201 {"ticket"}; the resource server's own client then trades it at the token endpoint
    (client credentials, no claim token: Keycloak evaluates for the client's service account).
    python-keycloak's test gives that client a policy first; here a devas grant stands in."""
    keycloak_as.grant(f"service-account-{RS_ID}", "res-alice", ["protected_get"])
    ticket = uma.permission_ticket_create([UMAPermission(resource="Alice space", scope="protected_get")])
    assert set(ticket) == {"ticket"}
    (perm_call,) = keycloak_as.calls("permission")
    assert perm_call["body"] and perm_call["body"].lstrip().startswith("[")

    rpt = uma.connection.keycloak_openid.token(grant_type=UMA_GRANT, ticket=ticket["ticket"])
    assert rpt["token_type"] == "Bearer" and rpt["upgraded"] is False
    _, claims = jwt_parts(rpt["access_token"])
    assert [(p["rsid"], p.get("scopes")) for p in claims["authorization"]["permissions"]] == \
        [("res-alice", ["protected_get"])]
    assert RS_ID in ([claims["aud"]] if isinstance(claims["aud"], str) else claims["aud"])

    with pytest.raises(KeycloakPostError):  # python-keycloak: no resource of that exact name
        uma.permission_ticket_create([UMAPermission(resource="invalid")])


def test_permission_ticket_for_an_unknown_resource_id(uma: KeycloakUMA):
    """AbstractPermissionService.verifyRequestedResource: unknown id (and no resource of that
    name) -> 400 invalid_resource_id "Resource set with id [X] does not exists in this server."."""
    perm = UMAPermission(resource="ignored", scope="protected_get")
    perm.resource_id = "no-such-resource"
    with pytest.raises(KeycloakPostError) as err:
        uma.permission_ticket_create([perm])
    assert err.value.response_code == 400
    assert err.value.response_body == (b'{"error":"invalid_resource_id","error_description":'
                                       b'"Resource set with id [no-such-resource] does not exists in this server."}')


def test_permission_ticket_is_an_hs512_jws_that_dies_with_the_pat(uma: KeycloakUMA, keycloak_as):
    """The ticket is a PermissionTicketToken (JsonWebToken, category INTERNAL), signed
    HS512 with the realm's HMAC key (Constants.INTERNAL_SIGNATURE_ALGORITHM), its exp copied from
    the PAT (AbstractPermissionService.createPermissionTicket), its aud the realm issuer."""
    ticket = uma.permission_ticket_create([UMAPermission(resource="Alice space", scope="protected_get")])["ticket"]
    header, claims = jwt_parts(ticket)
    assert header["alg"] == "HS512"
    _, pat = jwt_parts(uma.connection.token["access_token"])
    assert claims["exp"] == pat["exp"]
    assert claims["aud"] in (keycloak_as.issuer, [keycloak_as.issuer])
    assert claims["azp"] == RS_ID


# ---- user-managed permissions (test_keycloak_uma.py::test_uma_policy) ----------------------

def test_uma_policy_endpoint(uma: KeycloakUMA):
    """Discovery advertises policy_endpoint, so a real client calls it. Keycloak
    (UserManagedPermissionService): only a resource with ownerManagedAccess can have policies
    (else 400 invalid_request); create answers the stored policy (findById, 200, with its id);
    query filters by name, scope and resource (an unknown scope or resource answers 204, which
    python-keycloak reads as []), first and max, sorted by name; update answers 201 with no
    body (python-keycloak returns it as bytes); delete is 204, and a second delete is 404
    {"error":"invalid_request","error_description":"Policy with [id] does not exist"}.
    test_uma_policy's role, client and group policies, with what the seeded realm has: the
    default role uma_authorization, the resource server as client, a user for the group."""
    plain = uma.resource_set_create({"name": "no-oma", "resource_scopes": ["read", "write"]})
    with pytest.raises(KeycloakPostError) as err:
        uma.policy_resource_create(plain["_id"], {"name": "refused", "scopes": ["read"], "clients": [RS_ID]})
    assert err.value.response_code == 400
    assert b"Only resources with owner managed accessed can have policies" in err.value.response_body

    oma = uma.resource_set_create({"name": "oma", "scopes": ["test:read", "test:write"], "type": "urn:test",
                                   "ownerManagedAccess": True})
    rid = oma["_id"]
    role = uma.policy_resource_create(rid, {"name": "TestPolicyRole", "description": "d",
                                            "scopes": ["test:read", "test:write"], "roles": ["uma_authorization"]})
    assert role["id"] and role["type"] == "uma" and role["roles"] == ["uma_authorization"]
    assert role["owner"] == oma["owner"]["id"] and sorted(role["scopes"]) == ["test:read", "test:write"]
    client = uma.policy_resource_create(rid, {"name": "TestPolicyClient", "description": "d",
                                              "scopes": ["test:read"], "clients": [RS_ID]})
    assert client["clients"] == [RS_ID]
    user = uma.policy_resource_create(rid, {"name": "TestPolicyUser", "scopes": ["test:read"], "users": ["bob"]})
    assert user["users"] == ["bob"]
    assert len(uma.policy_query()) == 3
    assert [p["name"] for p in uma.policy_query(name="TestPolicyUser")] == ["TestPolicyUser"]
    with pytest.raises(KeycloakPostError) as err:
        uma.policy_resource_create(rid, {"name": "TestPolicyUser", "users": ["bob"]})
    assert err.value.response_code == 409

    uma.policy_delete(user["id"])
    with pytest.raises(KeycloakDeleteError) as err:
        uma.policy_delete(user["id"])
    assert err.match('404: b\'{"error":"invalid_request","error_description":"Policy with .* does not exist"}\'')

    policies = uma.policy_query()
    assert [p["name"] for p in policies] == ["TestPolicyClient", "TestPolicyRole"]
    policy = policies[0]
    assert uma.policy_update(policy_id=policy["id"], payload=policy) == b""
    assert len(uma.policy_query()) == 2
    for kw in ({"name": "Invalid"}, {"scope": "Invalid"}, {"resource": "Invalid"}, {"first": 3}, {"maximum": 0}):
        assert uma.policy_query(**kw) == [], kw
    assert len(uma.policy_query(name=policy["name"])) == 1
    assert len(uma.policy_query(scope=policy["scopes"][0])) == 2
    assert len(uma.policy_query(resource=rid)) == 2

    uma.resource_set_delete(rid)
    assert uma.policy_query() == []


def test_uma_policy_grants_the_users_it_names(uma: KeycloakUMA, oid: KeycloakOpenID, keycloak_as):
    """The owner of a resource manages its permissions with their own token (a user token of
    the resource server's client: createIdentity(false)); the resource server cannot
    ("Only resource owner can access policies for resource [id]"). A user named in the policy
    then gets its scopes, and only those (DecisionPermissionCollector); the policy's owner is
    granted too (UMAPolicyProvider)."""
    res = uma.resource_set_create({"name": "Alice album", "scopes": ["view", "edit"], "owner": "alice",
                                   "ownerManagedAccess": True})
    with pytest.raises(KeycloakPostError) as err:
        uma.policy_resource_create(res["_id"], {"name": "by the RS", "users": ["bob"]})
    assert err.value.response_body == (b'{"error":"invalid_request","error_description":'
                                       b'"Only resource owner can access policies for resource [' +
                                       res["_id"].encode() + b']"}')

    alice_uma = KeycloakUMA(connection=KeycloakOpenIDConnection(
        server_url=keycloak_as.base, realm_name=REALM, client_id=RS_ID, client_secret_key=RS_SECRET,
        username="alice", password=PASSWORDS["alice"], grant_type="password", timeout=10))
    policy = alice_uma.policy_resource_create(res["_id"], {"name": "Bob may view", "scopes": ["view"],
                                                           "users": ["bob"]})
    assert policy["owner"] == SUBS["alice"] and policy["users"] == ["bob"]
    assert [p["name"] for p in alice_uma.policy_query()] == ["Bob may view"]
    assert uma.policy_query() == []   # each identity sees the policies it owns

    bob = login(oid, "bob")["access_token"]
    assert oid.uma_permissions(token=bob, permissions=f"{res['_id']}#view") == [
        {"rsid": res["_id"], "rsname": "Alice album", "scopes": ["view"]}]
    assert uma.permissions_check(bob, [UMAPermission(resource=res["_id"], scope="edit")]) is False
    admin = login(oid, "admin")["access_token"]
    assert uma.permissions_check(admin, [UMAPermission(resource=res["_id"], scope="view")]) is False

    alice_uma.policy_delete(policy["id"])
    assert uma.permissions_check(bob, [UMAPermission(resource=res["_id"], scope="view")]) is False


# ---- the UMA grant without a ticket (test_keycloak_openid.py, test_keycloak_uma.py) ---------

def test_password_login_answer_has_keycloaks_fields(oid: KeycloakOpenID):
    """test_keycloak_openid.py::test_token asserts the exact key set of a password login."""
    token = login(oid, "alice")
    assert set(token) == {"access_token", "expires_in", "id_token", "not-before-policy", "refresh_expires_in",
                          "refresh_token", "scope", "session_state", "token_type"}
    assert token["token_type"] == "Bearer" and token["not-before-policy"] == 0


def test_uma_permissions_lists_what_the_user_may_do(oid: KeycloakOpenID, keycloak_as):
    """test_uma_permissions: a ticketless UMA grant, Bearer user token, audience = the resource
    server, response_mode=permissions, no `permission`: Keycloak evaluates the resources the
    resource server owns and the user's own (AuthorizationTokenService.evaluateAllPermissions ->
    Permissions.all) and answers a JSON array of {rsid, rsname, scopes}. Bob's list has no
    res-alice although a policy lets him read it: other users' resources are not evaluated."""
    token = login(oid, "alice")["access_token"]
    granted = oid.uma_permissions(token=token)
    assert {p["rsid"] for p in granted} == ALICE_MAY
    assert all(p["rsname"] == SEED_NAMES[p["rsid"]] for p in granted)
    call = token_calls(keycloak_as, UMA_GRANT)[-1]
    assert call["headers"]["authorization"] == f"Bearer {token}"
    assert form(call)["audience"] == [RS_ID] and form(call)["response_mode"] == ["permissions"]
    assert oid.uma_permissions(token=token, permissions="Alice space#protected_get") == [
        {"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"]}]
    bob = login(oid, "bob")["access_token"]
    assert {p["rsid"] for p in oid.uma_permissions(token=bob)} == {"res-bob", "res-readonly", "res-public"}


def test_has_uma_access(oid: KeycloakOpenID, keycloak_as):
    """test_has_uma_access (with resources that have scopes): granted -> authorized; unknown
    resource -> 400 invalid_resource (raised); denied -> 403 (logged in, not authorized); an
    invalid bearer -> 401 invalid_grant "Invalid bearer token" (PermissionGrantType) -> not
    logged in. A `permission` names a
    resource by id, or by name among the caller's own and the resource server's resources
    (AuthorizationTokenService.resolveResourcePermission): bob cannot name alice's space, he
    uses its id."""
    token = login(oid, "alice")["access_token"]
    ok = "AuthStatus(is_authorized=True, is_logged_in=True, missing_permissions=set())"
    assert str(oid.has_uma_access(token=token, permissions="")) == ok
    assert str(oid.has_uma_access(token=token, permissions="Alice space#protected_get")) == ok
    # A scoped resource asked for without a scope comes back with its scopes, which
    # python-keycloak then counts as "Alice space#<scope>", not "Alice space".
    assert oid.has_uma_access(token=token, permissions="Alice space").missing_permissions == {"Alice space"}

    with pytest.raises(KeycloakPostError) as err:
        oid.has_uma_access(token=token, permissions="Does not exist")
    assert err.value.response_code == 400
    assert err.value.response_body == (b'{"error":"invalid_resource",'
                                       b'"error_description":"Resource with id [Does not exist] does not exist."}')

    bob = login(oid, "bob")["access_token"]
    status = oid.has_uma_access(token=bob, permissions="res-alice#protected_delete")
    assert (status.is_logged_in, status.is_authorized) == (True, False)
    assert status.missing_permissions == {"res-alice#protected_delete"}
    assert str(oid.has_uma_access(token=bob, permissions="res-alice#protected_get")) == ok
    with pytest.raises(KeycloakPostError) as err:
        oid.has_uma_access(token=bob, permissions="Alice space#protected_get")
    assert err.value.response_body == (b'{"error":"invalid_resource",'
                                       b'"error_description":"Resource with id [Alice space] does not exist."}')

    status = oid.has_uma_access(token=token + "x", permissions="Alice space")
    assert (status.is_logged_in, status.is_authorized) == (False, False)
    r = requests.post(oid.well_known()["token_endpoint"], headers={"Authorization": f"Bearer {token}x"},
                      data={"grant_type": UMA_GRANT, "audience": RS_ID}, timeout=5)
    assert (r.status_code, r.json()) == (401, {"error": "invalid_grant", "error_description": "Invalid bearer token"})


def test_permissions_check_decides(uma: KeycloakUMA, oid: KeycloakOpenID, keycloak_as):
    """test_uma_access: KeycloakUMA.permissions_check posts response_mode=decision and one
    comma-joined `permission`; {"result": true} -> True, any error -> False. Bob names alice's
    space by id: by name Keycloak finds only his own and the resource server's resources (and
    those shared with him through permission tickets), so "Alice space" is 400 invalid_resource."""
    token = login(oid, "alice")["access_token"]
    assert uma.permissions_check(token, []) is True
    assert uma.permissions_check(token, [UMAPermission(resource="Alice space")]) is True
    call = token_calls(keycloak_as, UMA_GRANT)[-1]
    assert form(call)["response_mode"] == ["decision"] and form(call)["permission"] == ["Alice space"]
    assert uma.permissions_check(token, [UMAPermission(resource="Alice space"), UMAPermission(resource="not valid")]) \
        is False
    bob = login(oid, "bob")["access_token"]
    assert uma.permissions_check(bob, [UMAPermission(resource="res-alice", scope="protected_get")]) is True
    assert uma.permissions_check(bob, [UMAPermission(resource="res-alice", scope="protected_delete")]) is False
    assert uma.permissions_check(bob, [UMAPermission(resource="Alice space", scope="protected_get")]) is False

    def decide(permission: str) -> requests.Response:
        return requests.post(oid.well_known()["token_endpoint"], headers={"Authorization": f"Bearer {bob}"}, data={
            "grant_type": UMA_GRANT, "audience": RS_ID, "permission": permission, "response_mode": "decision"},
            timeout=5)
    r = decide("res-alice#protected_get")
    assert (r.status_code, r.json()) == (200, {"result": True})
    r = decide("Alice space#protected_get")
    assert (r.status_code, r.json()["error"]) == (400, "invalid_resource")


# ---- introspection (test_keycloak_openid.py::test_introspect) -------------------------------

def test_introspect(oid: KeycloakOpenID):
    """A user token is active; an unknown RPT with token_type_hint=requesting_party_token is
    exactly {"active": false}; the hint without an RPT is refused by python-keycloak itself."""
    token = login(oid, "alice")["access_token"]
    assert oid.introspect(token=token)["active"] is True
    assert oid.introspect(token=token, rpt="some", token_type_hint="requesting_party_token") == {"active": False}
    with pytest.raises(KeycloakRPTNotFound):
        oid.introspect(token=token, token_type_hint="requesting_party_token")


def test_rpt_introspection_has_only_keycloaks_fields(uma: KeycloakUMA, oid: KeycloakOpenID):
    """RPTIntrospectionProvider.introspect copies only jti, acr, typ, exp, iat, aud and nbf
    into a fresh AccessToken, then adds permissions (rsid/rsname/scopes and resource_id/
    resource_scopes) and active: no sub, azp, client_id, scope or username."""
    token = login(oid, "alice")["access_token"]
    ticket = uma.permission_ticket_create([UMAPermission(resource="Alice space", scope="protected_get")])["ticket"]
    rpt = oid.token(grant_type=UMA_GRANT, ticket=ticket, claim_token=login(oid, "alice")["id_token"],
                    claim_token_format="http://openid.net/specs/openid-connect-core-1_0.html#IDToken")
    info = oid.introspect(token=token, rpt=rpt["access_token"], token_type_hint="requesting_party_token")
    assert info["active"] is True
    assert info["permissions"] == [{"rsid": "res-alice", "rsname": "Alice space", "scopes": ["protected_get"],
                                    "resource_id": "res-alice", "resource_scopes": ["protected_get"]}]
    assert set(info) <= {"jti", "acr", "typ", "exp", "iat", "aud", "nbf", "permissions", "active"}, sorted(info)
    _, claims = jwt_parts(rpt["access_token"])
    assert claims["sub"] == SUBS["alice"]  # the RPT itself names the user; introspection does not
