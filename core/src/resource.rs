//! The rules a protected resource obeys wherever it comes from (the filter's `resources`, the
//! table polled from pepctl, pepctl's seed file and Resource API): its canonical path, the
//! scope markers that change how it is enforced, the method scopes and the seed's scope
//! completion, and the scope a request on it must hold. The filter and pepctl both use these,
//! so what pepctl registers is what the filter enforces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::path::{normalize_path, PathError};

/// One protected resource: the AS resource id, the paths it covers (a path, or a pattern:
/// `uri_pattern`), and how requests on it are decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    pub uri: String,
    /// Scopes registered for the resource; empty = any mapped method scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The resource's own path only, not what is below it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    /// Method → the scopes it needs, replacing `method_scopes` here; a method not listed is 405.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<BTreeMap<String, Vec<String>>>,
    /// Whether the RPT must hold every scope of the method (`all`) or one of them (`any`).
    #[serde(default, skip_serializing_if = "ScopesMode::is_default")]
    pub scopes_mode: ScopesMode,
    #[serde(default, skip_serializing_if = "Enforcement::is_default")]
    pub enforcement: Enforcement,
}

/// `scopes_mode`: how many of a method's scopes an RPT must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopesMode {
    #[default]
    All,
    Any,
}

impl ScopesMode {
    pub fn is_default(&self) -> bool {
        *self == Self::All
    }
}

/// `enforcement`: what a decision does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// A denied request is answered (401 with a ticket, 403).
    #[default]
    Enforcing,
    /// Decided and logged as usual, but a denied request is forwarded, with the decision in a
    /// request header (`enforcement_header`).
    Permissive,
    /// No token needed: the request passes (identity headers still stripped).
    Disabled,
}

impl Enforcement {
    pub fn is_default(&self) -> bool {
        *self == Self::Enforcing
    }
}

