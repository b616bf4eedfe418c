"""`pepctl serve`: the Resource API's ownership matrix (owner, other user, operator, on
behalf, transfer), JSON errors, /openapi.json and /filter-config."""

import pytest


METHOD_SCOPES = {"protected_get", "protected_head", "protected_post", "protected_put", "protected_patch",
                 "protected_delete"}


@pytest.fixture
def api(serve_homes, devas):
    """Homes for alice and bob from the seed file, then the server."""
    server = serve_homes([
        {"name": "Alice home", "description": "a", "resource_uri": "/home/alice", "scopes": [],
         "default_owner": "alice-0001"},
        {"name": "Bob home", "description": "b", "resource_uri": "/home/bob", "scopes": [],
         "default_owner": "bob-0002"},
    ])
    tokens = {u: devas.user_token(u) for u in ("alice", "bob", "admin")}
    return server, tokens


def error_of(r):
    body = r.json()
    assert set(body) >= {"error", "error_description"}, body
    return body


def test_owner_creates_under_own_path_others_cannot(api, devas):
    server, t = api
    r = server.request("POST", "/resources", t["alice"], json={"name": "Alice docs", "icon_uri": "/home/alice/docs"})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["ownership_id"] == "alice-0001"
    assert set(created["resource_scopes"]) == METHOD_SCOPES
    assert devas.as_resource(created["id"]).status_code == 200

    # Deeper still: the nearest registered ancestor (/home/alice/docs) is alice's.
    r = server.request("POST", "/resources", t["alice"], json={"name": "Alice deep", "icon_uri": "/home/alice/docs/x/y"})
    assert r.status_code == 200, r.text

    r = server.request("POST", "/resources", t["bob"], json={"name": "Intruder", "icon_uri": "/home/alice/stolen"})
    assert r.status_code == 403
    error_of(r)
    r = server.request("POST", "/resources", t["alice"], json={"name": "Nowhere", "icon_uri": "/elsewhere"})
    assert r.status_code == 403, "no owned path above /elsewhere"
    assert server.request("GET", "/resources?path=/home/alice/stolen", t["admin"]).status_code == 404


def test_operator_creates_anywhere_and_on_behalf(api, devas):
    server, t = api
    r = server.request("POST", "/resources", t["admin"], json={"name": "Ops", "icon_uri": "/ops", "resource_scopes": ["public_access"]})
    assert r.status_code == 200, r.text
    assert r.json()["ownership_id"] == "admin-0003"
    assert r.json()["resource_scopes"] == ["public_access"]

    r = server.request("POST", "/resources", t["admin"], json={"name": "For bob", "icon_uri": "/projects/bob", "uuid": "bob-0002"})
    assert r.status_code == 200, r.text
    assert r.json()["ownership_id"] == "bob-0002"
    # bob now owns /projects/bob and may create below it.
    r = server.request("POST", "/resources", t["bob"], json={"name": "Bob sub", "icon_uri": "/projects/bob/sub"})
    assert r.status_code == 200, r.text

    r = server.request("POST", "/resources", t["alice"], json={"name": "Sneaky", "icon_uri": "/home/alice/s", "uuid": "bob-0002"})
    assert r.status_code == 403, "only an operator creates on behalf of another user"


