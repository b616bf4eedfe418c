"""The whole flow an operator runs, in both dialects, against the AS as the real servers behave:
`pepctl register-client` (Keycloak: with an initial access token), `resources apply`,
`render envoy --forward-key`, real Envoy with the built filter, then a client: no token → 401
with a ticket → UMA grant at the AS as the user (Keycloak: the user's access token as Bearer;
Gluu/Janssen: demo-app's credentials with the user's ID token as claim token) → RPT → 200, and
the identity header the upstream gets is a JWT whose `sub` is the user, not a client."""

import json
import re

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.echo import Echo
from support.envoy import RenderedEnvoy, WASM
from support.pepctl import write_seed
from support.processes import free_port

UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"


def forward_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "forward.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path, key.public_key()


def rpt_for(devas, ticket, username):
    """The UMA grant as the requesting party `username`, the way each real server takes it."""
    tokens = devas.user_tokens(username)
    if devas.profile == "keycloak":
        r = requests.post(devas.discovery["token_endpoint"], data={"grant_type": UMA_GRANT, "ticket": ticket},
                          headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=5)
    else:
        r = requests.post(devas.discovery["token_endpoint"], auth=("demo-app", "demo-secret"), timeout=5, data={
            "grant_type": UMA_GRANT, "ticket": ticket, "claim_token": tokens["id_token"],
            "claim_token_format": ID_TOKEN_FORMAT})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_register_apply_render_envoy_ticket_rpt_identity(pepctl, devas, tmp_path):
    if not WASM.exists():
        pytest.fail(f"the filter is not built ({WASM}); `make wasm` first")
    registered = pepctl.register()
    assert "registered client" in registered.stdout
    client = json.loads(pepctl.client.read_text())

    seed = write_seed(tmp_path / "seed.json", [
        {"name": "Alice home", "description": "alice's", "resource_uri": "/alice-home", "scopes": [],
         "default_owner": "alice-0001"}])
    (applied,) = pepctl.json("resources", "apply", "-f", str(seed), "--json")
    assert applied["outcome"] == "created"
    rid = applied["id"]
    # Neither server lets an owner in by default (Keycloak: policies; Gluu: UMA policy scripts):
    # the AS's policy grants alice access, as an admin would.
    devas.grant("alice-0001", rid, ["protected_get"])

    key_path, public_key = forward_key(tmp_path)
    echo = Echo()
    echo_port = echo.port
    envoy = None
    try:
        listen, admin = free_port(), free_port()
        rendered = pepctl.render_envoy(echo_port, listen, admin, "--forward-key", str(key_path))
        config = json.loads(rendered)
        wasm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "http_filters"][0]["typed_config"]["config"]
        filter_config = json.loads(wasm["configuration"]["value"])
        assert filter_config["client_id"] == client["client_id"]
        assert filter_config["forward"]["alg"] == "RS256"
        path = tmp_path / "envoy.json"
        path.write_text(rendered)
        envoy = RenderedEnvoy(path, listen, admin)
        base = f"http://127.0.0.1:{listen}"

        r = requests.get(f"{base}/alice-home/notes", timeout=10)
        assert r.status_code == 401, r.text
        challenge = r.headers.get("WWW-Authenticate", "")
        m = re.search(r'ticket="?([^",\s]+)', challenge)
        assert m, f"no ticket in {challenge!r}\n{envoy.logs()[-3000:]}"

        rpt = rpt_for(devas, m.group(1), "alice")
        r = requests.get(f"{base}/alice-home/notes", headers={"Authorization": f"Bearer {rpt}"}, timeout=10)
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{envoy.logs()[-3000:]}"
        seen = r.json()["headers"]
        identity = seen.get("x-user-id")
        assert identity, f"no identity header upstream: {sorted(seen)}"
        claims = jwt.decode(identity, public_key, algorithms=["RS256"], options={"verify_aud": False})
        assert claims["sub"] == "alice-0001", f"the identity names {claims.get('sub')!r}, not the user"
        assert claims["sub"] not in (client["client_id"], "demo-app")
    finally:
        if envoy is not None:
            envoy.stop()
        echo.stop()
