//! `ResourceMatcher`: which protected resource a normalised path belongs to.
//!
//! The rule is the seed's (EOEPCA `get_id_from_uri`) made safe: the resource whose `uri` is the
//! longest whole-segment prefix of the path wins (`/a` covers `/a` and `/a/b`, not `/ab`).
//! Lookup walks the path's own segment prefixes, longest first, through a hash map, so its cost
//! depends on the path's depth, not on the size of the table.

use std::collections::HashMap;

use crate::config::Resource;

#[derive(Debug, Clone, Default)]
pub struct ResourceMatcher {
    resources: Vec<Resource>,
    by_uri: HashMap<String, usize>,
}

impl ResourceMatcher {
    /// Builds the matcher; `uri`s must already be normalised without a trailing slash (the
    /// config validation does that). A later duplicate `uri` is ignored.
    pub fn new(resources: Vec<Resource>) -> Self {
        let mut by_uri = HashMap::with_capacity(resources.len());
        for (i, r) in resources.iter().enumerate() {
            by_uri.entry(r.uri.clone()).or_insert(i);
        }
        Self { resources, by_uri }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The resource protecting `path` (normalised), if any.
    pub fn find(&self, path: &str) -> Option<&Resource> {
        let trimmed = path.trim_end_matches('/');
        let mut candidate = trimmed;
        loop {
            if candidate.is_empty() {
                return self.lookup("/");
            }
            if let Some(r) = self.lookup(candidate) {
                return Some(r);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => return self.lookup("/"),
            }
        }
    }

    fn lookup(&self, uri: &str) -> Option<&Resource> {
        self.by_uri.get(uri).and_then(|&i| self.resources.get(i))
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
}
