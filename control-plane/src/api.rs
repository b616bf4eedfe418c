//! `pepctl serve`: the Resource API of the seed (PEP-UC-005) with its ownership rules, made
//! safe: the caller is the verified `sub` of the bearer token (identity.rs); a user creates
//! only under a path they own; an operator (`isOperator`) may create on behalf of a user
//! (`uuid`) and transfer ownership (`ownership_id`), as may the owner; every error is a JSON
//! body `{"error","error_description"}` (with the seed's `Error` header for old clients).
//! Also `/openapi.json` (PEP-UC-007) and `/filter-config`, which the filter polls.
//!
//! The server starts without the AS: `/filter-config` and `/healthz` answer at once (the
//! filter keeps enforcing the table it has), the AS is reached in the background, retried
//! until it answers, and `/readyz` says 503 with the cause until then. Calls that need the
//! AS (every call with a token: its JWKS or userinfo verifies the caller) answer 503 meanwhile.
//!
//! Writes are serialised by one async lock: each spans an AS call and a repository write,
//! and uniqueness checks must see the writes before them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::{watch, Mutex};
use uma_pep_core::keypath;

use crate::apply::{as_owner, key_message};
use crate::context::{AsContext, Common, ContextError};
use crate::expiry::description_of;
use crate::identity::{Caller, IdentityConfig, IdentityError, Verifier};
use crate::pdp::PdpClient;
use crate::registration::ClientFile;
use crate::render::filter_resources;
use crate::repository::{now_s, RepoError, Repository, Source, StoredResource};
use crate::resource_rules::{canonical_uri, complete_scopes, is_open, registrable_uri, self_and_parents};
use crate::resource_set::{Description, ResourceSetClient, ResourceSetError};
use crate::transport::checked_url;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the Resource API
    #[arg(long, default_value = "127.0.0.1:5576", env = "PEPCTL_LISTEN")]
    pub listen: SocketAddr,
    /// PDP base URL; when given, default ownership policies are registered on creation
    #[arg(long, env = "PEPCTL_PDP_URL")]
    pub pdp_url: Option<String>,
    /// Policy path on the PDP
    #[arg(long, default_value = "/pdp/policy/")]
    pub pdp_policy_path: String,
    /// Required `aud` of callers' JWTs
    #[arg(long, env = "PEPCTL_AUDIENCE")]
    pub audience: Option<String>,
    /// Clock leeway for callers' JWTs, seconds
    #[arg(long, default_value_t = 30)]
    pub leeway_s: u64,
    /// How often to renew AS registrations that expire (Gluu), seconds
    #[arg(long, default_value_t = 3600)]
    pub refresh_interval_s: u64,
    /// Renew a registration whose AS expiry is closer than this, seconds
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub refresh_before_s: i64,
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("--pdp-url: {0}")]
    Pdp(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Server(std::io::Error),
}

pub struct AppState {
    pub repo: Repository,
    /// The AS clients once the AS has been reached; until then, why not.
    pub link: watch::Sender<AsLink>,
    pub pdp: Option<PdpClient>,
    pub write_lock: Mutex<()>,
}

/// What needs the AS: resource registration, and the verification of callers' tokens (its
/// JWKS and userinfo endpoints come from discovery).
pub struct Connected {
    pub resource_set: Arc<ResourceSetClient>,
    pub verifier: Verifier,
}

#[derive(Clone)]
pub enum AsLink {
    /// Not reached yet: the last failure and the attempts so far.
    Waiting {
        cause: String,
        attempts: u32,
    },
    Ready(Arc<Connected>),
}

impl AppState {
    pub fn new(repo: Repository, link: AsLink, pdp: Option<PdpClient>) -> Self {
        Self { repo, link: watch::Sender::new(link), pdp, write_lock: Mutex::new(()) }
    }

    fn connected(&self) -> Result<Arc<Connected>, ApiError> {
        match &*self.link.borrow() {
            AsLink::Ready(c) => Ok(c.clone()),
            AsLink::Waiting { cause, .. } => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!("the authorization server has not been reached yet ({cause}); retrying"),
            )),
        }
    }
}

