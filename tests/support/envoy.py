"""Real Envoy running the built filter (`uma_pep.wasm`), all on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from support.processes import ROOT, free_port, stop_process

WASM = Path(os.environ.get("UMA_PEP_WASM") or ROOT / "target/wasm32-wasip1/release/uma_pep.wasm").resolve()
ENVOY_BIN = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv/bin/envoy")


def filter_config(devas, **overrides) -> dict:
    """A filter configuration (docs/configuration.md) for the development AS `devas`."""
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
    asks for it. `extra_args` are added to Envoy's command line. A subclass gives another
    bootstrap by overriding `_bootstrap` (a dict is written as JSON, a str as YAML, a Path used
    as it is); `port` and `admin_port` are what that bootstrap listens on."""

    def __init__(self, filter_json: dict | None, as_port: int, upstream_port: int, concurrency: int = 1,
                 with_filter: bool = True, expect_ready: bool = True, wasm_log_level: str = "info",
                 extra_args: list[str] | None = None, port: int | None = None, admin_port: int | None = None,
                 log_level: str = "warn", ready_timeout: float = 30.0):
        self.port = port or free_port()
        self.admin_port = admin_port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="uma-pep-envoy-"))
        self.log_path = self.dir / "envoy.log"
        bootstrap = self._bootstrap(filter_json or {}, as_port, upstream_port, with_filter)
        if isinstance(bootstrap, Path):
            self.config_path = bootstrap
        elif isinstance(bootstrap, str):
            self.config_path = self.dir / "envoy.yaml"
            self.config_path.write_text(bootstrap)
        else:
            self.config_path = self.dir / "envoy.json"
            self.config_path.write_text(json.dumps(bootstrap))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [ENVOY_BIN, "-c", str(self.config_path), "--concurrency", str(concurrency),
                 "--disable-hot-restart", "--log-level", log_level,
                 "--component-log-level", f"wasm:{wasm_log_level}", "--base-id", str(self.port),
                 *(extra_args or [])],
                stdout=subprocess.DEVNULL, stderr=log)
        self.base = f"http://127.0.0.1:{self.port}"
        if expect_ready:
            try:
                self.wait_ready(ready_timeout)
            except Exception:
                self.stop()
                raise

    def _bootstrap(self, filter_json: dict, as_port: int, upstream_port: int, with_filter: bool) -> dict | str | Path:
        return envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port, with_filter=with_filter)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the admin's /ready says LIVE and the listener accepts connections."""
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


class RenderedEnvoy(Envoy):
    """Envoy on a bootstrap file written elsewhere (`pepctl render envoy`), listening on `listen`
    with its admin on `admin`; logs at `info`, so a failure shows the filter's lines."""

    def __init__(self, config_path: Path, listen: int, admin: int, concurrency: int = 1):
        self._rendered = Path(config_path)
        # 80 s: a loaded machine compiling the module in V8 takes its time.
        super().__init__(None, 0, 0, port=listen, admin_port=admin, log_level="info", ready_timeout=80.0,
                         concurrency=concurrency)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter) -> Path:
        return self._rendered
