//! The Protection API Token: `client_credentials` in the dialect's form (uma2: with
//! `scope=uma_protection`, which Gluu/Janssen require; keycloak: without, since Keycloak refuses
//! `uma_protection` as a scope: it is a client role there), cached until shortly before it
//! expires and shared by every concurrent caller (one token request for N waiting callers),
//! refreshed and the call retried once when the AS refuses it.

use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Mutex;
use uma_pep_core::config::AsProfile;
use uma_pep_core::session::pat_refresh_after_ms;
use uma_pep_core::wire::{basic_authorization, pat_request_body, AccessToken, AsError, AsResponse};
use url::Url;

use crate::refusal::Refusal;
use crate::transport::NetError;

#[derive(Debug, Error)]
pub enum PatError {
    #[error("token request failed: {0}")]
    Request(#[source] NetError),
    #[error("PAT refused by the token endpoint: {0}")]
    Refused(String),
    #[error("PAT answer unusable: {0}")]
    Garbage(AsError),
    #[error(
        "the token endpoint granted client {client_id} the scope {granted:?}, without uma_protection: every \
         protection call would be refused (406 invalid_client_scope). Allow the scope uma_protection on the \
         client (Gluu/Janssen admin UI: the client's Scopes; a dynamically registered client gets it only when \
         the uma_protection scope has \"Allow for dynamic registration\" on), or register a new client with \
         `pepctl register-client`"
    )]
    NoProtectionScope { client_id: String, granted: String },
}

/// Checks the `scope` of a uma2 token answer: present and without `uma_protection` means the
/// AS silently dropped it (Gluu's `ScopeChecker` drops what the client may not have). An
/// answer without `scope` is not held against the AS.
pub fn check_protection_scope(client_id: &str, body: &[u8]) -> Result<(), PatError> {
    #[derive(Deserialize)]
    struct Scoped {
        #[serde(default)]
        scope: Option<String>,
    }
    let granted = serde_json::from_slice::<Scoped>(body).ok().and_then(|s| s.scope);
    match granted {
        Some(g) if !g.split_whitespace().any(|s| s == "uma_protection") => {
            Err(PatError::NoProtectionScope { client_id: client_id.to_string(), granted: g })
        }
        _ => Ok(()),
    }
}

/// The PEP's client credentials. Debug never prints the secret.
#[derive(Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

struct Cached {
    value: String,
    refresh_at: Instant,
}

pub struct PatSource {
    client: reqwest::Client,
    token_endpoint: Url,
    credentials: ClientCredentials,
    profile: AsProfile,
    cached: Mutex<Option<Cached>>,
}

/// How long a PAT of `expires_in` seconds is used before a new one is fetched: the filter's
/// policy (`uma_pep_core::session::pat_refresh_after_ms`), so a call never starts with a token
/// that dies in flight.
pub fn use_for(expires_in: u64) -> Duration {
    Duration::from_millis(u64::try_from(pat_refresh_after_ms(expires_in)).unwrap_or(0))
}

impl PatSource {
    pub fn new(
        client: reqwest::Client,
        token_endpoint: Url,
        credentials: ClientCredentials,
        profile: AsProfile,
    ) -> Self {
        Self { client, token_endpoint, credentials, profile, cached: Mutex::new(None) }
    }

    pub fn credentials(&self) -> &ClientCredentials {
        &self.credentials
    }

    /// The current PAT, fetched when there is none or it is about to expire. The lock is held
    /// across the fetch so that concurrent callers wait for one request instead of each
    /// sending their own.
    pub async fn get(&self) -> Result<String, PatError> {
        let mut guard = self.cached.lock().await;
        if let Some(c) = guard.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.value.clone());
            }
        }
        let token = self.fetch().await?;
        let refresh_at = Instant::now() + use_for(token.expires_in);
        *guard = Some(Cached { value: token.value.clone(), refresh_at });
        Ok(token.value)
    }

    /// Forgets `stale` (and only it: another caller may already have refreshed).
    pub async fn invalidate(&self, stale: &str) {
        let mut guard = self.cached.lock().await;
        if guard.as_ref().is_some_and(|c| c.value == stale) {
            *guard = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, PatError> {
        let request_error = |e: reqwest::Error| PatError::Request(e.into());
        let response = self
            .client
            .post(self.token_endpoint.clone())
            .header(
                reqwest::header::AUTHORIZATION,
                basic_authorization(&self.credentials.client_id, &self.credentials.client_secret),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(pat_request_body(self.profile))
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(request_error)?;
        if status != 200 {
            return Err(PatError::Refused(Refusal::parse(status, &body).explained(self.profile)));
        }
        let token = AccessToken::parse(&AsResponse { status: Some(status), body: &body })
            .map_err(PatError::Garbage)?;
        if self.profile == AsProfile::Uma2 {
            check_protection_scope(&self.credentials.client_id, &body)?;
        }
        tracing::debug!(expires_in = token.expires_in, "obtained a PAT");
        Ok(token)
    }

    /// Sends a protection-API request built by `build` with the PAT as bearer. When the AS
    /// refuses the PAT (401, or 403 — Keycloak's `invalid_bearer_token`), the PAT is dropped,
    /// a new one fetched and the request sent once more; the second answer is final.
    pub async fn send<F>(
        &self,
        build: F,
    ) -> Result<(u16, Vec<u8>, reqwest::header::HeaderMap), ProtectedCallError>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let mut retried = false;
        loop {
            let pat = self.get().await?;
            let response = build(&pat)
                .bearer_auth(&pat)
                .send()
                .await
                .map_err(|e| ProtectedCallError::Request(e.into()))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| ProtectedCallError::Request(e.into()))?.to_vec();
            if (status == 401 || status == 403) && !retried {
                tracing::info!(status, "protection API refused the PAT; refreshing it once");
                self.invalidate(&pat).await;
                retried = true;
                continue;
            }
            return Ok((status, body, headers));
        }
    }
}

