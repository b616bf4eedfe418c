"""`pepctl register-client`: Keycloak's `default` provider with an initial access token, RFC 7591 at
Gluu/Janssen; idempotent, file mode 0600."""

import json
import stat

import requests


def test_registers_once_and_reuses_the_file(pepctl, devas):
    out = pepctl.workdir / "client.json"
    first = pepctl.register("--out", str(out))
    assert "registered client" in first.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    client = json.loads(out.read_text())
    assert client["client_id"] and client["client_secret"]
    assert client["issuer"] == devas.issuer
    assert client["profile"] == devas.profile

    # The new client gets a PAT: it really is a resource server at the AS.
    r = requests.post(devas.discovery["token_endpoint"], data=devas.pat_form(),
                      auth=(client["client_id"], client["client_secret"]), timeout=5)
    assert r.status_code == 200, r.text

    registrations = len(devas.calls("registration"))
    second = pepctl.run("register-client", "--out", str(out))
    assert "reused client" in second.stdout
    assert json.loads(out.read_text()) == client
    assert len(devas.calls("registration")) == registrations, "no second registration"
    # The secret never reaches the output or the log.
    assert client["client_secret"] not in first.stdout + first.stderr + second.stdout + second.stderr


def test_registered_client_drives_apply(pepctl, devas, tmp_path):
    pepctl.register()
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"default_resources": [
        {"name": "Reg test", "description": "d", "resource_uri": "/regtest", "scopes": [], "default_owner": "alice-0001"}]}))
    report = pepctl.json("resources", "apply", "-f", str(seed), "--json")
    assert [r["outcome"] for r in report] == ["created"]
    client = json.loads(pepctl.client.read_text())
    # Registered by (and visible to) the new resource server, not the seeded one.
    assert devas.as_resource(report[0]["id"], (client["client_id"], client["client_secret"])).status_code == 200


def test_plain_http_to_a_remote_issuer_is_refused(pepctl):
    pepctl.env["PEPCTL_ISSUER"] = "http://as.example.org/realms/x"
    p = pepctl.run("register-client", check=False)
    assert p.returncode != 0
    assert "plain http" in p.stderr
