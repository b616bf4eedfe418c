"""devas's Keycloak `resource_set?uri=…&matchingUri=true` (a development/test fixture, NOT for
production), as keycloak/keycloak does it: `ResourceSetService.find` (services/…/authorization/admin/)
first filters on `uri` equal to one of a resource's uris (ignoring case); only when that finds
nothing does it match patterns, over the resources the resource server owns, with
`org.keycloak.common.util.PathMatcher.matches` (common/), which picks one."""

from __future__ import annotations

import pytest
import requests
from devas_client import T, bearer, get_pat, rs

from devas.keycloak import normalize_uri, path_matcher


@pytest.mark.parametrize("entries, target, want", [
    # A trailing `/*`: the path and everything below it; the deepest wins.
    (["/a/*"], "/a", 0), (["/a/*"], "/a/b/c", 0), (["/a/*"], "/ab", None),
    (["/a/*", "/a/b/*"], "/a/b/c", 1), (["/a/b/*", "/a/*"], "/a/b/c", 0),
    # A plain uri: that path only.
    (["/a"], "/a", 0), (["/a"], "/a/b", None),
    # `{name}`: one segment; with a trailing `/*`, that segment and below.
    (["/o/{id}"], "/o/7", 0), (["/o/{id}"], "/o/7/x", None), (["/o/{id}"], "/o", None),
    (["/o/{id}/*"], "/o/7/x/y", 0), (["/o/{id}/*"], "/o/7", 0),
    (["/o/{_2}/items"], "/o/7/items", 0), (["/o/{_2}/items"], "/o/7/other", None),
    # An exact path beats a template; of two templates, the longer.
    (["/o/{id}", "/o/new"], "/o/new", 1), (["/o/{id}", "/o/{id}/{x}"], "/o/7/8", 1),
    (["/o/*", "/o/{id}"], "/o/7", 1),
    # A `*` that is not last matches nothing (neither a template nor a trailing wildcard).
    (["/a/*/b"], "/a/x/b", None),
    # `/*.ext`: a suffix.
    (["/*.html"], "/x/y.html", 0),
])
def test_path_matcher(entries, target, want):
    got = path_matcher([(u, i) for i, u in enumerate(entries)], target)
    assert got == want, (entries, target)


def test_the_target_is_normalised_as_keycloak_does():
    assert normalize_uri("/a//b/./c/../d/?q=1#f") == "/a/b/d"
    assert normalize_uri("/admin;x=1/y") == "/admin/y"
    assert normalize_uri("/caf%C3%A9") == "/café"
    assert path_matcher([("/a/*", 0)], "/a;jsessionid=1/x") == 0


def test_lookup_by_uri_then_by_pattern_over_the_servers_own_resources(kc):
    h = bearer(get_pat(kc))

    def make(name, uris, owner=None):
        body = {"name": name, "uris": uris, "resource_scopes": ["read"]}
        if owner:
            body["owner"] = owner
        r = requests.post(rs(kc), json=body, headers=h, timeout=T)
        assert r.status_code == 201, r.text
        return r.json()["_id"]

    def q(**params):
        return requests.get(rs(kc), params=params, headers=h, timeout=T).json()

    orders = make("orders", ["/orders", "/orders/*"])
    order = make("order", ["/orders/{id}"])
    users = make("users of alice", ["/users/{u}", "/users/{u}/*"], owner="alice")
    # Equal to one of the uris (ignoring case): found without matching, any owner.
    assert q(uri="/ORDERS", matchingUri="true") == [orders]
    assert q(uri="/users/{u}/*") == [users]
    # A template: one resource, the best match.
    assert q(uri="/orders/7", matchingUri="true") == [order]
    assert q(uri="/orders/7/items", matchingUri="true") == [orders]
    assert q(uri="/orders/7") == [], "without matchingUri, the uri is compared only"
    # Patterns are matched over the resources the resource server owns only.
    assert q(uri="/users/bob/photos", matchingUri="true") == []
    deep = q(uri="/orders/9", matchingUri="true", deep="true")
    assert [r["_id"] for r in deep] == [order] and deep[0]["uris"] == ["/orders/{id}"]
