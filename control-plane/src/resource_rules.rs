//! Rules a resource obeys wherever it comes from (the seed file or the Resource API): the
//! canonical form of its path, the same one the filter matches on, and the seed's scope
//! completion.

use uma_pep_core::config::default_method_scopes;
use uma_pep_core::path::normalize_path;

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

/// The canonical path: normalised like the filter does, no query, no trailing slash.
pub fn canonical_uri(raw: &str) -> Result<String, String> {
    let normalized = normalize_path(raw).map_err(|e| format!("{raw:?}: {e}"))?;
    if normalized.contains('?') || raw.contains('?') || raw.contains('#') {
        return Err(format!("{raw:?}: a resource path has no query or fragment"));
    }
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
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
    fn parents_walk_up_to_but_not_including_root() {
        assert_eq!(self_and_parents("/a/b/c"), vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(self_and_parents("/a"), vec!["/a"]);
        assert!(self_and_parents("/").is_empty());
    }
}
