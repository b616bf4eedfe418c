"""The development AS (`devas/`, a test fixture, NOT for production) as a child process, and
what its built-in seed holds (devas/seed.py): the clients, users and resources tests rely on."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import requests

from support.processes import PYTHON, ROOT, Service

# Where `python -m devas` and `python -m devas.echo` run from.
DEVAS_DIR = Path(os.environ.get("DEVAS_DIR") or ROOT).resolve()

PROFILES = ["keycloak", "uma2"]

# The seed's parties.
PEP_CLIENT = ("pep-client", "pep-secret")   # the resource server (holds PATs)
APP_CLIENT = ("demo-app", "demo-secret")    # the requesting party's client
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}  # every user's is <name>-pw
SUBS = {"alice": "alice-0001", "bob": "bob-0002", "admin": "admin-0003"}

# The seed's resources and the scopes of its method table.
RESOURCES = [
    {"id": "res-alice", "uri": "/alice"},
    {"id": "res-alice-docs", "uri": "/alice/docs"},
    {"id": "res-bob", "uri": "/bob"},
]
ALL_SCOPES = ["protected_get", "protected_head", "protected_post", "protected_put",
              "protected_patch", "protected_delete"]
METHOD_SCOPES = {"GET": "protected_get", "HEAD": "protected_head", "POST": "protected_post",
                 "PUT": "protected_put", "PATCH": "protected_patch", "DELETE": "protected_delete"}

# UMA 2.0 Grant §3.3.1: the grant type, and the claim token format of an OpenID Connect ID token.
UMA_GRANT = "urn:ietf:params:oauth:grant-type:uma-ticket"
ID_TOKEN_FORMAT = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken"


class DevAs(Service):
    """devas in one dialect (`keycloak`, `uma2`, `janssen`) on `port` (0: one the kernel picks),
    with its control API (`/_devas/...`, devas/README.md) as methods."""

    def __init__(self, profile: str, port: int = 0, seed: Path | None = None, state: Path | None = None):
        """`state`: devas keeps its realm, registrations, keys and tokens in this file across a
        restart (`--state`): stop() writes it, a DevAs started on it (and on the same port, so
        the issuer is the same) reads it back."""
        self.profile = profile
        args = [PYTHON, "-m", "devas", "--profile", profile, "--port", str(port), "--quiet"]
        if seed is not None:
            args += ["--seed", str(seed)]
        if state is not None:
            args += ["--state", str(state)]
        super().__init__(args, ready="devas ready", cwd=DEVAS_DIR)
        self.issuer = self.field("issuer")
        self.port = int(self.field("port"))
        self.base = f"http://127.0.0.1:{self.port}"

    @functools.cached_property
    def discovery(self) -> dict:
        """The UMA discovery document, fetched on first use (kept only once it is answered:
        Janssen refuses it until UMA is switched on)."""
        r = requests.get(f"{self.issuer}/.well-known/uma2-configuration", timeout=5)
        r.raise_for_status()
        return r.json()

    # ---- the control API ----------------------------------------------------------------------

    def reset(self) -> None:
        requests.post(f"{self.base}/_devas/reset", timeout=5).raise_for_status()

    def calls(self, endpoint: str | None = None) -> list[dict]:
        params = {"endpoint": endpoint} if endpoint else None
        r = requests.get(f"{self.base}/_devas/calls", params=params, timeout=5)
        r.raise_for_status()
        body = r.json()
        return body["calls"] if isinstance(body, dict) else body

    def fault(self, endpoint: str, kind: str, times: int = -1, delay_ms: int = 0) -> None:
        r = requests.post(f"{self.base}/_devas/fault", json={
            "endpoint": endpoint, "kind": kind, "times": times, "delay_ms": delay_ms}, timeout=5)
        r.raise_for_status()

    def clear_faults(self) -> None:
        requests.delete(f"{self.base}/_devas/faults", timeout=5).raise_for_status()

    def configure(self, **settings) -> dict:
        r = requests.post(f"{self.base}/_devas/config", json=settings, timeout=5)
        r.raise_for_status()
        return r.json()

    def mint_rpt(self, sub: str, permissions: list[dict], exp_in: int = 300, **extra) -> str:
        body = {"sub": sub, "permissions": permissions, "exp_in": exp_in, **extra}
        r = requests.post(f"{self.base}/_devas/rpt", json=body, timeout=5)
        r.raise_for_status()
        return r.json()["rpt"]

    def grant(self, sub: str, resource_id: str, scopes: list[str]) -> None:
        """A policy grant (stands in for the real server's policy administration)."""
        r = requests.post(f"{self.base}/_devas/grant", json={"sub": sub, "resource_id": resource_id,
                                                             "scopes": scopes}, timeout=5)
        r.raise_for_status()

    def initial_access_token(self, count: int = 1) -> str:
        """A Keycloak initial access token, as a realm admin would create one."""
        r = requests.post(f"{self.base}/_devas/initial-access-token", json={"count": count}, timeout=5)
        r.raise_for_status()
        return r.json()["token"]

    # ---- the AS's own endpoints -----------------------------------------------------------------

    def user_tokens(self, username: str, client: tuple[str, str] = APP_CLIENT) -> dict:
        """The password grant's answer (access_token, id_token) for a seed user: what a UMA
        client application starts from."""
        r = requests.post(self.discovery["token_endpoint"], data={
            "grant_type": "password", "username": username, "password": f"{username}-pw",
            "scope": "openid"}, auth=client, timeout=5)
        r.raise_for_status()
        return r.json()

    def user_token(self, username: str) -> str:
        return self.user_tokens(username)["access_token"]

    def pat_form(self) -> dict:
        """The PAT request as each real server wants it: Gluu/Janssen need scope=uma_protection,
        Keycloak refuses it (uma_protection is a client role there)."""
        if self.profile == "keycloak":
            return {"grant_type": "client_credentials"}
        return {"grant_type": "client_credentials", "scope": "uma_protection"}

    def pat(self, client_id: str = PEP_CLIENT[0], secret: str = PEP_CLIENT[1]) -> str:
        r = requests.post(self.discovery["token_endpoint"], data=self.pat_form(), auth=(client_id, secret),
                          timeout=5)
        r.raise_for_status()
        return r.json()["access_token"]

    def as_resource(self, rid: str, client: tuple[str, str] = PEP_CLIENT) -> requests.Response:
        return requests.get(f"{self.discovery['resource_registration_endpoint']}/{rid}",
                            headers={"Authorization": f"Bearer {self.pat(*client)}"}, timeout=5)

    def as_resource_ids(self) -> list[str]:
        r = requests.get(self.discovery["resource_registration_endpoint"],
                         headers={"Authorization": f"Bearer {self.pat()}"}, timeout=5)
        r.raise_for_status()
        return [x if isinstance(x, str) else x["_id"] for x in r.json()]

    def delete_at_as(self, rid: str) -> None:
        r = requests.delete(f"{self.discovery['resource_registration_endpoint']}/{rid}",
                            headers={"Authorization": f"Bearer {self.pat()}"}, timeout=5)
        assert r.status_code in (200, 204), r.text
