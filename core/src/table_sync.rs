//! `TableSync`: the resource table polled from pepctl's `GET /filter-config`. One worker polls
//! per interval (a lease in shared data); a new valid table is published in shared data with
//! its identity (a digest of its content), and every worker swaps to it on its next tick. When
//! pepctl is down or answers garbage, the last good table stays.
//!
//! An empty table is the one case content cannot judge: the last resource was deleted, or
//! pepctl lost its database and starts again with nothing. The table's `generation` (drawn when
//! pepctl's database is created, see `resource_table`) tells them apart: an empty table of the
//! generation in force is taken (the deletion applies); an empty table of another generation, or
//! of none, is refused and the last good table stays (a lost database never unprotects every
//! path). A non-empty table is taken whatever its generation: content counts.

use std::rc::Rc;

use thiserror::Error;

use crate::cache::Digest16;
use crate::config::{PepConfig, ResourceSync};
use crate::host::{CallResponse, Host, HttpCall};
use crate::matcher::ResourceMatcher;
use crate::resource_table::ResourceTable;
use crate::shared_data::{Lease, SharedKeys};

pub struct TableSync {
    /// The table in force: the configured one until pepctl's is polled.
    matcher: Rc<ResourceMatcher>,
    /// Identity of the table in force here; `None` while the configured table is.
    identity: Option<Digest16>,
    /// Repository generation of the table in force; `None` while the configured table (or a
    /// table from a source without generations) is.
    generation: Option<String>,
    /// `resource_sync`'s cluster and path, for the messages.
    source: (String, String),
    next_poll_ms: i64,
    lease: Lease,
    table_key: String,
    identity_key: String,
}

/// A table that came into force: its version and size, for the log.
#[derive(Debug)]
pub struct Swapped {
    pub version: String,
    pub resources: usize,
}

/// Why a polled table was not taken; the last good table stays. Every message names pepctl's
/// table, never the AS: the AS has nothing to do with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableRefused {
    #[error("pepctl's resource table (resource_sync.cluster {cluster:?}, path {path}) could not be read: {reason}; check that pepctl serve is running and reachable from Envoy")]
    Source { cluster: String, path: String, reason: String },
    #[error("pepctl's resource table is empty and names no generation: refused, since it cannot be told from the table of a pepctl that lost its database; upgrade pepctl (its /filter-config names its generation)")]
    EmptyWithoutGeneration,
    #[error("pepctl's resource table is empty and of generation {offered}, not {in_force}: refused, since this is what a pepctl that lost its database serves; restore pepctl's database, or create a resource again, and the table is taken")]
    EmptyOfAnotherGeneration { offered: String, in_force: String },
    #[error("pepctl's resource table is empty and of generation {offered}, while the table in force came from the filter's configuration: refused, since an empty table of an unknown generation may come from a pepctl that lost its database; render the configuration again (its table is then empty too)")]
    EmptyOverConfigured { offered: String },
    #[error("the new configuration's resource table is empty and names no resource_generation, while the table in force has resources: refused (Envoy keeps the configuration in force), since it cannot be told from the table of a pepctl that lost its database; render it with pepctl, which writes resource_generation")]
    ConfiguredEmptyWithoutGeneration,
}

/// What the last configuration taken brought as its table, in shared data: every worker, and
/// the check Envoy makes of a new configuration before it takes it, read the same.
fn configured_record(generation: Option<&str>, resources: usize) -> String {
    format!("{} {resources}", generation.unwrap_or("-"))
}

