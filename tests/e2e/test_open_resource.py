"""End to end: an open resource (scope `open`, as the EOEPCA PEP v1.2 had them) is proxied with
no token check and no AS call, whether it comes from the filter's own `resources` or from the
table the filter polls (`resource_sync`, pepctl's `GET /filter-config`); the resources next to it
stay protected. tests/pepctl/test_open_resource_pepctl.py runs the pepctl side (never registered at
the AS) through the real pepctl."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from support.envoy import Envoy, envoy_config, filter_config

OPEN = {"id": "res-open", "uri": "/open", "scopes": ["open"]}
ALICE = {"id": "res-alice", "uri": "/alice"}


def check_calls(devas) -> list[dict]:
    """The AS calls that decide on a request: tickets and introspections."""
    return devas.calls("permission") + devas.calls("introspection")


def assert_open_passes(envoy, devas, echo) -> None:
    for method in ("GET", "POST", "DELETE", "OPTIONS"):
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
            r = requests.request(method, envoy.url("/open/doc"), headers=headers, timeout=5)
            assert r.status_code == 200, (method, headers, r.status_code, r.text)
    # A non-canonical spelling reaches the upstream normalised, as for any resource.
    assert requests.get(envoy.url("/x/../open//doc"), timeout=5).status_code == 200
    assert check_calls(devas) == [], "an open resource needs no ticket and no introspection"
    paths = [entry.get("path") for entry in echo.log()]
    assert paths.count("/open/doc") == 13, paths
    # Its neighbours are protected, and with unmatched=deny an unknown path is refused: open is
    # neither.
    r = requests.get(envoy.url("/alice/x"), timeout=5)
    assert r.status_code == 401 and "ticket=" in r.headers.get("WWW-Authenticate", "")
    assert requests.get(envoy.url("/elsewhere"), timeout=5).status_code == 403


def test_an_open_resource_of_the_config_is_proxied_unchecked(uma2_as, echo, envoy_factory):
    config = filter_config(uma2_as, unmatched="deny", resources=[OPEN, ALICE])
    envoy = envoy_factory(config, uma2_as.port, echo.port)
    assert_open_passes(envoy, uma2_as, echo)


class TableSource:
    """A stand-in for pepctl's `GET /filter-config`, serving one table."""

    def __init__(self, table: dict):
        body = json.dumps(table).encode()
        self.polls = 0
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                source.polls += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class PollingEnvoy(Envoy):
    """Envoy whose bootstrap also has the `pepctl` cluster the filter polls."""

    def __init__(self, filter_json, as_port, upstream_port, source_port, **kw):
        self._source_port = source_port
        super().__init__(filter_json, as_port, upstream_port, **kw)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        config = envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port)
        cluster = json.loads(json.dumps(config["static_resources"]["clusters"][0]))
        cluster["name"] = "pepctl"
        cluster["load_assignment"]["cluster_name"] = "pepctl"
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        endpoint["address"]["socket_address"]["port_value"] = self._source_port
        config["static_resources"]["clusters"].append(cluster)
        return config


def test_an_open_resource_of_the_polled_table_is_proxied_unchecked(uma2_as, echo):
    # The table as pepctl serves it (name included); the configured table protects /open.
    source = TableSource({"version": 1, "resources": [dict(OPEN, name="Open"), dict(ALICE, name="Alice")]})
    config = filter_config(uma2_as, unmatched="deny", resources=[{"id": "res-open-was", "uri": "/open"}],
                           resource_sync={"cluster": "pepctl", "path": "/filter-config", "interval_s": 1})
    envoy = PollingEnvoy(config, uma2_as.port, echo.port, source.port, concurrency=2)
    try:
        deadline = time.time() + 8
        while time.time() < deadline and requests.get(envoy.url("/alice/x"), timeout=5).status_code != 401:
            time.sleep(0.2)
        while time.time() < deadline:
            if all(requests.get(envoy.url("/open/x"), timeout=5).status_code == 200 for _ in range(6)):
                break
            time.sleep(0.2)
        assert source.polls > 0
        uma2_as.reset()
        echo.reset()
        assert_open_passes(envoy, uma2_as, echo)
    finally:
        envoy.stop()
        source.stop()
