//! `ResourceMatcher`: which protected resource a normalised path belongs to.
//!
//! The rule is the seed's (EOEPCA `get_id_from_uri`) made safe: the resource whose `uri` is the
//! longest whole-segment prefix of the path wins (`/a` covers `/a` and `/a/b`, not `/ab`),
//! case-sensitive; a `/` resource covers every path.
//!
//! The table is a segment trie: one node per distinct uri prefix, each holding a map from the
//! next segment to its child. Lookup walks the path's segments once, left to right, and stops at
//! the first segment no uri continues with, so each byte of the path is hashed at most once: the
//! cost is linear in the path's length and independent of the number of resources (a path of
//! 29,000 segments under no resource costs one lookup). Nodes live in one arena, so neither a
//! deep uri nor a deep path recurses.

use std::collections::HashMap;

use crate::resource::Resource;

/// One uri prefix: the resource registered exactly there, if any, and the segments that
/// continue it (indices into the arena).
#[derive(Debug, Clone, Default)]
struct Node {
    resource: Option<usize>,
    children: HashMap<Box<str>, usize>,
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
    /// The trie; `nodes[0]` is the root (the uri `/`).
    nodes: Vec<Node>,
}

impl Default for ResourceMatcher {
    fn default() -> Self {
        Self { resources: Vec::new(), nodes: vec![Node::default()] }
    }
}

/// The segments of an absolute uri or path after its leading `/` (none for `/` itself).
fn segments(uri: &str) -> Option<impl Iterator<Item = &str>> {
    let rest = uri.strip_prefix('/')?;
    Some(rest.split('/').filter(move |_| !rest.is_empty()))
}

impl ResourceMatcher {
    /// Builds the matcher; `uri`s must already be normalised without a trailing slash (the
    /// config validation does that). A later duplicate `uri` is ignored; a `uri` that does not
    /// start with `/` can match no path and is ignored.
    pub fn new(resources: Vec<Resource>) -> Self {
        let mut nodes = vec![Node::default()];
        for (i, r) in resources.iter().enumerate() {
            let Some(segs) = segments(&r.uri) else { continue };
            let mut at = 0;
            for seg in segs {
                let next = nodes.len();
                let Some(node) = nodes.get_mut(at) else { break };
                at = *node.children.entry(seg.into()).or_insert(next);
                if at == next {
                    nodes.push(Node::default());
                }
            }
            if let Some(node) = nodes.get_mut(at) {
                node.resource.get_or_insert(i);
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

    /// The index of the resource protecting `path` and the work it took: the deepest node with
    /// a resource on the path's segment walk (trailing slashes ignored).
    fn walk(&self, path: &str) -> (Option<usize>, Work) {
        let mut work = Work::default();
        let root = self.nodes.first();
        let mut best = root.and_then(|n| n.resource);
        let Some(segs) = segments(path.trim_end_matches('/')) else {
            // Not absolute (a normalised path always is): only `/` covers it, as before.
            return (best, work);
        };
        let mut node = root;
        for seg in segs {
            let Some(current) = node else { break };
            work.lookups += 1;
            work.bytes_hashed += seg.len();
            node = current.children.get(seg).and_then(|&i| self.nodes.get(i));
            if let Some(r) = node.and_then(|n| n.resource) {
                best = Some(r);
            }
        }
        (best, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(id: &str, uri: &str) -> Resource {
        Resource { id: id.into(), uri: uri.into(), scopes: vec![], name: None }
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

    #[test]
    fn trie_agrees_with_the_prefix_rule_on_generated_tables_and_paths() {
        let parts = ["a", "b", "A", "ab", "", "@", "a.b"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
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
                    res(&format!("r{i}"), if uri.is_empty() { "/" } else { &uri })
                })
                .collect();
            let m = ResourceMatcher::new(table.clone());
            for _ in 0..20 {
                let path = gen_path(&mut next, 6);
                assert_eq!(id_of(&m, &path), reference(&table, &path), "{table:?} {path:?}");
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
