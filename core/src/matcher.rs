//! `ResourceMatcher`: which protected resource a normalised path belongs to.
//!
//! A resource's `uri` is a path (it covers that path and everything below it, the seed's
//! `get_id_from_uri` rule made safe: whole segments, case-sensitive; `exact` covers the path
//! only) or a pattern (`uri_pattern`: `{name}` and `*` for one segment, a last `**` for any
//! number). Where several match, the one of highest precedence wins: segment by segment from the
//! left, a literal before `{}`/`*` before `**`, and at equal rank the longer pattern.
//!
//! The table is a segment trie: a node per distinct pattern prefix, with a map from the next
//! literal segment to its child, one child for a one-segment wildcard, and the resources that
//! end there (exactly, or with the rest). Lookup walks the path's segments left to right, trying
//! at each node the literal child, then the wildcard child, then a resource taking the rest:
//! the first resource found this way is the one of highest precedence. Each node sits at one
//! depth, so a lookup visits a node at most once and hashes each segment of the path at most
//! once per node of that depth it can reach: with literal uris, once; the cost does not grow
//! with the number of resources (a path of 29,000 segments under no resource costs one lookup).
//! Nodes live in one arena, and the walk keeps its own stack: neither a deep uri nor a deep path
//! recurses.

use std::collections::HashMap;

use crate::resource::Resource;
use crate::uri_pattern::{Segment, UriPattern};

/// One pattern prefix: the resource whose pattern ends exactly here, the one whose pattern ends
/// here with `**` (or is a plain uri), and the segments that continue it (arena indices).
#[derive(Debug, Clone, Default)]
struct Node {
    exact: Option<usize>,
    rest: Option<usize>,
    literal: HashMap<Box<str>, usize>,
    one: Option<usize>,
}

/// The work one lookup did, for the tests that pin its cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Work {
    /// Segment lookups made in the trie.
    lookups: usize,
    /// Bytes hashed by those lookups.
    bytes_hashed: usize,
}

#[derive(Debug, Clone)]
pub struct ResourceMatcher {
    resources: Vec<Resource>,
    /// The trie; `nodes[0]` is the root.
    nodes: Vec<Node>,
}

impl Default for ResourceMatcher {
    fn default() -> Self {
        Self { resources: Vec::new(), nodes: vec![Node::default()] }
    }
}

/// The segments of an absolute path after its leading `/` (none for `/` itself).
fn segments(uri: &str) -> Option<impl Iterator<Item = &str>> {
    let rest = uri.strip_prefix('/')?;
    Some(rest.split('/').filter(move |_| !rest.is_empty()))
}

/// Where the walk goes next from a node, in order of precedence.
#[derive(Debug, Clone, Copy)]
enum Next {
    Literal,
    One,
    Rest,
}

