"""`pepctl` and the filter's resource rules (issue 12), end to end against the development AS in
both dialects: a resource's `uri` may be a pattern (`{name}` and `*` for one segment, a last `**`),
and it carries `exact`, `methods`, `scopes_mode` and `enforcement` under the filter's names, in the
seed file, through the Resource API, in `/filter-config` and in `render filter-config`. Two
resources of one shape are refused naming the other; the owner of a pattern owns what it
matches; the AS gets the scopes the methods need and, in Keycloak, `uris` in Keycloak's own
pattern form (a trailing `/*` for what is below, `{name}` for one segment)."""

from __future__ import annotations

import json

import pytest
import requests

from support.pepctl import write_seed

ORDERS = {
    "name": "Orders",
    "icon_uri": "/orders/{id}",
    "resource_scopes": ["audit"],
    "methods": {"GET": ["read"], "DELETE": ["admin"], "PROPFIND": ["read"]},
    "scopes_mode": "any",
    "enforcement": "permissive",
}
SEED = [
    {"name": "Alice home", "resource_uri": "/home/alice", "default_owner": "alice-0001"},
    {"name": "Bob home", "resource_uri": "/home/bob", "default_owner": "bob-0002"},
    {"name": "Team spaces", "resource_uri": "/teams/{team}/**", "default_owner": "alice-0001"},
]


@pytest.fixture
def api(serve_homes, devas):
    server = serve_homes(SEED)
    tokens = {u: devas.user_token(u) for u in ("alice", "bob", "admin")}
    return server, tokens


def posted_bodies(devas, method="POST") -> list[dict]:
    return [json.loads(c["body"]) for c in devas.calls("resource_set") if c.get("method") == method]


def scope_names(body: dict) -> set[str]:
    return {s["name"] if isinstance(s, dict) else s for s in body.get("resource_scopes") or []}


def table_entry(server, rid: str) -> dict:
    table = requests.get(server.base + "/filter-config", timeout=5).json()
    (entry,) = [r for r in table["resources"] if r["id"] == rid]
    return entry


def test_a_pattern_with_methods_reaches_the_filter_and_the_as(api, devas, pepctl):
    server, t = api
    before = len(posted_bodies(devas))
    r = server.request("POST", "/resources", t["admin"], json=ORDERS)
    assert r.status_code == 200, r.text
    created = r.json()
    rid = created["id"]
    assert created["icon_uri"] == "/orders/{id}"
    assert created["methods"] == ORDERS["methods"]
    assert (created["scopes_mode"], created["enforcement"]) == ("any", "permissive")
    assert "exact" not in created, "a default is left out"
    # The scopes registered: the ones given and every one a method needs, not the six method scopes.
    assert created["resource_scopes"] == ["audit", "admin", "read"]

    entry = table_entry(server, rid)
    assert entry == {"id": rid, "uri": "/orders/{id}", "scopes": ["audit", "admin", "read"], "name": "Orders",
                     "methods": ORDERS["methods"], "scopes_mode": "any", "enforcement": "permissive"}
    rendered = json.loads(pepctl.run("render", "filter-config").stdout)
    (same,) = [x for x in rendered["resources"] if x["id"] == rid]
    assert same == entry, "render filter-config writes what /filter-config serves"

    # What the AS was told.
    bodies = posted_bodies(devas)
    assert len(bodies) == before + 1
    body = bodies[-1]
    assert scope_names(body) == {"audit", "admin", "read"}
    if devas.profile == "keycloak":
        assert body["uris"] == ["/orders/{id}"], "a template is Keycloak's own form"
    else:
        assert body["icon_uri"] == "/orders/{id}" and "uris" not in body
    assert devas.as_resource(rid).status_code == 200

    # Read back, edited and sent back: unchanged. The owner changes a rule; only it moves.
    shown = server.request("GET", f"/resources/{rid}", t["admin"]).json()
    assert server.request("PUT", f"/resources/{rid}", t["admin"], json=shown).json()["methods"] == ORDERS["methods"]
    r = server.request("PATCH", f"/resources/{rid}", t["admin"], json={"enforcement": "disabled", "methods": None})
    assert r.status_code == 200, r.text
    entry = table_entry(server, rid)
    assert entry["enforcement"] == "disabled" and "methods" not in entry and "scopes_mode" in entry
    assert "protected_get" in entry["scopes"], "without methods, the method scopes are registered again"


