//! `ResourceTable`: the resource table the filter polls from pepctl (`resource_sync`), as
//! `GET /filter-config` answers it: `{"resources": [..], "version": N}`. A table is taken only
//! whole and valid; anything else leaves the last good table in force.

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::cache::Digest16;
use crate::config::{validate_resources, Resource};
use crate::matcher::ResourceMatcher;
use crate::wire::{AsError, AsResponse};

#[derive(Debug, Clone)]
pub struct ResourceTable {
    pub version: i64,
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
}

impl ResourceTable {
    /// Parses and validates a table (the body of `/filter-config`, or its copy in shared data).
    pub fn from_json(body: &[u8]) -> Result<Self, AsError> {
        let raw: FilterTable =
            serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        if raw.resources.is_empty() {
            // A pepctl that lost its database serves an empty table; taking it would unprotect
            // every path (unmatched=allow). To drop all protection, drop resource_sync.
            return Err(AsError::Garbage("resource table: empty table refused".into()));
        }
        let matcher = validate_resources(raw.resources)
            .map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        let mut identity = [0u8; 16];
        identity.copy_from_slice(&Sha256::digest(body)[..16]);
        Ok(Self { version: raw.version, identity, matcher })
    }

    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        match response.status {
            None => Err(AsError::Unreachable),
            Some(200) => Self::from_json(response.body),
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
                Resource { id: "a".into(), uri: "/a".into(), scopes: vec![], name: None },
                Resource {
                    id: "o".into(),
                    uri: "/o".into(),
                    scopes: vec!["open".into()],
                    name: Some("O".into()),
                },
            ],
            version: 3,
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
}