impl ResourceMatcher {
    /// Builds the matcher from validated resources (`config::validate_resources` refuses two
    /// patterns of the same shape; here the first of them wins). A `uri` that is no pattern can
    /// match no path and is left out.
    pub fn new(resources: Vec<Resource>) -> Self {
        let mut nodes = vec![Node::default()];
        for (i, r) in resources.iter().enumerate() {
            let Ok((_, pattern)) = UriPattern::parse(&r.uri, r.exact) else { continue };
            let mut at = 0;
            for seg in &pattern.segments {
                let next = nodes.len();
                let Some(node) = nodes.get_mut(at) else { break };
                at = match seg {
                    Segment::Literal(l) => *node.literal.entry(l.as_str().into()).or_insert(next),
                    Segment::One => *node.one.get_or_insert(next),
                };
                if at == next {
                    nodes.push(Node::default());
                }
            }
            if let Some(node) = nodes.get_mut(at) {
                let slot = if pattern.rest { &mut node.rest } else { &mut node.exact };
                slot.get_or_insert(i);
            }
        }
        Self { resources, nodes }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The resource protecting `path` (normalised), if any.
    pub fn find(&self, path: &str) -> Option<&Resource> {
        self.walk(path).0.and_then(|i| self.resources.get(i))
    }

    /// The index of the resource protecting `path` and the work it took (trailing slashes
    /// ignored): a depth-first walk, literal before wildcard before rest, that stops at the
    /// first resource found.
    fn walk(&self, path: &str) -> (Option<usize>, Work) {
        let mut work = Work::default();
        let trimmed = path.trim_end_matches('/');
        // Segments are cut only as deep as the trie goes: a 60 kB path under `/a/**` costs
        // the walk one segment, not thousands.
        let mut unread = match segments(trimmed) {
            Some(segs) => Some(segs),
            // `/` (or `///`): no segment.
            None if trimmed.is_empty() && path.starts_with('/') => None,
            // Not absolute (a normalised path always is): only `/` covers it, as before.
            None => return (self.nodes.first().and_then(|n| n.rest), work),
        };
        let mut segs: Vec<&str> = Vec::new();
        // (node, depth, what to try next there)
        let mut stack: Vec<(usize, usize, Next)> = vec![(0, 0, Next::Literal)];
        while let Some((at, depth, next)) = stack.pop() {
            let Some(node) = self.nodes.get(at) else { continue };
            while segs.len() <= depth {
                match unread.as_mut().and_then(Iterator::next) {
                    Some(seg) => segs.push(seg),
                    None => break,
                }
            }
            let Some(seg) = segs.get(depth) else {
                // The whole path is consumed here: a pattern ending here, or a rest of none.
                if let Some(found) = node.exact.or(node.rest) {
                    return (Some(found), work);
                }
                continue;
            };
            match next {
                Next::Literal => {
                    stack.push((at, depth, Next::One));
                    work.lookups += 1;
                    work.bytes_hashed += seg.len();
                    if let Some(&child) = node.literal.get(*seg) {
                        stack.push((child, depth + 1, Next::Literal));
                    }
                }
                Next::One => {
                    stack.push((at, depth, Next::Rest));
                    if let Some(child) = node.one {
                        stack.push((child, depth + 1, Next::Literal));
                    }
                }
                Next::Rest => {
                    if let Some(found) = node.rest {
                        return (Some(found), work);
                    }
                }
            }
        }
        (None, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri_pattern::{Segment, UriPattern};

    fn res(id: &str, uri: &str) -> Resource {
        Resource { id: id.into(), uri: uri.into(), ..Resource::default() }
    }

    fn id_of<'a>(m: &'a ResourceMatcher, p: &str) -> Option<&'a str> {
        m.find(p).map(|r| r.id.as_str())
    }

    #[test]
    fn seed_examples_longest_whole_segment_prefix() {
        let m = ResourceMatcher::new(vec![res("root", "/"), res("a", "/a"), res("ab", "/a/b")]);
        assert_eq!(id_of(&m, "/a/b/c"), Some("ab"));
        assert_eq!(id_of(&m, "/a/bc"), Some("a"));
        assert_eq!(id_of(&m, "/x"), Some("root"));
        assert_eq!(id_of(&m, "/a/"), Some("a"));
        assert_eq!(id_of(&m, "/a"), Some("a"));
        assert_eq!(id_of(&m, "/"), Some("root"));
    }

    #[test]
    fn no_root_means_unmatched_paths_exist() {
        let m = ResourceMatcher::new(vec![res("a", "/a")]);
        assert_eq!(id_of(&m, "/ab"), None);
        assert_eq!(id_of(&m, "/"), None);
        assert_eq!(id_of(&m, "/b/a"), None);
        assert_eq!(id_of(&m, "/a/x/y/z"), Some("a"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        let m = ResourceMatcher::new(vec![res("a", "/Alice")]);
        assert_eq!(id_of(&m, "/alice"), None);
        assert_eq!(id_of(&m, "/Alice/x"), Some("a"));
    }

    #[test]
    fn first_of_duplicate_uris_wins() {
        let m = ResourceMatcher::new(vec![res("one", "/a"), res("two", "/a")]);
        assert_eq!(id_of(&m, "/a"), Some("one"));
    }

    #[test]
    fn empty_matcher_matches_nothing() {
        let m = ResourceMatcher::default();
        assert!(m.is_empty());
        assert_eq!(id_of(&m, "/anything"), None);
    }

    #[test]
    fn slash_resource_covers_every_path_and_deeper_ones_win() {
        let m = ResourceMatcher::new(vec![res("root", "/"), res("alice", "/users/alice@example.com")]);
        assert_eq!(id_of(&m, "/users/alice@example.com/doc"), Some("alice"));
        assert_eq!(id_of(&m, "/users/alice@example.com"), Some("alice"));
        assert_eq!(id_of(&m, "/users/alice@example.co"), Some("root"));
        assert_eq!(id_of(&m, "/users"), Some("root"));
        assert_eq!(id_of(&m, ""), Some("root"));
        assert_eq!(id_of(&m, "///"), Some("root"));
        assert_eq!(id_of(&m, "relative/x"), Some("root"));
    }

    #[test]
    fn a_deeper_uri_without_resource_on_the_way_falls_back_to_the_last_one_seen() {
        let m = ResourceMatcher::new(vec![res("a", "/a"), res("abcd", "/a/b/c/d")]);
        assert_eq!(id_of(&m, "/a/b/c"), Some("a"));
        assert_eq!(id_of(&m, "/a/b/c/d/e"), Some("abcd"));
        assert_eq!(id_of(&m, "/a/b/c/dd"), Some("a"));
        assert_eq!(id_of(&m, "/a/b/x/d"), Some("a"));
    }

    /// Today's rule, written the old way (every segment prefix of the path, longest first,
    /// looked up by exact uri): the trie must give the same answer for every table and path.
    fn reference<'a>(resources: &'a [Resource], path: &str) -> Option<&'a str> {
        let lookup = |uri: &str| resources.iter().find(|r| r.uri == uri).map(|r| r.id.as_str());
        let mut candidate = path.trim_end_matches('/');
        loop {
            if candidate.is_empty() {
                return lookup("/");
            }
            if let Some(r) = lookup(candidate) {
                return Some(r);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return lookup("/"),
            }
        }
    }

    /// A deterministic stream of numbers for generated tables and paths.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn trie_agrees_with_the_prefix_rule_on_generated_tables_and_paths() {
        let parts = ["a", "b", "A", "ab", "", "@", "a.b"];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let gen_path = |next: &mut dyn FnMut() -> u64, max: u64| {
            let mut p = String::new();
            for _ in 0..next() % max {
                p.push('/');
                p.push_str(parts[(next() % parts.len() as u64) as usize]);
            }
            if p.is_empty() || next().is_multiple_of(5) {
                p.push('/');
            }
            p
        };
        for _ in 0..3_000 {
            let n = next() % 6;
            let table: Vec<Resource> = (0..n)
                .map(|i| {
                    let uri = gen_path(&mut next, 4);
                    // Normalised uris have no trailing slash (but `/`); a few raw ones too.
                    let uri = if uri.len() > 1 && !next().is_multiple_of(4) {
                        uri.trim_end_matches('/').to_string()
                    } else {
                        uri
                    };
                    // Tables are validated: their uris are canonical.
                    let uri = crate::resource::canonical_path(if uri.is_empty() { "/" } else { &uri })
                        .unwrap_or_else(|e| unreachable!("{uri:?}: {e}"));
                    res(&format!("r{i}"), &uri)
                })
                .collect();
            let m = ResourceMatcher::new(table.clone());
            for _ in 0..20 {
                let path = gen_path(&mut next, 6);
                assert_eq!(id_of(&m, &path), reference(&table, &path), "{table:?} {path:?}");
            }
        }
    }

