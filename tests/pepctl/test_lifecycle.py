"""PAT refresh after the AS drops it, renewal of expiring Gluu registrations by `serve`, and
TLS: always verified, a custom CA through --ca-file."""

import json
import time

import pytest
import requests

from support.tls import TlsAs


def token_requests(devas) -> int:
    return len([c for c in devas.calls("token") if c.get("grant_type") == "client_credentials"])


def test_revoked_pat_is_replaced_and_the_call_retried(server, devas):
    admin = devas.user_token("admin")
    assert server.request("POST", "/resources", admin, json={"name": "One", "icon_uri": "/one"}).status_code == 200
    assert token_requests(devas) == 1
    assert server.request("POST", "/resources", admin, json={"name": "Two", "icon_uri": "/two"}).status_code == 200
    assert token_requests(devas) == 1, "the PAT is cached"
    requests.post(f"{devas.base}/_devas/revoke", json={"kind": "pat"}, timeout=5).raise_for_status()
    r = server.request("POST", "/resources", admin, json={"name": "Three", "icon_uri": "/three"})
    assert r.status_code == 200, r.text
    assert token_requests(devas) == 2, "exactly one new PAT"
    refused = [c for c in devas.calls("resource_set") if c["method"] == "POST"]
    assert len(refused) == 4, "three creates, one of them sent twice"


@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_serve_renews_expiring_gluu_registrations(pepctl, devas):
    """Gluu/Janssen move a resource's expiry on PUT only when the body has `exp`
    (UmaResourceRegistrationWS.updateResource): the renewal sends now + the lifetime the AS gave."""
    pepctl.use_seeded_client()
    devas.configure(resource_lifetime_s=120)
    server = pepctl.serve("--refresh-interval-s", "1", "--refresh-before-s", "3600")
    try:
        admin = devas.user_token("admin")
        r = server.request("POST", "/resources", admin, json={"name": "Short", "icon_uri": "/short"})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        first_exp = devas.as_resource(rid).json()["exp"]
        deadline = time.time() + 10
        puts = []
        while time.time() < deadline:
            puts = [json.loads(c["body"]) for c in devas.calls("resource_set")
                    if c["method"] == "PUT" and rid in c["path"] and "exp" in json.loads(c["body"] or "{}")]
            if puts and puts[-1]["exp"] > first_exp:
                break
            time.sleep(0.3)
        assert puts, "renewed by a PUT that carries exp"
        assert first_exp < puts[-1]["exp"] <= int(time.time()) + 121, "now + the lifetime the AS gave (120 s)"
        assert devas.as_resource(rid).json()["exp"] > first_exp
        deadline = time.time() + 5
        while time.time() < deadline and pepctl.json("resources", "show", rid, "--json")["as_expires_at"] <= first_exp:
            time.sleep(0.2)
    finally:
        server.stop()
    stored = pepctl.json("resources", "show", rid, "--json")
    assert stored["as_expires_at"] > first_exp, "the repository tracks the renewed expiry"
    assert stored["owner"] == "admin-0003"


# ---- TLS -------------------------------------------------------------------------------------

@pytest.mark.parametrize("devas", ["uma2"], indirect=True)
def test_tls_is_verified_and_a_custom_ca_is_trusted(pepctl, tmp_path):
    tls = TlsAs(tmp_path)
    try:
        pepctl.env["PEPCTL_ISSUER"] = tls.issuer
        refused = pepctl.run("register-client", check=False)
        assert refused.returncode != 0
        assert tls.registrations == 0, "nothing sent to an unverified server"
        ok = pepctl.run("register-client", "--ca-file", str(tls.ca))
        assert "registered client tls-client" in ok.stdout
        assert tls.registrations == 1
        bad_ca = tmp_path / "bad.pem"
        bad_ca.write_text("not a certificate")
        pepctl.client.unlink()
        p = pepctl.run("register-client", "--ca-file", str(bad_ca), check=False)
        assert p.returncode != 0 and "CA file" in p.stderr
    finally:
        tls.stop()