/// An API error: status, a machine code and a human message (never a token).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Resource not found")
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
    fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({"error": self.code, "error_description": self.message})))
                .into_response();
        // The seed reported errors in an `Error` header; its clients still read it.
        let printable: String =
            self.message.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
        if let Ok(v) = HeaderValue::from_str(&printable) {
            response.headers_mut().insert("Error", v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        tracing::error!(error = %e, "repository error");
        ApiError::internal("repository error")
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Missing => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "no token passed")
            }
            IdentityError::Invalid(why) => {
                tracing::info!(reason = %why, "caller token refused");
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "invalid token")
            }
            IdentityError::Unavailable(why) => {
                tracing::warn!(reason = %why, "cannot verify caller tokens");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "cannot verify tokens now",
                )
            }
        }
    }
}

fn as_error(e: ResourceSetError) -> ApiError {
    match e {
        ResourceSetError::Conflict(name) => {
            ApiError::unprocessable(format!("a resource named {name:?} already exists at the AS"))
        }
        other => {
            tracing::warn!(error = %other, "AS call failed");
            ApiError::upstream(format!("authorization server: {other}"))
        }
    }
}

type Shared = Arc<AppState>;

/// The verified caller, and the AS clients (503 while the AS has not been reached; a call
/// without a token is a 401 either way).
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<(Caller, Arc<Connected>), ApiError> {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return Err(IdentityError::Missing.into());
    };
    let link = state.connected()?;
    let caller = link.verifier.verify(Some(auth.to_str().unwrap_or(""))).await?;
    Ok((caller, link))
}

