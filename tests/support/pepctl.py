"""The `pepctl` binary: one-shot commands with a test's own database and client file, and
`pepctl serve` on a port it picks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import requests

from support.envoy import WASM
from support.processes import ROOT, Service


def _default_bin() -> Path:
    for candidate in (ROOT / "target/pepctl-dev/debug/pepctl", ROOT / "target/debug/pepctl",
                      ROOT / "target/release/pepctl"):
        if candidate.exists():
            return candidate
    return ROOT / "target/debug/pepctl"


# Resolved now: the binary runs with each test's directory as its working directory.
PEPCTL = Path(os.environ.get("PEPCTL_BIN") or _default_bin()).resolve()


ROLLOUT = re.compile(r"version=(\S+); envoys=(\d+); applied=(\d+); refused=(\d+); pending=(\d+); waited_ms=(\d+)")


def rollout_of(response: requests.Response) -> dict:
    """A Resource API write's `x-uma-pep-rollout` (pepctl serve --xds-listen, docs/xds.md)."""
    m = ROLLOUT.fullmatch(response.headers.get("x-uma-pep-rollout", ""))
    assert m, f"no rollout header: {dict(response.headers)}"
    keys = ("version", "envoys", "applied", "refused", "pending", "waited_ms")
    return {k: (v if k == "version" else int(v)) for k, v in zip(keys, m.groups())}


def write_seed(path: Path, resources: list[dict]) -> Path:
    """A seed file (`default_resources`, the EOEPCA PEP's format) of `resources`."""
    path.write_text(json.dumps({"default_resources": resources}))
    return path


class Pepctl:
    """Runs the binary with the common settings of one test (its own db and client file)."""

    def __init__(self, workdir: Path, devas):
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

    def serve(self, *extra: str, wait_ready: bool = True, listen: str = "127.0.0.1:0") -> "Server":
        """`listen`: the address to bind (a restarted pepctl takes its old port back this way)."""
        return Server(self, list(extra), wait_ready, listen)


class Server:
    """`pepctl serve` on a free port. It listens at once and reaches the AS in the background:
    unless `wait_ready` is false, this waits until /readyz says the AS has been reached."""

    def __init__(self, pepctl: Pepctl, extra: list[str], wait_ready: bool = True, listen: str = "127.0.0.1:0"):
        self.proc = Service([str(PEPCTL), "serve", "--listen", listen, *extra], ready="listening on",
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
