"""UMA protection API of the development AS (development/test fixture, NOT for production):
the permission endpoint (tickets), resource registration (resource_set CRUD) and token
introspection, each authenticated and answered the way the active dialect does.

Resources belong to the resource server (client) whose PAT registered them; a resource server
sees, lists and asks tickets for its own resources only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devas.auth import authenticate_client, protection_identity
from devas.httpcore import BadRequestBody, Request, Response, empty_response, json_response
from devas.store import Permission, Resource, TokenRecord, new_id, now

if TYPE_CHECKING:
    from devas.server import App


# ---- permission endpoint ----------------------------------------------------------------------

def permission(app: "App", req: Request) -> Response:
    dialect = app.dialect
    pat = protection_identity(app, req, require_scope=dialect.permission_requires_protection_scope)
    try:
        body = req.json()
    except BadRequestBody:
        raise dialect.error(400, "invalid_permission_request", "Invalid permission request.") from None
    permissions = [_requested_permission(app, pat.client_id, item) for item in dialect.permission_items(body)]
    return json_response(201, {"ticket": app.tokens.issue_ticket(pat.client_id, permissions, pat=pat)})


def _requested_permission(app: "App", client_id: str, item: Any) -> Permission:
    dialect = app.dialect
    if not isinstance(item, dict):
        raise dialect.error(400, "invalid_permission_request", "A permission must be a JSON object.")
    ref = item.get("resource_id")
    res = (app.store.resource(ref, client_id, by_name=dialect.resource_id_may_be_name)
           if isinstance(ref, str) and ref else None)
    if res is None:
        raise dialect.error(400, "invalid_resource_id", f"Resource set [{ref}] does not exist.")
    scopes = item.get("resource_scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise dialect.error(400, "invalid_scope", "resource_scopes must be an array of strings.")
    unknown = [s for s in scopes if s not in res.scopes]
    if unknown:
        raise dialect.error(400, "invalid_scope", f"Scope [{unknown[0]}] is not registered for resource [{res.id}].")
    return Permission(res.id, list(scopes))


# ---- introspection ------------------------------------------------------------------------------

def introspection(app: "App", req: Request) -> Response:
    dialect = app.dialect
    if dialect.introspection_auth == "client":
        caller = authenticate_client(app, req).client_id
    else:
        caller = protection_identity(app, req).client_id
    token = req.form1("token")
    if not token:
        raise dialect.error(400, "invalid_request", "Token not provided.")
    app.store.count("introspections")
    body = dialect.introspect(app.tokens.resolve(token), req.form1("token_type_hint"), caller, now(),
                              app.store.settings.introspection_requires_aud)
    return json_response(200, body, {"Cache-Control": "no-store"})


# ---- resource registration ------------------------------------------------------------------------

def _resource_server(app: "App", req: Request) -> TokenRecord:
    return protection_identity(app, req, require_scope=True)


def _json_object(app: "App", req: Request) -> dict[str, Any]:
    try:
        body = req.json()
    except BadRequestBody:
        body = None
    if not isinstance(body, dict):
        raise app.dialect.error(400, "invalid_request", "The request body must be a JSON object.")
    return body


def _own_resource(app: "App", pat: TokenRecord, rid: str) -> Resource:
    res = app.store.resource(rid, pat.client_id)
    if res is None:
        raise app.dialect.not_found()
    return res


def _parsed(app: "App", req: Request, pat: TokenRecord, rid: str, existing: Resource | None = None) -> Resource:
    """The resource described by the request body, with id `rid`; enforces unique names. An update
    that names no owner keeps the current one (the policy hangs on it)."""
    body = _json_object(app, req)
    fields = app.dialect.parse_resource(app.store, body, pat.client_id, now())
    if existing is not None and "owner" not in body:
        fields["owner"] = existing.owner
    res = Resource(id=rid, client_id=pat.client_id, **fields)
    if app.dialect.resource_names_unique and any(
            r.name == res.name and r.owner == res.owner and r.id != rid
            for r in app.store.live_resources(pat.client_id)):
        raise app.dialect.error(409, "invalid_request", f"Resource with name [{res.name}] already exists.")
    return res


def list_resources(app: "App", req: Request) -> Response:
    pat = _resource_server(app, req)
    return app.dialect.list_resources(app.store, app.store.live_resources(pat.client_id), req)


def create_resource(app: "App", req: Request) -> Response:
    pat = _resource_server(app, req)
    res = _parsed(app, req, pat, new_id())
    app.store.resources[res.id] = res
    return app.dialect.created(app.store, res)


def read_resource(app: "App", req: Request, rid: str) -> Response:
    res = _own_resource(app, _resource_server(app, req), rid)
    return json_response(200, app.dialect.render_resource(app.store, res))


def update_resource(app: "App", req: Request, rid: str) -> Response:
    pat = _resource_server(app, req)
    res = _parsed(app, req, pat, rid, _own_resource(app, pat, rid))  # full replacement (FedAuthz §3.2.3)
    app.store.resources[rid] = res
    return app.dialect.updated(res)


def delete_resource(app: "App", req: Request, rid: str) -> Response:
    pat = _resource_server(app, req)
    del app.store.resources[_own_resource(app, pat, rid).id]
    return empty_response(204)
