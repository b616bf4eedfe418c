//! Extractors that give every handler its caller and its body, or the API's own error: a
//! handler states what it needs in its signature and repeats no boilerplate.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::{DeserializeOwned, IgnoredAny};
use uma_pep_core::keypath;

use crate::apply::key_message;
use crate::identity::{self, IdentityError};

use super::error::ApiError;
use super::state::{Connected, Shared};

/// The verified caller (the party of the bearer token, or of the filter's identity JWT, and
/// whether an operator), with the AS clients. A call without a credential is a 401; one with a
/// credential while the AS has not been reached is a 503 (the AS verifies it).
pub struct Caller {
    pub identity: identity::Caller,
    pub link: Arc<Connected>,
    /// What the PDP is called with: the caller's `Authorization`, or the identity JWT as a
    /// bearer token when that is what the caller presented.
    pub authorization: String,
}

/// Every value of header `name`; one that is not UTF-8 becomes U+FFFD, which no parser takes.
fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("\u{fffd}")).collect()
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Self::Rejection> {
        let authorization = values(&parts.headers, header::AUTHORIZATION.as_str());
        let forwarded_header = state.forwarded_header.as_deref();
        let forwarded = forwarded_header.map(|h| values(&parts.headers, h)).unwrap_or_default();
        if authorization.is_empty() && forwarded.is_empty() {
            return Err(IdentityError::Missing.into());
        }
        let link = state.connected()?;
        let presented = identity::Presented { authorization: &authorization, forwarded: &forwarded };
        let identity = link.verifier.verify(presented).await?;
        let authorization = match (authorization.first(), forwarded.first()) {
            (Some(a), _) => (*a).to_string(),
            (None, Some(jwt)) => format!("Bearer {}", jwt.trim()),
            (None, None) => String::new(),
        };
        Ok(Self { identity, link, authorization })
    }
}

/// A JSON body: 400 when it is not JSON; 422 naming the key for an unknown key (with the
/// closest valid one), a missing or a mistyped value. The content type is not checked: the
/// seed's clients do not all send one.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "invalid_request", e.body_text()))?;
        parse_json(&body).map(ApiJson)
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(body) {
        return Err(ApiError::bad_request(format!("body is not JSON: {e}")));
    }
    keypath::from_slice(body).map_err(|e| ApiError::unprocessable(key_message(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::views::{NewResource, ResourceUpdate};
    use axum::http::StatusCode;
    use serde_json::json;

    #[test]
    fn bodies_refuse_unknown_keys_naming_the_closest() {
        let e =
            parse_json::<NewResource>(br#"{"name":"n","icon_uri":"/a","resource_scope":[]}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.message, "`resource_scope`: unknown key; did you mean `resource_scopes`?");
        let e = parse_json::<ResourceUpdate>(br#"{"ownership":"bob"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("`ownership`: unknown key"), "{}", e.message);
        let e = parse_json::<ResourceUpdate>(br#"{"name": 5}"#).unwrap_err();
        assert!(e.message.starts_with("`name`: invalid type"), "{}", e.message);
        let e = parse_json::<NewResource>(b"{nope").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // What GET answers can be sent back.
        let back = json!({"id": "x", "_id": "x", "name": "n", "_name": "n", "icon_uri": "/a", "_reverse_match_url": "/a",
                          "resource_scopes": [], "scopes": [], "description": null, "ownership_id": "o", "created_at": 1, "updated_at": 2});
        assert!(parse_json::<ResourceUpdate>(back.to_string().as_bytes()).is_ok());
    }
}
