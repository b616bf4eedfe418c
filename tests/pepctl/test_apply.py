"""`pepctl resources apply|list|show|delete`: idempotent in both dialects, 409 adoption,
re-creation of what the AS lost, Gluu expiry refresh, prune."""

import json

import pytest

from support.pepctl import write_seed

METHOD_SCOPES = {"protected_get", "protected_head", "protected_post", "protected_put", "protected_patch",
                 "protected_delete"}

SEED = [
    {"name": "Base Path", "description": "open", "resource_uri": "/", "scopes": ["public_access"],
     "default_owner": "0000000000000"},
    {"name": "Eric space", "description": "eric's", "resource_uri": "/eric/", "scopes": [],
     "default_owner": "bob-0002"},
    {"name": "Reports", "description": "r", "resource_uri": "/reports", "scopes": ["read"],
     "default_owner": "alice-0001"},
]


def writes(devas):
    """Create/update/delete calls the AS received at the resource_set endpoint."""
    return [c for c in devas.calls("resource_set") if c.get("method") in ("POST", "PUT", "DELETE")]


def apply(pepctl, seed, *extra):
    return pepctl.json("resources", "apply", "-f", str(seed), "--json", *extra)


def test_apply_registers_with_method_scopes_and_is_idempotent(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", SEED)
    first = apply(pepctl, seed)
    assert [r["outcome"] for r in first] == ["created"] * 3
    ids = {r["name"]: r["id"] for r in first}

    base = devas.as_resource(ids["Base Path"]).json()
    scope_names = lambda res: {s["name"] if isinstance(s, dict) else s for s in res["resource_scopes"]}
    assert scope_names(base) == {"public_access"}, "open marker: no method scopes"
    assert scope_names(devas.as_resource(ids["Eric space"]).json()) == METHOD_SCOPES
    assert scope_names(devas.as_resource(ids["Reports"]).json()) == METHOD_SCOPES | {"read"}

    listed = pepctl.json("resources", "list", "--json")
    by_name = {r["name"]: r for r in listed}
    assert by_name["Eric space"]["uri"] == "/eric"
    assert by_name["Eric space"]["owner"] == "bob-0002"
    assert by_name["Base Path"]["owner"] == "0000000000000"
    assert by_name["Reports"]["id"] == ids["Reports"]

    before = len(writes(devas))
    second = apply(pepctl, seed)
    assert [r["outcome"] for r in second] == ["unchanged"] * 3
    assert {r["name"]: r["id"] for r in second} == ids
    assert len(writes(devas)) == before, "a second apply sends nothing to the AS"
    assert pepctl.json("resources", "list", "--json") == listed

    shown = pepctl.json("resources", "show", "Reports", "--json")
    assert shown["id"] == ids["Reports"]
    assert pepctl.json("resources", "show", "/reports/", "--json")["id"] == ids["Reports"]
    text = pepctl.run("resources", "list").stdout
    assert "Eric space" in text and ids["Eric space"] in text


def test_changed_file_updates_and_prune_removes(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", SEED)
    ids = {r["name"]: r["id"] for r in apply(pepctl, seed)}

    changed = [dict(SEED[1], scopes=["extra"]), SEED[2]]
    seed2 = write_seed(tmp_path / "seed2.json", changed)
    report = {r["name"]: r for r in apply(pepctl, seed2)}
    assert report["Eric space"]["outcome"] == "updated"
    assert report["Reports"]["outcome"] == "unchanged"
    assert "Base Path" not in report, "without --prune nothing is removed"
    res = devas.as_resource(ids["Eric space"]).json()
    assert "extra" in {s["name"] if isinstance(s, dict) else s for s in res["resource_scopes"]}

    pruned = {r["name"]: r for r in apply(pepctl, seed2, "--prune")}
    assert pruned["Base Path"]["outcome"] == "pruned"
    assert devas.as_resource(ids["Base Path"]).status_code == 404
    names = {r["name"] for r in pepctl.json("resources", "list", "--json")}
    assert names == {"Eric space", "Reports"}
    again = apply(pepctl, seed2, "--prune")
    assert [r["outcome"] for r in again] == ["unchanged", "unchanged"]


def test_resource_gone_at_the_as_is_recreated(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", SEED[1:2])
    old = apply(pepctl, seed)[0]["id"]
    devas.delete_at_as(old)
    report = apply(pepctl, seed)[0]
    assert report["outcome"] == "recreated"
    assert report["id"] != old
    assert devas.as_resource(report["id"]).status_code == 200
    assert pepctl.json("resources", "show", "Eric space", "--json")["id"] == report["id"]


def test_delete_removes_at_the_as_and_here(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    rid = apply(pepctl, write_seed(tmp_path / "seed.json", SEED[2:]))[0]["id"]
    pepctl.run("resources", "delete", "Reports")
    assert devas.as_resource(rid).status_code == 404
    assert pepctl.json("resources", "list", "--json") == []
    assert pepctl.run("resources", "show", "Reports", check=False).returncode != 0


def test_lost_repository_adopts_what_the_as_has(pepctl, devas, tmp_path):
    """The repository is lost but the AS still has our resources. Keycloak answers 409 on the
    name and pepctl looks it up by exact name; Gluu takes duplicate names, so pepctl looks
    first. Either way the resources are adopted, never doubled."""
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", SEED[1:])
    first = {r["name"]: r["id"] for r in apply(pepctl, seed)}
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"pepctl.db{suffix}").unlink(missing_ok=True)
    posts_before = len([c for c in devas.calls("resource_set") if c["method"] == "POST"])
    report = apply(pepctl, seed)
    assert [r["outcome"] for r in report] == ["adopted", "adopted"]
    assert {r["name"]: r["id"] for r in report} == first
    calls = devas.calls("resource_set")
    posts = len([c for c in calls if c["method"] == "POST"]) - posts_before
    if devas.profile == "keycloak":
        assert posts == 2, "each POST refused as a duplicate (409)"
        assert any(c["method"] == "GET" and "exactName=true" in (c.get("query") or "") for c in calls)
    else:
        assert posts == 0, "found by name before creating"
    assert devas.as_resource_ids().count(first["Reports"]) == 1
    assert pepctl.json("resources", "show", "Reports", "--json")["id"] == first["Reports"]
    assert [r["outcome"] for r in apply(pepctl, seed)] == ["unchanged", "unchanged"]


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_gluu_resource_close_to_expiry_is_refreshed(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "seed.json", SEED[2:])
    rid = apply(pepctl, seed)[0]["id"]
    exp_before = devas.as_resource(rid).json()["exp"]
    # Every resource is "close" to expiry with a window longer than its lifetime.
    report = apply(pepctl, seed, "--refresh-before-s", str(400 * 24 * 3600))[0]
    assert report["outcome"] == "refreshed"
    assert report["id"] == rid
    puts = [c for c in writes(devas) if c.get("method") == "PUT"]
    assert puts, "refreshed by a PUT"
    assert json.loads(puts[-1]["body"])["exp"] >= exp_before, "with exp: Gluu moves the expiry only then"
    assert devas.as_resource(rid).json()["exp"] >= exp_before
    stored = pepctl.json("resources", "show", rid, "--json")
    assert stored["as_expires_at"] == devas.as_resource(rid).json()["exp"]
    assert apply(pepctl, seed)[0]["outcome"] == "unchanged"


def test_bad_seed_file_is_refused_before_any_call(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    bad = write_seed(tmp_path / "bad.json", [{"name": "A", "resource_uri": "/a"}, {"name": "B", "resource_uri": "/a/"}])
    p = pepctl.run("resources", "apply", "-f", str(bad), check=False)
    assert p.returncode != 0
    assert "default_resources[1].resource_uri" in p.stderr
    assert writes(devas) == []


def test_unknown_keys_in_the_file_are_refused_with_the_closest_key(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    bad = write_seed(tmp_path / "typo.json", [
        {"name": "A", "resource_uri": "/a"}, {"name": "B", "resource_uri": "/b"},
        {"name": "C", "resource_uri": "/c", "scope": ["read"]}])
    p = pepctl.run("resources", "apply", "-f", str(bad), check=False)
    assert p.returncode != 0
    assert "`default_resources[2].scope`: unknown key; did you mean `default_resources[2].scopes`?" in p.stderr
    assert writes(devas) == []
    assert pepctl.json("resources", "list", "--json") == []


def test_paths_are_registered_as_written_or_refused(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    bad = write_seed(tmp_path / "dots.json", [
        {"name": "A", "resource_uri": "/a"}, {"name": "B", "resource_uri": "/a/../b"}])
    p = pepctl.run("resources", "apply", "-f", str(bad), check=False)
    assert p.returncode != 0
    assert '`default_resources[1].resource_uri`: "/a/../b" is not a canonical path' in p.stderr
    assert 'write "/b"' in p.stderr
    assert writes(devas) == []
    for raw, canonical in [("/a//b", "/a/b"), ("/./a", "/a"), ("/%61", "/a")]:
        p = pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "x.json", [
            {"name": "X", "resource_uri": raw}])), check=False)
        assert p.returncode != 0 and f'write "{canonical}"' in p.stderr, (raw, p.stderr)
    # One trailing slash is the exception (the seed writes "/eric/"): the filter ignores it.
    ok = apply(pepctl, write_seed(tmp_path / "ok.json", [{"name": "Eric", "resource_uri": "/eric/"}]))
    assert ok[0]["uri"] == "/eric"
