//! The filter configuration (`core/src/config.rs` `PepConfig::from_json`), and what the filter
//! derives from an accepted one.
//!
//! Input: the configuration JSON. Properties of an accepted configuration:
//! - every resource uri is canonical (`normalize_path` leaves it, no trailing '/' but root),
//!   unique, with a non-empty header-safe id; `path_prefix`, `authorize_path` likewise;
//! - `timeout_ms` in 1..=60000, `cache_slots` in 16..=1048576, the issuer is http(s) and
//!   does not end with '/'; realm and issuer are safe in a quoted header parameter;
//! - method scopes are upper-case letters only;
//! - the derived values do not panic: discovery path (starts with '/'), forward header
//!   spellings, endpoint overrides, the forwarding signer;
//! - the timing rules the filter builds from it (`Worker::clock`: `rpt_margin_s`,
//!   `clock_skew_s` as i64) decide a current RPT without overflowing at a realistic time;
//! - deciding a few fixed requests does not panic, and what is protected is matched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::config::PepConfig;
use uma_pep_core::decision::{plan, Plan, RequestFacts};
use uma_pep_core::forward::ForwardSigner;
use uma_pep_core::introspection::{Clock, IntrospectionResult, Permission};
use uma_pep_core::path::normalize_path;
use uma_pep_core::session::Endpoints;

const NOW: i64 = 1_750_000_000;

fn header_safe(v: &str) -> bool {
    !v.chars().any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii())
}

fn canonical(p: &str) {
    let n = normalize_path(p).unwrap_or_else(|e| panic!("accepted path {p:?} does not normalise: {e}"));
    let trimmed = n.trim_end_matches('/');
    let expected = if trimmed.is_empty() { "/" } else { trimmed };
    assert_eq!(p, expected, "accepted path {p:?} is not canonical");
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = PepConfig::from_json(data) else { return };

    assert!((1..=60_000).contains(&c.timeout_ms));
    assert!((16..=1_048_576).contains(&c.cache_slots));
    assert!(
        c.issuer.starts_with("http://") || c.issuer.starts_with("https://") || {
            let l = c.issuer.to_ascii_lowercase();
            l.starts_with("http:") || l.starts_with("https:")
        }
    );
    assert!(!c.issuer.ends_with('/'));
    assert!(header_safe(&c.issuer) && header_safe(&c.realm), "{:?} {:?}", c.issuer, c.realm);
    let mut uris = std::collections::HashSet::new();
    for r in c.resources.resources() {
        canonical(&r.uri);
        assert!(uris.insert(r.uri.clone()), "uri {:?} twice", r.uri);
        assert!(!r.id.trim().is_empty() && header_safe(&r.id), "id {:?}", r.id);
    }
    if !c.path_prefix.is_empty() {
        canonical(&c.path_prefix);
        assert_ne!(c.path_prefix, "/");
    }
    if let Some(a) = &c.authorize_path {
        canonical(a);
    }
    for (m, s) in &c.method_scopes {
        // An RFC 9110 token, upper-cased (WebDAV's `VERSION-CONTROL` too).
        assert!(uma_pep_core::config::is_method_name(m) && *m == m.to_ascii_uppercase(), "method {m:?}");
        assert!(!s.trim().is_empty());
    }

    assert!(c.discovery_path().starts_with('/'), "discovery path {:?}", c.discovery_path());
    let [dash, underscore] = c.forward_header_spellings();
    assert!(!dash.contains('_') && !underscore.contains('-'));
    let _ = Endpoints::from_overrides(&c);
    if let Some(f) = &c.forward {
        let _ = ForwardSigner::new(f);
    }

    // The clock the filter decides with (src/worker.rs `Worker::clock`).
    let clock = Clock {
        now: NOW,
        margin_s: i64::try_from(c.rpt_margin_s).unwrap_or(i64::MAX / 2),
        skew_s: i64::try_from(c.clock_skew_s).unwrap_or(0),
    };
    let rpt = IntrospectionResult {
        active: true,
        exp: Some(NOW + 3600),
        iat: Some(NOW - 10),
        nbf: None,
        sub: Some("alice".into()),
        client_id: None,
        permissions: vec![Permission {
            resource_id: "r".into(),
            scopes: vec!["protected_get".into()],
            scopes_listed: true,
            exp: Some(NOW + 3600),
            nbf: Some(NOW - 10),
        }],
        claims: Default::default(),
    };
    let _ = rpt.covers("r", "protected_get", clock, c.as_profile);
    // An RPT that expired is never current, whatever the margin.
    let expired = IntrospectionResult { exp: Some(NOW - 1), ..rpt.clone() };
    assert!(
        expired.covers("r", "protected_get", clock, c.as_profile).is_err(),
        "expired RPT accepted, margin {}",
        c.rpt_margin_s
    );

    for (method, path) in
        [("GET", "/"), ("POST", "/a/b/../c?x=1"), ("DELETE", "/alice/x"), ("PATCH", "//x/./y/")]
    {
        for canonical_only in [false, true] {
            let facts = RequestFacts {
                method,
                raw_path: path,
                authorization: &["Bearer abc"],
                canonical_only,
                cors_preflight: false,
            };
            if let Plan::Protected { target, .. } = plan(&c, &c.resources, facts) {
                assert!(c.resources.resources().iter().any(|r| r.id == target.resource_id));
            }
        }
    }
});
