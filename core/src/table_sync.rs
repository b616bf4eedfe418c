//! `TableSync`: the resource table polled from pepctl's `GET /filter-config`. One worker polls
//! per interval (a lease in shared data); a new valid table is published in shared data with
//! its identity (a digest of its content), and every worker swaps to it on its next tick. When
//! pepctl is down or answers garbage (or an empty table), the last good table stays.

use std::rc::Rc;

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
    next_poll_ms: i64,
    lease: Lease,
    table_key: String,
    identity_key: String,
}

/// A table that came into force: its version and size, for the log.
pub struct Swapped {
    pub version: String,
    pub resources: usize,
}

impl TableSync {
    pub fn new(config: &PepConfig, keys: &SharedKeys) -> Self {
        Self {
            matcher: Rc::new(config.resources.clone()),
            identity: None,
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
        self.swap(ResourceTable::from_json(&bytes).ok()?)
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
    ) -> Result<Option<Swapped>, String> {
        let table = ResourceTable::parse(&response.as_response()).map_err(|e| e.to_string())?;
        // Table first, then its identity: a reader that sees the new identity finds it.
        let _ = host.shared_set(&self.table_key, &response.body, None);
        let _ = host.shared_set(&self.identity_key, &table.identity, None);
        Ok(self.swap(table))
    }

    fn swap(&mut self, table: ResourceTable) -> Option<Swapped> {
        if self.identity == Some(table.identity) {
            return None;
        }
        self.identity = Some(table.identity);
        let swapped =
            Swapped { version: table.version.to_string(), resources: table.matcher.resources().len() };
        self.matcher = Rc::new(table.matcher);
        Some(swapped)
    }
}
