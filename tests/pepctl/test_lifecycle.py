"""PAT refresh after the AS drops it, renewal of expiring Gluu registrations by `serve`, and
TLS: always verified, a custom CA through --ca-file."""

import datetime
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID



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
    devas.config(resource_lifetime_s=120)
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

def _cert_pair(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pepctl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem = tmp_path / "server.key"
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, chain, key_pem


class TlsAs:
    """Just enough of an AS over TLS for discovery and registration."""

    def __init__(self, tmp_path):
        self.ca, chain, key = _cert_pair(tmp_path)
        self.registrations = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/.well-known/uma2-configuration":
                    b = outer.issuer
                    self._json(200, {"issuer": b, "token_endpoint": f"{b}/token", "permission_endpoint": f"{b}/perm",
                                     "resource_registration_endpoint": f"{b}/rs", "registration_endpoint": f"{b}/register"})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.registrations += 1
                self._json(201, {"client_id": "tls-client", "client_secret": "tls-secret", "scope": "uma_protection"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(chain, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.issuer = f"https://localhost:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


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