/// The seed's fixed verb→scope table (the filter's `method_scopes` default).
pub fn default_method_scopes() -> BTreeMap<String, String> {
    [
        ("GET", "protected_get"),
        ("HEAD", "protected_head"),
        ("POST", "protected_post"),
        ("PUT", "protected_put"),
        ("PATCH", "protected_patch"),
        ("DELETE", "protected_delete"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect()
}

/// The scope that makes a resource open: proxied with no token check and never registered at
/// the AS (the EOEPCA PEP v1.2 behaviour).
pub const OPEN: &str = "open";

/// Scopes that stand for the method scopes: the seed does not add the method scopes to a
/// resource holding one of them, and registers no ownership policy at the PDP for it.
pub const OPEN_MARKERS: &[&str] = &["public_access", "Authenticated", "authenticated", OPEN];

/// Scopes a registered resource may hold instead of the method scopes, in the order the seed
/// asked for them: a request on such a resource needs an RPT with that scope.
pub const SCOPE_STAND_INS: [&str; 3] = ["Authenticated", "authenticated", "public_access"];

/// The six methods the seed maps to scopes, in its order.
const SEED_METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"];

impl Resource {
    /// Open: no token is checked for it, whatever the method.
    pub fn is_open(&self) -> bool {
        is_open(&self.scopes)
    }
}

/// Whether scopes make a resource open (see [`OPEN`]).
pub fn is_open(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s == OPEN)
}

/// Whether scopes hold one of the [`OPEN_MARKERS`].
pub fn has_open_marker(scopes: &[String]) -> bool {
    scopes.iter().any(|s| OPEN_MARKERS.contains(&s.as_str()))
}

/// The six method scopes, in the seed's order.
pub fn method_scopes() -> Vec<String> {
    let table = default_method_scopes();
    SEED_METHODS.iter().filter_map(|m| table.get(*m).cloned()).collect()
}

/// The seed's rule: the given scopes (trimmed, blanks and duplicates dropped, order kept), plus
/// every method scope not already there, unless one of the [`OPEN_MARKERS`] is present.
pub fn complete_scopes(given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in given {
        let s = s.trim();
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    if !has_open_marker(&out) {
        for s in method_scopes() {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// The scope a request on a registered resource must hold: the method's, when the resource
/// lists it (or lists none); else the first of [`SCOPE_STAND_INS`] it lists; else none, and
/// the method is not offered (only registered scopes may be asked for at the AS).
pub fn required_scope<'s>(resource_scopes: &'s [String], method_scope: &'s str) -> Option<&'s str> {
    if resource_scopes.is_empty() || resource_scopes.iter().any(|s| s == method_scope) {
        return Some(method_scope);
    }
    SCOPE_STAND_INS.into_iter().find(|stand_in| resource_scopes.iter().any(|s| s == stand_in))
}

/// The method scope a HEAD request is decided on, given the scopes of GET and HEAD in the
/// method table. HEAD is GET without the content (RFC 9110 §9.3.2): it discloses nothing a GET
/// would not, and the EOEPCA PEP answered it through its GET route (Flask serves HEAD with a
/// GET view), so a client holding a GET RPT expects HEAD to work. Where the resource allows GET
/// (it lists GET's scope, or lists none) HEAD therefore needs GET's scope, and its ticket asks
/// for that scope: one RPT serves both. A resource that lists HEAD's scope but not GET's keeps
/// needing HEAD's; without GET in the table, HEAD needs its own.
pub fn head_method_scope<'s>(
    resource_scopes: &[String],
    get_scope: Option<&'s str>,
    head_scope: &'s str,
) -> &'s str {
    match get_scope {
        Some(get) if resource_scopes.is_empty() || resource_scopes.iter().any(|s| s == get) => get,
        _ => head_scope,
    }
}

/// The canonical form of a resource path: normalised as the filter normalises request paths
/// (query and fragment cut off), without a trailing slash (`/` stays `/`).
pub fn canonical_path(raw: &str) -> Result<String, PathError> {
    let normalized = normalize_path(raw)?;
    let trimmed = normalized.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

/// Why pepctl refuses a resource path.
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

/// The canonical path of a path to look up (`?path=`, `resources show /p`), where any spelling
/// finds it; a query or fragment is refused rather than cut off, since it cannot be meant.
pub fn canonical_uri(raw: &str) -> Result<String, UriError> {
    if raw.contains(['?', '#']) {
        // Checked first: the normaliser would cut them off silently.
        canonical_path(raw).map_err(|source| UriError::Invalid { raw: raw.to_string(), source })?;
        return Err(UriError::QueryOrFragment { raw: raw.to_string() });
    }
    canonical_path(raw).map_err(|source| UriError::Invalid { raw: raw.to_string(), source })
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

    fn scopes(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn method_scopes_are_added_unless_a_marker_is_there() {
        assert_eq!(complete_scopes(&[]).len(), 6);
        assert_eq!(complete_scopes(&[]), method_scopes());
        let s = complete_scopes(&scopes(&["read", " protected_get", "read", ""]));
        assert_eq!(s[0], "read");
        assert_eq!(s[1], "protected_get");
        assert_eq!(s.len(), 7);
        for marker in OPEN_MARKERS {
            assert_eq!(complete_scopes(&scopes(&[marker])), scopes(&[marker]));
        }
        assert!(has_open_marker(&scopes(&["Authenticated"])));
        assert!(!has_open_marker(&scopes(&["protected_get"])));
    }

    #[test]
    fn only_the_open_scope_makes_a_resource_open() {
        assert!(is_open(&scopes(&["open"])));
        assert!(is_open(&scopes(&["x", "open"])));
        for other in ["public_access", "Authenticated", "authenticated", "Open", "protected_get"] {
            assert!(!is_open(&scopes(&[other])), "{other}");
        }
        let r =
            Resource { id: "r".into(), uri: "/o".into(), scopes: scopes(&["open"]), ..Resource::default() };
        assert!(r.is_open());
        assert!(!Resource { scopes: vec![], ..r }.is_open());
    }

    #[test]
    fn stand_ins_replace_method_scopes_in_the_seeds_order() {
        assert_eq!(required_scope(&[], "protected_get"), Some("protected_get"));
        assert_eq!(required_scope(&scopes(&["protected_get"]), "protected_get"), Some("protected_get"));
        assert_eq!(
            required_scope(&scopes(&["public_access", "Authenticated"]), "protected_get"),
            Some("Authenticated")
        );
        assert_eq!(required_scope(&scopes(&["public_access"]), "protected_post"), Some("public_access"));
        assert_eq!(required_scope(&scopes(&["x"]), "protected_get"), None);
    }

    #[test]
    fn head_needs_the_get_scope_where_get_is_allowed() {
        let get = Some("protected_get");
        // Empty: any method scope, so GET's; the six scopes a registered resource gets: GET's too.
        assert_eq!(head_method_scope(&[], get, "protected_head"), "protected_get");
        assert_eq!(head_method_scope(&method_scopes(), get, "protected_head"), "protected_get");
        assert_eq!(head_method_scope(&scopes(&["protected_get"]), get, "protected_head"), "protected_get");
        // A resource that allows HEAD and not GET keeps HEAD's scope.
        assert_eq!(head_method_scope(&scopes(&["protected_head"]), get, "protected_head"), "protected_head");
        // Stand-ins: the method scope is not listed, so required_scope picks the stand-in either way.
        let stand_in = scopes(&["Authenticated"]);
        assert_eq!(head_method_scope(&stand_in, get, "protected_head"), "protected_head");
        assert_eq!(required_scope(&stand_in, "protected_head"), Some("Authenticated"));
        // No GET in the method table: HEAD's own scope.
        assert_eq!(head_method_scope(&[], None, "protected_head"), "protected_head");
        assert_eq!(head_method_scope(&scopes(&["read"]), Some("read"), "peek"), "read");
    }

    #[test]
    fn paths_are_canonical() {
        assert_eq!(canonical_path("/a//b/?q").unwrap(), "/a/b");
        assert_eq!(canonical_uri("/a//b/").unwrap(), "/a/b");
        assert_eq!(canonical_uri("/").unwrap(), "/");
        assert_eq!(canonical_uri("/%61").unwrap(), "/a");
        assert!(canonical_uri("a").is_err());
        assert!(canonical_uri("/a/../..").is_err());
        assert!(matches!(canonical_uri("/a?x=1"), Err(UriError::QueryOrFragment { .. })));
        assert!(matches!(canonical_uri("/a#f"), Err(UriError::QueryOrFragment { .. })));
        assert!(matches!(canonical_uri("/..?x"), Err(UriError::Invalid { .. })));
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
