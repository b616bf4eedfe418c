//! The Resource API's one error shape: a status, a machine code and a human message, sent as
//! `{"error","error_description"}` with the seed's `Error` header. Every failure of a handler,
//! of an extractor or of the resource service becomes one of these; none holds a token.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::identity::IdentityError;
use crate::repository::RepoError;
use crate::resource_set::ResourceSetError;

use super::service::ServiceError;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// A machine code: `invalid_token`, `invalid_request`, `forbidden`, `not_found`,
    /// `temporarily_unavailable`, `upstream_error`, `internal_error`.
    pub error: &'static str,
    /// What went wrong, for a human.
    pub error_description: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Resource not found")
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
    pub(crate) fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The seed reported errors in an `Error` header; its clients still read it.
        let printable: String =
            self.message.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
        let mut response =
            (self.status, Json(ErrorBody { error: self.code, error_description: self.message }))
                .into_response();
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
                ApiError::unavailable("cannot verify tokens now")
            }
        }
    }
}

impl From<ResourceSetError> for ApiError {
    fn from(e: ResourceSetError) -> Self {
        match e {
            ResourceSetError::Conflict(name) => {
                ApiError::unprocessable(format!("a resource named {name:?} already exists at the AS"))
            }
            // Only a create carries the owner to the AS (a PUT cannot change it there): the field
            // at fault is the create's `uuid`.
            ResourceSetError::UnknownOwner { owner, .. } => ApiError::unprocessable(format!(
                "uuid: the authorization server knows no user {owner:?}; give the id (sub) or username of a \
                 user of the realm, or leave uuid out to own the resource yourself"
            )),
            other => {
                tracing::warn!(error = %other, "AS call failed");
                ApiError::upstream(format!("authorization server: {other}"))
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::unprocessable(m),
            ServiceError::Forbidden(m) => ApiError::forbidden(m),
            ServiceError::NotFound => ApiError::not_found(),
            ServiceError::As(e) => e.into(),
            ServiceError::Pdp(m) => {
                ApiError::upstream(format!("policy decision point: {m}; resource not created"))
            }
            ServiceError::Repo(e) => e.into(),
        }
    }
}
