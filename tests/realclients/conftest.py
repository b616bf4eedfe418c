"""Fixtures of the real-client cross-checks: client libraries written against the real
Keycloak and Gluu/Janssen (python-keycloak, requests-oauthlib-uma, eoepca-uma) driven against
the development AS, and through Envoy running the filter.

Where a library and devas disagree, the test asserts what the real server does (its source or
the library's own tests against it are cited in each test), not what devas does today.

The stack is the end-to-end tests' (tests/support/fixtures.py): the AS and the echo live for the
session and are reset before each test; an Envoy lives as long as the module that starts it."""

from __future__ import annotations

import os

# requests-oauthlib refuses to fetch a token over plain http:// unless told this is a test.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

from support.fixtures import _clean_fixtures, echo, envoy_factory, keycloak_as, uma2_as  # noqa: E402,F401
