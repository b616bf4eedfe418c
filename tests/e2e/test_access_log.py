"""End to end: the filter's per-request facts in Envoy's access log, with the shipped
envoy/access-log.yaml as it is (only its ports and paths substituted): decision, log code,
resource and subject of each request, read back from the file Envoy writes; never a token.
Decision lines are at `debug`: absent from Envoy's log at `info`, present once an operator
raises the level at run time through the admin interface."""

from __future__ import annotations

import json
import time

import requests

from support.devas import ALL_SCOPES
from support.envoy import Envoy, WASM
from support.processes import ROOT


SHIPPED = ROOT / "envoy" / "access-log.yaml"


class ShippedEnvoy(Envoy):
    """Envoy running envoy/access-log.yaml against the test's AS and echo upstream."""

    def __init__(self, devas, upstream_port: int, edit=None, **kw):
        self.issuer = devas.issuer
        self.edit = edit or (lambda text: text)
        super().__init__(None, devas.port, upstream_port,
                         extra_args=["--file-flush-interval-msec", "100"], **kw)

    def _bootstrap(self, filter_json, as_port, upstream_port, with_filter):
        self.access_log = self.dir / "access.log"
        text = SHIPPED.read_text()
        for old, new in [
            ("port_value: 9901", f"port_value: {self.admin_port}"),
            ("port_value: 10000", f"port_value: {self.port}"),
            ("port_value: 9090", f"port_value: {as_port}"),
            ("port_value: 9080", f"port_value: {upstream_port}"),
            ('"issuer": "http://127.0.0.1:9090"', f'"issuer": "{self.issuer}"'),
            ("path: /dev/stdout", f"path: {self.access_log}"),
            ("filename: target/wasm32-wasip1/release/uma_pep.wasm", f"filename: {WASM}"),
        ]:
            assert text.count(old) == 1, f"{SHIPPED} no longer has {old!r} once"
            text = text.replace(old, new)
        return self.edit(text)

    def entries(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The first `count` access log entries, once Envoy has flushed them."""
        deadline = time.time() + timeout
        while True:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            if len(lines) >= count or time.time() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.1)


def rpt(devas, resource_id: str = "res-alice") -> str:
    return devas.mint_rpt("alice-0001", [{"resource_id": resource_id, "resource_scopes": ALL_SCOPES}])


def facts(entry: dict) -> tuple:
    return entry["decision"], entry["code"], entry["resource"], entry["subject"]


def test_every_decision_is_in_the_access_log(uma2_as, echo):
    envoy = ShippedEnvoy(uma2_as, echo.port)
    try:
        token = rpt(uma2_as)
        auth = {"Authorization": f"Bearer {token}"}
        # The query is not logged: a client may put a token there.
        assert requests.get(envoy.url("/alice/ok?access_token=" + token), headers=auth, timeout=10).status_code == 200
        assert requests.get(envoy.url("/alice/ok"), headers=auth, timeout=10).status_code == 200  # from the cache
        assert requests.get(envoy.url("/bob/x"), timeout=10).status_code == 401
        assert requests.get(envoy.url("/public/x"), timeout=10).status_code == 200
        assert requests.get(envoy.url("/alice;x=1"), timeout=10).status_code == 400
        assert requests.request("OPTIONS", envoy.url("/alice/x"), timeout=10).status_code == 405
        uma2_as.fault("introspection", "status500", times=1)
        resp = requests.get(envoy.url("/alice/down"), headers={"Authorization": f"Bearer {rpt(uma2_as)}"},
                            timeout=10)
        assert resp.status_code == 403 and "warning" in resp.headers

        entries = envoy.entries(7)
        assert [(e["method"], e["path"], e["status"]) for e in entries] == [
            ("GET", "/alice/ok", 200), ("GET", "/alice/ok", 200), ("GET", "/bob/x", 401),
            ("GET", "/public/x", 200), ("GET", "/alice;x=1", 400), ("OPTIONS", "/alice/x", 405),
            ("GET", "/alice/down", 403)]
        assert [facts(e) for e in entries] == [
            ("allowed", "2103", "res-alice", "alice-0001"),
            ("allowed", "2103", "res-alice", "alice-0001"),
            ("ticket", "2104", "res-bob", None),
            ("unmatched", "2105", None, None),
            ("refused", "2107", None, None),
            ("refused", "2107", None, None),
            ("as_error", "2106", "res-alice", None),
        ]
        text = envoy.access_log.read_text()
        assert token not in text and "Bearer" not in text
        # At `info`, Envoy's own log has the AS failure (warn) and no per-request line.
        logs = envoy.logs()
        assert "2106 GET /alice/down resource=res-alice" in logs, logs[-2000:]
        for code in ("2103", "2104", "2105", "2107"):
            assert f"wasm log uma_pep uma_pep uma_pep: {code} " not in logs, logs[-2000:]
        assert token not in logs
    finally:
        envoy.stop()


def test_unmatched_deny_is_denied_in_the_access_log(uma2_as, echo):
    def deny(text: str) -> str:
        assert text.count('"timeout_ms": 2000,') == 1
        return text.replace('"timeout_ms": 2000,', '"timeout_ms": 2000, "unmatched": "deny",')

    envoy = ShippedEnvoy(uma2_as, echo.port, edit=deny)
    try:
        assert requests.get(envoy.url("/public"), timeout=10).status_code == 403
        (entry,) = envoy.entries(1)
        assert facts(entry) == ("denied", "2107", None, None)
    finally:
        envoy.stop()


def test_an_open_resource_is_named_in_the_access_log(uma2_as, echo):
    def with_open(text: str) -> str:
        old = '{"id": "res-bob", "uri": "/bob"}'
        assert text.count(old) == 1
        return text.replace(old, old + ', {"id": "res-open", "uri": "/open", "scopes": ["open"]}')

    envoy = ShippedEnvoy(uma2_as, echo.port, edit=with_open)
    try:
        assert requests.get(envoy.url("/open/x"), timeout=10).status_code == 200
        assert requests.get(envoy.url("/elsewhere"), timeout=10).status_code == 200
        first, second = envoy.entries(2)
        assert facts(first) == ("open", "2105", "res-open", None)
        assert facts(second) == ("unmatched", "2105", None, None)
    finally:
        envoy.stop()


def test_facts_switched_off_are_not_recorded(uma2_as, echo):
    def facts_off(text: str) -> str:
        assert text.count('"timeout_ms": 2000,') == 1
        return text.replace('"timeout_ms": 2000,', '"timeout_ms": 2000, "access_log_facts": false,')

    envoy = ShippedEnvoy(uma2_as, echo.port, edit=facts_off)
    try:
        assert requests.get(envoy.url("/alice/x"), headers={"Authorization": f"Bearer {rpt(uma2_as)}"},
                            timeout=10).status_code == 200
        assert requests.get(envoy.url("/bob/x"), timeout=10).status_code == 401
        entries = envoy.entries(2)
        assert [facts(e) for e in entries] == [(None, None, None, None)] * 2, entries
    finally:
        envoy.stop()


def test_decision_lines_follow_a_log_level_raised_at_run_time(uma2_as, echo):
    envoy = ShippedEnvoy(uma2_as, echo.port)
    try:
        line = "wasm log uma_pep uma_pep uma_pep: 2104 GET /alice resource=res-alice"
        assert requests.get(envoy.url("/alice"), timeout=10).status_code == 401
        assert line not in envoy.logs()
        admin = f"http://127.0.0.1:{envoy.admin_port}"
        requests.post(f"{admin}/logging", params={"wasm": "debug"}, timeout=5).raise_for_status()
        deadline = time.time() + 10
        while line not in envoy.logs() and time.time() < deadline:
            assert requests.get(envoy.url("/alice"), timeout=10).status_code == 401
            time.sleep(0.3)
        assert line in envoy.logs(), envoy.logs()[-2000:]
    finally:
        envoy.stop()
