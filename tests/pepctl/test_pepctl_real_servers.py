"""pepctl against the AS as the real servers behave: the PAT request per dialect, Keycloak registration through its `default` provider with an
initial access token, the Gluu/Janssen `uma_protection` check, owners sent to Keycloak,
resource-set bodies with only the fields each server models, issuer spelling and client files
of another AS. Each test failed on the code before these fixes."""

import json
from urllib.parse import parse_qs

import pytest

from support.pepctl import write_seed

KEYCLOAK_RESOURCE_FIELDS = {"_id", "name", "uris", "uri", "type", "scopes", "resource_scopes", "icon_uri", "owner",
                            "ownerManagedAccess", "displayName", "attributes"}
GLUU_RESOURCE_FIELDS = {"name", "description", "type", "icon_uri", "resource_scopes", "scope_expression", "iat", "exp"}

SEED = [
    {"name": "Alice home", "description": "alice's", "resource_uri": "/alice-home", "scopes": [],
     "default_owner": "alice-0001"},
    {"name": "Shared", "description": "nobody's yet", "resource_uri": "/shared", "scopes": [],
     "default_owner": "0000000000000"},
]


def posted(devas, endpoint, method="POST"):
    return [c for c in devas.calls(endpoint) if c.get("method") == method]


def form(call):
    return {k: v[0] for k, v in parse_qs(call.get("body") or "").items()}


# ---- the PAT request ------------------------------------------------------------------------------

def test_pat_request_follows_the_dialect(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1])))
    pats = [form(c) for c in devas.calls("token") if c.get("grant_type") == "client_credentials"]
    assert pats, "a PAT was requested"
    for f in pats:
        if devas.profile == "keycloak":
            assert "scope" not in f, "Keycloak refuses scope=uma_protection (400 invalid_scope)"
        else:
            assert f.get("scope") == "uma_protection", "Gluu's PAT has no scope without it (406 later)"


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_uma2_pat_without_uma_protection_names_the_fix(pepctl, devas, tmp_path):
    # demo-app may not have uma_protection: Gluu grants the PAT without it, silently.
    pepctl.client.write_text(json.dumps({"client_id": "demo-app", "client_secret": "demo-secret"}))
    p = pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1])), check=False)
    assert p.returncode != 0
    assert "uma_protection" in p.stdout + p.stderr
    assert "Allow for dynamic registration" in p.stdout + p.stderr, p.stdout + p.stderr
    assert "demo-secret" not in p.stdout + p.stderr


# ---- client registration ------------------------------------------------------------------------

@pytest.mark.parametrize("devas", ["keycloak"], indirect=True)
def test_keycloak_registration_needs_an_initial_access_token(pepctl, devas):
    p = pepctl.run("register-client", check=False)
    assert p.returncode != 0
    assert "--initial-access-token" in p.stderr and "Initial access token" in p.stderr, p.stderr
    assert "render keycloak-client" in p.stderr
    assert posted(devas, "registration") == [], "nothing sent: Keycloak refuses anonymous registration"
    assert not pepctl.client.exists()


@pytest.mark.parametrize("devas", ["keycloak"], indirect=True)
def test_keycloak_registration_uses_the_default_provider(pepctl, devas, tmp_path):
    iat = devas.initial_access_token(count=1)
    p = pepctl.run("register-client", "--initial-access-token", iat, "--client-name", "pep-under-test")
    assert "registered client pep-under-test" in p.stdout
    assert iat not in p.stdout + p.stderr, "the initial access token is never printed"
    (call,) = posted(devas, "registration")
    assert call["path"].endswith("/clients-registrations/default")
    assert call["headers"]["authorization"] == f"Bearer {iat}"
    body = json.loads(call["body"])
    assert body["clientId"] == "pep-under-test"
    assert (body["authorizationServicesEnabled"], body["serviceAccountsEnabled"], body["publicClient"]) == (
        True, True, False)
    assert "scope" not in body, "the openid-connect provider's scope is refused under Allowed Client Scopes"
    client = json.loads(pepctl.client.read_text())
    assert (client["client_id"], client["issuer"], client["profile"]) == ("pep-under-test", devas.issuer, "keycloak")
    assert client["registration_client_uri"].endswith("/clients-registrations/default/pep-under-test")

    # It is a resource server: its PAT (no scope) manages resources.
    report = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1])), "--json")
    assert [r["outcome"] for r in report] == ["created"]

    # The token is used up (count 1): a second registration is refused, with the reason.
    p = pepctl.run("register-client", "--initial-access-token", iat, "--out", str(tmp_path / "other.json"),
                   check=False)
    assert p.returncode != 0
    assert "initial access token" in p.stderr, p.stderr
    assert not (tmp_path / "other.json").exists()


