"""End to end, one Envoy per configuration variant: unmatched=deny, the compact challenge,
rpt_max_uses, path_prefix, an AS that is down from the start, endpoint overrides, and a
configuration error that must stop the filter from loading."""

from __future__ import annotations

import time

import pytest
import requests

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import Envoy, filter_config
from support.processes import free_port, poll_until
from support.uma_client import COMPACT_CHALLENGE, parse_challenge




def rpt(devas, resource_id="res-alice", **kw) -> str:
    return devas.mint_rpt("alice-0001", [{"resource_id": resource_id, "resource_scopes": ALL_SCOPES}], **kw)


def test_unmatched_deny_answers_403_without_as_call(envoy_factory, uma2_as, echo):
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES, unmatched="deny"), uma2_as.port, echo.port)
    resp = requests.get(envoy.url("/public"), timeout=5)
    assert resp.status_code == 403
    assert "warning" not in resp.headers
    assert uma2_as.calls("permission") == []
    assert echo.log() == []
    assert requests.get(envoy.url("/alice"), timeout=5).status_code == 401


def test_compact_challenge_is_eoepcas_form(envoy_factory, keycloak_as, echo):
    config = filter_config(keycloak_as, resources=RESOURCES, challenge_style="compact", realm="myrealm")
    envoy = envoy_factory(config, keycloak_as.port, echo.port)
    value = requests.get(envoy.url("/alice"), timeout=5).headers["www-authenticate"]
    m = COMPACT_CHALLENGE.match(value)
    assert m, value
    assert m.group(1) == "myrealm"
    assert m.group(2) == keycloak_as.issuer
    # What EOEPCA's clients do with it: split on ',' then '='.
    fields = dict(part.split("=", 1) for part in value.removeprefix("UMA ").split(","))
    assert fields["ticket"] == m.group(3)
    assert value.split("ticket=")[1] == m.group(3)


def test_rpt_max_uses_counts_accepted_uses(envoy_factory, uma2_as, echo):
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES, rpt_max_uses=2), uma2_as.port, echo.port)
    token = rpt(uma2_as)
    statuses = [requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code
                for _ in range(3)]
    assert statuses == [200, 200, 401]
    assert len(echo.log()) == 2
    # Another RPT has its own count.
    assert requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {rpt(uma2_as)}"},
                        timeout=5).status_code == 200


def test_path_prefix_is_stripped_for_matching_and_kept_upstream(envoy_factory, uma2_as, echo):
    envoy = envoy_factory(filter_config(uma2_as, resources=RESOURCES, path_prefix="/pep"), uma2_as.port, echo.port)
    resp = requests.get(envoy.url("/pep/alice/x"), timeout=5)
    assert resp.status_code == 401
    ok = requests.get(envoy.url("/pep/alice/x"), headers={"Authorization": f"Bearer {rpt(uma2_as)}"}, timeout=5)
    assert ok.status_code == 200
    assert ok.json()["path"] == "/pep/alice/x"
    # Outside the prefix nothing is a resource.
    assert requests.get(envoy.url("/alice/x"), timeout=5).status_code == 200


def test_as_down_from_the_start_fails_closed_then_recovers(envoy_factory, echo):
    from support.devas import DevAs
    port = free_port()
    # The AS is not there yet: discovery fails, requests are denied, never forwarded.
    config = {"issuer": f"http://127.0.0.1:{port}", "as_cluster": "uma_as", "client_id": "pep-client",
              "client_secret": "pep-secret", "timeout_ms": 500, "resources": RESOURCES}
    envoy = envoy_factory(config, port, echo.port)
    resp = requests.get(envoy.url("/alice"), timeout=5)
    assert resp.status_code == 403
    assert resp.headers["warning"] == '199 - "UMA Authorization Server Unreachable"'
    assert echo.log() == []
    late = DevAs("uma2", port=port)
    try:
        resp = poll_until(envoy.url("/alice"), 401)
        assert resp.status_code == 401
        parse_challenge(resp.headers["www-authenticate"])
    finally:
        late.stop()


def test_endpoint_overrides_skip_discovery(envoy_factory, uma2_as, echo):
    config = filter_config(uma2_as, resources=RESOURCES, endpoints={
        "token": "/oxauth/restv1/token",
        "permission": f"{uma2_as.issuer}/oxauth/restv1/host/rsrc_pr",
        "introspection": "/oxauth/restv1/rpt/status"})
    envoy = envoy_factory(config, uma2_as.port, echo.port)
    assert requests.get(envoy.url("/alice"), timeout=5).status_code == 401
    assert requests.get(envoy.url("/alice"), headers={"Authorization": f"Bearer {rpt(uma2_as)}"},
                        timeout=5).status_code == 200
    assert uma2_as.calls("discovery") == []


def test_requests_waiting_for_a_slow_as_are_bounded_by_timeout(envoy_factory, uma2_as, echo):
    # Every discovery is slow: with a single slow answer the filter's retry could finish
    # before a slow machine sends the request, and the request would rightly get its 401.
    uma2_as.fault("discovery", "delay", delay_ms=3000)
    config = filter_config(uma2_as, resources=RESOURCES, timeout_ms=500)
    envoy = envoy_factory(config, uma2_as.port, echo.port)
    start = time.time()
    resp = requests.get(envoy.url("/alice"), timeout=10)
    assert resp.status_code == 403
    assert time.time() - start < 2.5
    assert echo.log() == []


@pytest.mark.parametrize("overrides, line", [
    ({"timeout_ms": 0}, "config key `timeout_ms`: must be between 1 and 60000"),
    # A misspelt key, at the top and nested: its whole path, and the key that was meant.
    ({"unmached": "deny"}, "config key `unmached`: unknown key; did you mean `unmatched`?"),
    ({"forward": {"algo": "EdDSA", "key_pem": "-----BEGIN PRIVATE KEY-----"}},
     "config key `forward.algo`: unknown key; did you mean `forward.alg`?"),
    ({"resources": [*RESOURCES, {"id": "res-x", "urii": "/x"}]},
     "config key `resources[3].urii`: unknown key; did you mean `resources[3].uri`?"),
    # Cut to "/" it was a prefix no path is under: every request unmatched, so allowed by default.
    ({"path_prefix": "/#pe&"}, "config key `path_prefix`: \"/#pe&\": a path here has no query or fragment"),
], ids=["value", "unknown-key", "nested-unknown-key", "unknown-key-in-a-list", "prefix-with-fragment"])
def test_invalid_configuration_names_the_key_and_does_not_load(uma2_as, echo, overrides, line):
    config = filter_config(uma2_as, **{"resources": RESOURCES, **overrides})
    envoy = Envoy(config, uma2_as.port, echo.port, expect_ready=False)
    try:
        code = envoy.exited(timeout=20)
        logs = envoy.logs()
        assert f"uma-pep: invalid configuration: {line}" in logs, logs[-2000:]
        assert "PRIVATE KEY" not in logs
        assert code not in (None, 0)
    finally:
        envoy.stop()
