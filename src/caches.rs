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

use crate::shared::{SharedKeys, SharedSlots};

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
    pub fn new(keys: &SharedKeys, name: &str, slots: u32) -> Self {
        Self {
            local: RefCell::new(LocalCache::new(LOCAL_ENTRIES)),
            shared: SharedSlots::new(keys, name, slots),
        }
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

/// Accepted uses of each RPT, counted exactly across workers with compare-and-swap. An RPT's
/// count lives in the first of `PROBES` consecutive slots that is free or already its own; a
/// live count is never overwritten by another RPT's (that would give the first its uses back),
/// and when all are taken by live counts the use is refused (fail closed).
pub struct UseCounter {
    prefix: String,
    slots: u32,
}

/// Attempts before a contended increment gives up (and denies: fail closed).
const CAS_ATTEMPTS: usize = 16;
const PROBES: u32 = 4;

/// What a slot holds for the RPT being counted.
enum SlotState {
    Mine(u32),
    Free,
    Taken,
}

impl UseCounter {
    pub fn new(keys: &SharedKeys, slots: u32) -> Self {
        Self { prefix: keys.key("uses"), slots }
    }

    fn keys_for(&self, digest: &Digest16) -> impl Iterator<Item = String> + '_ {
        let first = slot_of(digest, self.slots);
        (0..PROBES).map(move |i| format!("{}.{}", self.prefix, (first + i) % self.slots.max(1)))
    }

    /// Creates every slot before the worker counts anything, so that counting only ever
    /// updates through compare-and-swap (a first unconditional write could erase a count).
    pub fn create_slots(&self) {
        let empty = SlotValue { digest: [0; 16], expires_at: 0, payload: &[] }.encode();
        for slot in 0..self.slots {
            let key = format!("{}.{slot}", self.prefix);
            if matches!(hostcalls::get_shared_data(&key), Ok((None, _))) {
                let _ = hostcalls::set_shared_data(&key, Some(&empty), None);
            }
        }
    }

    fn state(bytes: Option<&[u8]>, digest: &Digest16, now: i64) -> SlotState {
        let Some(value) = bytes.and_then(SlotValue::decode) else { return SlotState::Free };
        if now >= value.expires_at {
            return SlotState::Free;
        }
        if value.digest != *digest {
            return SlotState::Taken;
        }
        let count =
            value.payload.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()).map_or(0, u32::from_le_bytes);
        SlotState::Mine(count)
    }

    pub fn used_up(&self, digest: &Digest16, max: u32, now: i64) -> bool {
        self.keys_for(digest).any(|key| {
            let Ok((bytes, _)) = hostcalls::get_shared_data(&key) else { return false };
            matches!(Self::state(bytes.as_deref(), digest, now), SlotState::Mine(n) if n >= max)
        })
    }

    /// Counts one use if one is left; false when the RPT is used up, or the count could not be
    /// kept. The count lives as long as the RPT (`expires_at`).
    pub fn take(&self, digest: &Digest16, max: u32, expires_at: i64, now: i64) -> bool {
        for _ in 0..CAS_ATTEMPTS {
            // Its own slot if it has one, else the first free one.
            let mut chosen: Option<(String, u32, u32)> = None;
            for key in self.keys_for(digest) {
                let Ok((bytes, Some(cas))) = hostcalls::get_shared_data(&key) else { continue };
                match Self::state(bytes.as_deref(), digest, now) {
                    SlotState::Mine(used) => {
                        chosen = Some((key, cas, used));
                        break;
                    }
                    SlotState::Free if chosen.is_none() => chosen = Some((key, cas, 0)),
                    SlotState::Free | SlotState::Taken => {}
                }
            }
            let Some((key, cas, used)) = chosen else { return false };
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