/// The representation: clean names plus the seed's `_id`/`_name`/`_reverse_match_url`.
fn representation(r: &StoredResource) -> Value {
    json!({
        "id": r.id,
        "_id": r.id,
        "name": r.name,
        "_name": r.name,
        "icon_uri": r.uri,
        "_reverse_match_url": r.uri,
        "resource_scopes": r.scopes,
        "description": r.description,
        "ownership_id": r.owner,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

fn may_manage(c: &Caller, r: &StoredResource) -> bool {
    c.is_operator || c.sub == r.owner
}

async fn load(state: &AppState, id: String) -> Result<StoredResource, ApiError> {
    state.repo.run(move |r| r.get(&id)).await?.ok_or_else(ApiError::not_found)
}

/// A body: 400 when it is not JSON; 422 naming the key for an unknown key (with the closest
/// valid one), a missing or a mistyped value.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(body) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("body is not JSON: {e}"),
        ));
    }
    keypath::from_slice(body).map_err(|e| ApiError::unprocessable(key_message(&e)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    icon_uri: Option<String>,
    uri: Option<String>,
    resource_scopes: Option<Vec<String>>,
    description: Option<String>,
    uuid: Option<String>,
}

/// The seed's rule for a non-operator: the nearest registered path among `uri` and its
/// parents (`/` excluded) must be the caller's.
fn may_create_under(caller: &Caller, uri: &str, repo: &Repository) -> Result<bool, RepoError> {
    for p in self_and_parents(uri) {
        if let Some(r) = repo.get_by_uri(&p)? {
            return Ok(r.owner == caller.sub);
        }
    }
    Ok(false)
}

async fn create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let (caller, link) = caller(&state, &headers).await?;
    let body: CreateBody = parse_json(&body)?;
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::unprocessable("name is required"))?;
    let raw_uri =
        body.icon_uri.or(body.uri).ok_or_else(|| ApiError::unprocessable("icon_uri is required"))?;
    let uri = registrable_uri(&raw_uri).map_err(|e| ApiError::unprocessable(format!("icon_uri: {e}")))?;
    let owner = match body.uuid.filter(|u| !u.trim().is_empty()) {
        Some(u) if u != caller.sub && !caller.is_operator => {
            return Err(ApiError::forbidden(
                "only an operator may create a resource on behalf of another user",
            ))
        }
        Some(u) => u,
        None => caller.sub.clone(),
    };
    let scopes = complete_scopes(&body.resource_scopes.unwrap_or_default());

    let _write = state.write_lock.lock().await;
    {
        let (c, u, n) = (caller.clone(), uri.clone(), name.clone());
        let (allowed, by_uri, by_name) = state
            .repo
            .run(move |r| {
                Ok((c.is_operator || may_create_under(&c, &u, r)?, r.get_by_uri(&u)?, r.get_by_name(&n)?))
            })
            .await?;
        if !allowed {
            return Err(ApiError::forbidden(format!("you own no path above {uri}")));
        }
        if by_uri.is_some() {
            return Err(ApiError::unprocessable(format!("Resource already exists for URI {uri}")));
        }
        if by_name.is_some() {
            return Err(ApiError::unprocessable(format!("a resource named {name:?} already exists")));
        }
    }
    let description = Description {
        name: name.clone(),
        uri: uri.clone(),
        scopes: scopes.clone(),
        description: body.description.clone(),
        owner: as_owner(&owner),
    };
    // An API create never adopts an AS resource of the same name (that is apply's job for
    // its own file): a 409 is a conflict for the caller.
    let registered = link.resource_set.create(&description).await.map_err(as_error)?;
    let id = registered.id.clone();
    // Gluu's create answer has no exp: read it back so the registration is renewed in time.
    let as_expires_at = match (registered.exp, link.resource_set.profile()) {
        (Some(e), _) => Some(e),
        (None, uma_pep_core::config::AsProfile::Uma2) => {
            link.resource_set.get(&id).await.ok().flatten().and_then(|r| r.exp)
        }
        (None, _) => None,
    };

    if let (Some(pdp), false) = (&state.pdp, is_open(&scopes)) {
        let auth =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        if let Err(e) = pdp.register_defaults(&id, &owner, &scopes, &auth).await {
            tracing::warn!(resource = %id, error = %e, "PDP policy failed; rolling back the AS registration");
            rollback(&link.resource_set, &id).await;
            return Err(ApiError::upstream(format!("policy decision point: {e}; resource not created")));
        }
    }

    let now = now_s();
    let stored = StoredResource {
        id: id.clone(),
        name,
        uri,
        owner,
        scopes,
        description: body.description,
        source: Source::Api,
        as_expires_at,
        created_at: now,
        updated_at: now,
    };
    let to_store = stored.clone();
    if let Err(e) = state.repo.run(move |r| r.upsert(&to_store)).await {
        rollback(&link.resource_set, &id).await;
        return Err(e.into());
    }
    tracing::info!(resource = %id, owner = %stored.owner, caller = %caller.sub, "resource created");
    let mut response = (StatusCode::OK, Json(representation(&stored))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/resources/{}", urlencode(&id))) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn rollback(resource_set: &ResourceSetClient, id: &str) {
    if let Err(e) = resource_set.delete(id).await {
        tracing::error!(resource = %id, error = %e, "rollback failed: the AS keeps a resource pepctl does not know");
    }
}

#[derive(Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (caller, _) = caller(&state, &headers).await?;
    if let Some(path) = q.path {
        // A lookup: any spelling of the path finds it, as the filter would match it.
        let uri = canonical_uri(&path).map_err(|e| ApiError::unprocessable(format!("path: {e}")))?;
        let found = state.repo.run(move |r| r.get_by_uri(&uri)).await?.ok_or_else(ApiError::not_found)?;
        if !may_manage(&caller, &found) {
            return Err(ApiError::forbidden("User lacking sufficient access privileges"));
        }
        return Ok(Json(representation(&found)));
    }
    let sub = caller.sub.clone();
    let list = if caller.is_operator {
        state.repo.run(|r| r.list()).await?
    } else {
        state.repo.run(move |r| r.list_by_owner(&sub)).await?
    };
    Ok(Json(Value::Array(list.iter().map(representation).collect())))
}

