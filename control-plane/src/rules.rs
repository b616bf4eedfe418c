//! A resource's rules as pepctl takes them (seed file and Resource API) and gives them to the
//! filter: its `uri` (a path or a pattern, `uma_pep_core::uri_pattern`), `exact`, `methods`,
//! `scopes_mode` and `enforcement`, checked with the filter's own rules; the scopes registered
//! at the AS; the shape that keeps two resources from matching the same paths at the same
//! precedence; and who may claim the paths a new resource would cover.

use std::collections::BTreeMap;

use uma_pep_core::config::{validate_resources, Resource};
use uma_pep_core::matcher::ResourceMatcher;
use uma_pep_core::resource::{canonical_uri, complete_scopes, registrable_uri};
use uma_pep_core::uri_pattern::{Segment, UriPattern};

use crate::repository::{RepoError, Repository, StoredResource};

/// `methods`: HTTP method → the scopes it needs.
pub type Methods = BTreeMap<String, Vec<String>>;

/// What is wrong with a resource's rules: the field at fault (`uri`, `methods.GET`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The field after the resource's own key: `uri` or `methods.<METHOD>`.
    pub field: String,
    pub problem: String,
}

/// `methods` as the filter reads them and pepctl stores and registers them: method names
/// upper-cased (`get` is `GET`), scopes without blanks around them (the scope registered at the
/// AS is the one the filter asks for). Two names that fold to one are refused: one of them
/// would be lost. (Found by the `api_bodies` fuzz target: `get` was stored as sent, and
/// `" read"` enforced while `"read"` was registered.)
pub fn normalize_methods(methods: Option<Methods>) -> Result<Option<Methods>, RuleError> {
    let Some(methods) = methods else { return Ok(None) };
    let mut out = Methods::new();
    for (method, scopes) in methods {
        let upper = method.to_ascii_uppercase();
        let scopes = scopes.iter().map(|s| s.trim().to_string()).collect();
        if out.insert(upper.clone(), scopes).is_some() {
            return Err(RuleError {
                field: "methods".into(),
                problem: format!("method {upper} is given twice (method names are upper-cased)"),
            });
        }
    }
    Ok(Some(out))
}

/// A resource's `uri` and `methods` checked as the filter checks them
/// (`uma_pep_core::config::validate_resources`, the same errors), and the `uri` written as the
/// filter matches it: one that the filter would read as another spelling is refused with the
/// spelling to use, as plain paths always were (one trailing `/` aside, which is trimmed).
/// The canonical spelling and the pattern.
pub fn check_rules(
    raw_uri: &str,
    exact: bool,
    methods: Option<&Methods>,
) -> Result<(String, UriPattern), RuleError> {
    let uri_error = |problem: String| RuleError { field: "uri".into(), problem };
    let written = if raw_uri.len() > 1 { raw_uri.strip_suffix('/').unwrap_or(raw_uri) } else { raw_uri };
    let (canonical, pattern) = match UriPattern::parse(written, exact) {
        Ok(parsed) => parsed,
        Err(e) => return Err(uri_error(format!("{raw_uri:?}: {e}"))),
    };
    if is_plain(&canonical) {
        // A path: today's rule, with its messages (a query, or a spelling that normalises to
        // another path, names the one to write).
        let path = registrable_uri(raw_uri).map_err(|e| uri_error(e.to_string()))?;
        if path != canonical {
            return Err(uri_error(format!("{raw_uri:?} is not a canonical path; write {canonical:?}")));
        }
    } else if written != canonical {
        return Err(uri_error(format!(
            "{raw_uri:?} is not a canonical pattern: the filter would match {canonical:?} (escapes are resolved \
             when matching); write {canonical:?}"
        )));
    }
    // The filter's own check of the entry (pattern and `methods`), so that what pepctl accepts
    // the filter accepts.
    let probe = Resource {
        id: "pepctl".into(),
        uri: canonical.clone(),
        exact,
        methods: methods.cloned(),
        ..Resource::default()
    };
    if let Err(e) = validate_resources(vec![probe]) {
        let field = e.key.strip_prefix("resources[0].").unwrap_or(&e.key).to_string();
        return Err(RuleError { field, problem: e.problem });
    }
    Ok((canonical, pattern))
}