def test_keycloak_gets_uris_its_own_matcher_understands(api, devas):
    if devas.profile != "keycloak":
        pytest.skip("Gluu/Janssen register no uris (UmaResource has none): icon_uri holds the spelling")
    server, t = api
    cases = [
        ({"icon_uri": "/reports"}, ["/reports", "/reports/*"]),
        ({"icon_uri": "/reports", "exact": True}, ["/reports"]),
        ({"icon_uri": "/files/{owner}/**"}, ["/files/{owner}", "/files/{owner}/*"]),
        ({"icon_uri": "/a/*/b"}, ["/a/{_2}/b"]),
        ({"icon_uri": "/"}, ["/", "/*"]),
    ]
    ids = {}
    for i, (fields, uris) in enumerate(cases):
        # Owned by the resource server (the seed's placeholder owner), as Keycloak matches
        # patterns only among the resource server's own resources.
        body = {"name": f"r{i}", "uuid": "0000000000000", **fields}
        r = server.request("POST", "/resources", t["admin"], json=body)
        assert r.status_code == 200, r.text
        ids[i] = r.json()["id"]
        assert posted_bodies(devas)[-1]["uris"] == uris, fields
    # Keycloak's own lookup (`matchingUri`, as its policy enforcer and the filter's lazy lookup
    # ask) finds what the filter would match.
    pat = devas.pat()

    def lookup(path):
        return requests.get(devas.discovery["resource_registration_endpoint"],
                            params={"uri": path, "matchingUri": "true"},
                            headers={"Authorization": f"Bearer {pat}"}, timeout=5).json()

    assert lookup("/reports/2026/q1") == [ids[0]]
    # A path some uri equals is found by that uri, in every resource that has it.
    assert lookup("/reports") == [ids[0], ids[1]]
    assert lookup("/files/alice/x/y") == [ids[2]]
    assert lookup("/a/7/b") == [ids[3]]
    assert lookup("/elsewhere") == [ids[4]], "`/` covers every path"


def test_a_second_resource_of_one_shape_is_refused_naming_the_first(api, devas):
    server, t = api
    r = server.request("POST", "/resources", t["admin"], json=ORDERS)
    assert r.status_code == 200, r.text
    before = len(posted_bodies(devas))
    r = server.request("POST", "/resources", t["admin"], json={"name": "Star", "icon_uri": "/orders/*"})
    assert r.status_code == 422
    said = r.json()["error_description"]
    assert "/orders/{id}" in said and '"Orders"' in said, said
    r = server.request("POST", "/resources", t["admin"], json={"name": "Same", "icon_uri": "/orders/{n}", "exact": True})
    assert r.status_code == 422
    # `/p` and `/p/**` are one shape; `/p` exact is another.
    assert server.request("POST", "/resources", t["admin"], json={"name": "P", "icon_uri": "/p"}).status_code == 200
    r = server.request("POST", "/resources", t["admin"], json={"name": "P rest", "icon_uri": "/p/**"})
    assert r.status_code == 422 and '"P"' in r.json()["error_description"]
    r = server.request("POST", "/resources", t["admin"], json={"name": "P itself", "icon_uri": "/p", "exact": True})
    assert r.status_code == 200, r.text
    assert len(posted_bodies(devas)) == before + 2, "nothing refused reached the AS"
    # What the filter would refuse is refused, naming the field.
    r = server.request("POST", "/resources", t["admin"], json={"name": "Bad", "icon_uri": "/x/{id}y"})
    assert r.status_code == 422 and r.json()["error_description"].startswith("icon_uri:")
    r = server.request("POST", "/resources", t["admin"], json={"name": "Bad", "icon_uri": "/x", "methods": {"G T": ["s"]}})
    assert r.status_code == 422 and r.json()["error_description"].startswith("methods.G T:")
    r = server.request("POST", "/resources", t["admin"], json={"name": "Bad", "icon_uri": "/x", "scopes_mode": "some"})
    assert r.status_code == 422 and "scopes_mode" in r.json()["error_description"]