async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (caller, _) = caller(&state, &headers).await?;
    let r = load(&state, id).await?;
    if !may_manage(&caller, &r) {
        return Err(ApiError::forbidden("User lacking sufficient access privileges"));
    }
    Ok(Json(representation(&r)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    resource_scopes: Option<Vec<String>>,
    description: Option<String>,
    icon_uri: Option<String>,
    ownership_id: Option<String>,
    /// The representation's read-only fields are accepted and ignored, so that a resource
    /// read with GET can be edited and sent back.
    #[serde(default, rename = "id")]
    _id_: Option<IgnoredAny>,
    #[serde(default, rename = "_id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "_name")]
    _name: Option<IgnoredAny>,
    #[serde(default, rename = "_reverse_match_url")]
    _reverse_match_url: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

async fn update_common(
    state: Shared,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    full: bool,
) -> Result<Json<Value>, ApiError> {
    let (caller, link) = caller(&state, &headers).await?;
    let body: UpdateBody = parse_json(&body)?;
    if full && (body.name.is_none() || body.resource_scopes.is_none()) {
        return Err(ApiError::unprocessable("PUT needs name and resource_scopes"));
    }
    let _write = state.write_lock.lock().await;
    let current = load(&state, id.clone()).await?;
    if !may_manage(&caller, &current) {
        return Err(ApiError::forbidden("User lacking sufficient access privileges"));
    }
    let mut next = current.clone();
    if let Some(n) = body.name {
        let n = n.trim().to_string();
        if n.is_empty() {
            return Err(ApiError::unprocessable("name must not be empty"));
        }
        next.name = n;
    }
    if let Some(s) = body.resource_scopes {
        next.scopes = complete_scopes(&s);
    }
    if full || body.description.is_some() {
        next.description = body.description;
    }
    if let Some(u) = body.icon_uri {
        let u = registrable_uri(&u).map_err(|e| ApiError::unprocessable(format!("icon_uri: {e}")))?;
        if u != current.uri && !caller.is_operator {
            return Err(ApiError::forbidden("only an operator may move a resource to another path"));
        }
        next.uri = u;
    }
    if let Some(o) = body.ownership_id {
        let o = o.trim().to_string();
        if o.is_empty() {
            return Err(ApiError::unprocessable("ownership_id must not be empty"));
        }
        next.owner = o;
    }
    {
        let (n, u, own_id) = (next.name.clone(), next.uri.clone(), current.id.clone());
        let (by_name, by_uri) = state.repo.run(move |r| Ok((r.get_by_name(&n)?, r.get_by_uri(&u)?))).await?;
        if by_name.is_some_and(|r| r.id != own_id) {
            return Err(ApiError::unprocessable(format!("a resource named {:?} already exists", next.name)));
        }
        if by_uri.is_some_and(|r| r.id != current.id) {
            return Err(ApiError::unprocessable(format!("Resource already exists for URI {}", next.uri)));
        }
    }
    let at_as_changed = next.name != current.name
        || next.uri != current.uri
        || next.scopes != current.scopes
        || next.description != current.description;
    if at_as_changed {
        link.resource_set.update(&current.id, &description_of(&next)).await.map_err(as_error)?;
    }
    next.updated_at = now_s();
    let to_store = next.clone();
    state.repo.run(move |r| r.upsert(&to_store)).await?;
    if next.owner != current.owner {
        tracing::info!(resource = %next.id, from = %current.owner, to = %next.owner, caller = %caller.sub, "ownership transferred");
    }
    Ok(Json(representation(&next)))
}

async fn replace(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    update_common(state, headers, id, body, true).await
}

async fn patch(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    update_common(state, headers, id, body, false).await
}

async fn remove(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (caller, link) = caller(&state, &headers).await?;
    let _write = state.write_lock.lock().await;
    let r = load(&state, id).await?;
    if !may_manage(&caller, &r) {
        return Err(ApiError::forbidden("User lacking sufficient access privileges"));
    }
    link.resource_set.delete(&r.id).await.map_err(as_error)?;
    let rid = r.id.clone();
    state.repo.run(move |repo| repo.delete(&rid)).await?;
    tracing::info!(resource = %r.id, caller = %caller.sub, "resource deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The filter's resource table and its version: the filter keeps its last good table when
/// this is unreachable, and swaps only when the version changed.
async fn filter_config(State(state): State<Shared>) -> Result<Response, ApiError> {
    let (list, version) = state.repo.run(|r| r.snapshot()).await?;
    tracing::debug!(version, resources = list.len(), "filter-config served");
    let mut response =
        Json(json!({"resources": filter_resources(&list), "version": version})).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn health() -> &'static str {
    "ok"
}

/// 200 once the AS has been reached; 503 with the cause before (`/filter-config` and
/// `/healthz` answer either way).
async fn ready(State(state): State<Shared>) -> Response {
    match &*state.link.borrow() {
        AsLink::Ready(_) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        AsLink::Waiting { cause, attempts } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "error": "temporarily_unavailable",
                "error_description": format!("the authorization server has not been reached yet: {cause}"),
                "attempts": attempts,
            })),
        )
            .into_response(),
    }
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

pub fn openapi_document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": error}}});
    let resource = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Resource"}}});
    let id_param = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "AS resource id"}]);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Policy Enforcement Point Interfaces", "version": env!("CARGO_PKG_VERSION"),
                 "description": "uma-pep Resource API (pepctl serve). Every call needs Authorization: Bearer <token of the AS>."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
                "Resource": {"type": "object", "properties": {
                    "id": {"type": "string"}, "_id": {"type": "string"}, "name": {"type": "string"},
                    "icon_uri": {"type": "string", "description": "the protected path"},
                    "resource_scopes": {"type": "array", "items": {"type": "string"}},
                    "description": {"type": "string", "nullable": true}, "ownership_id": {"type": "string"}}},
                "NewResource": {"type": "object", "required": ["name", "icon_uri"], "properties": {
                    "name": {"type": "string"}, "icon_uri": {"type": "string"},
                    "resource_scopes": {"type": "array", "items": {"type": "string"}},
                    "description": {"type": "string"},
                    "uuid": {"type": "string", "description": "operator only: the owner to create for"}}},
                "ResourceUpdate": {"type": "object", "properties": {
                    "name": {"type": "string"}, "resource_scopes": {"type": "array", "items": {"type": "string"}},
                    "description": {"type": "string"}, "icon_uri": {"type": "string", "description": "operator only"},
                    "ownership_id": {"type": "string", "description": "transfer to this owner (owner or operator)"}}}
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/resources": {
                "get": {"summary": "Resources of the caller (all for an operator), or the one at ?path=",
                        "parameters": [{"name": "path", "in": "query", "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "list, or one resource with ?path=", "content": resource}, "401": err("no or invalid token"), "403": err("not the owner"), "404": err("no resource at path")}},
                "post": {"summary": "Create a resource under a path the caller owns (operators anywhere, or for `uuid`)",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewResource"}}}},
                         "responses": {"200": {"description": "created", "content": resource}, "401": err("no or invalid token"), "403": err("not allowed here"), "422": err("invalid or duplicate"), "502": err("AS or PDP failed; nothing created")}}
            },
            "/resources/{id}": {
                "parameters": id_param,
                "get": {"summary": "One resource (owner or operator)", "responses": {"200": {"description": "the resource", "content": resource}, "401": err("no or invalid token"), "403": err("not the owner"), "404": err("unknown id")}},
                "head": {"summary": "Existence", "responses": {"200": {"description": "exists"}, "404": {"description": "unknown id"}}},
                "put": {"summary": "Replace (name and resource_scopes required)", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResourceUpdate"}}}},
                        "responses": {"200": {"description": "updated", "content": resource}, "401": err("no or invalid token"), "403": err("not the owner"), "404": err("unknown id"), "422": err("invalid")}},
                "patch": {"summary": "Change some fields", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResourceUpdate"}}}},
                          "responses": {"200": {"description": "updated", "content": resource}, "401": err("no or invalid token"), "403": err("not the owner"), "404": err("unknown id"), "422": err("invalid")}},
                "delete": {"summary": "Delete at the AS and here", "responses": {"204": {"description": "deleted"}, "401": err("no or invalid token"), "403": err("not the owner"), "404": err("unknown id")}}
            },
            "/filter-config": {"get": {"summary": "The filter's resource table", "security": [],
                "responses": {"200": {"description": "{resources, version}"}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/readyz": {"get": {"summary": "Readiness: the AS has been reached", "security": [],
                "responses": {"200": {"description": "{ready: true}"}, "503": {"description": "{ready: false, error_description: the cause}"}}}}
        }
    })
}

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/resources", get(list).post(create))
        .route("/resources/{id}", get(show).put(replace).patch(patch).delete(remove))
        .route("/filter-config", get(filter_config))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .merge(crate::docs_page::routes())
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Renews expiring AS registrations in the background, under the write lock (a renewal may
/// move a resource to a new id).
fn spawn_refresher(state: Shared, resource_set: Arc<ResourceSetClient>, interval_s: u64, window_s: i64) {
    if interval_s == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval_s));
        loop {
            tick.tick().await;
            let _write = state.write_lock.lock().await;
            if let Err(e) = crate::expiry::refresh_expiring(&state.repo, &resource_set, window_s).await {
                tracing::warn!(error = %e, "renewal pass failed");
            }
        }
    });
}

