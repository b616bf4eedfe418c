"""The test control API of the development AS, under `/_devas/` (development/test fixture,
NOT for production; no real AS has it): the call log, fault injection, direct RPT minting,
runtime knobs, extra grants, revocation, Keycloak initial access tokens, reset and state counters.

The call log and the fault queue have their own lock, so a delayed or dropped call never holds
the application lock while it sleeps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from devas.httpcore import (BadRequestBody, DropConnection, HttpError, Request, Response,
                            json_response)
from devas.store import Grant, now

if TYPE_CHECKING:
    from devas.server import App

PREFIX = "/_devas/"
ENDPOINTS = ("discovery", "token", "permission", "introspection", "resource_set", "policy", "registration",
             "jwks", "userinfo", "unknown")
FAULT_KINDS = ("drop", "delay", "status500", "status503", "garbage")
DEFAULT_DELAY_MS = 1000
GARBAGE = b"<html><body>devas: injected garbage, not JSON"


def _bad(description: str) -> HttpError:
    return HttpError(json_response(400, {"error": "invalid_request", "error_description": description}))


# ---- call log and faults ------------------------------------------------------------------------

@dataclass
class Fault:
    endpoint: str
    kind: str
    delay_ms: int = 0
    times: int = 1                # -1 = until reset
    grant_type: str | None = None  # token faults only: restrict to one grant

    def matches(self, endpoint: str, grant_type: str | None) -> bool:
        return (self.endpoint in ("any", endpoint)
                and (self.grant_type is None or self.grant_type == grant_type))


class Recorder:
    """Every AS call (control calls excluded) and the queued faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults.clear()

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def record(self, req: Request, endpoint: str, grant_type: str | None) -> Fault | None:
        """Logs the call and takes the first queued fault that applies to it (FIFO)."""
        with self._lock:
            fault = next((f for f in self.faults if f.matches(endpoint, grant_type)), None)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
            entry: dict[str, Any] = {
                "seq": len(self.calls), "time": time.time(), "endpoint": endpoint, "method": req.method,
                "path": req.path, "query": req.query_string, "headers": req.headers_for_log(),
                "body": req.text(), "grant_type": grant_type,
            }
            if fault is not None:
                entry["fault"] = fault.kind
            self.calls.append(entry)
            return fault

    def add_fault(self, fault: Fault) -> int:
        with self._lock:
            self.faults.append(fault)
            return len(self.faults)

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return [dict(c) for c in self.calls], [asdict(f) for f in self.faults]


def apply_fault(fault: Fault) -> Response | None:
    """Carries out a fault: sleeps `delay_ms` first (any kind), then drops the connection, answers
    with an error or garbage, or (delay) returns None so the call is answered normally."""
    if fault.delay_ms > 0:
        time.sleep(fault.delay_ms / 1000)
    if fault.kind == "drop":
        raise DropConnection()
    if fault.kind == "status500":
        return json_response(500, {"error": "server_error", "error_description": "injected fault"})
    if fault.kind == "status503":
        return json_response(503, {"error": "temporarily_unavailable", "error_description": "injected fault"},
                             {"Retry-After": "1"})
    if fault.kind == "garbage":
        # Labelled JSON on purpose: the client must not trust the Content-Type.
        return Response(200, GARBAGE, {"Content-Type": "application/json"})
    return None


# ---- handlers -------------------------------------------------------------------------------------