#[derive(Debug, Error)]
pub enum ProtectedCallError {
    #[error(transparent)]
    Pat(#[from] PatError),
    #[error("request failed: {0}")]
    Request(#[source] NetError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pat_is_used_as_long_as_the_filter_uses_one() {
        for expires_in in [0, 1, 5, 60, 300, 3600, u64::MAX] {
            let ms = uma_pep_core::session::pat_refresh_after_ms(expires_in);
            assert_eq!(use_for(expires_in).as_millis(), u128::try_from(ms).unwrap(), "{expires_in}");
        }
        // Refreshed before the AS expires it, and well before for a long-lived one.
        assert!(use_for(300) < Duration::from_secs(300));
        assert!(use_for(3600) <= Duration::from_secs(3595));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = ClientCredentials { client_id: "pep".into(), client_secret: "s3cret".into() };
        let shown = format!("{c:?}");
        assert!(shown.contains("pep"));
        assert!(!shown.contains("s3cret"));
    }

    /// A token endpoint and one protected endpoint on loopback, counting calls. The token
    /// endpoint answers like the real servers: Keycloak refuses `scope=uma_protection`
    /// (`400 invalid_scope`), Gluu grants only the scopes the client may have (`gluu_scope`).
    /// The protected endpoint refuses the first PAT it sees (as after an AS restart) with
    /// Keycloak's 403.
    async fn fake_as_with(
        gluu_scope: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::routing::{get, post};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tokens = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = tokens.clone();
        let app = axum::Router::new()
            .route(
                "/realms/r/token",
                post(move |body: String| async move {
                    if body.contains("scope=") {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            r#"{"error":"invalid_scope","error_description":"Invalid scopes: uma_protection"}"#
                                .to_string(),
                        );
                    }
                    (axum::http::StatusCode::OK, r#"{"access_token":"kc-pat","expires_in":300}"#.to_string())
                }),
            )
            .route(
                "/token",
                post(move |headers: axum::http::HeaderMap, body: String| {
                    let counter = counter.clone();
                    async move {
                        assert_eq!(body, "grant_type=client_credentials&scope=uma_protection");
                        assert!(headers["authorization"].to_str().unwrap().starts_with("Basic "));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        axum::Json(
                            serde_json::json!({"access_token": format!("pat-{n}"), "expires_in": 300, "scope": gluu_scope}),
                        )
                    }
                }),
            )
            .route(
                "/protected",
                get(|headers: axum::http::HeaderMap| async move {
                    if headers["authorization"] == "Bearer pat-1" {
                        (axum::http::StatusCode::FORBIDDEN, r#"{"error":"invalid_bearer_token"}"#)
                    } else {
                        (axum::http::StatusCode::OK, "ok")
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), tokens)
    }

    async fn fake_as() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        fake_as_with("uma_protection").await
    }

    fn source_at(base: &str, path: &str, profile: AsProfile) -> std::sync::Arc<PatSource> {
        std::sync::Arc::new(PatSource::new(
            reqwest::Client::new(),
            Url::parse(&format!("{base}{path}")).unwrap(),
            ClientCredentials { client_id: "pep".into(), client_secret: "s".into() },
            profile,
        ))
    }

    fn source(base: &str) -> std::sync::Arc<PatSource> {
        source_at(base, "/token", AsProfile::Uma2)
    }

    #[tokio::test]
    async fn keycloak_pat_request_has_no_scope() {
        let (base, _) = fake_as().await;
        assert_eq!(source_at(&base, "/realms/r/token", AsProfile::Keycloak).get().await.unwrap(), "kc-pat");
        // The uma2 form is what Keycloak refuses; the refusal is shown with its reason.
        let err = source_at(&base, "/realms/r/token", AsProfile::Uma2).get().await.unwrap_err();
        assert!(err.to_string().contains("Invalid scopes: uma_protection"), "{err}");
    }

    #[tokio::test]
    async fn uma2_pat_without_uma_protection_is_refused_with_the_fix() {
        let (base, _) = fake_as_with("openid").await;
        let err = source(&base).get().await.unwrap_err();
        assert!(matches!(err, PatError::NoProtectionScope { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("Allow for dynamic registration") && text.contains("\"openid\""), "{text}");
        assert!(check_protection_scope("c", br#"{"access_token":"x"}"#).is_ok(), "no scope: not judged");
        assert!(check_protection_scope("c", br#"{"scope":"openid uma_protection"}"#).is_ok());
        assert!(check_protection_scope("c", br#"{"scope":""}"#).is_err());
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_token_request_and_it_is_cached() {
        use std::sync::atomic::Ordering;
        let (base, tokens) = fake_as().await;
        let pats = source(&base);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = pats.clone();
                tokio::spawn(async move { p.get().await.unwrap() })
            })
            .collect();
        for h in handles {
            assert_eq!(h.await.unwrap(), "pat-1");
        }
        assert_eq!(pats.get().await.unwrap(), "pat-1");
        assert_eq!(tokens.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_pat_is_refreshed_and_the_call_retried_once() {
        use std::sync::atomic::Ordering;
        let (base, tokens) = fake_as().await;
        let pats = source(&base);
        let http = reqwest::Client::new();
        let url = format!("{base}/protected");
        let (status, body, _) = pats.send(|_| http.get(&url)).await.unwrap();
        assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
        assert_eq!(tokens.load(Ordering::SeqCst), 2);
        // The new PAT is kept: no further token request.
        pats.send(|_| http.get(&url)).await.unwrap();
        assert_eq!(tokens.load(Ordering::SeqCst), 2);
    }
}
