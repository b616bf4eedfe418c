//! The HTTP client every AS, PDP and JWKS call goes through, and the rule about which URLs it
//! may talk to: TLS is always verified (a custom CA can be added, verification never turned
//! off) and plain `http` is only accepted for loopback addresses, where there is no network
//! to eavesdrop on. A call that gets no answer is reported by its cause (`NetError`), not by
//! reqwest's "error sending request for url (...)".

use std::error::Error as StdError;
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

/// Why a call got no answer, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCause {
    Refused,
    Timeout,
    Dns(String),
    TlsNameMismatch,
    TlsUnknownCa,
    TlsExpired,
    TlsNotYetValid,
    /// A TLS client hello answered by something that does not speak TLS.
    NotTls,
    TlsOther(String),
    Closed,
    Other(String),
}

impl std::fmt::Display for NetCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetCause::Refused => f.write_str("connection refused: nothing listens there (is the server up, the port right?)"),
            NetCause::Timeout => f.write_str("timed out: no answer within --timeout-ms (PEPCTL_TIMEOUT_MS)"),
            NetCause::Dns(detail) => write!(f, "DNS lookup failed ({detail}): check the host name"),
            NetCause::TlsNameMismatch => f.write_str(
                "TLS name mismatch: the server's certificate is not valid for this host name; use the name the \
                 certificate was issued for",
            ),
            NetCause::TlsUnknownCa => f.write_str(
                "TLS certificate verify failed: issued by an unknown CA; trust that CA with --ca-file (PEPCTL_CA_FILE)",
            ),
            NetCause::TlsExpired => f.write_str("TLS certificate verify failed: the server's certificate has expired"),
            NetCause::TlsNotYetValid => {
                f.write_str("TLS certificate verify failed: the server's certificate is not valid yet (check clocks)")
            }
            NetCause::NotTls => f.write_str(
                "TLS handshake failed: the server does not speak TLS there (an https URL for a plain http port?)",
            ),
            NetCause::TlsOther(detail) => write!(f, "TLS handshake failed: {detail}"),
            NetCause::Closed => f.write_str("the connection was closed before an answer came"),
            NetCause::Other(detail) => f.write_str(detail),
        }
    }
}

fn tls_cause(e: &rustls::Error) -> NetCause {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => NetCause::TlsNameMismatch,
            C::UnknownIssuer => NetCause::TlsUnknownCa,
            C::Expired | C::ExpiredContext { .. } => NetCause::TlsExpired,
            C::NotValidYet | C::NotValidYetContext { .. } => NetCause::TlsNotYetValid,
            other => NetCause::TlsOther(format!("invalid certificate: {other:?}")),
        },
        rustls::Error::InvalidMessage(_) => NetCause::NotTls,
        other => NetCause::TlsOther(other.to_string()),
    }
}

/// Walks the source chain (reqwest → hyper → io / rustls) for the cause. `io::Error` hides a
/// wrapped error from `source()` (it returns the inner error's source), so it is opened with
/// `get_ref()`.
pub fn classify(top: &(dyn StdError + 'static)) -> NetCause {
    let (mut timeout, mut dns, mut closed) = (false, false, false);
    let mut innermost = top.to_string();
    let mut current = Some(top);
    while let Some(e) = current {
        innermost = e.to_string();
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return tls_cause(tls);
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            timeout |= r.is_timeout();
        }
        // hyper-util's connector says "dns error" around the resolver's error.
        dns |= innermost == "dns error";
        current = e.source();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return NetCause::Refused,
                K::TimedOut => timeout = true,
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => closed = true,
                _ => {}
            }
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn StdError + 'static));
            }
        }
    }
    if dns {
        NetCause::Dns(innermost)
    } else if timeout {
        NetCause::Timeout
    } else if closed {
        NetCause::Closed
    } else {
        NetCause::Other(innermost)
    }
}

/// A call that got no (complete) answer: the URL and the cause. The reqwest error stays the
/// `source`.
#[derive(Debug, Error)]
#[error("{}{cause}", url.as_deref().map(|u| format!("{u}: ")).unwrap_or_default())]
pub struct NetError {
    pub url: Option<String>,
    pub cause: NetCause,
    #[source]
    source: reqwest::Error,
}

impl From<reqwest::Error> for NetError {
    fn from(source: reqwest::Error) -> Self {
        // Without credentials, query or fragment: those are not ours to print.
        let url = source.url().map(|u| {
            let mut u = u.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        });
        Self { url, cause: classify(&source), source }
    }
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

    async fn cause_of(url: &str) -> NetCause {
        let client = build_client(None, Duration::from_millis(300)).unwrap();
        let e = client.get(url).send().await.unwrap_err();
        let shown = NetError::from(e);
        assert!(shown.to_string().starts_with(url), "{shown}");
        assert!(!shown.to_string().contains("error sending request"), "{shown}");
        shown.cause
    }

    #[tokio::test]
    async fn refused_is_named() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_eq!(cause_of(&format!("http://127.0.0.1:{port}/x")).await, NetCause::Refused);
    }

    /// A loopback server that answers each connection with `answer` after reading the
    /// request, or keeps it open and says nothing when `answer` is `None`; its port.
    async fn peer(answer: Option<&'static [u8]>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                if let Some(answer) = answer {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer).await;
                }
                held.push(s);
            }
        });
        port
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let port = peer(None).await;
        assert_eq!(cause_of(&format!("http://127.0.0.1:{port}/x")).await, NetCause::Timeout);
    }

    #[tokio::test]
    async fn https_to_a_plain_http_port_is_not_tls() {
        let port = peer(Some(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")).await;
        assert_eq!(cause_of(&format!("https://127.0.0.1:{port}/x")).await, NetCause::NotTls);
    }

    #[tokio::test]
    async fn an_unknown_host_is_a_dns_failure() {
        assert!(matches!(cause_of("https://pepctl-test.invalid/x").await, NetCause::Dns(_)));
    }

    /// The shapes the TLS stack produces (hyper-rustls wraps rustls's error in an io::Error,
    /// which hides it from `source()`), without a certificate fixture: the end-to-end test
    /// (tests/pepctl/test_net_errors.py) does it with real certificates.
    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        #[derive(Debug, Error)]
        #[error("connect error")]
        struct Wrapper(#[source] std::io::Error);
        let cases = [
            (rustls::CertificateError::NotValidForName, NetCause::TlsNameMismatch),
            (rustls::CertificateError::UnknownIssuer, NetCause::TlsUnknownCa),
            (rustls::CertificateError::Expired, NetCause::TlsExpired),
            (rustls::CertificateError::NotValidYet, NetCause::TlsNotYetValid),
        ];
        for (cert, want) in cases {
            let io =
                std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(cert));
            assert_eq!(classify(&Wrapper(io)), want);
        }
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(matches!(classify(&Wrapper(io)), NetCause::TlsOther(_)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&Wrapper(reset)), NetCause::Closed);
        assert!(NetCause::TlsUnknownCa.to_string().contains("--ca-file"));
        assert!(NetCause::TlsNameMismatch.to_string().contains("name mismatch"));
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
