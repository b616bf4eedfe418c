"""`pepctl serve` against its own OpenAPI document, with schemathesis: for every operation the
document lists, requests generated from the document (with an operator's token, then a user's)
get no 5xx, only documented statuses and content types, headers and bodies that validate against
the documented schemas, and a 401 when the same request is replayed without or with a bad token.

Bounded and deterministic: a fixed number of examples per operation, derandomized, no example
database, so that a run never depends on luck or on an earlier run."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, ignored_auth,
                                                response_headers_conformance, response_schema_conformance,
                                                status_code_conformance)

from support.devas import DevAs, PROFILES
from support.pepctl import Pepctl, write_seed

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, ignored_auth]

# Every operation of the document, in the order they run: writes that remove things last, so
# that the ids the other operations are pointed at still exist when they run.
OPERATIONS = [
    ("GET", "/openapi.json"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/filter-config"), ("GET", "/xds-status"),
    ("GET", "/resources"), ("POST", "/resources"), ("GET", "/resources/{id}"), ("HEAD", "/resources/{id}"),
    ("PATCH", "/resources/{id}"), ("PUT", "/resources/{id}"), ("DELETE", "/resources/{id}"),
]

# Per operation and caller: 12 operations x 2 callers x 2 dialects, under 2,000 requests in all
# (operations without parameters run out of distinct examples sooner).
MAX_EXAMPLES = 40

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: it would make a failing run's time unbounded; the report names the request.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class Stack:
    """devas, and `pepctl serve` with homes for alice and bob and a few resources to aim at."""

    def __init__(self, profile: str, workdir):
        self.devas = DevAs(profile)
        self.server = None
        try:
            self._start(workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir) -> None:
        self.pepctl = Pepctl(workdir, self.devas)
        self.pepctl.use_seeded_client()
        self.pepctl.run("resources", "apply", "-f", str(write_seed(workdir / "seed.json", [
            {"name": "Alice home", "description": "a", "resource_uri": "/home/alice", "scopes": [],
             "default_owner": "alice-0001"},
            {"name": "Bob home", "description": "b", "resource_uri": "/home/bob", "scopes": [],
             "default_owner": "bob-0002"},
        ])))
        self.server = self.pepctl.serve()
        self.seen: set[tuple[str, str, str, int]] = set()
        self.tokens = {u: self.devas.user_token(u) for u in ("alice", "admin")}
        self.doc = requests.get(self.server.base + "/openapi.json", timeout=10).json()
        self.schema = schemathesis.openapi.from_dict(self.doc)
        # Ids owned by alice and by the operator (protected, public and open ones), so that the
        # `{id}` operations also reach resources that exist, not only 404s.
        self.ids = [r["id"] for r in self.server.request("GET", "/resources", self.tokens["admin"]).json()]
        for who, body in (("alice", {"name": "Doc", "icon_uri": "/home/alice/doc"}),
                          ("alice", {"name": "Pub", "icon_uri": "/home/alice/pub", "resource_scopes": ["public_access"]}),
                          ("admin", {"name": "Ops", "icon_uri": "/ops", "description": "d"}),
                          ("admin", {"name": "Open", "icon_uri": "/open", "resource_scopes": ["open"]})):
            r = self.server.request("POST", "/resources", self.tokens[who], json=body)
            assert r.status_code == 200, r.text
            self.ids.append(r.json()["id"])

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.devas.stop()


@pytest.fixture(scope="module", params=PROFILES)
def stack(request, tmp_path_factory):
    s = Stack(request.param, tmp_path_factory.mktemp(f"schemathesis-{request.param}"))
    yield s
    s.stop()


def test_the_document_lists_exactly_the_operations_checked(stack):
    """A new operation must be added to OPERATIONS, or it would go unchecked."""
    listed = {(m.upper(), p) for p, ops in stack.doc["paths"].items() for m in ops}
    assert listed == set(OPERATIONS)


# Free text of any Unicode (control characters, quotes, `%`, `/` included), short.
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SCOPES = ["protected_get", "protected_post", "protected_delete", "public_access", "Authenticated", "open", "read"]
# Owners the AS knows (a sub or a username): an unknown one is its own case below.
USERS = ["alice-0001", "bob-0002", "admin-0003", "alice"]
# A path segment: mostly what a canonical path may hold (unreserved characters, `:`, `@` and the
# sub-delimiters but `;`), sometimes an escape or free text, which pepctl must refuse or keep.
SEGMENT = st.one_of(st.from_regex(r"[A-Za-z0-9._~!$&'()*+,=:@-]{1,10}", fullmatch=True),
                    st.from_regex(r"[a-z]{1,4}%[0-9A-F]{2}", fullmatch=True),
                    st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8))


def near_valid(method: str, caller: str):
    """A body of fields that often pass validation (a path under one the caller owns, with a
    generated last segment; a non-empty name; PUT's required scopes): the document gives no
    pattern for paths, so pure generation almost never gets past the 422 to the AS calls."""
    prefixes = ["/home/alice/"] if caller == "alice" else ["/", "/home/alice/", "/ops/"]
    fields = {
        "name": st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
        "icon_uri": st.builds(str.__add__, st.sampled_from(prefixes), SEGMENT),
        "resource_scopes": st.lists(st.one_of(st.sampled_from(SCOPES), TEXT), max_size=3),
    }
    optional = {"description": st.one_of(st.none(), TEXT)}
    if method == "POST":
        optional["uuid"] = st.sampled_from(USERS)
    else:
        optional["ownership_id"] = st.sampled_from(USERS)
        fields.pop("icon_uri")
        optional["icon_uri"] = st.builds(str.__add__, st.sampled_from(prefixes), SEGMENT)
    return st.fixed_dictionaries(fields, optional=optional)


# Each operation with each caller; alice first, so that her DELETEs find her resources before
# the operator's have removed them.
@pytest.mark.parametrize("caller", ["alice", "admin"])
@pytest.mark.parametrize("method,path", OPERATIONS)
def test_operation_conforms(stack, method, path, caller):
    operation = stack.schema[path][method]
    headers = {"Authorization": f"Bearer {stack.tokens[caller]}"}
    session = requests.Session()
    steered = method in ("POST", "PUT", "PATCH")

    @SETTINGS
    @given(case=operation.as_strategy(), known=st.sampled_from(stack.ids), steer=near_valid(method, caller),
           owner=st.sampled_from(USERS), aim=st.sampled_from([True, True, True, False]),
           steer_it=st.sampled_from([True, True, True, False]))
    def check(case, known, steer, owner, aim, steer_it):
        # Mostly an id that exists (or existed: DELETE runs last) instead of the generated one,
        # and fields steered past validation over the generated ones.
        if aim and "id" in (case.path_parameters or {}):
            case.path_parameters = {**case.path_parameters, "id": known}
        if isinstance(case.body, dict):
            body = {**case.body, **(steer if steer_it and steered else {})}
            # An owner the AS does not know is pinned by its own test (below), not here.
            for key in ("uuid", "ownership_id"):
                if body.get(key) and body[key] not in USERS:
                    body[key] = owner
            case.body = body
        r = case.call_and_validate(base_url=stack.server.base, session=session, headers=headers, checks=CHECKS)
        stack.seen.add((method, path, caller, r.status_code))
        if method == "POST" and r.status_code == 200:
            stack.ids.append(r.json()["id"])

    check()


def test_writes_reached_their_success_paths(stack):
    """The operations that change things succeeded at least once for the operator: the run
    also fuzzed what pepctl sends the AS, not only the refusals in front of it."""
    if not stack.seen:
        pytest.skip("the operations did not run in this session")
    missing = [(m, p) for m, p in [("POST", "/resources"), ("PUT", "/resources/{id}"),
                                    ("PATCH", "/resources/{id}"), ("DELETE", "/resources/{id}")]
               if not any((m, p, "admin", s) in stack.seen for s in (200, 204))]
    assert not missing, sorted(stack.seen)


def test_an_owner_unknown_to_the_as_is_the_callers_error(stack):
    if stack.devas.profile != "keycloak":
        pytest.skip("Gluu has no resource owner: pepctl keeps owners itself, any string is one")
    admin = stack.tokens["admin"]
    r = stack.server.request("POST", "/resources", admin,
                             json={"name": "For a stranger", "icon_uri": "/stranger", "uuid": "no-such-user"})
    assert stack.server.request("GET", "/resources?path=/stranger", admin).status_code == 404, "nothing created"
    assert r.status_code == 422, (r.status_code, r.text)
    assert "uuid" in r.json()["error_description"], r.text
