//! The worker's caches, each a per-worker map in front of a set of slots in shared data:
//! decisions (what the AS said of an RPT), minted tokens for the upstream, and RPT use counts.
//! The per-worker map keeps the hot path free of shared-data reads and of parsing; the shared
//! slots make one introspection and one signature serve every worker of the Envoy.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use uma_pep_core::cache::{slot_of, Digest16, LocalCache, SlotValue};
use uma_pep_core::introspection::IntrospectionResult;

use crate::shared::SharedSlots;

/// Entries kept per worker before its map starts over (memory bound per VM).
const LOCAL_ENTRIES: usize = 10_000;

/// How a cached value is stored in a shared slot.
pub trait SlotCodec: Sized + Clone {
    fn encode(&self) -> Option<Vec<u8>>;
    fn decode(bytes: Vec<u8>) -> Option<Self>;
}

/// Decisions: the introspection result (or a JWT RPT's claims), parsed once per worker.
impl SlotCodec for Rc<IntrospectionResult> {
    fn encode(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self.as_ref()).ok()
    }

    fn decode(bytes: Vec<u8>) -> Option<Self> {
        serde_json::from_slice(&bytes).ok().map(Rc::new)
    }
}

/// Minted tokens for the upstream.
impl SlotCodec for Rc<str> {
    fn encode(&self) -> Option<Vec<u8>> {
        Some(self.as_bytes().to_vec())
    }

    fn decode(bytes: Vec<u8>) -> Option<Self> {
        String::from_utf8(bytes).ok().map(Rc::from)
    }
}

/// A per-worker map in front of shared slots, keyed by digest; entries expire together.
pub struct TieredCache<V> {
    local: RefCell<LocalCache<V>>,
    shared: SharedSlots,
}

impl<V: SlotCodec> TieredCache<V> {
    pub fn new(name: &'static str, slots: u32) -> Self {
        Self { local: RefCell::new(LocalCache::new(LOCAL_ENTRIES)), shared: SharedSlots::new(name, slots) }
    }

    /// This worker's entry first, then the shared one (decoded once, then kept here).
    pub fn get(&self, key: &Digest16, now: i64) -> Option<V> {
        if let Some(hit) = self.local.borrow().get(key, now) {
            return Some(hit.clone());
        }
        let (expires_at, bytes) = self.shared.get(key, now)?;
        let value = V::decode(bytes)?;
        self.local.borrow_mut().insert(*key, expires_at, value.clone(), now);
        Some(value)
    }

    pub fn put(&self, key: &Digest16, expires_at: i64, value: V, now: i64) {
        if expires_at <= now {
            return;
        }
        if let Some(bytes) = value.encode() {
            self.shared.put(key, expires_at, &bytes);
        }
        self.local.borrow_mut().insert(*key, expires_at, value, now);
    }
}

/// Decisions by RPT digest.
pub type DecisionCache = TieredCache<Rc<IntrospectionResult>>;
/// Minted tokens by (RPT, resource) digest.
pub type MintedCache = TieredCache<Rc<str>>;

/// Accepted uses of each RPT, counted exactly across workers with compare-and-swap.
pub struct UseCounter {
    slots: u32,
}

/// Attempts before a contended increment gives up (and denies: fail closed).
const CAS_ATTEMPTS: usize = 16;

impl UseCounter {
    pub fn new(slots: u32) -> Self {
        Self { slots }
    }

    fn key(&self, digest: &Digest16) -> String {
        format!("uma_pep.uses.{}", slot_of(digest, self.slots))
    }

    fn count_in(bytes: &[u8], digest: &Digest16, now: i64) -> u32 {
        SlotValue::payload_for(bytes, digest, now)
            .and_then(|p| p.get(..4)?.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    pub fn used_up(&self, digest: &Digest16, max: u32, now: i64) -> bool {
        let Ok((Some(bytes), _)) = hostcalls::get_shared_data(&self.key(digest)) else { return false };
        Self::count_in(&bytes, digest, now) >= max
    }

    /// Counts one use if one is left; false when the RPT is used up (or the count could not be
    /// updated). The count lives as long as the RPT (`expires_at`).
    pub fn take(&self, digest: &Digest16, max: u32, expires_at: i64, now: i64) -> bool {
        let key = self.key(digest);
        for _ in 0..CAS_ATTEMPTS {
            let (bytes, cas) = match hostcalls::get_shared_data(&key) {
                Ok(v) => v,
                Err(_) => return false,
            };
            let Some(cas) = cas else {
                // No value yet: create the slot, then count through CAS like everyone else.
                let empty = SlotValue { digest: [0; 16], expires_at: 0, payload: &[] }.encode();
                let _ = hostcalls::set_shared_data(&key, Some(&empty), None);
                continue;
            };
            let used = bytes.as_deref().map_or(0, |b| Self::count_in(b, digest, now));
            if used >= max {
                return false;
            }
            let next = (used + 1).to_le_bytes();
            let value = SlotValue { digest: *digest, expires_at, payload: &next }.encode();
            match hostcalls::set_shared_data(&key, Some(&value), Some(cas)) {
                Ok(()) => return true,
                Err(Status::CasMismatch) => continue,
                Err(_) => return false,
            }
        }
        false
    }
}
