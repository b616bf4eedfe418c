"""End to end: `resource_lookup: {"mode": "lazy"}` (keycloak) in real Envoy against devas. A path no
configured resource matches is looked up at the AS (`GET resource_set?uri=…&matchingUri=true&deep=true`
with the PAT) and what the AS names is enforced: found (a ticket for that resource, an RPT for it
allowed), not found (unmatched: passed through, and the "none" cached), the AS failing (403 +
Warning, never a pass-through). Each answer is cached: the second request asks the AS nothing."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
import requests

from support.devas import ALL_SCOPES, RESOURCES
from support.envoy import filter_config
from support.uma_client import parse_challenge


def lookups(devas) -> list[dict]:
    """The lookups the filter made: resource_set GETs with `matchingUri`."""
    return [c for c in devas.calls("resource_set")
            if c.get("method") == "GET" and "matchingUri=true" in (c.get("query") or "")]


def register(devas, name: str, uris: list[str]) -> str:
    """A resource registered at the AS by the resource server (not in the filter's table)."""
    r = requests.post(devas.discovery["resource_registration_endpoint"],
                      json={"name": name, "uris": uris, "resource_scopes": ALL_SCOPES},
                      headers={"Authorization": f"Bearer {devas.pat()}"}, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()["_id"]


@pytest.fixture
def lazy(keycloak_as, echo, envoy_factory):
    keycloak_as.reset()
    echo.reset()
    config = filter_config(keycloak_as, resources=[r for r in RESOURCES if r["uri"] == "/alice"],
                           resource_lookup={"mode": "lazy", "ttl_s": 30, "negative_ttl_s": 10})
    envoy = envoy_factory(config, keycloak_as.port, echo.port)
    yield keycloak_as, echo, envoy
    keycloak_as.reset()


def test_a_resource_the_as_knows_is_found_and_enforced(lazy):
    devas, echo, envoy = lazy
    rid = register(devas, "Lazy orders", ["/orders/*"])
    r = requests.get(envoy.url("/orders/7"), timeout=5)
    assert r.status_code == 401, r.text
    challenge = parse_challenge(r.headers["WWW-Authenticate"])
    assert challenge["ticket"]
    asked = devas.calls("permission")
    assert asked and rid in asked[-1].get("body", ""), asked
    (lookup,) = lookups(devas)
    query = parse_qs(lookup["query"])
    assert query == {"uri": ["/orders/7"], "matchingUri": ["true"], "deep": ["true"]}, query
    assert lookup["headers"].get("authorization", "").startswith("Bearer ")
    # An RPT for the resource found is allowed; one for another resource is not.
    good = devas.mint_rpt("alice-0001", [{"resource_id": rid, "resource_scopes": ALL_SCOPES}])
    other = devas.mint_rpt("alice-0001", [{"resource_id": "res-alice", "resource_scopes": ALL_SCOPES}])
    assert requests.get(envoy.url("/orders/7"), headers={"Authorization": f"Bearer {good}"},
                        timeout=5).status_code == 200
    assert requests.get(envoy.url("/orders/8"), headers={"Authorization": f"Bearer {other}"},
                        timeout=5).status_code == 401
    assert len(lookups(devas)) == 2, "one lookup per path, cached"
    assert [e["path"] for e in echo.log()] == ["/orders/7"]
    # The configured table still wins where it matches: no lookup for it.
    requests.get(envoy.url("/alice/x"), timeout=5)
    assert len(lookups(devas)) == 2


def test_a_path_the_as_does_not_know_is_unmatched_and_cached(lazy):
    devas, echo, envoy = lazy
    for _ in range(3):
        r = requests.get(envoy.url("/nobody/knows"), timeout=5)
        assert r.status_code == 200, r.text
    assert len(lookups(devas)) == 1, "the answer \"none\" is cached"
    assert devas.calls("permission") == []


def test_the_as_failing_on_a_lookup_denies_never_passes(lazy):
    devas, echo, envoy = lazy
    devas.fault("resource_set", "status500", times=-1)
    try:
        r = requests.get(envoy.url("/unknown/path"), timeout=5)
        assert r.status_code == 403, r.text
        assert "Unreachable" in r.headers.get("Warning", "")
        devas.fault("resource_set", "drop", times=-1)
        r = requests.get(envoy.url("/another/path"), timeout=10)
        assert r.status_code == 403, r.text
    finally:
        devas.clear_faults()
    assert echo.log() == [], "nothing reached the upstream"
    # A failure is not cached: once the AS answers, the path is looked up again.
    assert requests.get(envoy.url("/unknown/path"), timeout=5).status_code == 200