def _body(req: Request) -> dict[str, Any]:
    if not req.body.strip():
        return {}
    try:
        body = req.json()
    except BadRequestBody:
        body = None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _int(body: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = body.get(name, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise _bad(f"{name} must be an integer")
    return value


def reset(app: "App", req: Request) -> Response:
    forget = _body(req).get("forget_tokens", False)
    if not isinstance(forget, bool):
        raise _bad("forget_tokens must be a boolean")
    app.reset(forget_tokens=forget)
    return json_response(200, {"ok": True})


def calls(app: "App", req: Request) -> Response:
    entries, _ = app.recorder.snapshot()
    endpoint, since = req.query1("endpoint"), req.query1("since")
    if endpoint:
        entries = [c for c in entries if c["endpoint"] == endpoint]
    if since:
        entries = [c for c in entries if c["seq"] >= int(since)]
    return json_response(200, entries)


def clear_faults(app: "App", req: Request) -> Response:
    app.recorder.clear_faults()
    return json_response(200, {"ok": True})


def clear_calls(app: "App", req: Request) -> Response:
    app.recorder.clear_calls()
    return json_response(200, {"ok": True})


def fault(app: "App", req: Request) -> Response:
    body = _body(req)
    endpoint, kind, grant_type = body.get("endpoint", "any"), body.get("kind"), body.get("grant_type")
    if endpoint not in (*ENDPOINTS, "any"):
        raise _bad(f"endpoint must be one of {[*ENDPOINTS, 'any']}")
    if kind not in FAULT_KINDS:
        raise _bad(f"kind must be one of {list(FAULT_KINDS)}")
    delay_ms = _int(body, "delay_ms", 0) or (DEFAULT_DELAY_MS if kind == "delay" else 0)
    times = _int(body, "times", 1)
    if times == 0 or (times is not None and times < -1):
        raise _bad("times must be -1 or positive")
    if grant_type is not None and not isinstance(grant_type, str):
        raise _bad("grant_type must be a string")
    pending = app.recorder.add_fault(Fault(endpoint, kind, delay_ms or 0, times or 1, grant_type))
    return json_response(200, {"ok": True, "pending": pending})


def _abs_time(spec: dict[str, Any], name: str, at: int) -> int | None:
    """`name` as an absolute epoch, or `name_in` seconds from now; None if neither is given."""
    absolute, relative = _int(spec, name), _int(spec, name + "_in")
    return absolute if absolute is not None else (at + relative if relative is not None else None)


def mint_rpt(app: "App", req: Request) -> Response:
    body = _body(req)
    sub, client_id = body.get("sub"), body.get("client_id", "demo-app")
    perms_in, extra = body.get("permissions", []), body.get("claims", {})
    if not isinstance(sub, str) or not sub or not isinstance(client_id, str):
        raise _bad("sub (and client_id if given) must be non-empty strings")
    if not isinstance(perms_in, list) or not isinstance(extra, dict):
        raise _bad("permissions must be an array and claims an object")
    at = now()
    permissions = []
    for p in perms_in:
        if not isinstance(p, dict) or not isinstance(p.get("resource_id"), str) \
                or not isinstance(p.get("resource_scopes", []), list):
            raise _bad("each permission needs resource_id (string) and resource_scopes (array)")
        res = app.store.resources.get(p["resource_id"])
        perm = {"resource_id": p["resource_id"], "resource_name": res.name if res else p["resource_id"],
                "resource_scopes": list(p.get("resource_scopes", []))}
        for name in ("exp", "nbf", "iat"):
            if (value := _abs_time(p, name, at)) is not None:
                perm[name] = value
        permissions.append(perm)
    iat = at + (_int(body, "iat_in", 0) or 0)
    exp = at + (_int(body, "exp_in", app.store.settings.rpt_lifetime_s) or 0)
    nbf_in = _int(body, "nbf_in")
    as_jwt = body.get("jwt")
    if as_jwt is not None and not isinstance(as_jwt, bool):
        raise _bad("jwt must be a boolean")
    rec = app.dialect.mint_rpt(client_id, app.dialect.mint_party(sub), permissions, as_jwt, iat, exp,
                               at + nbf_in if nbf_in is not None else None, extra, bool(body.get("active", True)))
    app.store.count("rpts_minted")
    return json_response(200, {"rpt": rec.token, "jti": rec.claims.get("jti"), "exp": rec.exp, "jwt": rec.jwt})


def mint_id_token(app: "App", req: Request) -> Response:
    """An ID token signed with the AS's key (the JWKS key) holding exactly the claims given, over
    `iss` (the issuer), `iat` (now) and `exp` (now + `exp_in`, default user_token_lifetime_s); a
    claim given as null is left out. For a PEP's tests: what a login would never give (no `sub`,
    a past `exp`, another `aud`), genuinely signed."""
    body = _body(req)
    claims = body.get("claims", {})
    if not isinstance(claims, dict):
        raise _bad("claims must be an object")
    at = now()
    exp_in = _int(body, "exp_in", app.store.settings.user_token_lifetime_s) or 0
    merged = {"iss": app.dialect.issuer, "iat": at, "exp": at + exp_in, **claims}
    token = app.key.sign({k: v for k, v in merged.items() if v is not None})
    return json_response(200, {"id_token": token})


def initial_access_token(app: "App", req: Request) -> Response:
    """What a Keycloak admin creates in the console (Clients > Initial access token): a token
    with a use count for /clients-registrations/*."""
    body = _body(req)
    count, expiration = _int(body, "count", 1), _int(body, "expiration_s", 0)
    if not count or count < 1 or expiration is None or expiration < 0:
        raise _bad("count must be a positive integer and expiration_s a non-negative one")
    mint = getattr(app.dialect, "mint_initial_access_token", None)
    if mint is None:
        raise _bad("initial access tokens exist in the keycloak profile only")
    return json_response(200, mint(count, expiration))


def config(app: "App", req: Request) -> Response:
    if req.method == "POST":
        try:
            app.store.settings.update(_body(req))
        except ValueError as err:
            raise _bad(str(err)) from None
    return json_response(200, app.store.settings.as_dict())


def grant(app: "App", req: Request) -> Response:
    body = _body(req)
    sub, rid, scopes = body.get("sub"), body.get("resource_id"), body.get("scopes", [])
    if not isinstance(sub, str) or not isinstance(rid, str) or not isinstance(scopes, list):
        raise _bad("sub and resource_id must be strings, scopes an array")
    app.store.grants.append(Grant(sub, rid, [str(s) for s in scopes]))
    return json_response(200, {"ok": True})


def revoke(app: "App", req: Request) -> Response:
    body = _body(req)
    kind = body.get("kind", "all")
    if kind not in ("pat", "user", "rpt", "all"):
        raise _bad("kind must be pat, user, rpt or all")
    revoked = 0
    for rec in app.store.tokens.values():
        if rec.active and kind in ("all", rec.kind):
            rec.active = False
            revoked += 1
    return json_response(200, {"ok": True, "revoked": revoked})


def state(app: "App", req: Request) -> Response:
    store, at = app.store, now()
    entries, faults = app.recorder.snapshot()
    prefix = "tokens_issued."
    live: dict[str, int] = {}
    for rec in store.tokens.values():
        if rec.live(at):
            live[rec.kind] = live.get(rec.kind, 0) + 1
    return json_response(200, {
        "profile": app.dialect.name,
        "issuer": app.dialect.issuer,
        "tokens_issued": {k[len(prefix):]: v for k, v in store.counters.items() if k.startswith(prefix)},
        "tokens_live": live,
        "tickets_issued": store.counters.get("tickets_issued", 0),
        "tickets_outstanding": sum(1 for t in store.tickets.values() if t.exp > at),
        "introspections": store.counters.get("introspections", 0),
        "rpts_minted": store.counters.get("rpts_minted", 0),
        "resources": len(store.live_resources()),
        "clients": len(store.clients),
        "calls": len(entries),
        "faults_pending": faults,
        "settings": store.settings.as_dict(),
    })


ROUTES: dict[tuple[str, str], Callable[["App", Request], Response]] = {
    ("POST", "reset"): reset,
    ("GET", "calls"): calls,
    ("DELETE", "calls"): clear_calls,
    ("DELETE", "faults"): clear_faults,
    ("POST", "fault"): fault,
    ("POST", "rpt"): mint_rpt,
    ("POST", "id-token"): mint_id_token,
    ("GET", "config"): config,
    ("POST", "config"): config,
    ("POST", "grant"): grant,
    ("POST", "revoke"): revoke,
    ("POST", "initial-access-token"): initial_access_token,
    ("GET", "state"): state,
}


def dispatch(app: "App", req: Request) -> Response:
    name = req.path[len(PREFIX):].strip("/")
    handler = ROUTES.get((req.method, name))
    if handler is None:
        known = sorted({n for _, n in ROUTES})
        return json_response(404, {"error": "not_found", "error_description": f"control calls: {known}"})
    try:
        return handler(app, req)
    except HttpError as err:
        return err.response
    except ValueError as err:  # e.g. a non-integer `since`
        return _bad(str(err)).response
