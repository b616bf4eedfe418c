"""Harness of the end-to-end tests of the `pepctl` binary against the development AS (devas), in both
dialects. Each test starts what it needs (devas on a port it picks, `pepctl serve` on port 0)
in its own temporary directory and stops it afterwards.

Env: PEPCTL_BIN (default target/pepctl-dev/debug/pepctl, else target/debug/pepctl),
ENVOY_BIN (default .venv/bin/envoy), UMA_PEP_WASM (default target/wasm32-wasip1/release/uma_pep.wasm),
DEVAS_DIR (the directory `python -m devas` and `python -m devas.echo` run from; default the repository).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def _default_bin() -> Path:
    for candidate in (ROOT / "target/pepctl-dev/debug/pepctl", ROOT / "target/debug/pepctl",
                      ROOT / "target/release/pepctl"):
        if candidate.exists():
            return candidate
    return ROOT / "target/debug/pepctl"


# Resolved now: the binary runs with each test's directory as its working directory.
PEPCTL = Path(os.environ.get("PEPCTL_BIN") or _default_bin()).resolve()
ENVOY = Path(os.environ.get("ENVOY_BIN") or ROOT / ".venv/bin/envoy")
WASM = Path(os.environ.get("UMA_PEP_WASM") or ROOT / "target/wasm32-wasip1/release/uma_pep.wasm")
DEVAS_DIR = Path(os.environ.get("DEVAS_DIR") or ROOT).resolve()

PROFILES = ["keycloak", "uma2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process that prints a ready line on stdout; the rest of its output is drained
    into `lines` so it never blocks on a full pipe."""

    def __init__(self, args: list[str], ready: str, env: dict | None = None, cwd: Path | None = None,
                 timeout: float = 20):
        self.args = args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=cwd)
        self.lines: list[str] = []
        self.ready_line = ""
        deadline = time.time() + timeout
        assert self.proc.stdout is not None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if ready in line:
                self.ready_line = line
                break
        if not self.ready_line:
            self.stop()
            raise RuntimeError(f"{args[0]} did not get ready: {''.join(self.lines)}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_echo() -> tuple[Proc, int]:
    """devas's echo upstream and its port."""
    echo = Proc([PYTHON, "-m", "devas.echo", "--port", "0", "--quiet"], ready="echo ready", cwd=DEVAS_DIR)
    m = re.search(r"port=(\d+)", echo.ready_line)
    assert m, echo.ready_line
    return echo, int(m.group(1))


def start_envoy(config_path: Path, listen: int, admin: int) -> Proc:
    """Real Envoy on a rendered configuration, once its admin interface says it is ready."""
    envoy = Proc([str(ENVOY), "-c", str(config_path), "--base-id", str(listen), "--concurrency", "1",
                  "--log-level", "info"], ready="starting main dispatch loop", timeout=60)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return envoy


class DevAs:
    """The development AS in one dialect."""

    def __init__(self, profile: str, seed: Path | None = None, port: int = 0):
        self.profile = profile
        args = [PYTHON, "-m", "devas", "--profile", profile, "--port", str(port), "--quiet"]
        if seed is not None:
            args += ["--seed", str(seed)]
        self.proc = Proc(args, ready="devas ready", cwd=DEVAS_DIR)
        m = re.search(r"issuer=(\S+) port=(\d+)", self.proc.ready_line)
        assert m, self.proc.ready_line
        self.issuer, self.port = m.group(1), int(m.group(2))
        self.base = f"http://127.0.0.1:{self.port}"
        self.discovery = requests.get(f"{self.issuer}/.well-known/uma2-configuration", timeout=5).json()
        self.oidc = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=5).json()

    def stop(self) -> None:
        self.proc.stop()

    def calls(self, endpoint: str | None = None) -> list[dict]:
        params = {"endpoint": endpoint} if endpoint else None
        r = requests.get(f"{self.base}/_devas/calls", params=params, timeout=5)
        r.raise_for_status()
        body = r.json()
        return body["calls"] if isinstance(body, dict) else body

    def user_tokens(self, username: str) -> dict:
        """The password grant's answer (access_token, id_token) for a seed user, via demo-app."""
        r = requests.post(self.discovery["token_endpoint"], data={
            "grant_type": "password", "username": username, "password": f"{username}-pw",
            "scope": "openid"}, auth=("demo-app", "demo-secret"), timeout=5)
        r.raise_for_status()
        return r.json()

    def user_token(self, username: str) -> str:
        return self.user_tokens(username)["access_token"]

    def pat_form(self) -> dict:
        """The PAT request as each real server wants it: Gluu/Janssen need scope=uma_protection,
        Keycloak refuses it (uma_protection is a client role there)."""
        if self.profile == "keycloak":
            return {"grant_type": "client_credentials"}
        return {"grant_type": "client_credentials", "scope": "uma_protection"}

    def pat(self, client_id: str = "pep-client", secret: str = "pep-secret") -> str:
        r = requests.post(self.discovery["token_endpoint"], data=self.pat_form(), auth=(client_id, secret), timeout=5)
        r.raise_for_status()
        return r.json()["access_token"]

    def initial_access_token(self, count: int = 1) -> str:
        """A Keycloak initial access token, as a realm admin would create one."""
        r = requests.post(f"{self.base}/_devas/initial-access-token", json={"count": count}, timeout=5)
        r.raise_for_status()
        return r.json()["token"]

    def config(self, **settings) -> dict:
        r = requests.post(f"{self.base}/_devas/config", json=settings, timeout=5)
        r.raise_for_status()
        return r.json()

    def grant(self, sub: str, resource_id: str, scopes: list[str]) -> None:
        r = requests.post(f"{self.base}/_devas/grant", json={"sub": sub, "resource_id": resource_id,
                                                             "scopes": scopes}, timeout=5)
        r.raise_for_status()

    def as_resource(self, rid: str, client: tuple[str, str] = ("pep-client", "pep-secret")) -> requests.Response:
        return requests.get(f"{self.discovery['resource_registration_endpoint']}/{rid}",
                            headers={"Authorization": f"Bearer {self.pat(*client)}"}, timeout=5)

    def as_resource_ids(self) -> list[str]:
        r = requests.get(self.discovery["resource_registration_endpoint"],
                         headers={"Authorization": f"Bearer {self.pat()}"}, timeout=5)
        r.raise_for_status()
        return [x if isinstance(x, str) else x["_id"] for x in r.json()]

    def delete_at_as(self, rid: str) -> None:
        r = requests.delete(f"{self.discovery['resource_registration_endpoint']}/{rid}",
                            headers={"Authorization": f"Bearer {self.pat()}"}, timeout=5)
        assert r.status_code in (200, 204), r.text


