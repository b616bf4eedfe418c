"""Harness of the end-to-end tests of the `pepctl` binary against the development AS (devas), in both
dialects. Each test starts what it needs (devas on a port it picks, `pepctl serve` on port 0)
in its own temporary directory and stops it afterwards.

Env: PEPCTL_BIN (default target/pepctl-dev/debug/pepctl, else target/debug/pepctl),
ENVOY_BIN (default .venv/bin/envoy), UMA_PEP_WASM (default target/wasm32-wasip1/release/uma_pep.wasm),
DEVAS_DIR (the directory `python -m devas` and `python -m devas.echo` run from; default the repository).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

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

    def __init__(self, profile: str, seed: Path | None = None):
        self.profile = profile
        args = [PYTHON, "-m", "devas", "--profile", profile, "--port", "0", "--quiet"]
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

    def serve(self, *extra: str) -> "Server":
        return Server(self, list(extra))


class Server:
    def __init__(self, pepctl: Pepctl, extra: list[str]):
        self.proc = Proc([str(PEPCTL), "serve", "--listen", "127.0.0.1:0", *extra], ready="listening on",
                         env=pepctl.env, cwd=pepctl.workdir)
        m = re.search(r"listening on (\S+)", self.proc.ready_line)
        assert m, self.proc.ready_line
        self.base = f"http://{m.group(1)}"

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
