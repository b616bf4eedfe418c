//! What the workers of one Envoy keep in shared data, through a `Host`: the key space of one
//! configuration (`SharedKeys`), leases that let one worker make a call for all (`Lease`), and
//! the caches — decisions and minted tokens (`TieredCache`: a per-worker map in front of shared
//! slots) and RPT use counts (`UseCounter`, exact across workers by compare-and-swap).
//!
//! Shared data has no delete and no TTL: each cache is a fixed set of slots chosen by digest,
//! and each value carries its digest and expiry (`cache::SlotValue`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use log::warn;

use crate::cache::{slot_of, Digest16, LocalCache, SlotValue, UseBucket, UseTake, USE_BUCKET_ENTRIES};
use crate::host::{Host, SharedWriteError};
use crate::introspection::IntrospectionResult;

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

/// A lease in shared data: the time (ms) until which one worker holds the right to make a call
/// for every worker. Taken by compare-and-swap, so two workers never both win it.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    /// Whether to go ahead when shared data cannot be read at all (a call the requests wait
    /// on goes ahead; a background poll does not).
    take_when_unreadable: bool,
}

impl Lease {
    pub fn new(key: String, take_when_unreadable: bool) -> Self {
        Self { key, take_when_unreadable }
    }

    /// Takes the lease until `until_ms`; false while another worker holds it.
    pub fn try_take(&self, host: &impl Host, now_ms: i64, until_ms: i64) -> bool {
        let Some((bytes, cas)) = host.shared_get(&self.key) else { return self.take_when_unreadable };
        let held_until = bytes
            .and_then(|b| b.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()))
            .map_or(0, i64::from_le_bytes);
        if held_until > now_ms {
            return false;
        }
        host.shared_set(&self.key, &until_ms.to_le_bytes(), cas).is_ok()
    }

    pub fn release(&self, host: &impl Host) {
        let _ = host.shared_set(&self.key, &0i64.to_le_bytes(), None);
    }
}

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

/// What a resource lookup found.
impl SlotCodec for Rc<crate::resource_lookup::LookedUp> {
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

/// A per-worker map in front of a fixed set of shared slots, keyed by digest. The map keeps the
/// hot path free of shared-data reads and of parsing; the slots make one introspection and one
/// signature serve every worker.
pub struct TieredCache<V> {
    local: RefCell<LocalCache<V>>,
    prefix: String,
    slots: u32,
}

impl<V: SlotCodec> TieredCache<V> {
    pub fn new(keys: &SharedKeys, name: &str, slots: u32) -> Self {
        Self { local: RefCell::new(LocalCache::new(LOCAL_ENTRIES)), prefix: keys.key(name), slots }
    }

    fn slot_key(&self, digest: &Digest16) -> String {
        format!("{}.{}", self.prefix, slot_of(digest, self.slots))
    }

    /// This worker's entry (by its `local` key) first, then the shared one (by the digest
    /// `shared` computes only then: a hit here costs no SHA-256), decoded once and kept here.
    pub fn get(
        &self,
        host: &impl Host,
        local: &Digest16,
        shared: impl FnOnce() -> Option<Digest16>,
        now: i64,
    ) -> Option<V> {
        if let Some(hit) = self.local.borrow().get(local, now) {
            return Some(hit.clone());
        }
        let key = shared()?;
        let (bytes, _) = host.shared_get(&self.slot_key(&key))?;
        let bytes = bytes?;
        let slot = SlotValue::decode(&bytes)?;
        if slot.digest != key || now >= slot.expires_at {
            return None;
        }
        let expires_at = slot.expires_at;
        let value = V::decode(slot.payload.to_vec())?;
        self.local.borrow_mut().insert(*local, expires_at, value.clone(), now);
        Some(value)
    }