class Pepctl:
    """Runs the binary with the common settings of one test (its own db and client file)."""

    def __init__(self, workdir: Path, devas: DevAs):
        self.workdir = workdir
        self.devas = devas
        self.client = workdir / "client.json"
        self.db = workdir / "pepctl.db"
        self.env = {**os.environ, "PEPCTL_ISSUER": devas.issuer, "PEPCTL_PROFILE": devas.profile,
                    "PEPCTL_CLIENT": str(self.client), "PEPCTL_DB": str(self.db), "PEPCTL_LOG": "info"}

    def use_seeded_client(self) -> None:
        self.client.write_text(json.dumps({"client_id": "pep-client", "client_secret": "pep-secret"}))
        self.client.chmod(0o600)

    def register(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        """`register-client` the way an operator does it for this dialect (Keycloak: with a new
        initial access token)."""
        args = ["register-client", *extra]
        if self.devas.profile == "keycloak" and "--initial-access-token" not in extra:
            args += ["--initial-access-token", self.devas.initial_access_token()]
        return self.run(*args, check=check)

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run([str(PEPCTL), *args], env=self.env, cwd=self.workdir, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"pepctl {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args).stdout)

    def render_envoy(self, upstream_port: int, listen: int, admin: int, *extra: str) -> str:
        """`render envoy --json` for a local test: the built module, listener and admin on loopback."""
        return self.run("render", "envoy", "--json", "--wasm", str(WASM), "--upstream", f"127.0.0.1:{upstream_port}",
                        "--listen-address", "127.0.0.1", "--listen-port", str(listen), "--admin-port", str(admin),
                        *extra).stdout

    def serve(self, *extra: str, wait_ready: bool = True) -> "Server":
        return Server(self, list(extra), wait_ready)


class Server:
    """`pepctl serve` on a free port. It listens at once and reaches the AS in the background:
    unless `wait_ready` is false, this waits until /readyz says the AS has been reached."""

    def __init__(self, pepctl: Pepctl, extra: list[str], wait_ready: bool = True):
        self.proc = Proc([str(PEPCTL), "serve", "--listen", "127.0.0.1:0", *extra], ready="listening on",
                         env=pepctl.env, cwd=pepctl.workdir)
        m = re.search(r"listening on (\S+)", self.proc.ready_line)
        assert m, self.proc.ready_line
        self.base = f"http://{m.group(1)}"
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> float:
        """Seconds until /readyz answered 200."""
        start = time.time()
        while time.time() - start < timeout:
            if requests.get(self.base + "/readyz", timeout=5).status_code == 200:
                return time.time() - start
            time.sleep(0.05)
        raise AssertionError(f"pepctl serve not ready after {timeout} s: {self.proc.output()}")

    def stop(self) -> None:
        self.proc.stop()

    def request(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kw)


def write_seed(path: Path, resources: list[dict]) -> Path:
    path.write_text(json.dumps({"default_resources": resources}))
    return path


# ---- TLS -------------------------------------------------------------------------------------

def cert_pair(tmp_path, expired: bool = False):
    """A test CA and a server certificate for DNS name `localhost` signed by it (expired when
    asked): (ca.pem, server.pem, server.key)."""
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
            .not_valid_before(now - datetime.timedelta(hours=3))
            .not_valid_after(now - datetime.timedelta(hours=2) if expired else now + datetime.timedelta(hours=1))
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
    """Just enough of an AS over TLS for discovery and registration, at https://localhost:PORT
    (`host` another name for it, e.g. 127.0.0.1, which the certificate does not name)."""

    def __init__(self, tmp_path, host: str = "localhost", expired: bool = False):
        self.ca, chain, key = cert_pair(tmp_path, expired)
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
        self.issuer = f"https://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
