//! Which request a request is about: itself (FULL mode), or the one an authorization check
//! describes (PARTIAL mode, `authorize_path`).
//!
//! `authorize_path` itself takes `X-Original-URI` and `X-Original-Method` (nginx
//! `auth_request`, whose subrequest is always a GET: both headers are required); a path below
//! it is the original path, with the check's own method (Envoy `ext_authz` with `path_prefix`,
//! where `X-Original-*` could come from the client and is ignored).
//!
//! A check's own path must be canonical, as the original path must: the edge checks
//! `path_prefix` + the raw path it routes, so `/authorize/alice/../zzz` is about
//! `/alice/../zzz`, not `/zzz`, and `/authorize/../alice` is a check, not a request for `/alice`.
//! A check cannot strip what the proxy in front forwards either: one whose original request
//! carries a method-override header is refused unless `keep_method_override` allows them, and
//! repeated `X-Original-*` headers are refused (Envoy keeps them apart and reads the first).

use crate::config::PepConfig;
use crate::decision::{LocalReply, Mode};
use crate::headers::{HeaderScan, ORIGINAL_METHOD, ORIGINAL_URI};
use crate::path::{normalize_path, split_query};

/// The request the PEP must decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub mode: Mode,
    pub method: String,
    pub raw_path: String,
}

/// The subject of a request with `method` and `raw_path`; `original` reads a header of the
/// request (only asked for on `authorize_path` itself).
pub fn subject(
    config: &PepConfig,
    method: String,
    raw_path: String,
    headers: &HeaderScan<'_>,
    original: impl Fn(&str) -> Option<String>,
) -> Result<Subject, LocalReply> {
    let Some(authorize) = &config.authorize_path else {
        return Ok(Subject { mode: Mode::Full, method, raw_path });
    };
    let own = normalize_path(&raw_path).unwrap_or_default();
    let raw_only = split_query(&raw_path).0;
    let is_check =
        |p: &str| p == authorize || p.strip_prefix(authorize.as_str()).is_some_and(|r| r.starts_with('/'));
    if !is_check(&own) && !is_check(raw_only) {
        return Ok(Subject { mode: Mode::Full, method, raw_path });
    }
    if own != raw_only {
        return Err(LocalReply::bad_request("path of an authorization check is not in canonical form"));
    }
    if !config.keep_method_override && !headers.method_override.is_empty() {
        return Err(LocalReply::bad_request(
            "authorization check of a request with a method-override header",
        ));
    }
    if own == *authorize {
        if headers.original_uri > 1 || headers.original_method > 1 {
            return Err(LocalReply::bad_request("repeated X-Original-URI or X-Original-Method"));
        }
        let uri = original(ORIGINAL_URI).filter(|u| !u.is_empty());
        let original_method = original(ORIGINAL_METHOD).filter(|m| !m.is_empty());
        let (Some(uri), Some(method)) = (uri, original_method) else {
            return Err(LocalReply::bad_request(
                "authorization check without X-Original-URI and X-Original-Method",
            ));
        };
        return Ok(Subject { mode: Mode::Partial, method, raw_path: uri });
    }
    let rest = own.strip_prefix(authorize.as_str()).unwrap_or(&own);
    let (_, query) = split_query(&raw_path);
    Ok(Subject { mode: Mode::Partial, method, raw_path: format!("{rest}{query}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(authorize_path: Option<&str>) -> PepConfig {
        let mut c = serde_json::json!({
            "issuer": "https://as.example", "client_id": "pep", "client_secret": "s", "as_cluster": "as",
            "resources": [{"id": "r1", "uri": "/alice", "scopes": []}],
        });
        if let (Some(p), Some(o)) = (authorize_path, c.as_object_mut()) {
            o.insert("authorize_path".into(), p.into());
        }
        match PepConfig::from_json(c.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => unreachable!("{e}"),
        }
    }

    fn headers(method_override: bool, uri: usize, method: usize) -> HeaderScan<'static> {
        HeaderScan {
            method_override: if method_override { vec!["x-http-method-override"] } else { Vec::new() },
            original_uri: uri,
            original_method: method,
            ..HeaderScan::default()
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn without_authorize_path_every_request_is_its_own_subject() {
        let s = subject(&config(None), "GET".into(), "/authorize/x".into(), &headers(false, 0, 0), none);
        assert_eq!(s.map(|s| s.mode), Ok(Mode::Full));
    }

    #[test]
    fn the_nginx_form_reads_both_original_headers() {
        let c = config(Some("/authorize"));
        let read = |name: &str| match name {
            "x-original-uri" => Some("/alice/x?q=1".to_string()),
            "x-original-method" => Some("DELETE".to_string()),
            _ => None,
        };
        let s = subject(&c, "GET".into(), "/authorize".into(), &headers(false, 1, 1), read);
        assert_eq!(
            s,
            Ok(Subject { mode: Mode::Partial, method: "DELETE".into(), raw_path: "/alice/x?q=1".into() })
        );
        let missing = subject(&c, "GET".into(), "/authorize".into(), &headers(false, 0, 0), none);
        assert_eq!(missing.map_err(|r| r.status), Err(400));
        let repeated = subject(&c, "GET".into(), "/authorize".into(), &headers(false, 2, 1), read);
        assert_eq!(repeated.map_err(|r| r.status), Err(400));
    }

    #[test]
    fn the_ext_authz_form_takes_the_path_below_and_its_own_method() {
        let c = config(Some("/authorize"));
        let s = subject(&c, "PUT".into(), "/authorize/alice/x?y".into(), &headers(false, 0, 0), none);
        assert_eq!(
            s,
            Ok(Subject { mode: Mode::Partial, method: "PUT".into(), raw_path: "/alice/x?y".into() })
        );
    }

    #[test]
    fn a_non_canonical_check_or_a_method_override_is_refused() {
        let c = config(Some("/authorize"));
        for path in ["/authorize/alice/../zzz", "/authorize/../alice", "/authorize//alice"] {
            let s = subject(&c, "GET".into(), path.into(), &headers(false, 0, 0), none);
            assert_eq!(s.map_err(|r| r.status), Err(400), "{path}");
        }
        let s = subject(&c, "GET".into(), "/authorize/alice".into(), &headers(true, 0, 0), none);
        assert_eq!(s.map_err(|r| r.status), Err(400));
    }

    #[test]
    fn a_path_that_only_starts_like_the_check_path_is_a_request() {
        let c = config(Some("/authorize"));
        let s = subject(&c, "GET".into(), "/authorizex/alice".into(), &headers(false, 0, 0), none);
        assert_eq!(s.map(|s| s.mode), Ok(Mode::Full));
    }
}