def test_validation_errors_are_json(api):
    server, t = api
    assert server.request("POST", "/resources", t["alice"], json={"icon_uri": "/home/alice/n"}).status_code == 422
    assert server.request("POST", "/resources", t["alice"], json={"name": "x"}).status_code == 422
    # A path is registered as written or refused with its canonical spelling (never rewritten:
    # no escaping one's home with `..`).
    r = server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice/../../etc"})
    assert r.status_code == 422
    assert 'write "/etc"' in error_of(r)["error_description"]
    assert server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice/../../.."}).status_code == 422
    assert server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice/a%2Fb"}).status_code == 422
    r = server.request("POST", "/resources", t["alice"], data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    error_of(r)
    r = server.request("POST", "/resources", t["alice"], json={"name": "Dup", "icon_uri": "/home/alice"})
    assert r.status_code == 422, "the path exists"
    error_of(r)
    assert "Error" in r.headers, "the seed's Error header for old clients"
    # Names are unique per owner (as Keycloak keeps them): bob's name is free for alice, her own
    # is not (tests/pepctl/test_eoepca_names_and_shape.py has the rest).
    r = server.request("POST", "/resources", t["alice"], json={"name": "Bob home", "icon_uri": "/home/alice/b"})
    assert r.status_code == 200, r.text
    r = server.request("POST", "/resources", t["alice"], json={"name": "Bob home", "icon_uri": "/home/alice/c"})
    assert r.status_code == 422, "alice owns a resource of that name"


def test_read_update_transfer_delete(api, devas):
    server, t = api
    rid = server.request("POST", "/resources", t["alice"], json={"name": "Doc", "icon_uri": "/home/alice/doc"}).json()["id"]

    assert server.request("GET", f"/resources/{rid}", t["alice"]).json()["_id"] == rid
    assert server.request("GET", f"/resources/{rid}", t["bob"]).status_code == 403
    assert server.request("GET", f"/resources/{rid}", t["admin"]).status_code == 200
    assert server.request("GET", "/resources/nope", t["alice"]).status_code == 404
    assert server.request("HEAD", f"/resources/{rid}", t["alice"]).status_code == 200
    assert server.request("HEAD", "/resources/nope", t["alice"]).status_code == 404
    assert server.request("GET", "/resources?path=/home/alice/doc/", t["alice"]).json()["id"] == rid

    assert server.request("PUT", f"/resources/{rid}", t["bob"], json={"name": "Mine", "resource_scopes": []}).status_code == 403
    assert server.request("PUT", f"/resources/{rid}", t["alice"], json={"name": "DocMod"}).status_code == 422
    r = server.request("PUT", f"/resources/{rid}", t["alice"], json={"name": "DocMod", "resource_scopes": ["protected_get"]})
    assert r.status_code == 200, r.text
    assert r.json()["_name"] == "DocMod"
    assert devas.as_resource(rid).json()["name"] == "DocMod"
    assert server.request("PATCH", f"/resources/{rid}", t["alice"], json={"icon_uri": "/home/bob/x"}).status_code == 403

    # Non-owner transfer refused; the owner hands it to bob.
    assert server.request("PATCH", f"/resources/{rid}", t["bob"], json={"ownership_id": "bob-0002"}).status_code == 403
    r = server.request("PATCH", f"/resources/{rid}", t["alice"], json={"ownership_id": "bob-0002"})
    assert r.status_code == 200 and r.json()["ownership_id"] == "bob-0002"
    assert server.request("GET", f"/resources/{rid}", t["alice"]).status_code == 403
    assert server.request("DELETE", f"/resources/{rid}", t["alice"]).status_code == 403
    # The operator moves it back to alice, then the new owner deletes.
    r = server.request("PUT", f"/resources/{rid}", t["admin"], json={"name": "DocMod", "resource_scopes": [], "ownership_id": "alice-0001"})
    assert r.status_code == 200 and r.json()["ownership_id"] == "alice-0001"
    assert server.request("DELETE", f"/resources/{rid}", t["alice"]).status_code == 204
    assert devas.as_resource(rid).status_code == 404
    assert server.request("GET", f"/resources/{rid}", t["alice"]).status_code == 404


def test_lists_are_per_owner_and_complete_for_operators(api):
    server, t = api
    server.request("POST", "/resources", t["alice"], json={"name": "A1", "icon_uri": "/home/alice/1"})
    alice = {r["name"] for r in server.request("GET", "/resources", t["alice"]).json()}
    bob = {r["name"] for r in server.request("GET", "/resources", t["bob"]).json()}
    everyone = {r["name"] for r in server.request("GET", "/resources", t["admin"]).json()}
    assert alice == {"Alice home", "A1"}
    assert bob == {"Bob home"}
    assert everyone == {"Alice home", "A1", "Bob home"}
    r = server.request("GET", "/resources")
    assert r.status_code == 401
    error_of(r)


def test_openapi_and_filter_config(api):
    server, t = api
    doc = server.request("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/resources", "/resources/{id}", "/filter-config"} <= set(doc["paths"])
    before = server.request("GET", "/filter-config").json()
    rid = server.request("POST", "/resources", t["alice"], json={"name": "Synced", "icon_uri": "/home/alice/synced"}).json()["id"]
    after = server.request("GET", "/filter-config").json()
    assert after["version"] > before["version"]
    entry = next(r for r in after["resources"] if r["id"] == rid)
    assert entry["uri"] == "/home/alice/synced"
    assert set(entry) <= {"id", "uri", "scopes", "name"}, "the filter's Resource shape"


def test_concurrent_creates_of_one_path_make_one_resource(api, devas):
    from concurrent.futures import ThreadPoolExecutor

    server, t = api

    def create(i):
        return server.request("POST", "/resources", t["admin"], json={"name": f"Race {i}", "icon_uri": "/race"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert sorted(statuses) == [200] + [422] * 7, statuses
    listed = [r for r in server.request("GET", "/resources", t["admin"]).json() if r["icon_uri"] == "/race"]
    assert len(listed) == 1
    posts = [c for c in devas.calls("resource_set") if c["method"] == "POST" and "Race" in (c.get("body") or "")]
    assert len(posts) == 1, "the losers never reached the AS"


def test_bodies_with_unknown_keys_or_rewritten_paths_are_refused(api, devas):
    server, t = api
    before = len(devas.calls("resource_set"))
    r = server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice/x",
                                                                "resource_scope": ["read"]})
    assert r.status_code == 422
    assert error_of(r)["error_description"] == "`resource_scope`: unknown key; did you mean `resource_scopes`?"
    r = server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice/a/../b"})
    assert r.status_code == 422
    assert error_of(r)["error_description"].startswith('icon_uri: "/home/alice/a/../b" is not a canonical path')
    assert 'write "/home/alice/b"' in r.json()["error_description"]
    assert server.request("POST", "/resources", t["alice"], json={"name": "x", "icon_uri": "/home/alice//x"}).status_code == 422
    assert len(devas.calls("resource_set")) == before, "nothing sent to the AS"

    rid = server.request("POST", "/resources", t["alice"], json={"name": "Kept", "icon_uri": "/home/alice/kept/"}).json()["id"]
    shown = server.request("GET", f"/resources/{rid}", t["alice"]).json()
    assert shown["icon_uri"] == "/home/alice/kept", "one trailing slash is trimmed"
    r = server.request("PATCH", f"/resources/{rid}", t["alice"], json={"ownership": "bob-0002"})
    assert r.status_code == 422
    assert error_of(r)["error_description"].startswith("`ownership`: unknown key")
    r = server.request("PUT", f"/resources/{rid}", t["alice"], json={"name": "Kept", "resource_scopes": [], "descripton": "d"})
    assert r.status_code == 422
    assert "did you mean `description`?" in error_of(r)["error_description"]
    r = server.request("PATCH", f"/resources/{rid}", t["admin"], json={"icon_uri": "/home/alice/./kept2"})
    assert r.status_code == 422 and 'write "/home/alice/kept2"' in error_of(r)["error_description"]
    # What GET answers can be edited and sent back.
    shown["description"] = "edited"
    r = server.request("PUT", f"/resources/{rid}", t["alice"], json=shown)
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "edited"
    # A lookup finds the resource under any spelling of its path.
    assert server.request("GET", "/resources?path=/home/alice/x/../kept", t["alice"]).json()["id"] == rid