@pytest.mark.parametrize("devas", ["keycloak"], indirect=True)
def test_rendered_keycloak_client_is_a_resource_server(pepctl, devas, tmp_path):
    """`render keycloak-client --write-client` prints what an admin imports and writes the matching
    client file; the printed representation is accepted as is by Keycloak's `default` provider
    (standing in for the admin API here), and the file then drives `resources apply`."""
    out = pepctl.run("render", "keycloak-client", "--client-id", "pep-imported", "--write-client")
    fragment = json.loads(out.stdout)
    client = json.loads(pepctl.client.read_text())
    assert (fragment["clientId"], fragment["secret"]) == (client["client_id"], client["client_secret"])
    assert (client["issuer"], client["profile"]) == (devas.issuer, "keycloak")
    assert fragment["authorizationServicesEnabled"] is True and fragment["serviceAccountsEnabled"] is True
    assert fragment["publicClient"] is False
    assert oct(pepctl.client.stat().st_mode & 0o777) == "0o600"
    assert not pepctl.db.exists(), "rendering the client needs no repository"

    import requests
    r = requests.post(f"{devas.issuer}/clients-registrations/default", json=fragment, timeout=5,
                      headers={"Authorization": f"Bearer {devas.initial_access_token()}"})
    assert r.status_code == 201, r.text
    report = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1])), "--json")
    assert [r["outcome"] for r in report] == ["created"]
    # Printed again from the file; never overwritten.
    assert json.loads(pepctl.run("render", "keycloak-client").stdout)["secret"] == client["client_secret"]
    assert pepctl.run("render", "keycloak-client", "--write-client", check=False).returncode != 0


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_gluu_registration_without_uma_protection_is_refused(pepctl, devas):
    # The AS's uma_protection scope is not "Allow for dynamic registration": Gluu drops it silently.
    devas.configure(dcr_allowed_scopes=["openid"])
    p = pepctl.run("register-client", check=False)
    assert p.returncode != 0
    assert "Allow for dynamic registration" in p.stderr and "uma_protection" in p.stderr, p.stderr
    assert not pepctl.client.exists(), "an unusable client is not written"
    (call,) = posted(devas, "registration")
    assert json.loads(call["body"])["scope"] == "uma_protection"


# ---- owners and resource-set bodies ----------------------------------------------------------------