/// The first pause between attempts to reach the AS, and the longest.
const AS_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const AS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Reaches the AS (discovery), retrying with a pause that doubles up to `AS_RETRY_MAX`; then
/// the Resource API is ready and renewals start.
async fn connect_until_ready(common: Common, client: ClientFile, args: ServeArgs, state: Shared) {
    let mut pause = AS_RETRY_FIRST;
    let mut attempts = 0u32;
    let mut last_cause = String::new();
    let ctx = loop {
        attempts = attempts.saturating_add(1);
        match AsContext::with_client(&common, client.clone()).await {
            Ok(ctx) => break ctx,
            Err(e) => {
                let cause = e.to_string();
                if cause != last_cause {
                    tracing::warn!(error = %cause, attempts, "authorization server not reached; retrying (GET /readyz)");
                } else {
                    tracing::debug!(error = %cause, attempts, "authorization server still not reached");
                }
                state.link.send_replace(AsLink::Waiting { cause: cause.clone(), attempts });
                last_cause = cause;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(AS_RETRY_MAX);
            }
        }
    };
    let verifier = Verifier::new(
        ctx.http.clone(),
        IdentityConfig {
            issuer: ctx.endpoints.issuer.clone(),
            audience: args.audience.clone(),
            jwks_uri: ctx.endpoints.jwks.clone(),
            userinfo: ctx.endpoints.userinfo.clone(),
            leeway_s: args.leeway_s,
        },
    );
    let connected = Connected { resource_set: ctx.resource_set.clone(), verifier };
    state.link.send_replace(AsLink::Ready(Arc::new(connected)));
    tracing::info!(issuer = %ctx.endpoints.issuer, attempts, "authorization server reached; Resource API ready");
    spawn_refresher(state, ctx.resource_set, args.refresh_interval_s, args.refresh_before_s);
}

