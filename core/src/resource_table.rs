//! `ResourceTable`: the resource table the filter polls from pepctl (`resource_sync`), as
//! `GET /filter-config` answers it: `{"resources": [..], "version": N, "generation": "..."}`. A
//! table is taken only whole and valid; anything else leaves the last good table in force.
//!
//! `generation` is a random id pepctl draws when its database is created: a database that was
//! lost and created again has another one, and cannot make up the old one. It is what tells a
//! table emptied on purpose (the last resource deleted: same generation) from the empty table of
//! a pepctl that lost its database (a new generation), which must not unprotect every path.
//! Whether an empty table may replace the one in force is `TableSync`'s decision; this module
//! only reads and validates.

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::cache::Digest16;
use crate::config::{validate_resources, Resource};
use crate::matcher::ResourceMatcher;
use crate::wire::{AsError, AsResponse};

#[derive(Debug, Clone)]
pub struct ResourceTable {
    pub version: i64,
    /// The repository generation the table comes from; `None` from a source that sends none.
    pub generation: Option<String>,
    /// What the table is, whatever its version says: pepctl's version restarts from 0 when its
    /// database is lost, so tables are told apart by content.
    pub identity: Digest16,
    pub matcher: ResourceMatcher,
}

/// The document itself, as pepctl serves it and the filter reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterTable {
    pub resources: Vec<Resource>,
    /// Bumped by every change of pepctl's repository.
    #[serde(default)]
    pub version: i64,
    /// The repository generation: drawn at random when pepctl's database is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

pub use crate::config::{is_generation, MAX_GENERATION_LEN};

impl ResourceTable {
    /// Parses and validates a non-empty table (the body of `/filter-config`, or its copy in
    /// shared data). An empty table is refused here: on its own it cannot be told from the one of
    /// a pepctl that lost its database; `read` takes it, for a caller that knows the generation
    /// in force.
    pub fn from_json(body: &[u8]) -> Result<Self, AsError> {
        let table = Self::read(body)?;
        if table.is_empty() {
            return Err(AsError::Garbage("resource table: empty table refused".into()));
        }
        Ok(table)
    }

    /// Parses and validates a table, empty or not.
    pub fn read(body: &[u8]) -> Result<Self, AsError> {
        let raw: FilterTable =
            serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        if let Some(g) = &raw.generation {
            if !is_generation(g) {
                return Err(AsError::Garbage(format!(
                    "resource table: `generation` must be 1 to {MAX_GENERATION_LEN} printable ASCII characters"
                )));
            }
        }
        let matcher = validate_resources(raw.resources)
            .map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        let mut identity = [0u8; 16];
        identity.copy_from_slice(&Sha256::digest(body)[..16]);
        Ok(Self { version: raw.version, generation: raw.generation, identity, matcher })
    }

    /// No resource at all.
    pub fn is_empty(&self) -> bool {
        self.matcher.resources().is_empty()
    }

    /// A non-empty table from an answer (see `from_json`).
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        Self::parse_any(response).and_then(|t| {
            if t.is_empty() {
                Err(AsError::Garbage("resource table: empty table refused".into()))
            } else {
                Ok(t)
            }
        })
    }

    /// A table, empty or not, from an answer (see `read`).
    pub fn parse_any(response: &AsResponse<'_>) -> Result<Self, AsError> {
        match response.status {
            None => Err(AsError::Unreachable),
            Some(200) => Self::read(response.body),
            Some(s) => Err(AsError::from_status(s, response.body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_table_is_taken_whole() {
        let body = br#"{"version":7,"resources":[{"id":"a","uri":"/a/"},{"id":"b","uri":"/b","scopes":["protected_get"],"name":"B"}]}"#;
        let t = ResourceTable::parse(&AsResponse { status: Some(200), body }).unwrap();
        assert_eq!(t.version, 7);
        assert_eq!(t.matcher.find("/a/x").unwrap().id, "a");
        let other = br#"{"version":7,"resources":[{"id":"c","uri":"/c"}]}"#;
        let u = ResourceTable::parse(&AsResponse { status: Some(200), body: other }).unwrap();
        assert_ne!(t.identity, u.identity, "same version, other content");
    }

    #[test]
    fn the_document_reads_back_what_it_writes() {
        let table = FilterTable {
            resources: vec![
                Resource { id: "a".into(), uri: "/a".into(), ..Resource::default() },
                Resource {
                    id: "o".into(),
                    uri: "/o".into(),
                    scopes: vec!["open".into()],
                    name: Some("O".into()),
                    ..Resource::default()
                },
            ],
            version: 3,
            generation: None,
        };
        let body = serde_json::to_vec(&table).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"resources":[{"id":"a","uri":"/a"},{"id":"o","uri":"/o","scopes":["open"],"name":"O"}],"version":3}"#
        );
        let parsed = ResourceTable::from_json(&body).unwrap();
        assert_eq!(parsed.version, 3);
        assert!(parsed.matcher.find("/o/x").unwrap().is_open());
    }

    #[test]
    fn anything_else_is_refused() {
        for body in [
            &br#"{"version":1,"resources":[{"id":"","uri":"/a"}]}"#[..],
            br#"{"version":1,"resources":[{"id":"a","uri":"/../x"}]}"#,
            br#"{"version":1}"#,
            br#"{"version":1,"resources":[]}"#,
            b"<html>",
        ] {
            assert!(ResourceTable::parse(&AsResponse { status: Some(200), body }).is_err());
        }
        assert!(matches!(
            ResourceTable::parse(&AsResponse { status: Some(503), body: b"" }),
            Err(AsError::Status { status: 503, .. })
        ));
        assert_eq!(
            ResourceTable::parse(&AsResponse { status: None, body: b"" }).unwrap_err(),
            AsError::Unreachable
        );
    }

    #[test]
    fn an_empty_table_is_read_with_its_generation_but_never_taken_on_its_own() {
        let body = br#"{"version":9,"resources":[],"generation":"0f1e2d3c"}"#;
        let t = ResourceTable::read(body).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.generation.as_deref(), Some("0f1e2d3c"));
        assert!(ResourceTable::parse_any(&AsResponse { status: Some(200), body }).unwrap().is_empty());
        assert!(ResourceTable::from_json(body).is_err());
        assert!(ResourceTable::parse(&AsResponse { status: Some(200), body }).is_err());
        // What pepctl writes reads back with its generation.
        let table = FilterTable { resources: vec![], version: 1, generation: Some("g1".into()) };
        let sent = serde_json::to_vec(&table).unwrap();
        assert_eq!(ResourceTable::read(&sent).unwrap().generation.as_deref(), Some("g1"));
        assert_eq!(serde_json::from_slice::<FilterTable>(&sent).unwrap(), table);
    }

    #[test]
    fn a_generation_that_cannot_be_logged_or_compared_is_refused() {
        let long = format!(r#"{{"version":1,"resources":[],"generation":"{}"}}"#, "a".repeat(129));
        for body in [
            r#"{"version":1,"resources":[],"generation":""}"#.to_string(),
            r#"{"version":1,"resources":[],"generation":"a b"}"#.to_string(),
            r#"{"version":1,"resources":[],"generation":"\u0007"}"#.to_string(),
            r#"{"version":1,"resources":[],"generation":7}"#.to_string(),
            long,
        ] {
            assert!(ResourceTable::read(body.as_bytes()).is_err(), "{body}");
        }
    }
}