    fn pattern(id: &str, uri: &str, exact: bool) -> Resource {
        Resource { id: id.into(), uri: uri.into(), exact, ..Resource::default() }
    }

    #[test]
    fn patterns_and_their_precedence() {
        let m = ResourceMatcher::new(vec![
            pattern("orders", "/orders", false),
            pattern("order", "/orders/{id}", false),
            pattern("items", "/orders/{id}/items", false),
            pattern("new", "/orders/new", true),
            pattern("any-item", "/orders/*/items/*", false),
            pattern("files", "/files/**", false),
            pattern("readme", "/files/README", true),
            pattern("user-docs", "/users/{u}/docs/**", false),
            pattern("home", "/", true),
        ]);
        let cases = [
            ("/orders", "orders"),
            ("/orders/7", "order"),
            ("/orders/new", "new"),
            ("/orders/new/x", "orders"), // `new` is exact; `{id}` is one segment; the plain uri takes the rest
            ("/orders/7/items", "items"),
            ("/orders/7/items/3", "any-item"),
            ("/orders/7/items/3/4", "orders"), // a pattern matches as written: no rest unless `**`
            ("/orders/7/other", "orders"),
            ("/files", "files"),
            ("/files/a/b/c", "files"),
            ("/files/README", "readme"),
            ("/files/README/x", "files"),
            ("/users/alice/docs", "user-docs"),
            ("/users/alice/docs/a/b", "user-docs"),
            ("/users/alice", ""),
            ("/", "home"),
        ];
        for (path, want) in cases {
            assert_eq!(id_of(&m, path).unwrap_or(""), want, "{path}");
        }
    }

