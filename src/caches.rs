//! The worker's caches, each a per-worker map in front of a set of slots in shared data:
//! decisions (what the AS said of an RPT), minted tokens for the upstream, and RPT use counts.
//! The per-worker map keeps the hot path free of shared-data reads and of parsing; the shared
//! slots make one introspection and one signature serve every worker of the Envoy.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use uma_pep_core::cache::{slot_of, Digest16, LocalCache, UseBucket, UseTake, USE_BUCKET_ENTRIES};
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
/// count lives in the bucket of the slot its digest falls in (`UseBucket`, up to
/// `USE_BUCKET_ENTRIES` counts), until the RPT expires: a live count is never dropped (that
/// would give the RPT its uses back), expired ones make room, and when a bucket holds only live
/// counts a new RPT falling in it is refused (fail closed). So `cache_slots` slots count up to
/// `USE_BUCKET_ENTRIES * cache_slots` live RPTs, and a flood of distinct RPTs must fill the
/// bucket of a fresh one with live counts to refuse it.
pub struct UseCounter {
    prefix: String,
    slots: u32,
    /// When a full bucket was last logged (at most one line a minute per worker).
    warned_at: Cell<i64>,
}

const WARN_EVERY_S: i64 = 60;

/// Attempts before a contended increment gives up (and denies: fail closed).
const CAS_ATTEMPTS: usize = 16;

impl UseCounter {
    pub fn new(keys: &SharedKeys, slots: u32) -> Self {
        Self { prefix: keys.key("uses"), slots, warned_at: Cell::new(i64::MIN) }
    }

    fn key_for(&self, digest: &Digest16) -> String {
        format!("{}.{}", self.prefix, slot_of(digest, self.slots))
    }

    /// Creates every slot before the worker counts anything, so that counting only ever
    /// updates through compare-and-swap (a first unconditional write could erase a count).
    pub fn create_slots(&self) {
        let empty = UseBucket::default().encode();
        for slot in 0..self.slots {
            let key = format!("{}.{slot}", self.prefix);
            if matches!(hostcalls::get_shared_data(&key), Ok((None, _))) {
                let _ = hostcalls::set_shared_data(&key, Some(&empty), None);
            }
        }
    }

    pub fn used_up(&self, digest: &Digest16, max: u32, now: i64) -> bool {
        let Ok((bytes, _)) = hostcalls::get_shared_data(&self.key_for(digest)) else { return false };
        UseBucket::decode(bytes.as_deref().unwrap_or_default()).used(digest, now) >= max
    }

    /// Counts one use if one is left; false when the RPT is used up, or the count could not be
    /// kept. The count lives as long as the RPT (`expires_at`).
    pub fn take(&self, digest: &Digest16, max: u32, expires_at: i64, now: i64) -> bool {
        let key = self.key_for(digest);
        for _ in 0..CAS_ATTEMPTS {
            let Ok((bytes, Some(cas))) = hostcalls::get_shared_data(&key) else { return false };
            let bucket = UseBucket::decode(bytes.as_deref().unwrap_or_default());
            let value = match bucket.take(digest, max, expires_at, now) {
                UseTake::Counted(value) => value,
                UseTake::UsedUp => return false,
                UseTake::Full => {
                    if now.saturating_sub(self.warned_at.get()) < WARN_EVERY_S {
                        return false;
                    }
                    self.warned_at.set(now);
                    warn!(
                        "uma-pep: rpt_max_uses: {USE_BUCKET_ENTRIES} live RPTs already counted in slot {key}; \
                         a new RPT there is refused until one expires (raise cache_slots)"
                    );
                    return false;
                }
            };
            match hostcalls::set_shared_data(&key, Some(&value), Some(cas)) {
                Ok(()) => return true,
                Err(Status::CasMismatch) => continue,
                Err(_) => return false,
            }
        }
        false
    }
}