/// Whether the table a new configuration brings may replace the one the last configuration
/// brought, by the rule of polled tables: a non-empty table always may; an empty one only when
/// the table in force is empty too, or of the same pepctl generation (the last resource was
/// deleted). pepctl pushes its table as configuration (xDS): refusing here makes Envoy reject
/// that configuration and keep the one in force, so a pepctl that lost its database cannot
/// unprotect every path. Records the table taken.
pub fn admit_configured(host: &impl Host, keys: &SharedKeys, config: &PepConfig) -> Result<(), TableRefused> {
    let key = keys.key("resources.configured");
    let offered = config.resource_generation.as_deref();
    let count = config.resources.resources().len();
    if count == 0 {
        let in_force = host.shared_get(&key).and_then(|(bytes, _)| bytes);
        let in_force = in_force.as_deref().and_then(|b| std::str::from_utf8(b).ok());
        if let Some((generation, resources)) = in_force.and_then(|r| r.split_once(' ')) {
            if resources != "0" {
                match offered {
                    None => return Err(TableRefused::ConfiguredEmptyWithoutGeneration),
                    Some(o) if o != generation => {
                        return Err(TableRefused::EmptyOfAnotherGeneration {
                            offered: o.to_string(),
                            in_force: generation.to_string(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let _ = host.shared_set(&key, configured_record(offered, count).as_bytes(), None);
    Ok(())
}

impl TableSync {
    pub fn new(config: &PepConfig, keys: &SharedKeys) -> Self {
        Self {
            matcher: Rc::new(config.resources.clone()),
            identity: None,
            // A table pepctl rendered or pushed names its generation: an empty polled table of
            // that generation is a deletion.
            generation: config.resource_generation.clone(),
            source: config
                .resource_sync
                .as_ref()
                .map(|s| (s.cluster.clone(), s.path.clone()))
                .unwrap_or_default(),
            next_poll_ms: 0,
            // A background poll: skipped when shared data cannot be read.
            lease: Lease::new(keys.key("resources.lease"), false),
            table_key: keys.key("resources.table"),
            identity_key: keys.key("resources.identity"),
        }
    }

    pub fn resources(&self) -> Rc<ResourceMatcher> {
        Rc::clone(&self.matcher)
    }

    /// Takes a table another worker published.
    pub fn adopt_published(&mut self, host: &impl Host) -> Option<Swapped> {
        let (Some(identity), _) = host.shared_get(&self.identity_key)? else { return None };
        if self.identity.is_some_and(|mine| mine[..] == identity[..]) {
            return None;
        }
        let (Some(bytes), _) = host.shared_get(&self.table_key)? else { return None };
        // Published by the worker that polled it, after `judge`: an empty one is a deletion.
        self.swap(ResourceTable::read(&bytes).ok()?)
    }

    /// The poll to make now, if it is time and this worker moved the lease forward.
    pub fn poll_due(&mut self, host: &impl Host, sync: &ResourceSync, timeout_ms: u64) -> Option<HttpCall> {
        let now = host.now_ms();
        if now < self.next_poll_ms {
            return None;
        }
        let interval_ms = i64::try_from(sync.interval_s).unwrap_or(60).saturating_mul(1000);
        self.next_poll_ms = now.saturating_add(interval_ms);
        // One poll per interval per Envoy: whoever moves the lease forward polls.
        if !self.lease.try_take(host, now, now.saturating_add(interval_ms).saturating_sub(100)) {
            return None;
        }
        Some(HttpCall {
            cluster: sync.cluster.clone(),
            authority: sync.authority.clone().unwrap_or_else(|| sync.cluster.clone()),
            method: "GET",
            path: sync.path.clone(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms,
        })
    }

    /// Takes a polled table and publishes it for the other workers; the error says why it was
    /// not taken (the last good table stays).
    pub fn on_answer(
        &mut self,
        host: &impl Host,
        response: &CallResponse,
    ) -> Result<Option<Swapped>, TableRefused> {
        let table = ResourceTable::parse_any(&response.as_response()).map_err(|e| TableRefused::Source {
            cluster: self.source.0.clone(),
            path: self.source.1.clone(),
            reason: e.to_string(),
        })?;
        self.judge(&table)?;
        if self.identity == Some(table.identity) {
            return Ok(None);
        }
        // Table first, then its identity: a reader that sees the new identity finds it.
        let _ = host.shared_set(&self.table_key, &response.body, None);
        let _ = host.shared_set(&self.identity_key, &table.identity, None);
        Ok(self.swap(table))
    }

    /// Whether `table` may replace the one in force: any valid non-empty table may; an empty
    /// one only when it is of the generation in force (the last resource was deleted), or when
    /// the table in force is empty too (it unprotects nothing).
    fn judge(&self, table: &ResourceTable) -> Result<(), TableRefused> {
        if !table.is_empty() || self.matcher.resources().is_empty() {
            return Ok(());
        }
        let Some(offered) = &table.generation else {
            return Err(TableRefused::EmptyWithoutGeneration);
        };
        match &self.generation {
            Some(in_force) if in_force == offered => Ok(()),
            Some(in_force) => Err(TableRefused::EmptyOfAnotherGeneration {
                offered: offered.clone(),
                in_force: in_force.clone(),
            }),
            None => Err(TableRefused::EmptyOverConfigured { offered: offered.clone() }),
        }
    }

    fn swap(&mut self, table: ResourceTable) -> Option<Swapped> {
        if self.identity == Some(table.identity) {
            return None;
        }
        self.identity = Some(table.identity);
        self.generation = table.generation.clone();
        let swapped =
            Swapped { version: table.version.to_string(), resources: table.matcher.resources().len() };
        self.matcher = Rc::new(table.matcher);
        Some(swapped)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::host::fake::FakeHost;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn config() -> PepConfig {
        let c = json!({
            "issuer": "https://as.example", "client_id": "pep", "client_secret": "s", "as_cluster": "as",
            "resources": [{"id": "configured", "uri": "/configured", "scopes": []}],
            "resource_sync": {"cluster": "pepctl", "interval_s": 5},
        });
        match PepConfig::from_json(c.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => unreachable!("test config: {e}"),
        }
    }

    /// Two workers of one Envoy: they share the host's shared data.
    fn two_workers() -> (FakeHost, TableSync, TableSync) {
        let (config, keys) = (config(), SharedKeys::new("f00d"));
        (FakeHost::new(NOW_MS), TableSync::new(&config, &keys), TableSync::new(&config, &keys))
    }

    fn table(generation: Option<&str>, uris: &[&str]) -> CallResponse {
        let resources: Vec<_> = uris.iter().map(|u| json!({"id": format!("id{u}"), "uri": u})).collect();
        let mut body = json!({"version": 1, "resources": resources});
        if let Some(g) = generation {
            body["generation"] = json!(g);
        }
        CallResponse { status: Some(200), body: body.to_string().into_bytes() }
    }

    fn protects(sync: &TableSync, path: &str) -> bool {
        sync.resources().find(path).is_some()
    }

    #[test]
    fn deleting_the_last_resource_applies_on_every_worker() {
        let (host, mut poller, mut other) = two_workers();
        assert!(poller.on_answer(&host, &table(Some("g1"), &["/a"])).unwrap().is_some());
        assert!(other.adopt_published(&host).is_some());
        assert!(protects(&poller, "/a/x") && protects(&other, "/a/x"));
        assert!(!protects(&poller, "/configured"), "pepctl's table replaced the configured one");

        // Same generation, no resource left: the deletion applies.
        let swapped = poller.on_answer(&host, &table(Some("g1"), &[])).unwrap();
        assert_eq!(swapped.map(|s| s.resources), Some(0));
        assert!(!protects(&poller, "/a/x"));
        assert!(other.adopt_published(&host).is_some(), "published for the other workers");
        assert!(!protects(&other, "/a/x"));
        // Polled again: nothing changes, nothing is refused.
        assert!(poller.on_answer(&host, &table(Some("g1"), &[])).unwrap().is_none());
        // A resource created again in the same database is taken, then deleted again.
        assert!(poller.on_answer(&host, &table(Some("g1"), &["/b"])).unwrap().is_some());
        assert!(poller.on_answer(&host, &table(Some("g1"), &[])).unwrap().is_some());
        assert!(!protects(&poller, "/b"));
    }

    #[test]
    fn a_lost_database_never_unprotects() {
        let (host, mut poller, mut other) = two_workers();
        poller.on_answer(&host, &table(Some("g1"), &["/a"])).unwrap();
        other.adopt_published(&host);
        // pepctl started on a new database: another generation, nothing in it.
        let e = poller.on_answer(&host, &table(Some("g2"), &[])).unwrap_err();
        assert_eq!(e, TableRefused::EmptyOfAnotherGeneration { offered: "g2".into(), in_force: "g1".into() });
        assert!(protects(&poller, "/a/x"), "the last good table stays");
        assert!(other.adopt_published(&host).is_none(), "nothing published");
        assert!(protects(&other, "/a/x"));
        // An empty table naming no generation (an older pepctl, a stand-in) is refused too.
        let e = poller.on_answer(&host, &table(None, &[])).unwrap_err();
        assert_eq!(e, TableRefused::EmptyWithoutGeneration);
        assert!(protects(&poller, "/a/x"));
        // Once the new database has a resource, content counts: that table is taken, and from
        // then on its generation is the one in force.
        poller.on_answer(&host, &table(Some("g2"), &["/b"])).unwrap();
        assert!(protects(&poller, "/b") && !protects(&poller, "/a/x"));
        poller.on_answer(&host, &table(Some("g2"), &[])).unwrap();
        assert!(!protects(&poller, "/b"));
    }

    #[test]
    fn an_empty_table_never_replaces_the_configured_one() {
        let (host, mut poller, _) = two_workers();
        // The configured table was rendered from some database; an empty table of a generation
        // never seen may come from a pepctl that lost it.
        let e = poller.on_answer(&host, &table(Some("g1"), &[])).unwrap_err();
        assert_eq!(e, TableRefused::EmptyOverConfigured { offered: "g1".into() });
        assert!(protects(&poller, "/configured"));
        // A garbage generation is no generation at all.
        let bad = CallResponse {
            status: Some(200),
            body: br#"{"version":1,"resources":[{"id":"x","uri":"/x"}],"generation":""}"#.to_vec(),
        };
        assert!(matches!(poller.on_answer(&host, &bad), Err(TableRefused::Source { .. })));
        assert!(protects(&poller, "/configured"));
    }

    #[test]
    fn an_empty_table_over_an_empty_one_changes_nothing_and_is_taken() {
        let mut c = config();
        c.resources = crate::config::validate_resources(Vec::new()).unwrap();
        let (host, keys) = (FakeHost::new(NOW_MS), SharedKeys::new("f00d"));
        let mut poller = TableSync::new(&c, &keys);
        // Rendered from an empty repository: pepctl's empty table is taken, with its generation.
        assert!(poller.on_answer(&host, &table(Some("g1"), &[])).unwrap().is_some());
        poller.on_answer(&host, &table(Some("g1"), &["/a"])).unwrap();
        let e = poller.on_answer(&host, &table(Some("g2"), &[])).unwrap_err();
        assert!(matches!(e, TableRefused::EmptyOfAnotherGeneration { .. }), "{e}");
        assert!(protects(&poller, "/a"));
    }

    fn configured(generation: Option<&str>, uris: &[&str]) -> PepConfig {
        let resources: Vec<_> = uris.iter().map(|u| json!({"id": format!("id{u}"), "uri": u})).collect();
        let mut c = json!({
            "issuer": "https://as.example", "client_id": "pep", "client_secret": "s", "as_cluster": "as",
            "resources": resources,
        });
        if let Some(g) = generation {
            c["resource_generation"] = json!(g);
        }
        match PepConfig::from_json(c.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => unreachable!("test config: {e}"),
        }
    }

    #[test]
    fn a_configured_empty_table_is_taken_only_as_a_deletion() {
        let (host, keys) = (FakeHost::new(NOW_MS), SharedKeys::new("f00d"));
        // The first configuration is taken whatever it holds (nothing was protected before).
        admit_configured(&host, &keys, &configured(Some("g1"), &[])).unwrap();
        admit_configured(&host, &keys, &configured(Some("g1"), &["/a"])).unwrap();
        // Then a lost database: another generation, nothing in it. Refused, and again.
        for _ in 0..2 {
            let e = admit_configured(&host, &keys, &configured(Some("g2"), &[])).unwrap_err();
            assert_eq!(
                e,
                TableRefused::EmptyOfAnotherGeneration { offered: "g2".into(), in_force: "g1".into() }
            );
        }
        let e = admit_configured(&host, &keys, &configured(None, &[])).unwrap_err();
        assert_eq!(e, TableRefused::ConfiguredEmptyWithoutGeneration);
        assert!(!e.to_string().to_ascii_lowercase().contains("authorization server"), "{e}");
        // The last resource deleted in the same database: taken; then an empty table of any
        // generation replaces that empty one (it unprotects nothing).
        admit_configured(&host, &keys, &configured(Some("g1"), &[])).unwrap();
        admit_configured(&host, &keys, &configured(Some("g2"), &[])).unwrap();
        // A non-empty table of a new database is taken, and its generation is in force.
        admit_configured(&host, &keys, &configured(Some("g3"), &["/b"])).unwrap();
        assert!(admit_configured(&host, &keys, &configured(Some("g2"), &[])).is_err());
        admit_configured(&host, &keys, &configured(Some("g3"), &[])).unwrap();
    }

    #[test]
    fn a_polled_empty_table_of_the_configured_generation_is_a_deletion() {
        let mut c = configured(Some("g1"), &["/a"]);
        c.resource_sync = config().resource_sync;
        let (host, keys) = (FakeHost::new(NOW_MS), SharedKeys::new("f00d"));
        let mut poller = TableSync::new(&c, &keys);
        assert!(poller.on_answer(&host, &table(Some("g1"), &[])).unwrap().is_some());
        assert!(!protects(&poller, "/a"));
    }

    #[test]
    fn a_pepctl_failure_is_reported_as_pepctl_not_as_the_as() {
        let (host, mut poller, _) = two_workers();
        for response in [
            CallResponse { status: None, body: Vec::new() },
            CallResponse { status: Some(503), body: Vec::new() },
            CallResponse { status: Some(200), body: b"<html>".to_vec() },
        ] {
            let e = poller.on_answer(&host, &response).unwrap_err().to_string();
            assert!(e.starts_with("pepctl's resource table"), "{e}");
            assert!(e.contains("\"pepctl\"") && e.contains("/filter-config"), "{e}");
            assert!(!e.to_ascii_lowercase().contains("authorization server"), "{e}");
        }
        for refused in [
            TableRefused::EmptyWithoutGeneration,
            TableRefused::EmptyOfAnotherGeneration { offered: "a".into(), in_force: "b".into() },
            TableRefused::EmptyOverConfigured { offered: "a".into() },
        ] {
            let e = refused.to_string();
            assert!(e.starts_with("pepctl's resource table"), "{e}");
            assert!(!e.to_ascii_lowercase().contains("authorization server"), "{e}");
        }
        assert!(protects(&poller, "/configured"));
    }
}
