"""Fixtures of the real-client cross-checks: client libraries written against the real
Keycloak and Gluu/Janssen (python-keycloak, requests-oauthlib-uma, eoepca-uma) driven against
the development AS, and through Envoy running the filter.

Where a library and devas disagree, the test asserts what the real server does (its source or
the library's own tests against it are cited in each test), not what devas does today.

The AS and the echo live for the session and are reset before each test; an Envoy lives as long
as the module that starts it. The harness of the end-to-end tests is reused, unmodified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# requests-oauthlib refuses to fetch a token over plain http:// unless told this is a test.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

from stack_fixtures import _clean_fixtures, echo, envoy_factory, keycloak_as, uma2_as  # noqa: E402,F401
