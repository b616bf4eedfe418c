//! `SharedSlots`: a cache in Envoy's shared data, visible to every worker of the VM. A fixed
//! number of slots per cache keeps the key space bounded (shared data has no delete and no
//! TTL); the slot layout and its checks are `uma_pep_core::cache::SlotValue`.

use proxy_wasm::hostcalls;
use uma_pep_core::cache::{slot_of, Digest16, SlotValue};

/// The key space of one configuration: `uma_pep.<fingerprint>.<name>`. Shared data lives as
/// long as the Envoy process and is shared by every plugin with the same `vm_id`, so a changed
/// configuration (another issuer, client, key or audience) or a second PEP in the same Envoy
/// must never read what another one cached.
#[derive(Debug, Clone)]
pub struct SharedKeys {
    prefix: String,
}

impl SharedKeys {
    pub fn new(fingerprint: &str) -> Self {
        Self { prefix: format!("uma_pep.{fingerprint}") }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
}

pub struct SharedSlots {
    prefix: String,
    slots: u32,
}

impl SharedSlots {
    pub fn new(keys: &SharedKeys, name: &str, slots: u32) -> Self {
        Self { prefix: keys.key(name), slots }
    }

    fn key(&self, digest: &Digest16) -> String {
        format!("{}.{}", self.prefix, slot_of(digest, self.slots))
    }

    /// The expiry and payload stored for `digest`, if present and not expired at `now`.
    pub fn get(&self, digest: &Digest16, now: i64) -> Option<(i64, Vec<u8>)> {
        let (bytes, _) = hostcalls::get_shared_data(&self.key(digest)).ok()?;
        let bytes = bytes?;
        let value = SlotValue::decode(&bytes)?;
        (value.digest == *digest && now < value.expires_at)
            .then(|| (value.expires_at, value.payload.to_vec()))
    }

    /// Stores a payload, overwriting whatever held the slot (the newest entry wins).
    pub fn put(&self, digest: &Digest16, expires_at: i64, payload: &[u8]) {
        let value = SlotValue { digest: *digest, expires_at, payload }.encode();
        // A failed write only costs a later recomputation.
        let _ = hostcalls::set_shared_data(&self.key(digest), Some(&value), None);
    }
}
