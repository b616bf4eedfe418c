"""Harness of the end-to-end tests of the `pepctl` binary against the development AS (devas), in both
dialects. Each test starts what it needs (devas on a port it picks, `pepctl serve` on port 0)
in its own temporary directory and stops it afterwards.

Env: PEPCTL_BIN (default target/pepctl-dev/debug/pepctl, else target/debug/pepctl),
ENVOY_BIN (default .venv/bin/envoy), UMA_PEP_WASM (default target/wasm32-wasip1/release/uma_pep.wasm).
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


PEPCTL = Path(os.environ.get("PEPCTL_BIN") or _default_bin())
ENVOY = Path(os.environ.get("ENVOY_BIN") or ROOT / ".venv/bin/envoy")
WASM = Path(os.environ.get("UMA_PEP_WASM") or ROOT / "target/wasm32-wasip1/release/uma_pep.wasm")

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


class DevAs:
    """The development AS in one dialect."""

    def __init__(self, profile: str, seed: Path | None = None):
        self.profile = profile
        args = [PYTHON, "-m", "devas", "--profile", profile, "--port", "0", "--quiet"]
        if seed is not None:
            args += ["--seed", str(seed)]
        self.proc = Proc(args, ready="devas ready", cwd=ROOT)
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

    def user_token(self, username: str) -> str:
        r = requests.post(self.discovery["token_endpoint"], data={
            "grant_type": "password", "username": username, "password": f"{username}-pw",
            "scope": "openid"}, auth=("demo-app", "demo-secret"), timeout=5)
        r.raise_for_status()
        return r.json()["access_token"]

    def pat(self, client_id: str = "pep-client", secret: str = "pep-secret") -> str:
        r = requests.post(self.discovery["token_endpoint"], data={
            "grant_type": "client_credentials", "scope": "uma_protection"}, auth=(client_id, secret), timeout=5)
        r.raise_for_status()
        return r.json()["access_token"]

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

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run([str(PEPCTL), *args], env=self.env, cwd=self.workdir, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"pepctl {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args).stdout)

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
