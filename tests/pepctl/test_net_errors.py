"""Network errors say what failed (connection refused, timeout, DNS, TLS name mismatch,
unknown CA, expired certificate), not reqwest's "error sending request for url (...)"."""

import json
import socket
import threading
import types

from support.pepctl import Pepctl
from support.processes import free_port
from support.tls import TlsAs


def bare(tmp_path, issuer: str) -> Pepctl:
    """pepctl for an AS that is not devas (Gluu dialect: register-client needs no token)."""
    return Pepctl(tmp_path, types.SimpleNamespace(issuer=issuer, profile="uma2"))


def register_fails(p: Pepctl, *extra: str) -> str:
    r = p.run("register-client", *extra, check=False)
    assert r.returncode != 0, r.stdout
    assert "error sending request" not in r.stderr, r.stderr
    assert "discovery request failed: " in r.stderr, r.stderr
    return r.stderr


def test_connection_refused(tmp_path):
    port = free_port()
    err = register_fails(bare(tmp_path, f"http://127.0.0.1:{port}"))
    assert f"http://127.0.0.1:{port}/.well-known/uma2-configuration: connection refused" in err


def test_timeout(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(silent.accept() for _ in range(4)), daemon=True).start()
    try:
        err = register_fails(bare(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}"), "--timeout-ms", "300")
        assert "timed out: no answer within --timeout-ms" in err
    finally:
        silent.close()


def test_dns_failure(tmp_path):
    err = register_fails(bare(tmp_path, "https://pepctl-test.invalid"))
    assert "https://pepctl-test.invalid/.well-known/uma2-configuration: DNS lookup failed" in err


def test_tls_unknown_ca_name_mismatch_and_expiry(tmp_path):
    (tmp_path / "a").mkdir()
    tls = TlsAs(tmp_path / "a")
    try:
        err = register_fails(bare(tmp_path, tls.issuer))
        assert "TLS certificate verify failed: issued by an unknown CA; trust that CA with --ca-file" in err
        assert tls.registrations == 0
    finally:
        tls.stop()
    (tmp_path / "b").mkdir()
    tls = TlsAs(tmp_path / "b", host="127.0.0.1")
    try:
        err = register_fails(bare(tmp_path, tls.issuer), "--ca-file", str(tls.ca))
        assert "TLS name mismatch: the server's certificate is not valid for this host name" in err
    finally:
        tls.stop()
    (tmp_path / "c").mkdir()
    tls = TlsAs(tmp_path / "c", expired=True)
    try:
        err = register_fails(bare(tmp_path, tls.issuer), "--ca-file", str(tls.ca))
        assert "TLS certificate verify failed: the server's certificate has expired" in err
    finally:
        tls.stop()


def test_https_to_a_plain_http_port(tmp_path):
    """An https issuer for a port that speaks plain HTTP."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(json.dumps({}).encode())

    plain = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        err = register_fails(bare(tmp_path, f"https://localhost:{plain.server_address[1]}"))
        assert "the server does not speak TLS there" in err
    finally:
        plain.shutdown()
        plain.server_close()