/// A canonical spelling with no pattern segment (a `{` or `*` of a plain path is escaped or
/// refused, so either marks a pattern), and no whole-segment literal star (`%2A`, `%2A%2A`:
/// the spelling patterns keep for a literal that would read as a wildcard; a path would
/// unescape it into one).
pub fn is_plain(canonical: &str) -> bool {
    !canonical.contains(['{', '*']) && !canonical.split('/').any(|s| s == "%2A" || s == "%2A%2A")
}

/// The scopes registered at the AS: without `methods`, the seed's rule (the given scopes plus
/// the six method scopes unless an open marker is among them); with `methods`, the given scopes
/// plus every scope a method needs (a ticket asks for those, and the AS knows only the scopes
/// a resource was registered with). Trimmed, blanks and duplicates dropped, order kept.
pub fn registered_scopes(given: &[String], methods: Option<&Methods>) -> Vec<String> {
    let Some(methods) = methods else { return complete_scopes(given) };
    let mut out: Vec<String> = Vec::new();
    for s in given.iter().chain(methods.values().flatten()) {
        let s = s.trim();
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

/// The resource registered at a path or pattern, written in any spelling of it (`resources
/// show /p`, `GET /resources?path=`): the one stored with its canonical spelling (of two, the
/// `exact` one: the filter's pick at that very path), else the one of its shape (`/a/**` for
/// `/a`). The inner `Err` says why `raw` is no path or pattern.
pub fn find_at_path(
    repo: &Repository,
    raw: &str,
) -> Result<Result<Option<StoredResource>, String>, RepoError> {
    let written = if raw.len() > 1 { raw.strip_suffix('/').unwrap_or(raw) } else { raw };
    let (canonical, pattern) = match UriPattern::parse(written, false) {
        Ok(parsed) => parsed,
        Err(e) => return Ok(Err(format!("{raw:?}: {e}"))),
    };
    if is_plain(&canonical) {
        // A query or fragment cannot be meant: refused rather than cut off.
        if let Err(e) = canonical_uri(raw) {
            return Ok(Err(e.to_string()));
        }
    }
    if let Some(found) = repo.get_by_uri(&canonical)? {
        return Ok(Ok(Some(found)));
    }
    Ok(Ok(repo.get_by_shape(&pattern.shape_key())?))
}

/// The filter's table entry of a stored resource.
pub fn filter_resource(r: &StoredResource) -> Resource {
    Resource {
        id: r.id.clone(),
        uri: r.uri.clone(),
        scopes: r.scopes.clone(),
        name: Some(r.name.clone()),
        exact: r.exact,
        methods: r.methods.clone(),
        scopes_mode: r.scopes_mode,
        enforcement: r.enforcement,
    }
}

// ---- who may claim the paths of a new resource ----------------------------------------------

/// How a pattern ranks on a path of `len` segments it matches (lower wins, as the filter's
/// matcher ranks it): per segment a literal 0, a one-segment wildcard 1, the rest 2; then a
/// pattern that ends with the path before one whose rest is empty.
fn rank(p: &UriPattern, len: usize) -> (Vec<u8>, bool) {
    let key = (0..len)
        .map(|k| match p.segments.get(k) {
            Some(Segment::Literal(_)) => 0,
            Some(Segment::One) => 1,
            None => 2,
        })
        .collect();
    (key, p.rest)
}

fn fits(p: &UriPattern, len: usize) -> bool {
    if p.rest {
        len >= p.segments.len()
    } else {
        len == p.segments.len()
    }
}

/// Whether some path of `len` segments matches both patterns.
fn overlap_at(a: &UriPattern, b: &UriPattern, len: usize) -> bool {
    fits(a, len)
        && fits(b, len)
        && (0..len).all(|k| match (a.segments.get(k), b.segments.get(k)) {
            (Some(Segment::Literal(x)), Some(Segment::Literal(y))) => x == y,
            _ => true,
        })
}

/// Whether every path `inner` matches, `outer` matches too.
fn contains(outer: &UriPattern, inner: &UriPattern) -> bool {
    let lengths_fit = if outer.rest {
        outer.segments.len() <= inner.segments.len()
    } else {
        !inner.rest && outer.segments.len() == inner.segments.len()
    };
    lengths_fit
        && outer.segments.iter().zip(&inner.segments).all(|(o, i)| match (o, i) {
            (Segment::One, _) => true,
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Literal(_), Segment::One) => false,
        })
}

/// Whether, on some path `new` matches, `new` outranks `middle` and `middle` outranks `outer`:
/// there `middle` is what protects the path now (or something above it is), and `new` would
/// take the path from it.
fn takes_from(new: &UriPattern, middle: &UriPattern, outer: &UriPattern) -> bool {
    let longest = new.segments.len().max(middle.segments.len()).max(outer.segments.len()) + 1;
    (0..=longest).any(|len| {
        overlap_at(new, middle, len) && fits(outer, len) && {
            let (n, m, o) = (rank(new, len), rank(middle, len), rank(outer, len));
            n < m && m < o
        }
    })
}

/// A path the pattern matches whose wildcard segments equal no literal of any pattern (a
/// canonical literal never holds `{`), without the rest: the path the resource is "at".
fn probe_path(p: &UriPattern) -> String {
    if p.segments.is_empty() {
        return "/".into();
    }
    p.segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => format!("/{l}"),
            Segment::One => "/{}".to_string(),
        })
        .collect()
}