def test_the_owner_of_a_pattern_owns_what_it_matches(api, devas):
    server, t = api
    # alice owns /teams/{team}/**: every team's space is hers.
    r = server.request("POST", "/resources", t["bob"], json={"name": "Bob's team", "icon_uri": "/teams/red/docs"})
    assert r.status_code == 403, r.text
    assert r.json()["error_description"] == "you own no path above /teams/red/docs"
    r = server.request("POST", "/resources", t["bob"], json={"name": "Every team", "icon_uri": "/teams/{t}/secret"})
    assert r.status_code == 403, r.text
    r = server.request("POST", "/resources", t["alice"], json={"name": "Red docs", "icon_uri": "/teams/red/docs"})
    assert r.status_code == 200, r.text
    assert r.json()["ownership_id"] == "alice-0001"
    # Under his own path bob may use patterns; reaching into other homes he may not.
    r = server.request("POST", "/resources", t["bob"], json={"name": "Bob docs", "icon_uri": "/home/bob/{doc}"})
    assert r.status_code == 200, r.text
    r = server.request("POST", "/resources", t["bob"], json={"name": "All docs", "icon_uri": "/home/{u}/docs"})
    assert r.status_code == 403, r.text
    # Moving what a resource covers (its uri or `exact`) stays an operator's.
    rid = server.request("GET", "/resources?path=/home/bob/{doc}", t["bob"]).json()["id"]
    r = server.request("PATCH", f"/resources/{rid}", t["bob"], json={"exact": True})
    assert r.status_code == 403, r.text
    r = server.request("PATCH", f"/resources/{rid}", t["bob"], json={"scopes_mode": "any"})
    assert r.status_code == 200 and r.json()["scopes_mode"] == "any"
    # Looked up by any spelling of its pattern, or by its shape.
    assert server.request("GET", "/resources?path=/teams/{team}/**", t["alice"]).json()["name"] == "Team spaces"
    assert server.request("GET", "/resources?path=/teams/{x}/**/", t["alice"]).json()["name"] == "Team spaces"
    assert server.request("GET", "/resources?path=/teams/{team}/**", t["bob"]).status_code == 403


def test_the_seed_file_takes_patterns_and_rules(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    entries = [
        {"name": "Orders", "resource_uri": "/orders/{id}/", "scopes": ["audit"],
         "methods": {"GET": ["read"], "PUT": ["write"], "MKCOL": ["write"]}, "scopes_mode": "any"},
        {"name": "Order list", "resource_uri": "/orders", "exact": True, "enforcement": "disabled"},
        {"name": "Files", "resource_uri": "/files/**"},
    ]
    report = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", entries)), "--json")
    assert [r["outcome"] for r in report] == ["created"] * 3, report
    ids = {r["name"]: r["id"] for r in report}
    stored = {r["name"]: r for r in pepctl.json("resources", "list", "--json")}
    assert stored["Orders"]["uri"] == "/orders/{id}", "one trailing / trimmed"
    assert stored["Orders"]["methods"] == entries[0]["methods"] and stored["Orders"]["scopes_mode"] == "any"
    assert stored["Orders"]["scopes"] == ["audit", "read", "write"], "given, then by method (GET, MKCOL, PUT)"
    assert stored["Order list"]["exact"] is True and stored["Order list"]["enforcement"] == "disabled"
    assert "exact" not in stored["Files"] and "methods" not in stored["Files"]
    table = {r["id"]: r for r in json.loads(pepctl.run("render", "filter-config").stdout)["resources"]}
    assert table[ids["Orders"]]["methods"] == entries[0]["methods"]
    assert table[ids["Order list"]]["exact"] is True and table[ids["Files"]]["uri"] == "/files/**"
    bodies = {b["name"]: b for b in posted_bodies(devas)}
    assert scope_names(bodies["Orders"]) == {"audit", "write", "read"}
    if devas.profile == "keycloak":
        assert bodies["Order list"]["uris"] == ["/orders"]
        assert bodies["Files"]["uris"] == ["/files", "/files/*"]
    else:
        assert bodies["Files"]["icon_uri"] == "/files/**"

    # A second run changes nothing; a rule that only the filter reads changes the repository only.
    again = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", entries)), "--json")
    assert [r["outcome"] for r in again] == ["unchanged"] * 3, again
    calls = len(devas.calls("resource_set"))
    entries[1]["enforcement"] = "permissive"
    changed = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", entries)), "--json")
    assert [r["outcome"] for r in changed] == ["unchanged", "updated", "unchanged"], changed
    writes = [c for c in devas.calls("resource_set")[calls:] if c.get("method") in ("PUT", "POST")]
    assert writes == [], "enforcement is the filter's: the AS is not told"
    assert {r["name"]: r for r in pepctl.json("resources", "list", "--json")}["Order list"]["enforcement"] == "permissive"

    # Two entries of one shape: refused before any call, naming both.
    calls = len(devas.calls("resource_set"))
    clash = entries + [{"name": "Order star", "resource_uri": "/orders/*"}]
    p = pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "c.json", clash)), check=False)
    assert p.returncode != 0
    assert "`default_resources[3].resource_uri`" in p.stderr and "`default_resources[0].resource_uri`" in p.stderr, p.stderr
    assert len(devas.calls("resource_set")) == calls
