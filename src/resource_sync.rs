//! `resource_sync`: the resource table polled from pepctl's `GET /filter-config`. One worker
//! polls per interval (a lease in shared data); a new valid table is published in shared data
//! with its identity (a digest of its content), and every worker swaps to it on its next tick.
//! When pepctl is down or answers garbage (or an empty table), the last good table stays.

use std::rc::Rc;

use log::{info, warn};
use proxy_wasm::hostcalls;
use uma_pep_core::cache::Digest16;
use uma_pep_core::decision::LogCode;
use uma_pep_core::matcher::ResourceMatcher;
use uma_pep_core::resource_table::ResourceTable;

use crate::host::{self, AsCall, CallResponse};
use crate::worker::{Call, Worker};

/// What a worker knows of the polled table.
#[derive(Default)]
pub struct SyncState {
    /// Identity of the table in force here; `None` while the configured table is.
    pub identity: Option<Digest16>,
    pub next_poll_ms: i64,
}

impl Worker {
    /// The resource table requests are matched against now.
    pub fn resources(&self) -> Rc<ResourceMatcher> {
        Rc::clone(&self.resources.borrow())
    }

    /// Tick work: adopt a table another worker published, and poll pepctl when it is time.
    pub(crate) fn sync_resources(&self) {
        let Some(sync) = &self.config.resource_sync else { return };
        self.adopt_published_table();
        let now = host::now_ms();
        if now < self.sync.borrow().next_poll_ms {
            return;
        }
        let interval_ms = i64::try_from(sync.interval_s).unwrap_or(60).saturating_mul(1000);
        self.sync.borrow_mut().next_poll_ms = now + interval_ms;
        // One poll per interval per Envoy: whoever moves the lease forward polls.
        let lease = self.keys.key("resources.lease");
        let Ok((held, cas)) = hostcalls::get_shared_data(&lease) else { return };
        let held_until = held
            .and_then(|b| b.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()))
            .map_or(0, i64::from_le_bytes);
        if held_until > now {
            return;
        }
        let until = (now + interval_ms - 100).to_le_bytes();
        if hostcalls::set_shared_data(&lease, Some(&until), cas).is_err() {
            return;
        }
        let authority = sync.authority.as_deref().unwrap_or(&sync.cluster);
        let call = AsCall {
            cluster: &sync.cluster,
            authority,
            method: "GET",
            path: &sync.path,
            headers: Vec::new(),
            body: None,
            timeout_ms: self.config.timeout_ms,
        };
        if let Err(status) = self.dispatch_raw(call, Call::ResourceTable) {
            warn!("{} resource table poll could not be dispatched ({status:?})", LogCode::AsError.code());
        }
    }

    pub(crate) fn on_resource_table(&self, response: &CallResponse) {
        match ResourceTable::parse(&response.as_response()) {
            Ok(table) => {
                // Table first, then its identity: a reader that sees the new identity finds it.
                let _ =
                    hostcalls::set_shared_data(&self.keys.key("resources.table"), Some(&response.body), None);
                let _ = hostcalls::set_shared_data(
                    &self.keys.key("resources.identity"),
                    Some(&table.identity),
                    None,
                );
                self.swap_table(table);
            }
            Err(e) => warn!(
                "{} resource table poll failed, keeping the last good table: {e}",
                LogCode::AsError.code()
            ),
        }
    }

    fn adopt_published_table(&self) {
        let Ok((Some(identity), _)) = hostcalls::get_shared_data(&self.keys.key("resources.identity")) else {
            return;
        };
        if self.sync.borrow().identity.is_some_and(|mine| mine[..] == identity[..]) {
            return;
        }
        let Ok((Some(bytes), _)) = hostcalls::get_shared_data(&self.keys.key("resources.table")) else {
            return;
        };
        if let Ok(table) = ResourceTable::from_json(&bytes) {
            self.swap_table(table);
        }
    }

    fn swap_table(&self, table: ResourceTable) {
        if self.sync.borrow().identity == Some(table.identity) {
            return;
        }
        info!(
            "resource table version {} in force: {} resources",
            table.version,
            table.matcher.resources().len()
        );
        self.sync.borrow_mut().identity = Some(table.identity);
        *self.resources.borrow_mut() = Rc::new(table.matcher);
    }
}
