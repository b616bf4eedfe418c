"""`pepctl render envoy --eoepca-compat` end to end: the wire behaviour the EOEPCA PEP's clients
depend on (docs/migrating-from-eoepca.md), rendered, run in real Envoy and checked the way the
old clients read it:

- the compact challenge `UMA realm=eoepca,as_uri=<AS>,ticket=<ticket>` (the old suite cuts the
  ticket after `ticket=`; uma-user-agent and the acceptance flow split on `,` and `=`);
- with `--path-prefix /pep`, the prefix stripped before the upstream (the filter matches the
  path without it, Envoy's route rewrites it away);
- an RPT accepted for the old Helm chart's `limitUses` (100) requests, then a new ticket."""

from __future__ import annotations

import re

import pytest
import requests

from support.devas import APP_CLIENT
from support.eoepca_client import challenge_fields, id_token, request_rpt, ticket_of

from support.eoepca_stack import render_compat_envoy

COMPACT = re.compile(r"^UMA realm=eoepca,as_uri=([^,\"]+),ticket=([^,\" ]+)$")


@pytest.fixture(scope="module")
def prefixed(stack, tmp_path_factory):
    envoy = render_compat_envoy(stack.pepctl, tmp_path_factory.mktemp("prefixed"), stack.echo.port,
                             "--path-prefix", "/pep")
    yield envoy
    envoy.stop()


def rpt_for(stack, url: str, user: str = "admin") -> str:
    challenge = requests.get(url, timeout=10)
    assert challenge.status_code == 401
    r = request_rpt(stack.token_endpoint, id_token(stack.gluu, user), ticket_of(challenge), APP_CLIENT)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def upstream_paths(stack) -> list[str]:
    return [e.get("path") for e in stack.echo.log()]


def test_the_preset_is_in_the_rendered_configuration(filter_json):
    assert filter_json["challenge_style"] == "compact"
    assert filter_json["rpt_max_uses"] == 100
    assert filter_json["authorize_path"] == "/authorize"


def test_the_challenge_is_the_compact_one(stack):
    resp = requests.get(f"{stack.pep}/res", timeout=10)
    assert resp.status_code == 401
    value = resp.headers["WWW-Authenticate"]
    m = COMPACT.match(value)
    assert m, value
    assert m.group(1) == stack.gluu.issuer
    assert ticket_of(resp) == m.group(2)
    assert challenge_fields(value)["ticket"] == m.group(2)


def test_the_prefix_is_stripped_before_the_upstream(stack, prefixed):
    # Matched without the prefix: /pep/res is the resource /res.
    resp = requests.get(prefixed.url("/pep/res/item?x=1"), timeout=10)
    assert resp.status_code == 401
    assert COMPACT.match(resp.headers["WWW-Authenticate"])
    rpt = rpt_for(stack, prefixed.url("/pep/res"))
    before = len(stack.echo.log())
    ok = requests.get(prefixed.url("/pep/res/item?x=1"), headers={"Authorization": f"Bearer {rpt}"}, timeout=10)
    assert ok.status_code == 200
    # The prefix itself, and a path that only starts with its letters, are not resources.
    assert requests.get(prefixed.url("/pep"), timeout=10).status_code == 200
    assert requests.get(prefixed.url("/pepres"), timeout=10).status_code == 200
    # What the upstream saw: the prefix gone, the query kept; /pepres untouched.
    assert upstream_paths(stack)[before:] == ["/res/item?x=1", "/", "/pepres"]


def test_an_rpt_is_accepted_for_the_old_limit_then_a_new_ticket(stack, prefixed):
    rpt = rpt_for(stack, prefixed.url("/pep/res"))
    headers = {"Authorization": f"Bearer {rpt}"}
    statuses = [requests.get(prefixed.url("/pep/res"), headers=headers, timeout=10).status_code for _ in range(100)]
    assert statuses == [200] * 100
    used_up = requests.get(prefixed.url("/pep/res"), headers=headers, timeout=10)
    assert used_up.status_code == 401
    assert COMPACT.match(used_up.headers["WWW-Authenticate"])
