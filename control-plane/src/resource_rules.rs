//! Rules a resource obeys wherever it comes from (the seed file or the Resource API): the
//! canonical form of its path, the same one the filter matches on, and the seed's scope
//! completion.

use thiserror::Error;
use uma_pep_core::config::default_method_scopes;
use uma_pep_core::path::{normalize_path, PathError};

/// Scopes that mark a resource as public or merely authenticated: the seed does not add the
/// method scopes to those.
pub const OPEN_MARKERS: &[&str] = &["public_access", "Authenticated", "authenticated", "open"];

/// The six method scopes, in the seed's order.
pub fn method_scopes() -> Vec<String> {
    let table = default_method_scopes();
    ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"].iter().filter_map(|m| table.get(*m).cloned()).collect()
}

/// The seed's rule: the given scopes, plus every method scope not already there, unless one
/// of the open markers is present. Duplicates are dropped, order kept.
pub fn complete_scopes(given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in given {
        let s = s.trim();
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    if !out.iter().any(|s| OPEN_MARKERS.contains(&s.as_str())) {
        for s in method_scopes() {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

pub fn is_open(scopes: &[String]) -> bool {
    scopes.iter().any(|s| OPEN_MARKERS.contains(&s.as_str()))
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("{raw:?}: {source}")]
    Invalid { raw: String, source: PathError },
    #[error("{raw:?}: a resource path has no query or fragment")]
    QueryOrFragment { raw: String },
    #[error(
        "{raw:?} is not a canonical path: the filter would protect {canonical:?} (dot segments, duplicate \
         slashes and escapes are resolved when matching); write {canonical:?}"
    )]
    NotCanonical { raw: String, canonical: String },
}

/// The canonical path: normalised like the filter does, no query, no trailing slash. Used to
/// look a resource up (`?path=`, `resources show /p`), where any spelling of it finds it.
pub fn canonical_uri(raw: &str) -> Result<String, UriError> {
    let normalized =
        normalize_path(raw).map_err(|source| UriError::Invalid { raw: raw.to_string(), source })?;
    if normalized.contains('?') || raw.contains('?') || raw.contains('#') {
        return Err(UriError::QueryOrFragment { raw: raw.to_string() });
    }
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

/// A path to register (the resource file, the Resource API): it must already be canonical, so
/// what is registered is what the operator wrote. `/a/../b`, `/a//b`, `/a/./b`, `/%61` or
/// `/café` are refused with the spelling to use, not silently rewritten. One trailing `/`
/// is the exception and is trimmed: the filter matches whole segments and ignores it, so
/// `/eric/` protects exactly what `/eric` does (the seed's files write it that way).
pub fn registrable_uri(raw: &str) -> Result<String, UriError> {
    let canonical = canonical_uri(raw)?;
    let written = if raw.len() > 1 { raw.strip_suffix('/').unwrap_or(raw) } else { raw };
    if written != canonical {
        return Err(UriError::NotCanonical { raw: raw.to_string(), canonical });
    }
    Ok(canonical)
}

/// `uri` and its parents, nearest first, without `/` (the seed's ownership walk).
pub fn self_and_parents(uri: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = uri.trim_end_matches('/').to_string();
    while !current.is_empty() {
        out.push(current.clone());
        match current.rfind('/') {
            Some(i) => current.truncate(i),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_scopes_are_added_unless_open() {
        assert_eq!(complete_scopes(&[]).len(), 6);
        let s = complete_scopes(&["read".into(), "protected_get".into(), "read".into()]);
        assert_eq!(s[0], "read");
        assert_eq!(s[1], "protected_get");
        assert_eq!(s.len(), 7);
        for open in OPEN_MARKERS {
            assert_eq!(complete_scopes(&[open.to_string()]), vec![open.to_string()]);
        }
        assert!(is_open(&["Authenticated".into()]));
        assert!(!is_open(&["protected_get".into()]));
    }

    #[test]
    fn uris_are_canonical() {
        assert_eq!(canonical_uri("/a//b/").unwrap(), "/a/b");
        assert_eq!(canonical_uri("/").unwrap(), "/");
        assert_eq!(canonical_uri("/%61").unwrap(), "/a");
        assert!(canonical_uri("a").is_err());
        assert!(canonical_uri("/a/../..").is_err());
        assert!(canonical_uri("/a?x=1").is_err());
        assert!(canonical_uri("/a%2fb").is_err());
    }

    #[test]
    fn registered_paths_must_be_written_canonically() {
        assert_eq!(registrable_uri("/").unwrap(), "/");
        assert_eq!(registrable_uri("/a/b").unwrap(), "/a/b");
        assert_eq!(registrable_uri("/eric/").unwrap(), "/eric", "one trailing slash is trimmed");
        assert_eq!(registrable_uri("/a%20b").unwrap(), "/a%20b");
        for (raw, canonical) in [
            ("/a/../b", "/b"),
            ("/a/./b", "/a/b"),
            ("/a//b", "/a/b"),
            ("//a", "/a"),
            ("/a//", "/a"),
            ("/%61", "/a"),
            ("/a%2a", "/a*"),
            ("/a%5b", "/a%5B"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/a/..", "/"),
        ] {
            match registrable_uri(raw) {
                Err(UriError::NotCanonical { canonical: c, .. }) => assert_eq!(c, canonical, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
        let e = registrable_uri("/a/../b").unwrap_err().to_string();
        assert!(e.contains(r#"write "/b""#), "{e}");
        assert!(matches!(registrable_uri("/a?x"), Err(UriError::QueryOrFragment { .. })));
        assert!(matches!(registrable_uri("/.."), Err(UriError::Invalid { .. })));
    }

    #[test]
    fn parents_walk_up_to_but_not_including_root() {
        assert_eq!(self_and_parents("/a/b/c"), vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(self_and_parents("/a"), vec!["/a"]);
        assert!(self_and_parents("/").is_empty());
    }
}
