"""Test harness: real Envoy running the built uma_pep.wasm, the development AS and the echo
upstream, all on loopback. Used by the end-to-end tests and by the demo and benchmark."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
WASM = Path(os.environ.get("UMA_PEP_WASM", ROOT / "target/wasm32-wasip1/release/uma_pep.wasm"))
ENVOY_BIN = os.environ.get("ENVOY_BIN", str(ROOT / ".venv/bin/envoy"))
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A child process that prints one ready line on stdout; its stdout is drained after."""

    def __init__(self, args: list[str], ready: str, cwd: Path = ROOT, env: dict | None = None,
                 timeout: float = 20.0):
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines: list[str] = []
        deadline = time.time() + timeout
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args[:3]} exited before it was ready: {''.join(self.lines)}")
            self.lines.append(line)
            if ready in line:
                self.ready_line = line.strip()
                break
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"{args[:3]} not ready in {timeout}s: {''.join(self.lines)}")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DevAs(Service):
    """The development AS (a test fixture, not for production) in one dialect."""

    def __init__(self, profile: str, port: int | None = None):
        self.profile = profile
        self.port = port or free_port()
        super().__init__([PYTHON, "-m", "devas", "--profile", profile, "--port", str(self.port)],
                         ready="devas ready")
        fields = dict(kv.split("=", 1) for kv in self.ready_line.split()[2:])
        self.issuer = fields["issuer"]
        self.base = f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        requests.post(f"{self.base}/_devas/reset", timeout=5).raise_for_status()

    def calls(self, endpoint: str | None = None) -> list[dict]:
        params = {"endpoint": endpoint} if endpoint else {}
        r = requests.get(f"{self.base}/_devas/calls", params=params, timeout=5)
        r.raise_for_status()
        return r.json()

    def fault(self, endpoint: str, kind: str, times: int = -1, delay_ms: int = 0) -> None:
        r = requests.post(f"{self.base}/_devas/fault", json={
            "endpoint": endpoint, "kind": kind, "times": times, "delay_ms": delay_ms}, timeout=5)
        r.raise_for_status()

    def mint_rpt(self, sub: str, permissions: list[dict], exp_in: int = 300, **extra) -> str:
        body = {"sub": sub, "permissions": permissions, "exp_in": exp_in, **extra}
        r = requests.post(f"{self.base}/_devas/rpt", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["rpt"]

    def configure(self, **knobs) -> None:
        requests.post(f"{self.base}/_devas/config", json=knobs, timeout=5).raise_for_status()


class Echo(Service):
    """The echo upstream: answers every request with what it received."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        super().__init__([PYTHON, "-m", "devas.echo", "--port", str(self.port)], ready="echo ready")
        self.base = f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict]:
        return requests.get(f"{self.base}/_echo/log", timeout=5).json()

    def reset(self) -> None:
        requests.post(f"{self.base}/_echo/reset", timeout=5).raise_for_status()


def poll_until(url: str, status: int, timeout: float = 10.0, **kw) -> requests.Response:
    """GETs `url` until it answers `status` (an AS coming back, say), at most `timeout` seconds;
    the last answer either way."""
    deadline = time.time() + timeout
    while True:
        resp = requests.get(url, timeout=5, **kw)
        if resp.status_code == status or time.time() > deadline:
            return resp
        time.sleep(0.3)


def filter_config(devas: DevAs, **overrides) -> dict:
    """A filter configuration for `devas` with the contract's key names."""
    config = {
        "issuer": devas.issuer,
        "as_cluster": "uma_as",
        "as_profile": "keycloak" if devas.profile == "keycloak" else "uma2",
        "client_id": "pep-client",
        "client_secret": "pep-secret",
        "timeout_ms": 1000,
    }
    config.update(overrides)
    return config


def envoy_config(filter_json: dict, listen_port: int, admin_port: int, as_port: int,
                 upstream_port: int, wasm: Path = WASM, with_filter: bool = True) -> dict:
    """A complete Envoy bootstrap: one listener, the wasm filter, the AS and upstream clusters."""

    def cluster(name: str, port: int) -> dict:
        return {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        }

    http_filters = []
    if with_filter:
        http_filters.append({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "uma_pep",
                    "root_id": "uma_pep",
                    "failure_policy": "FAIL_CLOSED",
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": json.dumps(filter_json)},
                    "vm_config": {"vm_id": "uma_pep", "runtime": "envoy.wasm.runtime.v8",
                                  "code": {"local": {"filename": str(wasm)}}},
                },
            },
        })
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]}]},
                        "http_filters": http_filters,
                    },
                }]}],
            }],
            "clusters": [cluster("uma_as", as_port), cluster("upstream", upstream_port)],
        },
    }


class Envoy:
    """Real Envoy with the filter; `concurrency` workers. `wasm_log_level` is Envoy's level for
    the filter's component: per-request decision lines are at `debug`, so a test that reads them
    asks for it. `extra_args` are added to Envoy's command line."""

    def __init__(self, filter_json: dict | None, as_port: int, upstream_port: int, concurrency: int = 1,
                 with_filter: bool = True, expect_ready: bool = True, wasm_log_level: str = "info",
                 extra_args: list[str] | None = None):
        self.port = free_port()
        self.admin_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="uma-pep-envoy-"))
        self.config_path = self.dir / "envoy.json"
        self.log_path = self.dir / "envoy.log"
        bootstrap = self._bootstrap(filter_json or {}, as_port, upstream_port, with_filter)
        if isinstance(bootstrap, str):
            # A YAML bootstrap as text (a shipped envoy/*.yaml, adapted by the test).
            self.config_path = self.dir / "envoy.yaml"
            self.config_path.write_text(bootstrap)
        else:
            self.config_path.write_text(json.dumps(bootstrap))
        self.proc = subprocess.Popen(
            [ENVOY_BIN, "-c", str(self.config_path), "--concurrency", str(concurrency),
             "--disable-hot-restart", "--log-level", "warn",
             "--component-log-level", f"wasm:{wasm_log_level}", "--base-id", str(self.port),
             *(extra_args or [])],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "wb"))
        self.base = f"http://127.0.0.1:{self.port}"
        if expect_ready:
            self.wait_ready()

    def _bootstrap(self, filter_json: dict, as_port: int, upstream_port: int, with_filter: bool) -> dict | str:
        return envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port, with_filter=with_filter)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}: {self.logs()[-3000:]}")
            try:
                r = requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
                if r.status_code == 200:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
            except (requests.RequestException, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy not ready: {self.logs()[-3000:]}")

    def exited(self, timeout: float = 15.0) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def url(self, path: str) -> str:
        return self.base + path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def counters(self) -> dict[str, int]:
        """The filter's counters summed over workers, e.g. {"allowed": 3}."""
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/stats",
                         params={"filter": "uma_pep", "format": "json"}, timeout=5)
        out: dict[str, int] = {}
        for stat in r.json().get("stats", []):
            name = stat.get("name", "")
            if name.startswith("wasmcustom.uma_pep.") and "value" in stat:
                out[name.removeprefix("wasmcustom.uma_pep.")] = int(stat["value"])
        return out

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