    /// Stores a value in both tiers (the newest entry of a shared slot wins it).
    pub fn put(
        &self,
        host: &impl Host,
        local: &Digest16,
        shared: &Digest16,
        expires_at: i64,
        value: V,
        now: i64,
    ) {
        if expires_at <= now {
            return;
        }
        if let Some(payload) = value.encode() {
            let slot = SlotValue { digest: *shared, expires_at, payload: &payload }.encode();
            // A failed write only costs a later recomputation.
            let _ = host.shared_set(&self.slot_key(shared), &slot, None);
        }
        self.local.borrow_mut().insert(*local, expires_at, value, now);
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
    pub fn create_slots(&self, host: &impl Host) {
        let empty = UseBucket::default().encode();
        for slot in 0..self.slots {
            let key = format!("{}.{slot}", self.prefix);
            if matches!(host.shared_get(&key), Some((None, _))) {
                let _ = host.shared_set(&key, &empty, None);
            }
        }
    }

    pub fn used_up(&self, host: &impl Host, digest: &Digest16, max: u32, now: i64) -> bool {
        let Some((bytes, _)) = host.shared_get(&self.key_for(digest)) else { return false };
        UseBucket::decode(bytes.as_deref().unwrap_or_default()).used(digest, now) >= max
    }

    /// Counts one use if one is left; false when the RPT is used up, or the count could not be
    /// kept. The count lives as long as the RPT (`expires_at`).
    pub fn take(&self, host: &impl Host, digest: &Digest16, max: u32, expires_at: i64, now: i64) -> bool {
        let key = self.key_for(digest);
        for _ in 0..CAS_ATTEMPTS {
            let Some((bytes, Some(cas))) = host.shared_get(&key) else { return false };
            let bucket = UseBucket::decode(bytes.as_deref().unwrap_or_default());
            let value = match bucket.take(digest, max, expires_at, now) {
                UseTake::Counted(value) => value,
                UseTake::UsedUp => return false,
                UseTake::Full => {
                    if now.saturating_sub(self.warned_at.get()) >= WARN_EVERY_S {
                        self.warned_at.set(now);
                        warn!(
                            "uma-pep: rpt_max_uses: {USE_BUCKET_ENTRIES} live RPTs already counted in slot \
                             {key}; a new RPT there is refused until one expires (raise cache_slots)"
                        );
                    }
                    return false;
                }
            };
            match host.shared_set(&key, &value, Some(cas)) {
                Ok(()) => return true,
                Err(SharedWriteError::CasMismatch) => continue,
                Err(SharedWriteError::Refused) => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{token_digest, LocalKeyer};
    use crate::host::fake::FakeHost;

    fn keys() -> SharedKeys {
        SharedKeys::new("f00d")
    }

    #[test]
    fn a_lease_is_held_by_one_worker_until_it_lapses_or_is_released() {
        let host = FakeHost::new(1_000);
        let lease = Lease::new(keys().key("session.lease"), true);
        assert!(lease.try_take(&host, 1_000, 5_000));
        assert!(!lease.try_take(&host, 2_000, 6_000), "held until 5000");
        assert!(lease.try_take(&host, 5_001, 9_000), "lapsed");
        lease.release(&host);
        assert!(lease.try_take(&host, 5_002, 9_000), "released");
    }

    #[test]
    fn a_lease_lost_to_a_concurrent_writer_is_not_taken() {
        let host = FakeHost::new(0);
        let lease = Lease::new(keys().key("resources.lease"), false);
        assert!(lease.try_take(&host, 0, 10));
        host.cas_conflicts.set(1);
        assert!(!lease.try_take(&host, 20, 30));
    }

    #[test]
    fn the_tiered_cache_reads_what_another_worker_stored() {
        let host = FakeHost::new(0);
        let one: MintedCache = TieredCache::new(&keys(), "minted", 8);
        let other: MintedCache = TieredCache::new(&keys(), "minted", 8);
        let (k1, k2) = (LocalKeyer::default(), LocalKeyer::default());
        let d = token_digest("rpt");
        one.put(&host, &k1.key("rpt"), &d, 100, Rc::from("jwt"), 10);
        assert_eq!(other.get(&host, &k2.key("rpt"), || Some(d), 50).as_deref(), Some("jwt"));
        assert_eq!(other.get(&host, &k2.key("rpt"), || Some(d), 100), None, "expired");
        let another = token_digest("another");
        assert_eq!(other.get(&host, &k2.key("another"), || Some(another), 50), None);
    }

    #[test]
    fn a_local_hit_computes_no_shared_digest() {
        let host = FakeHost::new(0);
        let cache: MintedCache = TieredCache::new(&keys(), "minted", 8);
        let k = LocalKeyer::default();
        cache.put(&host, &k.key("rpt"), &token_digest("rpt"), 100, Rc::from("jwt"), 10);
        let hit = cache.get(&host, &k.key("rpt"), || unreachable!("a local hit needs no digest"), 50);
        assert_eq!(hit.as_deref(), Some("jwt"));
    }

    #[test]
    fn an_expired_value_is_not_stored() {
        let host = FakeHost::new(0);
        let cache: MintedCache = TieredCache::new(&keys(), "minted", 8);
        let d = token_digest("rpt");
        cache.put(&host, &d, &d, 10, Rc::from("jwt"), 10);
        assert_eq!(cache.get(&host, &d, || Some(d), 5), None);
        assert!(host.shared.borrow().is_empty());
    }

    #[test]
    fn uses_are_counted_across_workers_up_to_the_maximum() {
        let host = FakeHost::new(0);
        let a = UseCounter::new(&keys(), 4);
        let b = UseCounter::new(&keys(), 4);
        a.create_slots(&host);
        let d = token_digest("rpt");
        assert!(a.take(&host, &d, 2, 1_000, 0));
        assert!(!b.used_up(&host, &d, 2, 0));
        assert!(b.take(&host, &d, 2, 1_000, 0));
        assert!(a.used_up(&host, &d, 2, 0));
        assert!(!a.take(&host, &d, 2, 1_000, 0));
    }

    #[test]
    fn a_contended_count_retries_and_gives_up_closed() {
        let host = FakeHost::new(0);
        let uses = UseCounter::new(&keys(), 1);
        uses.create_slots(&host);
        let d = token_digest("rpt");
        host.cas_conflicts.set(3);
        assert!(uses.take(&host, &d, 5, 1_000, 0), "three conflicts, then counted");
        assert!(uses.used_up(&host, &d, 1, 0), "one use counted");
        assert!(!uses.used_up(&host, &d, 2, 0), "and only one");
        host.cas_conflicts.set(CAS_ATTEMPTS as u32);
        assert!(!uses.take(&host, &d, 5, 1_000, 0), "never counted: refused");
    }

    #[test]
    fn counting_without_created_slots_refuses() {
        // No CAS token means the slot was never created: counting could erase a count.
        let host = FakeHost::new(0);
        let uses = UseCounter::new(&keys(), 1);
        assert!(!uses.take(&host, &token_digest("rpt"), 5, 1_000, 0));
    }
}
