//! The Resource API's handlers: each takes its caller and body from the extractors, asks the
//! resource service and turns the answer into its representation. The `utoipa::path`
//! attribute of each is its part of the OpenAPI document.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uma_pep_core::resource_table::FilterTable;

use crate::render::filter_resources;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, Caller};
use super::service;
use super::state::{AsLink, Shared};
use super::views::{ListQuery, Listing, NewResource, NotReady, Ready, ResourceUpdate, ResourceView};

/// `GET /resources`: the caller's resources (all of them for an operator), or the one at `?path=`.
#[utoipa::path(get, path = "/resources", tag = "resources",
    summary = "Resources of the caller (all for an operator), or the one at ?path=",
    params(ListQuery),
    responses(
        (status = 200, description = "the list, or one resource with ?path=", body = Listing),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not the owner of the resource at ?path=", body = ErrorBody),
        (status = 404, description = "no resource at ?path=", body = ErrorBody),
        (status = 422, description = "?path= is not a path", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Listing>, ApiError> {
    let listing = match q.path {
        Some(path) => {
            Listing::One(Box::new((&service::at_path(&state.repo, &caller.identity, &path).await?).into()))
        }
        None => Listing::All(
            service::list(&state.repo, &caller.identity).await?.iter().map(ResourceView::from).collect(),
        ),
    };
    Ok(Json(listing))
}

/// `POST /resources`.
#[utoipa::path(post, path = "/resources", tag = "resources",
    summary = "Create a resource under a path the caller owns (operators anywhere, or for `uuid`)",
    request_body = NewResource,
    responses(
        (status = 200, description = "created", body = ResourceView,
            headers(("Location" = String, description = "/resources/{id}"))),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not allowed here", body = ErrorBody),
        (status = 422, description = "invalid or duplicate, or a `uuid` the AS knows no user of; nothing created",
            body = ErrorBody),
        (status = 502, description = "the AS or the PDP failed; nothing created", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(body): ApiJson<NewResource>,
) -> Result<Response, ApiError> {
    let stored = state.service(&caller.link).create(&caller.identity, &caller.authorization, body).await?;
    let mut response = (StatusCode::OK, Json(ResourceView::from(&stored))).into_response();
    let id: String = url::form_urlencoded::byte_serialize(stored.id.as_bytes()).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("/resources/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `GET /resources/{id}`.
#[utoipa::path(get, path = "/resources/{id}", tag = "resources",
    summary = "One resource (owner or operator)",
    params(("id" = String, Path, description = "AS resource id")),
    responses(
        (status = 200, description = "the resource", body = ResourceView),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ResourceView>, ApiError> {
    Ok(Json((&service::show(&state.repo, &caller.identity, id).await?).into()))
}

/// `HEAD /resources/{id}` is `GET` without the body (axum answers it with `show`); this names
/// it in the document.
#[utoipa::path(head, path = "/resources/{id}", tag = "resources",
    summary = "Existence (GET without a body)",
    params(("id" = String, Path, description = "AS resource id")),
    responses(
        (status = 200, description = "exists"),
        (status = 401, description = "no or invalid token"),
        (status = 403, description = "not the owner"),
        (status = 404, description = "unknown id"),
    ))]
#[allow(dead_code)]
fn head() {}

/// `PUT /resources/{id}`.
#[utoipa::path(put, path = "/resources/{id}", tag = "resources",
    summary = "Replace (name and resource_scopes required)",
    params(("id" = String, Path, description = "AS resource id")),
    request_body = ResourceUpdate,
    responses(
        (status = 200, description = "updated", body = ResourceView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 422, description = "invalid", body = ErrorBody),
        (status = 502, description = "the AS failed; nothing changed", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn replace(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResourceUpdate>,
) -> Result<Json<ResourceView>, ApiError> {
    let r = state.service(&caller.link).update(&caller.identity, id, body, true).await?;
    Ok(Json((&r).into()))
}

/// `PATCH /resources/{id}`.
#[utoipa::path(patch, path = "/resources/{id}", tag = "resources",
    summary = "Change some fields",
    params(("id" = String, Path, description = "AS resource id")),
    request_body = ResourceUpdate,
    responses(
        (status = 200, description = "updated", body = ResourceView),
        (status = 400, description = "the body is not JSON", body = ErrorBody),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 422, description = "invalid", body = ErrorBody),
        (status = 502, description = "the AS failed; nothing changed", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn patch(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResourceUpdate>,
) -> Result<Json<ResourceView>, ApiError> {
    let r = state.service(&caller.link).update(&caller.identity, id, body, false).await?;
    Ok(Json((&r).into()))
}

/// `DELETE /resources/{id}`.
#[utoipa::path(delete, path = "/resources/{id}", tag = "resources",
    summary = "Delete at the AS (unless open) and here",
    params(("id" = String, Path, description = "AS resource id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no or invalid token", body = ErrorBody),
        (status = 403, description = "not the owner", body = ErrorBody),
        (status = 404, description = "unknown id", body = ErrorBody),
        (status = 502, description = "the AS failed; nothing deleted", body = ErrorBody),
        (status = 503, description = "the AS has not been reached yet", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<Shared>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service(&caller.link).delete(&caller.identity, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /filter-config`: the filter's resource table, its version and the database's
/// generation. The filter keeps its last good table when this is unreachable, swaps only when
/// the table changed, and takes an empty table only of the generation it follows.
#[utoipa::path(get, path = "/filter-config", tag = "filter",
    summary = "The filter's resource table",
    security(()),
    responses(
        (status = 200, description = "the table and its version", body = crate::api::views::FilterTableSchema),
        (status = 500, description = "the repository failed", body = ErrorBody),
    ))]
pub async fn filter_config(State(state): State<Shared>) -> Result<Response, ApiError> {
    let snapshot = state.repo.run(|r| r.snapshot()).await?;
    let version = snapshot.version;
    tracing::debug!(version, resources = snapshot.resources.len(), "filter-config served");
    let table = FilterTable {
        resources: filter_resources(&snapshot.resources),
        version,
        generation: Some(snapshot.generation),
    };
    Ok(([(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(table)).into_response())
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Liveness", security(()),
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
pub async fn health() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 once the AS has been reached; 503 with the cause before (`/filter-config`
/// and `/healthz` answer either way).
#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: the AS has been reached",
    security(()),
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "the AS has not been reached yet, and why", body = NotReady),
    ))]
pub async fn ready(State(state): State<Shared>) -> Response {
    match &*state.link.borrow() {
        AsLink::Ready(_) => (StatusCode::OK, Json(Ready { ready: true })).into_response(),
        AsLink::Waiting { cause, attempts } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(NotReady {
                ready: false,
                error: "temporarily_unavailable",
                error_description: format!("the authorization server has not been reached yet: {cause}"),
                attempts: *attempts,
            }),
        )
            .into_response(),
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "docs", summary = "This document", security(()),
    responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document())
}