pub async fn serve(common: &Common, args: ServeArgs) -> Result<(), ServeError> {
    // What waiting cannot fix stops here: no issuer, a bad --ca-file, no client file or one
    // of another AS, a bad --pdp-url. An AS that does not answer yet is retried, below.
    let http = common.http().map_err(ContextError::from)?;
    let client = common.client_file()?;
    let repo = Repository::open(&common.db)?;
    let pdp = match &args.pdp_url {
        None => None,
        Some(base) => {
            let url =
                format!("{}/{}", base.trim_end_matches('/'), args.pdp_policy_path.trim_start_matches('/'));
            let url = checked_url("PDP policy endpoint", &url).map_err(|e| ServeError::Pdp(e.to_string()))?;
            Some(PdpClient::new(http, url))
        }
    };
    let waiting = AsLink::Waiting { cause: "first attempt under way".into(), attempts: 0 };
    let state = Arc::new(AppState::new(repo, waiting, pdp));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let local = listener.local_addr().map_err(ServeError::Server)?;
    tracing::info!(listen = %local, "serving /filter-config and /healthz; reaching the authorization server");
    // Tests and supervisors read the bound address (port 0 picks a free one) from stdout.
    println!("listening on {local}");
    tokio::spawn(connect_until_ready(common.clone(), client, args, state.clone()));
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pat::{ClientCredentials, PatSource};
    use url::Url;

    /// The router over an in-memory repository; the AS URLs point at a closed port, so any
    /// test that reached the AS would fail.
    async fn start(repo: Repository) -> String {
        serve_state(Arc::new(AppState::new(repo, AsLink::Ready(Arc::new(dead_as())), None))).await
    }

    /// AS clients whose URLs point at a closed port.
    fn dead_as() -> Connected {
        let http = reqwest::Client::new();
        let dead = |p: &str| Url::parse(&format!("http://127.0.0.1:9/{p}")).unwrap();
        let pat = Arc::new(PatSource::new(
            http.clone(),
            dead("token"),
            ClientCredentials { client_id: "c".into(), client_secret: "s".into() },
            uma_pep_core::config::AsProfile::Keycloak,
        ));
        Connected {
            resource_set: Arc::new(ResourceSetClient::new(
                http.clone(),
                dead("rs"),
                uma_pep_core::config::AsProfile::Keycloak,
                pat,
            )),
            verifier: Verifier::new(
                http,
                IdentityConfig {
                    issuer: "http://127.0.0.1:9".into(),
                    audience: None,
                    jwks_uri: None,
                    userinfo: None,
                    leeway_s: 0,
                },
            ),
        }
    }

    async fn serve_state(state: Shared) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        format!("http://{addr}")
    }

    fn stored(id: &str, uri: &str, owner: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            name: id.into(),
            uri: uri.into(),
            owner: owner.into(),
            scopes: vec!["protected_get".into()],
            description: None,
            source: Source::File,
            as_expires_at: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn unauthenticated_calls_get_json_401s() {
        let base = start(Repository::open_in_memory().unwrap()).await;
        let c = reqwest::Client::new();
        for (method, path) in [
            (reqwest::Method::GET, "/resources"),
            (reqwest::Method::POST, "/resources"),
            (reqwest::Method::GET, "/resources/x"),
            (reqwest::Method::PUT, "/resources/x"),
            (reqwest::Method::PATCH, "/resources/x"),
            (reqwest::Method::DELETE, "/resources/x"),
        ] {
            let r = c.request(method.clone(), format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "invalid_token");
        }
        // An unsigned token with a made-up kid is refused without any AS call.
        let r = c
            .get(format!("{base}/resources"))
            .bearer_auth("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiaXNPcGVyYXRvciI6dHJ1ZX0.")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }

    #[tokio::test]
    async fn filter_config_and_openapi_need_no_token() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&stored("r1", "/a", "alice")).unwrap();
        repo.upsert(&stored("r2", "/b", "bob")).unwrap();
        let base = start(repo.clone()).await;
        let fc: Value = reqwest::get(format!("{base}/filter-config")).await.unwrap().json().await.unwrap();
        assert_eq!(fc["version"], 2);
        assert_eq!(
            fc["resources"][0],
            json!({"id": "r1", "uri": "/a", "scopes": ["protected_get"], "name": "r1"})
        );
        // The table is what the filter's own parser accepts.
        let table: Vec<uma_pep_core::config::Resource> =
            serde_json::from_value(fc["resources"].clone()).unwrap();
        assert!(uma_pep_core::config::validate_resources(table).is_ok());
        repo.delete("r2").unwrap();
        let fc: Value = reqwest::get(format!("{base}/filter-config")).await.unwrap().json().await.unwrap();
        assert_eq!(fc["version"], 3);
        assert_eq!(fc["resources"].as_array().unwrap().len(), 1);
        let doc: Value = reqwest::get(format!("{base}/openapi.json")).await.unwrap().json().await.unwrap();
        assert_eq!(doc["info"]["title"], "Policy Enforcement Point Interfaces");
        assert!(doc["paths"]["/resources/{id}"]["delete"].is_object());
    }

    #[tokio::test]
    async fn without_the_as_the_table_is_served_and_readiness_says_why() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&stored("r1", "/a", "alice")).unwrap();
        let cause = "discovery request failed: http://127.0.0.1:1/x: connection refused";
        let waiting = AsLink::Waiting { cause: cause.into(), attempts: 3 };
        let state = Arc::new(AppState::new(repo, waiting, None));
        let base = serve_state(state.clone()).await;
        let c = reqwest::Client::new();
        let fc: Value = c.get(format!("{base}/filter-config")).send().await.unwrap().json().await.unwrap();
        assert_eq!(fc["resources"][0]["uri"], "/a");
        assert_eq!(c.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["ready"], false);
        assert!(body["error_description"].as_str().unwrap().contains("connection refused"), "{body}");
        let r = c.post(format!("{base}/resources")).bearer_auth("t").body("{}").send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
        assert!(body["error_description"].as_str().unwrap().contains("connection refused"), "{body}");
        let r = c.get(format!("{base}/resources")).send().await.unwrap();
        assert_eq!(r.status(), 401, "no token is a 401 whether or not the AS is there");
        state.link.send_replace(AsLink::Ready(Arc::new(dead_as())));
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn bodies_refuse_unknown_keys_naming_the_closest() {
        let e = parse_json::<CreateBody>(&Bytes::from_static(
            br#"{"name":"n","icon_uri":"/a","resource_scope":[]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.message, "`resource_scope`: unknown key; did you mean `resource_scopes`?");
        let e = parse_json::<UpdateBody>(&Bytes::from_static(br#"{"ownership":"bob"}"#)).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("`ownership`: unknown key"), "{}", e.message);
        let e = parse_json::<UpdateBody>(&Bytes::from_static(br#"{"name": 5}"#)).unwrap_err();
        assert!(e.message.starts_with("`name`: invalid type"), "{}", e.message);
        let e = parse_json::<CreateBody>(&Bytes::from_static(b"{nope")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // What GET answers can be sent back.
        let back = json!({"id": "x", "_id": "x", "name": "n", "_name": "n", "icon_uri": "/a", "_reverse_match_url": "/a",
                          "resource_scopes": [], "description": null, "ownership_id": "o", "created_at": 1, "updated_at": 2});
        assert!(parse_json::<UpdateBody>(&Bytes::from(back.to_string())).is_ok());
    }

    #[test]
    fn ownership_walk_finds_the_nearest_registered_path() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&stored("h", "/home", "root")).unwrap();
        repo.upsert(&stored("a", "/home/alice", "alice")).unwrap();
        let alice = Caller { sub: "alice".into(), is_operator: false };
        let bob = Caller { sub: "bob".into(), is_operator: false };
        assert!(may_create_under(&alice, "/home/alice/x/y", &repo).unwrap());
        assert!(!may_create_under(&bob, "/home/alice/x", &repo).unwrap());
        assert!(!may_create_under(&alice, "/home/other", &repo).unwrap(), "nearest is /home, root's");
        assert!(!may_create_under(&alice, "/elsewhere", &repo).unwrap(), "nothing registered above");
        let r = stored("a", "/home/alice", "alice");
        assert!(may_manage(&alice, &r));
        assert!(!may_manage(&bob, &r));
        assert!(may_manage(&Caller { sub: "op".into(), is_operator: true }, &r));
    }
}
