//! `ResourceTable`: the resource table the filter polls from pepctl (`resource_sync`), as
//! `GET /filter-config` answers it: `{"resources": [..], "version": N}`. A table is taken only
//! whole and valid; anything else leaves the last good table in force.

use serde::Deserialize;

use crate::config::{validate_resources, Resource};
use crate::matcher::ResourceMatcher;
use crate::wire::{AsError, AsResponse};

#[derive(Debug, Clone)]
pub struct ResourceTable {
    pub version: i64,
    pub matcher: ResourceMatcher,
}

#[derive(Deserialize)]
struct RawTable {
    resources: Vec<Resource>,
    #[serde(default)]
    version: i64,
}

impl ResourceTable {
    /// Parses and validates a table (the body of `/filter-config`, or its copy in shared data).
    pub fn from_json(body: &[u8]) -> Result<Self, AsError> {
        let raw: RawTable =
            serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        let matcher = validate_resources(raw.resources)
            .map_err(|e| AsError::Garbage(format!("resource table: {e}")))?;
        Ok(Self { version: raw.version, matcher })
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
    }

    #[test]
    fn anything_else_is_refused() {
        for body in [
            &br#"{"version":1,"resources":[{"id":"","uri":"/a"}]}"#[..],
            br#"{"version":1,"resources":[{"id":"a","uri":"/../x"}]}"#,
            br#"{"version":1}"#,
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
