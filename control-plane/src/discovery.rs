//! UMA discovery (`{issuer}/.well-known/uma2-configuration`): the endpoints pepctl calls.
//! The UMA fields are parsed by `uma_pep_core::wire::Discovery` (the filter's parser); the
//! ones only the control plane needs (registration, userinfo) are read here. Every endpoint
//! goes through the same URL policy as the issuer.

use serde::Deserialize;
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use uma_pep_core::wire::{AsError, AsResponse, Discovery};
use url::Url;

use crate::refusal::Refusal;
use crate::transport::{checked_url, NetError, TransportError};

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Url(#[from] TransportError),
    #[error("discovery request failed: {0}")]
    Request(#[source] NetError),
    #[error("discovery at {url}: {source}")]
    As { url: String, source: AsError },
    #[error(
        "the AS's discovery document names issuer {found:?}, but --issuer (PEPCTL_ISSUER) is {expected:?}: \
         they must be equal byte for byte (RFC 8414 §3.3; the filter compares them the same way). If this \
         is the right AS, set --issuer {found:?}"
    )]
    IssuerMismatch { expected: String, found: String },
    #[error("discovery at {url} refused: {reason}")]
    Refused { url: String, reason: String },
    #[error("the AS offers no {0}")]
    Missing(&'static str),
}

/// The AS endpoints, each checked by the URL policy.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub issuer: String,
    pub token: Url,
    pub permission: Url,
    pub resource_registration: Url,
    pub introspection: Option<Url>,
    pub jwks: Option<Url>,
    pub registration: Option<Url>,
    pub userinfo: Option<Url>,
}

#[derive(Debug, Deserialize)]
struct Extra {
    #[serde(default)]
    registration_endpoint: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

/// `{issuer}/.well-known/{doc}`: the issuer's path is kept (Keycloak's `/realms/x`).
pub fn well_known_url(issuer: &str, doc: &str) -> Result<Url, TransportError> {
    checked_url("discovery URL", &format!("{}/.well-known/{doc}", issuer.trim_end_matches('/')))
}

/// Parses a discovery document (pure: unit-tested without a server).
pub fn parse_endpoints(issuer: &str, status: u16, body: &[u8]) -> Result<Endpoints, DiscoveryError> {
    let url = format!("{}/.well-known/uma2-configuration", issuer.trim_end_matches('/'));
    if status != 200 {
        // Only Janssen refuses discovery (403 access_denied while its UMA feature flag is off,
        // which is its default): the uma2 hints are the ones that can apply here.
        let reason = Refusal::parse(status, body).explained(AsProfile::Uma2);
        return Err(DiscoveryError::Refused { url, reason });
    }
    let response = AsResponse { status: Some(status), body };
    let uma =
        Discovery::parse(&response).map_err(|source| DiscoveryError::As { url: url.clone(), source })?;
    let extra: Extra = serde_json::from_slice(body)
        .map_err(|e| DiscoveryError::As { url, source: AsError::Garbage(e.to_string()) })?;
    if uma.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch { expected: issuer.to_string(), found: uma.issuer });
    }
    let opt = |what: &str, v: Option<String>| -> Result<Option<Url>, TransportError> {
        v.filter(|s| !s.is_empty()).map(|s| checked_url(what, &s)).transpose()
    };
    Ok(Endpoints {
        issuer: uma.issuer.clone(),
        token: checked_url("token_endpoint", &uma.token_endpoint)?,
        permission: checked_url("permission_endpoint", &uma.permission_endpoint)?,
        resource_registration: checked_url(
            "resource_registration_endpoint",
            &uma.resource_registration_endpoint,
        )?,
        introspection: opt("introspection_endpoint", uma.introspection_endpoint)?,
        jwks: opt("jwks_uri", uma.jwks_uri)?,
        registration: opt("registration_endpoint", extra.registration_endpoint)?,
        userinfo: opt("userinfo_endpoint", extra.userinfo_endpoint)?,
    })
}

