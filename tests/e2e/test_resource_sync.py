"""End to end: `resource_sync`. The filter polls a resource table (here a minimal stand-in
for pepctl's `GET /filter-config`, so that the filter's side is tested on its own), swaps to a
new version on every worker, and keeps the last good table when the source is down or answers
garbage. tests/pepctl/test_sync_envoy.py runs the same through the real pepctl."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from support.devas import RESOURCES
from support.envoy import Envoy, envoy_config, filter_config
from support.processes import free_port




class TableSource:
    """Serves whatever table (or failure) the test sets."""

    def __init__(self):
        self.body: bytes = b""
        self.status = 200
        self.polls = 0
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                source.polls += 1
                self.send_response(source.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(source.body)))
                self.end_headers()
                self.wfile.write(source.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, version: int, resources: list[dict]) -> None:
        self.status = 200
        self.body = json.dumps({"version": version, "resources": resources}).encode()

    def stop(self) -> None:
        self.server.shutdown()


class SyncEnvoy(Envoy):
    """Envoy whose bootstrap also has the `pepctl` cluster the filter polls."""

    def __init__(self, filter_json, as_port, upstream_port, source_port, **kw):
        self._source_port = source_port
        super().__init__(filter_json, as_port, upstream_port, **kw)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        config = envoy_config(filter_json, self.port, self.admin_port, as_port, upstream_port)
        cluster = json.loads(json.dumps(config["static_resources"]["clusters"][0]))
        cluster["name"] = "pepctl"
        cluster["load_assignment"]["cluster_name"] = "pepctl"
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
            "port_value"] = self._source_port
        config["static_resources"]["clusters"].append(cluster)
        return config


def wait_for(predicate, timeout: float = 8.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_polled_table_is_enforced_and_the_last_good_one_kept(uma2_as, echo):
    source = TableSource()
    source.serve(1, [{"id": "res-alice", "uri": "/alice"}])
    config = filter_config(uma2_as, resources=[{"id": "res-bob", "uri": "/bob"}],
                           resource_sync={"cluster": "pepctl", "path": "/filter-config", "interval_s": 1})
    envoy = SyncEnvoy(config, uma2_as.port, echo.port, source.port, concurrency=2)
    try:
        def status(path: str) -> int:
            return requests.get(envoy.url(path), timeout=5).status_code

        # Version 1 replaces the configured table on every worker.
        assert wait_for(lambda: all(status("/bob/x") == 200 for _ in range(6)))
        assert all(status("/alice/x") == 401 for _ in range(6))

        # A new version adds a resource: enforced within the interval, with a ticket for its id.
        source.serve(2, [{"id": "res-alice", "uri": "/alice"}, {"id": "res-admin", "uri": "/admin"}])
        assert wait_for(lambda: all(status("/admin/x") == 401 for _ in range(6)))
        asked = [json.loads(c["body"])[0]["resource_id"] for c in uma2_as.calls("permission")]
        assert "res-admin" in asked

        # pepctl lost its database: its version restarts, with other content. Content counts.
        source.serve(1, [{"id": "res-bob", "uri": "/bob"}])
        assert wait_for(lambda: all(status("/bob/x") == 401 for _ in range(6)))
        assert all(status("/admin/x") == 200 for _ in range(6))

        # The source goes bad (an empty table, garbage, an invalid table, an error): the last
        # good table stays in force.
        polls = source.polls
        source.serve(4, [])
        assert wait_for(lambda: source.polls >= polls + 2)
        assert all(status("/bob/x") == 401 for _ in range(6))
        polls = source.polls
        source.body = b"<html>oops</html>"
        assert wait_for(lambda: source.polls >= polls + 2)
        source.body = json.dumps({"version": 3, "resources": [{"id": "", "uri": "/x"}]}).encode()
        assert wait_for(lambda: source.polls >= polls + 4)
        source.status = 503
        assert wait_for(lambda: source.polls >= polls + 6)
        assert all(status("/bob/x") == 401 for _ in range(6))
        assert all(status("/alice/x") == 200 for _ in range(6))
        assert "resource table poll failed, keeping the last good table" in envoy.logs()
    finally:
        envoy.stop()
        source.stop()


def test_source_down_from_the_start_keeps_the_configured_table(uma2_as, echo):
    dead = free_port()
    config = filter_config(uma2_as, resources=RESOURCES,
                           resource_sync={"cluster": "pepctl", "path": "/filter-config", "interval_s": 1})
    envoy = SyncEnvoy(config, uma2_as.port, echo.port, dead)
    try:
        time.sleep(1.5)
        assert requests.get(envoy.url("/alice"), timeout=5).status_code == 401
        assert requests.get(envoy.url("/public"), timeout=5).status_code == 200
    finally:
        envoy.stop()