/// Why a caller may not create a resource at `uri` (not an operator: they may anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The resource protecting the new one's path is not the caller's, or none is (a `/`
    /// resource does not count): the seed's rule.
    NotYours,
    /// Some paths the new resource would cover are covered by no resource of the caller's.
    Reaches,
    /// The new resource would take paths from a resource of another owner (its uri).
    TakesFrom(String),
}

/// The seed's rule (a user creates only under a path they own) for paths and patterns: the owner
/// of a resource owns what it matches. Allowed when
/// 1. the resource that protects the new one's path now (the filter's matcher, `/` resources
///    left out) is the caller's, and
/// 2. one resource of the caller's matches every path the new one matches, and on no path the
///    new one would take does a resource of another owner rank between the two (it would lose
///    that path to the new one).
///
/// With paths alone this is the seed's walk: the nearest registered path among the new path
/// and its parents must be the caller's.
pub fn may_claim(caller: &str, pattern: &UriPattern, table: &[StoredResource]) -> Result<(), ClaimRefused> {
    // Every resource but those that cover every path (`/`): parsed once.
    let parsed: Vec<(&StoredResource, UriPattern)> = table
        .iter()
        .filter_map(|r| UriPattern::parse(&r.uri, r.exact).ok().map(|(_, p)| (r, p)))
        .filter(|(_, p)| !(p.rest && p.segments.is_empty()))
        .collect();
    let matcher = ResourceMatcher::new(
        parsed
            .iter()
            .enumerate()
            .map(|(i, (r, _))| Resource {
                id: i.to_string(),
                uri: r.uri.clone(),
                exact: r.exact,
                ..Resource::default()
            })
            .collect(),
    );
    let covering = matcher
        .find(&probe_path(pattern))
        .and_then(|found| found.id.parse::<usize>().ok())
        .and_then(|i| parsed.get(i));
    match covering {
        Some((r, _)) if r.owner == caller => {}
        _ => return Err(ClaimRefused::NotYours),
    }
    let mut refusal = ClaimRefused::Reaches;
    for (_, outer) in parsed.iter().filter(|(r, p)| r.owner == caller && contains(p, pattern)) {
        match parsed.iter().find(|(r, middle)| r.owner != caller && takes_from(pattern, middle, outer)) {
            None => return Ok(()),
            Some((r, _)) => refusal = ClaimRefused::TakesFrom(r.uri.clone()),
        }
    }
    Err(refusal)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_literal_star_segment_is_registered_as_written() {
        // Found by the api_bodies fuzz run: pepctl refused `/a/%2A` and asked for `/a/*`, a
        // wildcard, which means something else.
        for uri in ["/a/%2A", "/%2A", "/a/%2A%2A/b"] {
            let (canonical, pattern) =
                check_rules(uri, false, None).unwrap_or_else(|e| panic!("{uri}: {e:?}"));
            assert_eq!(canonical, uri);
            assert!(pattern.segments.iter().all(|s| matches!(s, Segment::Literal(_))), "{uri}");
        }
        assert!(is_plain("/a/b"));
        assert!(!is_plain("/a/%2A") && !is_plain("/a/{id}") && !is_plain("/a/*"));
    }
    use super::*;
    use crate::repository::stored_shape;

    fn pat(uri: &str, exact: bool) -> UriPattern {
        UriPattern::parse(uri, exact).unwrap().1
    }

    fn stored(uri: &str, exact: bool, owner: &str) -> StoredResource {
        StoredResource {
            id: format!("{owner}{uri}"),
            name: uri.into(),
            uri: uri.into(),
            exact,
            owner: owner.into(),
            ..StoredResource::default()
        }
    }

    #[test]
    fn uris_are_checked_as_the_filter_checks_them_and_taken_as_written() {
        assert_eq!(check_rules("/orders/{id}", false, None).unwrap().0, "/orders/{id}");
        assert_eq!(
            check_rules("/users/{u}/**/", false, None).unwrap().0,
            "/users/{u}/**",
            "one trailing / trimmed"
        );
        assert_eq!(check_rules("/eric/", false, None).unwrap().0, "/eric");
        let (_, p) = check_rules("/a", true, None).unwrap();
        assert!(!p.rest);
        for (raw, exact, says) in [
            ("/a/{id}x", false, "whole segment"),
            ("/a/**/b", false, "last"),
            ("/a/**", true, "contradict"),
            ("/a/{}", false, "whole segment"),
        ] {
            let e = check_rules(raw, exact, None).unwrap_err();
            assert_eq!(e.field, "uri", "{raw}");
            assert!(e.problem.contains(says), "{raw}: {}", e.problem);
        }
        // Spellings that the filter reads as another are refused with the one to write.
        let e = check_rules("/caf%c3%a9/{id}", false, None).unwrap_err();
        assert!(e.problem.contains(r#"write "/caf%C3%A9/{id}""#), "{}", e.problem);
        let e = check_rules("/a/../b", false, None).unwrap_err();
        assert!(e.problem.contains(r#"write "/b""#), "{}", e.problem);
        assert!(check_rules("/a?x=1", false, None).is_err());
        assert!(check_rules("a/{id}", false, None).is_err());
    }

    #[test]
    fn methods_are_checked_with_the_filters_rules() {
        let methods = |m: &[(&str, &[&str])]| -> Methods {
            m.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
        };
        let ok = methods(&[("GET", &["read"]), ("PROPFIND", &["dav"]), ("VERSION-CONTROL", &["admin"])]);
        assert!(check_rules("/a", false, Some(&ok)).is_ok());
        let e = check_rules("/a", false, Some(&methods(&[("G T", &["x"])]))).unwrap_err();
        assert_eq!(e.field, "methods.G T");
        assert!(e.problem.contains("RFC 9110"), "{}", e.problem);
        let e = check_rules("/a", false, Some(&methods(&[("GET", &[])]))).unwrap_err();
        assert_eq!(e.field, "methods.GET");
        assert!(e.problem.contains("at least one scope"), "{}", e.problem);
        assert_eq!(
            check_rules("/a", false, Some(&methods(&[("PUT", &[" "])]))).unwrap_err().field,
            "methods.PUT"
        );
    }

    #[test]
    fn shapes_are_keyed_as_the_filter_keys_them() {
        let key = |uri: &str, exact: bool| stored_shape(uri, exact).unwrap();
        assert_eq!(key("/a", false), key("/a/**", false));
        assert_ne!(key("/a", false), key("/a", true));
        assert_eq!(key("/a/{id}", false), key("/a/*", true));
        assert_ne!(key("/a/{id}", false), key("/a/{id}/**", false));
        assert_eq!(key("/", false), "/**");
        // A `*` inside a segment is a literal character, as in a path.
        assert_eq!(stored_shape("/a*", false).as_deref(), Some("/a*/**"));
        assert_eq!(stored_shape("/a/{x", false), None, "a brace that makes no pattern");
    }

    #[test]
    fn the_registered_scopes_are_the_methods_needs_plus_the_given_ones() {
        let s = |l: &[&str]| l.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(registered_scopes(&s(&["read"]), None).len(), 7, "no methods: the seed's six added");
        let mut m = Methods::new();
        m.insert("GET".into(), s(&["read"]));
        m.insert("PUT".into(), s(&["write", "read"]));
        m.insert("DELETE".into(), s(&["admin"]));
        assert_eq!(
            registered_scopes(&s(&["extra", " read"]), Some(&m)),
            s(&["extra", "read", "admin", "write"])
        );
        assert_eq!(registered_scopes(&[], Some(&m)), s(&["admin", "read", "write"]));
    }

    #[test]
    fn a_pattern_owns_what_it_matches() {
        let table = vec![
            stored("/users/{id}/**", false, "usersvc"),
            stored("/home/alice", false, "alice"),
            stored("/home", false, "root"),
            stored("/", false, "root"),
        ];
        let claim = |who: &str, uri: &str, exact: bool| may_claim(who, &pat(uri, exact), &table);
        // Under another owner's pattern: refused, as under another owner's path.
        assert_eq!(claim("bob", "/users/bob/photos", false), Err(ClaimRefused::NotYours));
        assert_eq!(claim("bob", "/users/{u}/photos", true), Err(ClaimRefused::NotYours));
        assert_eq!(claim("usersvc", "/users/bob/photos", false), Ok(()));
        assert_eq!(claim("usersvc", "/users/{u}/photos/{p}", false), Ok(()));
        // The seed's walk for paths: the nearest registered path decides; `/` does not count.
        assert_eq!(claim("alice", "/home/alice/docs/x", false), Ok(()));
        assert_eq!(claim("alice", "/home/bob", false), Err(ClaimRefused::NotYours));
        assert_eq!(claim("alice", "/elsewhere", false), Err(ClaimRefused::NotYours));
        // A pattern of alice's under her home takes nothing from anyone.
        assert_eq!(claim("alice", "/home/alice/{doc}/**", false), Ok(()));
        // A pattern that reaches into paths alice does not own: the probe path is root's.
        assert_eq!(claim("alice", "/home/{u}/x", false), Err(ClaimRefused::NotYours));
    }

    #[test]
    fn no_path_is_taken_from_another_owner() {
        // alice owns her home exactly and bob's pattern covers what is below every home.
        let table = vec![
            stored("/home/alice", true, "alice"),
            stored("/home/{u}/**", false, "bob"),
            stored("/home", false, "alice"),
        ];
        // alice's /home/alice covering below would take /home/alice/x from bob's pattern,
        // though her exact resource protects /home/alice itself.
        assert_eq!(
            may_claim("alice", &pat("/home/alice", false), &table),
            Err(ClaimRefused::TakesFrom("/home/{u}/**".into()))
        );
        // Below her exact home, bob's pattern protects: not hers.
        assert_eq!(may_claim("alice", &pat("/home/alice/{x}", true), &table), Err(ClaimRefused::NotYours));
        // A resource of another owner under alice's keeps its paths: where it protects, alice
        // may not claim; beside it, she may.
        let table = vec![stored("/p", false, "alice"), stored("/p/{x}/deep", true, "bob")];
        assert_eq!(may_claim("alice", &pat("/p/q/deep", true), &table), Err(ClaimRefused::NotYours));
        assert_eq!(may_claim("alice", &pat("/p/q", true), &table), Ok(()));
        assert_eq!(may_claim("alice", &pat("/p/{y}/other", false), &table), Ok(()));
        // Covered at its own path by an exact resource of the caller's, and below by no one of
        // the caller's: reaches what is not the caller's.
        let table = vec![stored("/q", true, "alice"), stored("/", false, "root")];
        assert_eq!(may_claim("alice", &pat("/q", false), &table), Err(ClaimRefused::Reaches));
    }

    /// On generated tables: whenever a claim is allowed, every path the new resource would
    /// protect (the filter's matcher with it added) was protected by a resource of the
    /// caller's (the matcher before, `/` resources left out). And claims are not all refused.
    #[test]
    fn an_allowed_claim_takes_no_path_from_anyone_on_generated_tables() {
        let parts = ["a", "b", "{x}", "*", "**"];
        let path_parts = ["a", "b", "c"];
        let mut seed: u64 = 0x5851_f42d_4c95_7f2d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let gen_uri = |next: &mut dyn FnMut() -> u64| -> (String, bool) {
            let len = next() % 4;
            let uri: String =
                (0..len).map(|_| format!("/{}", parts[(next() % parts.len() as u64) as usize])).collect();
            (if uri.is_empty() { "/".to_string() } else { uri }, next().is_multiple_of(3))
        };
        let mut paths = vec!["/".to_string()];
        for len in 1..=5u32 {
            for n in 0..3usize.pow(len) {
                let mut p = String::new();
                let mut k = n;
                for _ in 0..len {
                    p.push('/');
                    p.push_str(path_parts[k % 3]);
                    k /= 3;
                }
                paths.push(p);
            }
        }
        let (mut allowed, mut tried) = (0, 0);
        for round in 0..4_000 {
            let mut table: Vec<StoredResource> = Vec::new();
            let mut shapes = std::collections::HashSet::new();
            for i in 0..(1 + next() % 6) {
                let (uri, exact) = gen_uri(&mut next);
                let Some(shape) = stored_shape(&uri, exact) else { continue };
                if shapes.insert(shape) {
                    let owner = if next().is_multiple_of(2) { "me" } else { "other" };
                    table.push(StoredResource { id: format!("r{i}"), ..stored(&uri, exact, owner) });
                }
            }
            let (uri, exact) = gen_uri(&mut next);
            let Ok((_, new)) = UriPattern::parse(&uri, exact) else { continue };
            if shapes.contains(&new.shape_key()) {
                continue;
            }
            let as_filter = |list: &[StoredResource]| {
                ResourceMatcher::new(
                    list.iter()
                        .map(|r| Resource {
                            id: r.id.clone(),
                            uri: r.uri.clone(),
                            exact: r.exact,
                            ..Resource::default()
                        })
                        .collect(),
                )
            };
            let before = as_filter(
                &table
                    .iter()
                    .filter(|r| stored_shape(&r.uri, r.exact).as_deref() != Some("/**"))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let mut with_new = table.clone();
            with_new.push(StoredResource { id: "new".into(), ..stored(&uri, exact, "me") });
            let after = as_filter(&with_new);
            // Whether the new resource would take only paths the caller protects now.
            let harmless =
                paths.iter().filter(|p| after.find(p).map(|r| r.id.as_str()) == Some("new")).all(|p| {
                    before.find(p).and_then(|r| table.iter().find(|t| t.id == r.id)).map(|t| t.owner.as_str())
                        == Some("me")
                });
            let claim = may_claim("me", &new, &table);
            assert!(
                claim.is_err() || harmless,
                "round {round}: {uri:?} exact={exact} allowed, taking paths, in {table:?}"
            );
            if harmless {
                tried += 1;
                allowed += usize::from(claim.is_ok());
            }
        }
        // The check may refuse a harmless claim (it reasons on patterns, not on every path), but
        // seldom.
        assert!(allowed * 10 >= tried * 9, "{allowed} of {tried} harmless claims allowed");
    }

    #[test]
    fn the_rank_order_agrees_with_the_filters_matcher() {
        // takes_from's ranking, checked against the matcher on the paths that decide it.
        let table =
            [("/a/{x}", false), ("/a/b", false), ("/a/*/c", true), ("/a", true), ("/{y}/b/**", false)];
        let m = ResourceMatcher::new(
            table
                .iter()
                .enumerate()
                .map(|(i, (u, e))| Resource {
                    id: i.to_string(),
                    uri: u.to_string(),
                    exact: *e,
                    ..Resource::default()
                })
                .collect(),
        );
        for path in ["/a", "/a/b", "/a/q", "/a/b/c", "/a/q/c", "/z/b", "/z/b/y", "/a/b/y"] {
            let len = path.split('/').skip(1).count();
            let best = table
                .iter()
                .enumerate()
                .map(|(i, (u, e))| (i, pat(u, *e)))
                .filter(|(_, p)| {
                    fits(p, len)
                        && p.segments.iter().zip(path.split('/').skip(1)).all(|(s, seg)| match s {
                            Segment::Literal(l) => l == seg,
                            Segment::One => true,
                        })
                })
                .min_by(|(_, a), (_, b)| rank(a, len).cmp(&rank(b, len)))
                .map(|(i, _)| i.to_string());
            assert_eq!(m.find(path).map(|r| r.id.clone()), best, "{path}");
        }
    }
}