/// Fetches and parses the discovery document. When it names no userinfo endpoint (Keycloak's
/// UMA document omits it), the OpenID document of the same issuer is asked for it.
pub async fn discover(client: &reqwest::Client, issuer: &str) -> Result<Endpoints, DiscoveryError> {
    checked_url("issuer", issuer)?;
    let url = well_known_url(issuer, "uma2-configuration")?;
    let (status, body) = fetch(client, &url).await?;
    let mut endpoints = parse_endpoints(issuer, status, &body)?;
    if endpoints.userinfo.is_none() || endpoints.registration.is_none() {
        let oidc = well_known_url(issuer, "openid-configuration")?;
        // Optional: an AS without an OpenID document still works for everything but opaque
        // caller tokens and registration.
        if let Ok((200, body)) = fetch(client, &oidc).await {
            if let Ok(extra) = serde_json::from_slice::<Extra>(&body) {
                if endpoints.userinfo.is_none() {
                    if let Some(u) = extra.userinfo_endpoint {
                        endpoints.userinfo = Some(checked_url("userinfo_endpoint", &u)?);
                    }
                }
                if endpoints.registration.is_none() {
                    if let Some(u) = extra.registration_endpoint {
                        endpoints.registration = Some(checked_url("registration_endpoint", &u)?);
                    }
                }
            }
        }
    }
    tracing::debug!(issuer, "discovered AS endpoints");
    Ok(endpoints)
}

async fn fetch(client: &reqwest::Client, url: &Url) -> Result<(u16, Vec<u8>), DiscoveryError> {
    let request_error = |e: reqwest::Error| DiscoveryError::Request(e.into());
    let response = client.get(url.clone()).send().await.map_err(request_error)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(request_error)?;
    Ok((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"issuer":"http://127.0.0.1:9/realms/r","token_endpoint":"http://127.0.0.1:9/t",
      "permission_endpoint":"http://127.0.0.1:9/p","resource_registration_endpoint":"http://127.0.0.1:9/rs",
      "jwks_uri":"http://127.0.0.1:9/j","registration_endpoint":"http://127.0.0.1:9/reg"}"#;

    #[test]
    fn parses_and_checks_the_issuer() {
        let e = parse_endpoints("http://127.0.0.1:9/realms/r", 200, DOC.as_bytes()).unwrap();
        assert_eq!(e.resource_registration.as_str(), "http://127.0.0.1:9/rs");
        assert_eq!(e.registration.unwrap().as_str(), "http://127.0.0.1:9/reg");
        assert!(e.userinfo.is_none());
        assert!(matches!(
            parse_endpoints("http://127.0.0.1:9/realms/other", 200, DOC.as_bytes()),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        // Byte for byte, as the filter compares: a trailing slash is another issuer.
        let err = parse_endpoints("http://127.0.0.1:9/realms/r/", 200, DOC.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"http://127.0.0.1:9/realms/r/\"") && text.contains("--issuer"), "{text}");
    }

    #[test]
    fn refuses_plain_http_endpoints_off_loopback_and_bad_answers() {
        let doc = DOC.replace("http://127.0.0.1:9/t", "http://as.example.org/t");
        assert!(matches!(
            parse_endpoints("http://127.0.0.1:9/realms/r", 200, doc.as_bytes()),
            Err(DiscoveryError::Url(TransportError::PlainHttp { .. }))
        ));
        assert!(matches!(
            parse_endpoints("http://127.0.0.1:9/realms/r", 404, b"{}"),
            Err(DiscoveryError::Refused { .. })
        ));
        // Janssen with its UMA feature flag off (the default): the operator is told the fix.
        let janssen =
            parse_endpoints("http://127.0.0.1:9", 403, br#"{"error":"access_denied"}"#).unwrap_err();
        assert!(janssen.to_string().contains("UMA feature flag"), "{janssen}");
        let no_rreg = r#"{"issuer":"http://127.0.0.1:9","token_endpoint":"http://127.0.0.1:9/t","permission_endpoint":"http://127.0.0.1:9/p"}"#;
        assert!(parse_endpoints("http://127.0.0.1:9", 200, no_rreg.as_bytes()).is_err());
    }

    #[test]
    fn well_known_keeps_the_issuer_path() {
        assert_eq!(
            well_known_url("https://h/realms/x/", "uma2-configuration").unwrap().as_str(),
            "https://h/realms/x/.well-known/uma2-configuration"
        );
    }
}