    /// The precedence rule written out for one path: among the patterns that match, the least
    /// ranks segment by segment (literal 0, one-segment wildcard 1, the rest 2), a pattern that
    /// ends with the path before one whose rest is empty, then the first listed.
    fn brute_force<'a>(resources: &'a [Resource], path: &str) -> Option<&'a str> {
        let segs: Vec<&str> =
            path.trim_end_matches('/').split('/').skip(1).filter(|s| !s.is_empty()).collect();
        let mut best: Option<(Vec<u8>, bool, usize)> = None;
        for (i, r) in resources.iter().enumerate() {
            let Ok((_, p)) = UriPattern::parse(&r.uri, r.exact) else { continue };
            let fits = segs.len() == p.segments.len() || (p.rest && segs.len() >= p.segments.len());
            let matches = fits
                && p.segments.iter().zip(&segs).all(|(s, seg)| match s {
                    Segment::Literal(l) => l == seg,
                    Segment::One => true,
                });
            if !matches {
                continue;
            }
            let key: Vec<u8> = (0..segs.len())
                .map(|k| match p.segments.get(k) {
                    Some(Segment::Literal(_)) => 0,
                    Some(Segment::One) => 1,
                    None => 2,
                })
                .collect();
            let cand = (key, p.rest, i);
            if best.as_ref().is_none_or(|b| cand < *b) {
                best = Some(cand);
            }
        }
        best.and_then(|(_, _, i)| resources.get(i)).map(|r| r.id.as_str())
    }

    #[test]
    fn the_walk_agrees_with_the_precedence_rule_on_generated_patterns() {
        let parts = ["a", "b", "{x}", "*", "**"];
        let path_parts = ["a", "b", "c"];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..3_000 {
            let n = 1 + next() % 6;
            let table: Vec<Resource> = (0..n)
                .filter_map(|i| {
                    let len = next() % 4;
                    let uri: String = (0..len)
                        .map(|_| format!("/{}", parts[(next() % parts.len() as u64) as usize]))
                        .collect();
                    let uri = if uri.is_empty() { "/".to_string() } else { uri };
                    let exact = next().is_multiple_of(3);
                    UriPattern::parse(&uri, exact).ok().map(|_| pattern(&format!("r{i}"), &uri, exact))
                })
                .collect();
            let m = ResourceMatcher::new(table.clone());
            for _ in 0..20 {
                let len = next() % 5;
                let path: String = (0..len)
                    .map(|_| format!("/{}", path_parts[(next() % path_parts.len() as u64) as usize]))
                    .collect();
                let path = if path.is_empty() { "/".to_string() } else { path };
                assert_eq!(id_of(&m, &path), brute_force(&table, &path), "{table:?} {path:?}");
            }
        }
    }

    fn many_resources(n: usize) -> Vec<Resource> {
        let mut v: Vec<Resource> = (0..n).map(|i| res(&format!("r{i}"), &format!("/r{i}/x{i}"))).collect();
        v.push(res("zzz", "/zzz"));
        // A deep uri the attack path runs along for a while.
        v.push(res("deep", &"/a".repeat(1_000)));
        v.push(res("root", "/"));
        v
    }

    /// A path attack: `GET /zzz` followed by `/a` × 29,000 made the matcher hash every
    /// shorter prefix (~840 MB hashed). The walk hashes each byte of the path at most once,
    /// whatever the number of resources.
    #[test]
    fn matching_work_is_linear_in_the_path_and_independent_of_the_table() {
        let attack = format!("/zzz{}", "/a".repeat(29_000));
        let along_deep = "/a".repeat(29_000);
        assert!(attack.len() > 58_000);
        let small = ResourceMatcher::new(many_resources(1));
        let large = ResourceMatcher::new(many_resources(10_000));
        for path in [attack.as_str(), along_deep.as_str()] {
            let (found_small, work_small) = small.walk(path);
            let (found_large, work_large) = large.walk(path);
            assert_eq!(work_small, work_large, "work depends on the table's size");
            assert_eq!(
                found_small.map(|i| &small.resources[i].id),
                found_large.map(|i| &large.resources[i].id)
            );
            assert!(work_large.bytes_hashed <= path.len(), "{path:.20}…: {work_large:?}");
            assert!(work_large.lookups <= path.matches('/').count(), "{work_large:?}");
        }
        assert_eq!(id_of(&large, &attack), Some("zzz"));
        assert_eq!(large.walk(&attack).1.lookups, 2, "the walk stops where no uri continues");
        assert_eq!(id_of(&large, &along_deep), Some("deep"));
        assert_eq!(large.walk(&along_deep).1.lookups, 1_001);
        // The cost of a path is bounded by its own length: 58 B and 58 kB paths scale alike.
        let short = format!("/zzz{}", "/a".repeat(27));
        let (_, w_short) = large.walk(&short);
        let (_, w_long) = large.walk(&attack);
        assert!(w_long.bytes_hashed <= w_short.bytes_hashed * (attack.len() / short.len() + 1));
    }

    /// A rough benchmark: `cargo test -p uma-pep-core --release matcher::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_attack_path_against_10k_resources() {
        let m = ResourceMatcher::new(many_resources(10_000));
        for path in
            [format!("/zzz{}", "/a".repeat(29_000)), "/a".repeat(29_000), format!("/zzz{}", "/a".repeat(27))]
        {
            let start = std::time::Instant::now();
            let rounds = 200;
            for _ in 0..rounds {
                std::hint::black_box(m.find(std::hint::black_box(&path)));
            }
            println!("{} B path: {:?} per match", path.len(), start.elapsed() / rounds);
        }
    }
}
