"""The development AS application and its server (development/test fixture, NOT for production).

`App` ties a dialect, the store, the signing key and the control recorder together and routes
each request: control calls (`/_devas/*`) apart; every other call is logged, may meet a queued
fault, then runs under the application lock (the store is plain dicts; the AS is a test fixture,
so serialising its work is simpler than fine-grained locking and costs nothing that matters).

In-process use (pytest): `handle = start("keycloak", port=0)`; `handle.port`, `handle.issuer`,
`handle.endpoint("token")`, `handle.stop()`.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

from devas import control
from devas import seed as seed_mod
from devas.dialects import Route
from devas.httpcore import FixtureServer, HttpError, Request, Response, ServerHandle, json_response
from devas.keys import SigningKey
from devas.profiles import make
from devas.store import Store
from devas.tokens import Tokens


class App:
    def __init__(self, profile: str, base_url: str, realm: str, seed: dict[str, Any]):
        self.dialect = make(profile, base_url, realm)
        self.key = SigningKey.generate()
        self.store = Store(seed, profile=profile, resources_expire=self.dialect.resources_expire)
        self.tokens = Tokens(self.store, self.key, self.dialect.issuer)
        self.recorder = control.Recorder()
        self.dialect.bind(self)
        self.routes = self.dialect.routes()
        self.lock = threading.RLock()

    @property
    def issuer(self) -> str:
        return self.dialect.issuer

    def reset(self, forget_tokens: bool = False) -> None:
        """Forgets calls, faults, tickets, RPTs and runtime registrations and re-applies the seed;
        PATs and user tokens survive unless `forget_tokens`. The keys always stay: JWKS consumers
        need not refetch (and a Keycloak ticket, signed with the realm HMAC key, stays verifiable)."""
        with self.lock:
            self.recorder.clear()
            self.store.reset(forget_sessions=forget_tokens)

    # ---- a restart (`--state`) -------------------------------------------------------------
    # A real server keeps its realm, clients, resources, policies, keys and (Gluu's database,
    # Keycloak's persistent user sessions) issued tokens across a restart. `--state FILE` does
    # the same: written when the process is stopped (SIGTERM), read back at start. What was
    # recorded for the control API (calls, faults) is not kept.
    STATE_VERSION = 1

    def save_state(self, path: str | Path) -> None:
        with self.lock:
            state = {"version": self.STATE_VERSION, "profile": self.dialect.name,
                     "issuer": self.dialect.issuer, "key": self.key.to_state(),
                     "store": {k: v for k, v in vars(self.store).items() if k != "seed"}}
            blob = pickle.dumps(state)
        tmp = Path(f"{path}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)

    def load_state(self, path: str | Path) -> None:
        state = pickle.loads(Path(path).read_bytes())  # our own file, written by save_state
        if state.get("version") != self.STATE_VERSION or state.get("issuer") != self.dialect.issuer:
            raise ValueError(f"{path}: state of another devas (issuer {state.get('issuer')!r}, "
                             f"version {state.get('version')}); remove it to start afresh")
        with self.lock:
            self.key = SigningKey.from_state(state["key"])
            vars(self.store).update(state["store"])
            self.tokens = Tokens(self.store, self.key, self.dialect.issuer)
            self.dialect.bind(self)
            self.routes = self.dialect.routes()

    def _route(self, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self.routes:
            m = route.pattern.fullmatch(path)
            if m:
                return route, m.groupdict()
        return None, {}

    def handle(self, req: Request) -> Response:
        if req.path.startswith(control.PREFIX):
            with self.lock:
                return control.dispatch(self, req)
        route, params = self._route(req.path)
        endpoint = route.endpoint if route else "unknown"
        grant_type = req.form1("grant_type") if endpoint == "token" else None
        fault = self.recorder.record(req, endpoint, grant_type)
        if fault is not None:
            early = control.apply_fault(fault)  # sleeps outside the lock; may drop the connection
            if early is not None:
                return early
        with self.lock:
            try:
                return self._dispatch(route, params, req)
            except HttpError as err:
                return err.response

    def _dispatch(self, route: Route | None, params: dict[str, str], req: Request) -> Response:
        if route is None:
            return json_response(404, {"error": "not_found", "error_description": f"No endpoint at {req.path}"})
        method = req.method
        if method == "HEAD" and self.dialect.head_as_get and "GET" in route.methods:
            method = "GET"  # the body is dropped by the HTTP layer
        handler = route.methods.get(method)
        if handler is None:
            raise self.dialect.method_not_allowed()
        return handler(req, **params)


class DevasHandle(ServerHandle):
    def __init__(self, server: FixtureServer, app: App):
        super().__init__(server)
        self.app = app
        self.profile = app.dialect.name
        self.issuer = app.issuer

    def endpoint(self, name: str) -> str:
        """Absolute URL of an endpoint by its dialect name (token, permission, resource_set, ...)."""
        return self.app.dialect.url(name)

    @property
    def discovery_url(self) -> str:
        return self.app.dialect.base_url + self.app.dialect.discovery_paths[0]


def start(profile: str = "keycloak", port: int = 0, seed: str | Path | dict[str, Any] | None = None, *,
          host: str = "127.0.0.1", realm: str = "eoepca", base_url: str | None = None,
          log_requests: bool = False, state: str | Path | None = None) -> DevasHandle:
    """Starts the AS in a daemon thread. Port 0 binds a free port (`handle.port`). `base_url`
    (default `http://{host}:{port}`) is what the issuer and discovery URLs are built from.
    `state`: a file `save_state` wrote, restored before the first request is served."""
    seed_data = seed_mod.load(seed)
    server = FixtureServer(host, port, "devas", log_requests)
    try:
        bound = server.server_address[1]
        app = App(profile, base_url or f"http://{host}:{bound}", realm, seed_data)
        if state is not None and Path(state).exists():
            app.load_state(state)
    except Exception:
        server.server_close()
        raise
    server.app = app
    return DevasHandle(server, app)
