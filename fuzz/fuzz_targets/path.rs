//! Path normalisation (`core/src/path.rs`) and resource matching (`core/src/matcher.rs`).
//!
//! Input: a raw `:path` (query and fragment included), as Envoy hands it over.
//! Properties, for every path `normalize_path` accepts:
//! - idempotent: `normalize(normalize(p)) == normalize(p)`;
//! - canonical: starts with '/', ASCII, no "//", no "." or ".." segment, no '?', '#', ';',
//!   '\\', control character, and every '%' starts an upper-case escape of a reserved byte;
//! - the query is irrelevant: `normalize(p) == normalize(path part of p)`;
//! - matching: a resource found for the normalised path has a uri that is "/" or a
//!   whole-segment prefix of it, and no longer uri of the table is one (longest match);
//!   `None` only when no uri of the table is one; a trailing '/' never changes the match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::config::{validate_resources, Resource};
use uma_pep_core::matcher::ResourceMatcher;
use uma_pep_core::path::{normalize_path, split_query};

fn res(id: &str, uri: &str) -> Resource {
    Resource { id: id.into(), uri: uri.into(), ..Resource::default() }
}

fn tables() -> [ResourceMatcher; 2] {
    let without_root = vec![
        res("alice", "/alice"),
        res("alice-private", "/alice/private"),
        res("bob", "/bob"),
        res("api", "/api/v1/items"),
        res("encoded", "/a%20b"),
        res("utf8", "/caf%C3%A9"),
        res("dotty", "/..x/y."),
        res("tilde", "/~user"),
    ];
    let mut with_root = without_root.clone();
    with_root.push(res("root", "/"));
    // Through the same validation a configuration or a pepctl table goes through.
    [
        validate_resources(without_root).expect("fixed table is valid"),
        validate_resources(with_root).expect("fixed table is valid"),
    ]
}

/// `uri` covers `path`: "/" covers everything, else equal or followed by '/'.
fn covers(uri: &str, path: &str) -> bool {
    uri == "/" || path == uri || path.strip_prefix(uri).is_some_and(|r| r.starts_with('/'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None, // lower case is not canonical
    }
}

fn assert_canonical(raw: &str, n: &str) {
    assert!(n.starts_with('/'), "{raw:?} -> {n:?}: not absolute");
    assert!(n.is_ascii(), "{raw:?} -> {n:?}: not ASCII");
    assert!(!n.contains("//"), "{raw:?} -> {n:?}: empty segment");
    assert!(n.split('/').all(|s| s != "." && s != ".."), "{raw:?} -> {n:?}: dot segment");
    for b in n.bytes() {
        assert!(
            !matches!(b, b'?' | b'#' | b';' | b'\\') && !b.is_ascii_control(),
            "{raw:?} -> {n:?}: byte {b:#x} left in the path"
        );
    }
    let bytes = n.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                panic!("{raw:?} -> {n:?}: non-canonical escape at {i}");
            };
            let v = (hi << 4) | lo;
            assert!(!is_unreserved(v), "{raw:?} -> {n:?}: escaped unreserved byte {v:#x}");
            assert!(v != b'/' && v != b'\\' && v >= 0x20 && v != 0x7f, "{raw:?} -> {n:?}: escaped {v:#x}");
        }
    }
}

fn check_match(m: &ResourceMatcher, n: &str) {
    let trimmed = n.trim_end_matches('/');
    let path = if trimmed.is_empty() { "/" } else { trimmed };
    let best = m.resources().iter().filter(|r| covers(&r.uri, path)).max_by_key(|r| r.uri.len());
    let found = m.find(n);
    match (found, best) {
        (Some(f), Some(b)) => {
            assert!(covers(&f.uri, path), "{n:?} matched {:?}, not a whole-segment prefix", f.uri);
            assert_eq!(f.uri, b.uri, "{n:?}: matched {:?}, longest is {:?}", f.uri, b.uri);
        }
        (None, None) => {}
        (f, b) => panic!(
            "{n:?}: matcher says {:?}, whole-segment prefixes say {:?}",
            f.map(|r| &r.uri),
            b.map(|r| &r.uri)
        ),
    }
    // A trailing slash never moves a request to another resource.
    let slashed = format!("{path}/");
    assert_eq!(m.find(&slashed).map(|r| &r.id), found.map(|r| &r.id), "{n:?} vs {slashed:?}");
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static TABLES: [ResourceMatcher; 2] = tables();
    }
    let raw = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(_) => return,
    };
    let (path_only, query) = split_query(raw);
    assert!(raw.starts_with(path_only), "split_query lost the path of {raw:?}");
    assert!(query.is_empty() || query.starts_with('?'), "{raw:?}: query {query:?}");
    assert!(!path_only.contains('?') && !path_only.contains('#'), "{raw:?}: path {path_only:?}");

    let result = normalize_path(raw);
    assert_eq!(result, normalize_path(path_only), "{raw:?}: the query changed the path");
    TABLES.with(|tables| {
        // The matcher must not panic on anything, canonical or not.
        for m in tables {
            let _ = m.find(raw);
        }
        let Ok(n) = result else { return };
        assert_canonical(raw, &n);
        assert_eq!(normalize_path(&n).as_deref(), Ok(n.as_str()), "{raw:?} -> {n:?}: not idempotent");
        for m in tables {
            check_match(m, &n);
        }
    });
});