def test_resource_set_bodies_hold_only_what_the_dialect_models(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    ids = {r["name"]: r["id"] for r in pepctl.json(
        "resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED)), "--json")}
    bodies = {json.loads(c["body"])["name"]: json.loads(c["body"]) for c in posted(devas, "resource_set")}
    assert set(bodies) == {"Alice home", "Shared"}
    for body in bodies.values():
        allowed = KEYCLOAK_RESOURCE_FIELDS if devas.profile == "keycloak" else GLUU_RESOURCE_FIELDS
        assert set(body) <= allowed, f"{set(body) - allowed} would be refused or ignored"
    alice, shared = bodies["Alice home"], bodies["Shared"]
    if devas.profile == "keycloak":
        assert alice["owner"] == {"id": "alice-0001"} and alice["ownerManagedAccess"] is True
        assert "owner" not in shared, "the placeholder owner is not sent: the resource server owns it"
        assert alice["attributes"] == {"description": ["alice's"]}
        assert alice["uris"] == ["/alice-home", "/alice-home/*"], "the path and, in Keycloak's form, what is below"
        assert devas.as_resource(ids["Alice home"]).json()["owner"]["id"] == "alice-0001"
    else:
        assert "owner" not in alice, "Gluu/Janssen have no owner field: the repository keeps it"
        assert alice["description"] == "alice's" and alice["icon_uri"] == "/alice-home"
    # The repository keeps the owners in both dialects.
    owners = {r["name"]: r["owner"] for r in pepctl.json("resources", "list", "--json")}
    assert owners == {"Alice home": "alice-0001", "Shared": "0000000000000"}

    # A changed description is a PUT in the same shape; a second run is idempotent.
    changed = [dict(SEED[0], description="new"), SEED[1]]
    report = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s2.json", changed)), "--json")
    assert [r["outcome"] for r in report] == ["updated", "unchanged"]
    (put,) = [json.loads(c["body"]) for c in posted(devas, "resource_set", "PUT")]
    assert set(put) <= (KEYCLOAK_RESOURCE_FIELDS if devas.profile == "keycloak" else GLUU_RESOURCE_FIELDS)
    if devas.profile == "keycloak":
        assert put["attributes"] == {"description": ["new"]} and "owner" not in put
    report = pepctl.json("resources", "apply", "-f", str(write_seed(tmp_path / "s2.json", changed)), "--json")
    assert [r["outcome"] for r in report] == ["unchanged", "unchanged"]


@pytest.mark.parametrize("devas", ["keycloak"], indirect=True)
def test_keycloak_refusal_of_an_unknown_owner_names_the_fix(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    seed = write_seed(tmp_path / "s.json", [dict(SEED[0], default_owner="no-such-user")])
    p = pepctl.run("resources", "apply", "-f", str(seed), "--json", check=False)
    assert p.returncode != 0
    (report,) = json.loads(p.stdout)
    assert report["outcome"] == "failed"
    assert "no-such-user" in report["error"] and "default_owner" in report["error"], report["error"]


# ---- issuer spelling and client files of another AS -------------------------------------------------

def test_issuer_with_a_trailing_slash_is_refused_before_any_call(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    pepctl.env["PEPCTL_ISSUER"] = devas.issuer + "/"
    before = len(devas.calls())
    for args in (["resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1]))],
                 ["register-client"], ["render", "filter-config"]):
        p = pepctl.run(*args, check=False)
        assert p.returncode != 0, args
        assert "--issuer" in p.stderr and f'"{devas.issuer}"' in p.stderr, p.stderr
    assert len(devas.calls()) == before, "refused at load time, before discovery"


def test_issuer_other_than_discovery_shows_both(pepctl, devas, tmp_path):
    pepctl.use_seeded_client()
    other = devas.issuer.replace("127.0.0.1", "localhost")
    pepctl.env["PEPCTL_ISSUER"] = other
    p = pepctl.run("resources", "apply", "-f", str(write_seed(tmp_path / "s.json", SEED[:1])), check=False)
    assert p.returncode != 0
    assert other in p.stderr and devas.issuer in p.stderr and "--issuer" in p.stderr, p.stderr
    assert posted(devas, "resource_set") == []


def test_client_file_of_another_issuer_or_dialect_is_refused(pepctl, devas, tmp_path):
    seed = str(write_seed(tmp_path / "s.json", SEED[:1]))
    other_profile = "uma2" if devas.profile == "keycloak" else "keycloak"
    for stale in ({"issuer": "http://127.0.0.1:1/realms/elsewhere"}, {"issuer": devas.issuer, "profile": other_profile}):
        pepctl.client.write_text(json.dumps({"client_id": "pep-client", "client_secret": "pep-secret", **stale}))
        for args in (["resources", "apply", "-f", seed], ["register-client"], ["render", "filter-config"]):
            p = pepctl.run(*args, check=False)
            assert p.returncode != 0, (stale, args)
            assert str(pepctl.client) in p.stderr and "--client" in p.stderr, p.stderr
    assert posted(devas, "registration") == [] and posted(devas, "resource_set") == []

    # An older file that does not say is used, with a warning.
    pepctl.use_seeded_client()
    p = pepctl.run("resources", "apply", "-f", seed)
    assert "does not say which issuer" in p.stderr
