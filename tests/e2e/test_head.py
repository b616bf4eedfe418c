"""End to end: HEAD is GET without the content (RFC 9110 §9.3.2), so on a resource that allows GET
it is decided on GET's scope (docs/configuration.md, "HEAD"; core/src/resource.rs
`head_method_scope`): a client holding a GET RPT may HEAD, as the EOEPCA PEP allowed (it served
HEAD with its GET route), and a HEAD without an RPT gets a ticket for GET's scope, whose RPT
serves both. A resource that lists HEAD's scope and not GET's keeps needing HEAD's."""

from __future__ import annotations

import json

import pytest
import requests

from support.devas import ALL_SCOPES
from support.envoy import filter_config
from support.uma_client import parse_challenge, rpt_for_ticket

RESOURCES = [
    {"id": "res-alice", "uri": "/alice"},                                   # no scopes: any method's
    {"id": "res-bob", "uri": "/bob", "scopes": ALL_SCOPES},                 # the six a registration gets
    {"id": "res-readonly", "uri": "/readonly", "scopes": ["protected_head"]},  # HEAD only
]


@pytest.fixture(scope="module")
def envoy(envoy_factory, uma2_as, echo):
    return envoy_factory(filter_config(uma2_as, resources=RESOURCES), uma2_as.port, echo.port)


def head(envoy, path: str, rpt: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {rpt}"} if rpt else {}
    return requests.head(envoy.url(path), headers=headers, timeout=10)


def asked(devas) -> list[dict]:
    return [p for c in devas.calls("permission") for p in json.loads(c["body"])]


@pytest.mark.parametrize("path,rid,sub", [("/alice/x", "res-alice", "alice-0001"), ("/bob", "res-bob", "bob-0002")])
def test_a_get_rpt_opens_head(envoy, uma2_as, echo, path, rid, sub):
    get_only = uma2_as.mint_rpt(sub, [{"resource_id": rid, "resource_scopes": ["protected_get"]}])
    resp = head(envoy, path, get_only)
    assert resp.status_code == 200
    assert [e["method"] for e in echo.log()] == ["HEAD"]
    # A HEAD-only RPT does not: HEAD there is decided on GET's scope, and the ticket says so.
    head_only = uma2_as.mint_rpt(sub, [{"resource_id": rid, "resource_scopes": ["protected_head"]}])
    refused = head(envoy, path, head_only)
    assert refused.status_code == 401
    assert asked(uma2_as) == [{"resource_id": rid, "resource_scopes": ["protected_get"]}]


def test_the_ticket_of_a_head_gives_an_rpt_for_head_and_get(envoy, uma2_as, echo):
    challenge = head(envoy, "/alice/docs")
    assert challenge.status_code == 401
    ticket = parse_challenge(challenge.headers["WWW-Authenticate"])["ticket"]
    r = rpt_for_ticket(uma2_as, ticket, "alice")
    assert r.status_code == 200, r.text
    rpt = r.json()["access_token"]
    assert head(envoy, "/alice/docs", rpt).status_code == 200
    assert requests.get(envoy.url("/alice/docs"), headers={"Authorization": f"Bearer {rpt}"},
                        timeout=10).status_code == 200
    assert [e["method"] for e in echo.log()] == ["HEAD", "GET"]


def test_a_resource_allowing_head_but_not_get_keeps_heads_scope(envoy, uma2_as):
    assert head(envoy, "/readonly").status_code == 401
    assert asked(uma2_as) == [{"resource_id": "res-readonly", "resource_scopes": ["protected_head"]}]
    rpt = uma2_as.mint_rpt("alice-0001", [{"resource_id": "res-readonly", "resource_scopes": ["protected_head"]}])
    assert head(envoy, "/readonly", rpt).status_code == 200
    assert requests.get(envoy.url("/readonly"), timeout=10).status_code == 405
