//! PARTIAL mode's headers. The parser that picks `X-Original-URI` / `X-Original-Method` lives in
//! `src/request.rs` (`subject`, host calls, not testable here); this target fuzzes the core
//! functions it calls: the header map scan (`core/src/headers.rs`: `SerializedPairs`, `scan`,
//! `folds_to`) and the decision on the original request (`decision::plan` with
//! `canonical_only`, i.e. `normalize_path` and `split_query` on `X-Original-URI`).
//!
//! Input: one header per line, `name: value` (a leading ':' belongs to the name, as in
//! `:path`). Properties:
//! - the host serialization of those headers reads back pair for pair, never malformed; the
//!   same bytes cut anywhere never panic and are reported malformed;
//! - the scan finds every name that folds (case, '-' = '_') to the identity header or to a
//!   method-override header, each once, and counts `X-Original-*` exactly;
//! - for a check (canonical_only) on `X-Original-URI`: a decision other than 400 is only made on
//!   a path that is already canonical (no rewrite: what is decided on is what the proxy in front
//!   forwards), and a protected resource is the one the matcher finds for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::config::PepConfig;
use uma_pep_core::decision::{plan, Plan, RequestFacts};
use uma_pep_core::headers::{
    folds_to, scan, serialize, SerializedPairs, METHOD_OVERRIDE_HEADERS, ORIGINAL_METHOD, ORIGINAL_URI,
};
use uma_pep_core::path::{normalize_path, split_query};

const CONFIG: &str = r#"{"issuer":"http://as.local:8080/realms/eoepca","as_cluster":"as","client_id":"pep",
  "client_secret":"s","authorize_path":"/authorize","unmatched":"allow",
  "resources":[{"id":"alice","uri":"/alice"},{"id":"alice-p","uri":"/alice/private"},
               {"id":"ro","uri":"/ro","scopes":["protected_get"]},{"id":"pub","uri":"/pub","scopes":["public_access"]}]}"#;
const IDENTITY: &str = "x-user-id";

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PEP: PepConfig = PepConfig::from_json(CONFIG.as_bytes()).expect("fixed config is valid");
    }
    // The raw bytes as a header map: never a panic.
    let mut raw = SerializedPairs::new(data);
    let _ = raw.by_ref().count();
    let _ = scan(&mut SerializedPairs::new(data), IDENTITY);

    let Ok(text) = std::str::from_utf8(data) else { return };
    // Header names and values never hold NUL, CR or LF.
    let pairs: Vec<(&str, &str)> = text
        .split('\n')
        .filter(|l| !l.is_empty() && !l.contains('\0') && !l.contains('\r'))
        .map(|l| {
            let skip = l.chars().next().map_or(0, char::len_utf8);
            let at = l[skip..].find(':').map_or(l.len(), |i| i + skip);
            let (n, v) = l.split_at(at);
            (n, v.strip_prefix(':').unwrap_or(v).trim_start_matches(' '))
        })
        .collect();
    let bytes = serialize(&pairs);
    let mut it = SerializedPairs::new(&bytes);
    let got: Vec<(&[u8], &[u8])> = it.by_ref().collect();
    assert!(!it.malformed(), "a well-formed map is malformed");
    let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
    assert_eq!(got, want);
    for cut in [1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
        if cut == 0 || cut >= bytes.len() {
            continue;
        }
        assert_eq!(
            scan(&mut SerializedPairs::new(&bytes[..cut]), IDENTITY),
            None,
            "map cut at {cut} scanned"
        );
    }

    let s = scan(&mut SerializedPairs::new(&bytes), IDENTITY).expect("a well-formed map scans");
    let mut want_identity: Vec<&str> = Vec::new();
    let mut want_override: Vec<&str> = Vec::new();
    for (n, _) in &pairs {
        if folds_to(n.as_bytes(), IDENTITY) {
            if !want_identity.contains(n) {
                want_identity.push(n);
            }
        } else if METHOD_OVERRIDE_HEADERS.iter().any(|h| folds_to(n.as_bytes(), h))
            && !want_override.contains(n)
        {
            want_override.push(n);
        }
    }
    assert_eq!(s.identity, want_identity);
    assert_eq!(s.method_override, want_override);
    assert_eq!(s.original_uri, pairs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(ORIGINAL_URI)).count());
    assert_eq!(
        s.original_method,
        pairs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(ORIGINAL_METHOD)).count()
    );
    // Every name the upstream reads as the identity header is one the filter removes.
    for (n, _) in &pairs {
        let cgi = |x: &str| x.to_ascii_uppercase().replace('-', "_");
        if cgi(n) == cgi(IDENTITY) {
            assert!(s.identity.contains(n), "{n:?} reaches the upstream as {IDENTITY}");
        }
    }

    // The original request a check describes (Envoy hands the first of repeated headers).
    let first = |name: &str| pairs.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    let (Some(uri), Some(method)) = (first(ORIGINAL_URI), first(ORIGINAL_METHOD)) else { return };
    let authorization: Vec<&str> =
        pairs.iter().filter(|(n, _)| n.eq_ignore_ascii_case("authorization")).map(|(_, v)| *v).collect();
    PEP.with(|pep| {
        let facts = RequestFacts {
            method,
            raw_path: uri,
            authorization: &authorization,
            canonical_only: true,
            cors_preflight: false,
        };
        let decided = plan(pep, &pep.resources, facts);
        let canonical = normalize_path(uri).ok();
        match &decided {
            Plan::Reply(r) if r.status == 400 => return,
            Plan::Reply(_) => {}
            Plan::PassThrough { rewrite } | Plan::LookUp { rewrite, .. } => {
                assert_eq!(rewrite, &None, "{uri:?} rewritten in a check")
            }
            Plan::Protected { target, .. } => {
                assert_eq!(target.rewrite, None, "{uri:?} rewritten in a check");
                let n = canonical.as_deref().expect("decided on a path that does not normalise");
                let found = pep.resources.find(n).map(|r| r.id.as_str());
                assert_eq!(found, Some(target.resource_id.as_str()), "{uri:?}");
            }
        }
        let n = canonical.unwrap_or_else(|| panic!("{uri:?} decided ({decided:?}) without normalising"));
        assert_eq!(n, split_query(uri).0, "{uri:?}: a check decided on a non-canonical path");
    });
});
