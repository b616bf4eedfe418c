//! The HTTP client every AS, PDP and JWKS call goes through, and the rule about which URLs it
//! may talk to: TLS is always verified (a custom CA can be added, verification never turned
//! off) and plain `http` is only accepted for loopback addresses, where there is no network
//! to eavesdrop on.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("CA file {0} holds no usable PEM certificate")]
    CaPem(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{what} {url:?} is not a URL: {problem}")]
    BadUrl { what: String, url: String, problem: String },
    #[error("{what} {url} uses plain http to a non-loopback host; use https (TLS is always verified)")]
    PlainHttp { what: String, url: String },
}

/// Builds the client: rustls with the bundled web PKI roots, plus `ca_file` when given.
pub fn build_client(ca_file: Option<&Path>, timeout: Duration) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect could carry our bearer token to another host.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pepctl/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|source| TransportError::CaFile { path: path.display().to_string(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|_| TransportError::CaPem(path.display().to_string()))?;
        if certs.is_empty() {
            return Err(TransportError::CaPem(path.display().to_string()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| TransportError::Client(e.to_string()))
}

/// Parses `value` and checks it may be called: https anywhere, http only on loopback.
pub fn checked_url(what: &str, value: &str) -> Result<Url, TransportError> {
    let url = Url::parse(value).map_err(|e| TransportError::BadUrl {
        what: what.to_string(),
        url: value.to_string(),
        problem: e.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(TransportError::PlainHttp { what: what.to_string(), url: value.to_string() }),
        other => Err(TransportError::BadUrl {
            what: what.to_string(),
            url: value.to_string(),
            problem: format!("scheme {other:?} is not http(s)"),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(checked_url("issuer", "https://as.example.org/realms/x").is_ok());
        assert!(checked_url("issuer", "http://127.0.0.1:8080/").is_ok());
        assert!(checked_url("issuer", "http://127.9.9.9/").is_ok());
        assert!(checked_url("issuer", "http://localhost:1/").is_ok());
        assert!(checked_url("issuer", "http://[::1]:1/").is_ok());
        assert!(matches!(
            checked_url("issuer", "http://as.example.org/"),
            Err(TransportError::PlainHttp { .. })
        ));
        assert!(matches!(checked_url("issuer", "http://10.0.0.1/"), Err(TransportError::PlainHttp { .. })));
        assert!(matches!(checked_url("issuer", "ftp://x/"), Err(TransportError::BadUrl { .. })));
        assert!(matches!(checked_url("issuer", "not a url"), Err(TransportError::BadUrl { .. })));
    }

    #[test]
    fn ca_file_must_exist_and_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            build_client(Some(&missing), Duration::from_secs(1)),
            Err(TransportError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here").unwrap();
        assert!(matches!(build_client(Some(&empty), Duration::from_secs(1)), Err(TransportError::CaPem(_))));
        assert!(build_client(None, Duration::from_secs(1)).is_ok());
    }
}
