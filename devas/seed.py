"""The development AS's seed: built-in clients, users, resources and grants, and how a `--seed`
JSON file overrides or extends them (development/test fixture, NOT for production).

Merge rules (README "Seed"): lists of records merge by key (`client_id`, `sub`, `_id`): a record
with a known key replaces the built-in one, a new key is appended; `grants` are appended;
scalar keys (lifetimes, settings, `initial_access_tokens`) replace. `"replace_defaults": true` in the
file starts from an empty seed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ALL_METHOD_SCOPES = ["protected_get", "protected_head", "protected_post",
                     "protected_put", "protected_patch", "protected_delete"]
READ_SCOPES = ["protected_get", "protected_head"]
ANY_USER = "*"  # a grant row for every authenticated requesting party

DEFAULT_SEED: dict[str, Any] = {
    "clients": [
        # The PEP's resource-server client: may obtain PATs (uma_protection).
        {"client_id": "pep-client", "client_secret": "pep-secret", "uma_protection": True},
        # A requesting-party client (what a UMA client app uses for password and UMA grants).
        {"client_id": "demo-app", "client_secret": "demo-secret", "uma_protection": False},
        # Like demo-app, but Gluu/Janssen issue it JWT RPTs (`rpt_as_jwt`), RS256 with the JWKS key.
        {"client_id": "jwt-app", "client_secret": "jwt-secret", "uma_protection": False, "rpt_as_jwt": True},
        # JWT RPTs signed HS256 with the client secret (Gluu `access_token_signing_alg` HS256).
        {"client_id": "jwt-hs-app", "client_secret": "jwt-hs-secret", "uma_protection": False,
         "rpt_as_jwt": True, "access_token_signing_alg": "HS256"},
    ],
    "users": [
        {"sub": "alice-0001", "username": "alice", "password": "alice-pw", "isOperator": False},
        {"sub": "bob-0002", "username": "bob", "password": "bob-pw", "isOperator": False},
        {"sub": "admin-0003", "username": "admin", "password": "admin-pw", "isOperator": True},
    ],
    "resources": [
        {"_id": "res-alice", "name": "Alice space", "uris": ["/alice"],
         "resource_scopes": ALL_METHOD_SCOPES, "owner": "alice-0001"},
        {"_id": "res-alice-docs", "name": "Alice documents", "uris": ["/alice/docs"],
         "resource_scopes": ALL_METHOD_SCOPES, "owner": "alice-0001"},
        {"_id": "res-bob", "name": "Bob space", "uris": ["/bob"],
         "resource_scopes": ALL_METHOD_SCOPES, "owner": "bob-0002"},
        {"_id": "res-admin", "name": "Admin area", "uris": ["/admin"],
         "resource_scopes": ALL_METHOD_SCOPES, "owner": "admin-0003"},
        # Shared areas belong to the resource server itself, as in Keycloak when the RS (or an
        # admin in the console) registers a resource without an owner: a ticketless UMA grant
        # without `permission` evaluates the RS's resources and the user's own
        # (Permissions.all), so every user sees these two.
        {"_id": "res-readonly", "name": "Read-only data", "uris": ["/readonly"],
         "resource_scopes": READ_SCOPES, "owner": "pep-client"},
        {"_id": "res-public", "name": "Public", "uris": ["/"],
         "resource_scopes": ALL_METHOD_SCOPES, "owner": "pep-client"},
    ],
    "grants": [
        {"sub": "bob-0002", "resource_id": "res-alice", "scopes": ["protected_get"]},
        {"sub": ANY_USER, "resource_id": "res-readonly", "scopes": ["protected_get", "protected_head"]},
        {"sub": ANY_USER, "resource_id": "res-public", "scopes": ["protected_get", "protected_head"]},
    ],
    # Keycloak initial access tokens: what an admin would create in the console (Clients > Initial
    # access token; count 1, no expiration). More: POST /_devas/initial-access-token {"count": n}.
    "initial_access_tokens": [{"token": "devas-initial-access-token", "count": 1}],
    "pat_lifetime_s": 300,
    "rpt_lifetime_s": 300,
    "ticket_lifetime_s": 300,
    "user_token_lifetime_s": 3600,
}

RECORD_KEYS = {"clients": "client_id", "users": "sub", "resources": "_id"}
APPENDED_LISTS = ("grants",)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    if override.get("replace_defaults"):
        base = {name: [] for name in (*RECORD_KEYS, *APPENDED_LISTS)}
    out = copy.deepcopy(base)
    for name, value in override.items():
        if name == "replace_defaults":
            continue
        if name in RECORD_KEYS:
            key = RECORD_KEYS[name]
            records = {r[key]: r for r in out.get(name, [])}
            for record in value:
                records[record[key]] = copy.deepcopy(record)
            out[name] = list(records.values())
        elif name in APPENDED_LISTS:
            out[name] = out.get(name, []) + copy.deepcopy(value)
        else:
            out[name] = copy.deepcopy(value)
    return out


def load(source: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """The effective seed: the built-in one, merged with a JSON file path or a dict if given."""
    if source is None:
        return copy.deepcopy(DEFAULT_SEED)
    if not isinstance(source, dict):
        source = json.loads(Path(source).read_text())
    return merge(DEFAULT_SEED, source)
