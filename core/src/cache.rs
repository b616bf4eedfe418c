//! Cache building blocks, pure: token digests (a cache never holds a token itself), the byte
//! layout of a slot in Envoy's shared data, and a bounded per-worker map.
//!
//! Shared data has no delete and no TTL, so the shared caches are a fixed set of slots chosen
//! by digest; each value carries the digest it belongs to and its expiry, and a newer entry
//! simply overwrites an older one in the same slot.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// First 16 bytes of a SHA-256: identifies a token (or a token and a resource) without it.
pub type Digest16 = [u8; 16];

pub fn token_digest(token: &str) -> Digest16 {
    truncate(&Sha256::digest(token.as_bytes()))
}

/// A digest of a token digest and something it is combined with (a resource id, say).
pub fn keyed_digest(base: &Digest16, extra: &str) -> Digest16 {
    let mut h = Sha256::new();
    h.update(base);
    h.update([0u8]);
    h.update(extra.as_bytes());
    truncate(&h.finalize())
}

fn truncate(full: &[u8]) -> Digest16 {
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// A short identity of a configuration without its resource table (hex of 8 bytes of a
/// SHA-256): the namespace of everything a filter keeps in shared data. The table (`resources`,
/// `resource_generation`) is left out: pepctl sends a new one with every change of its
/// repository, and that must keep the caches, the PAT and the use counts (what they hold is
/// keyed by token, resource id and scope, never by a table's position). Any other change starts
/// afresh.
pub fn config_fingerprint(config: &[u8]) -> String {
    let digest = match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(config) {
        Ok(mut document) => {
            document.remove("resources");
            document.remove("resource_generation");
            Sha256::digest(serde_json::Value::Object(document).to_string())
        }
        // Not a document the filter takes anyway.
        Err(_) => Sha256::digest(config),
    };
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Keys of a worker's own caches: a keyed SipHash of the token (two random keys per worker, 128
/// bits), several times cheaper than SHA-256 on a kilobyte RPT. The hot path needs only this
/// key; the SHA-256 digest, which every worker must agree on, is computed on a miss. Without its
/// random keys nobody can make two tokens share a key.
#[derive(Debug, Clone, Default)]
pub struct LocalKeyer {
    a: std::hash::RandomState,
    b: std::hash::RandomState,
}

impl LocalKeyer {
    pub fn key(&self, token: &str) -> Digest16 {
        use std::hash::BuildHasher;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.a.hash_one(token).to_le_bytes());
        out[8..].copy_from_slice(&self.b.hash_one(token).to_le_bytes());
        out
    }

    /// The key of a token's key combined with something (a resource id, say).
    pub fn keyed(&self, base: &Digest16, extra: &str) -> Digest16 {
        use std::hash::BuildHasher;
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.a.hash_one((base, extra)).to_le_bytes());
        out[8..].copy_from_slice(&self.b.hash_one((base, extra)).to_le_bytes());
        out
    }
}

/// The slot a digest lives in, among `slots`.
pub fn slot_of(digest: &Digest16, slots: u32) -> u32 {
    let n = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % slots.max(1)
}

/// A slot's value: `digest (16) | expires_at (8, LE, unix s) | payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotValue<'a> {
    pub digest: Digest16,
    pub expires_at: i64,
    pub payload: &'a [u8],
}

const HEADER: usize = 16 + 8;

impl<'a> SlotValue<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(self.payload);
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < HEADER {
            return None;
        }
        let digest: Digest16 = bytes[..16].try_into().ok()?;
        let expires_at = i64::from_le_bytes(bytes[16..HEADER].try_into().ok()?);
        Some(Self { digest, expires_at, payload: &bytes[HEADER..] })
    }

    /// The payload, if this slot holds `digest` and it has not expired at `now`.
    pub fn payload_for(bytes: &'a [u8], digest: &Digest16, now: i64) -> Option<&'a [u8]> {
        let v = Self::decode(bytes)?;
        (v.digest == *digest && now < v.expires_at).then_some(v.payload)
    }
}

/// Live use counts kept per shared-data slot (a bucket): a new RPT is refused only when the
/// bucket its digest falls in already holds this many counts of RPTs that have not expired, so
/// `cache_slots` slots count up to `USE_BUCKET_ENTRIES * cache_slots` live RPTs at once.
pub const USE_BUCKET_ENTRIES: usize = 16;

/// One entry: `digest (16) | expires_at (8, LE, unix s) | count (4, LE)`, the layout of the
/// single-count slots before buckets (such a slot reads as a bucket of one).
const USE_ENTRY: usize = 16 + 8 + 4;

/// The use count of one RPT, kept until the RPT expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseEntry {
    pub digest: Digest16,
    pub expires_at: i64,
    pub count: u32,
}

/// The use counts of the RPTs whose digests fall in one slot. A count is only ever dropped
/// once its RPT has expired: dropping a live one would give that RPT its uses back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseBucket {
    entries: Vec<UseEntry>,
}

/// What counting one more use does to a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseTake {
    /// Counted: the bucket to store (with compare-and-swap).
    Counted(Vec<u8>),
    /// The RPT has had its `max` uses.
    UsedUp,
    /// The RPT has no count yet and the bucket is full of live counts (fail closed).
    Full,
}

impl UseBucket {
    /// Reads a bucket; bytes that do not form a whole entry are ignored (an empty slot, or the
    /// 24-byte empty value of the older layout).
    pub fn decode(bytes: &[u8]) -> Self {
        let entries = bytes
            .chunks_exact(USE_ENTRY)
            .filter_map(|e| {
                Some(UseEntry {
                    digest: e.get(..16)?.try_into().ok()?,
                    expires_at: i64::from_le_bytes(e.get(16..24)?.try_into().ok()?),
                    count: u32::from_le_bytes(e.get(24..28)?.try_into().ok()?),
                })
            })
            .collect();
        Self { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * USE_ENTRY);
        for e in &self.entries {
            out.extend_from_slice(&e.digest);
            out.extend_from_slice(&e.expires_at.to_le_bytes());
            out.extend_from_slice(&e.count.to_le_bytes());
        }
        out
    }

    /// Uses counted so far for `digest` (0 when it has no live count).
    pub fn used(&self, digest: &Digest16, now: i64) -> u32 {
        self.entries.iter().find(|e| e.digest == *digest && now < e.expires_at).map_or(0, |e| e.count)
    }

    /// Live counts held.
    pub fn live(&self, now: i64) -> usize {
        self.entries.iter().filter(|e| now < e.expires_at).count()
    }

    /// Counts one use of `digest` if it has one left, keeping its count until `expires_at`;
    /// the counts of expired RPTs make room.
    pub fn take(&self, digest: &Digest16, max: u32, expires_at: i64, now: i64) -> UseTake {
        let mut entries: Vec<UseEntry> =
            self.entries.iter().copied().filter(|e| now < e.expires_at).collect();
        if let Some(mine) = entries.iter_mut().find(|e| e.digest == *digest) {
            if mine.count >= max {
                return UseTake::UsedUp;
            }
            mine.count = mine.count.saturating_add(1);
            mine.expires_at = mine.expires_at.max(expires_at);
        } else if max == 0 {
            return UseTake::UsedUp;
        } else if entries.len() >= USE_BUCKET_ENTRIES {
            return UseTake::Full;
        } else {
            entries.push(UseEntry { digest: *digest, expires_at, count: 1 });
        }
        UseTake::Counted(Self { entries }.encode())
    }
}

/// A per-worker map with expiry and a size bound: the first stop of every lookup, so the hot
/// path reads no shared data and parses nothing.
#[derive(Debug)]
pub struct LocalCache<V> {
    entries: HashMap<Digest16, (i64, V)>,
    max_entries: usize,
}

impl<V> LocalCache<V> {
    pub fn new(max_entries: usize) -> Self {
        Self { entries: HashMap::new(), max_entries: max_entries.max(1) }
    }

    pub fn get(&self, digest: &Digest16, now: i64) -> Option<&V> {
        self.entries.get(digest).filter(|(exp, _)| now < *exp).map(|(_, v)| v)
    }

    pub fn insert(&mut self, digest: Digest16, expires_at: i64, value: V, now: i64) {
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, (exp, _)| now < *exp);
            if self.entries.len() >= self.max_entries {
                // Still full of live entries: start over rather than grow (bounded memory).
                self.entries.clear();
            }
        }
        self.entries.insert(digest, (expires_at, value));
    }

    pub fn remove(&mut self, digest: &Digest16) {
        self.entries.remove(digest);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_differ_by_token_and_by_key() {
        let a = token_digest("a");
        assert_ne!(a, token_digest("b"));
        assert_eq!(a, token_digest("a"));
        assert_ne!(keyed_digest(&a, "r1"), keyed_digest(&a, "r2"));
        assert_ne!(keyed_digest(&a, "r1"), a);
    }

    #[test]
    fn local_keys_are_stable_per_worker_and_tell_tokens_and_resources_apart() {
        let k = LocalKeyer::default();
        assert_eq!(k.key("a"), k.key("a"));
        assert_ne!(k.key("a"), k.key("b"));
        assert_ne!(k.keyed(&k.key("a"), "r1"), k.keyed(&k.key("a"), "r2"));
        assert_ne!(k.keyed(&k.key("a"), "r1"), k.key("a"));
        // Another worker's keys differ: a local key is no shared identity.
        assert_ne!(LocalKeyer::default().key("a"), k.key("a"));
    }

    #[test]
    fn fingerprints_tell_configurations_apart() {
        let a = config_fingerprint(br#"{"issuer":"a"}"#);
        assert_eq!(a.len(), 16);
        assert_eq!(a, config_fingerprint(br#"{"issuer":"a"}"#));
        assert_ne!(a, config_fingerprint(br#"{"issuer":"b"}"#));
    }

    #[test]
    fn a_new_resource_table_keeps_the_fingerprint() {
        let a = config_fingerprint(br#"{"issuer":"a","resources":[]}"#);
        let b = config_fingerprint(
            br#"{"issuer":"a","resources":[{"id":"r","uri":"/r"}],"resource_generation":"g1"}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a, config_fingerprint(br#"{"issuer":"a"}"#));
        assert_ne!(a, config_fingerprint(br#"{"issuer":"a","rpt_max_uses":3,"resources":[]}"#));
    }

    #[test]
    fn slots_are_in_range() {
        for i in 0..1000 {
            assert!(slot_of(&token_digest(&i.to_string()), 7) < 7);
        }
        assert_eq!(slot_of(&token_digest("x"), 0), 0);
    }

    #[test]
    fn slot_values_round_trip_and_check_owner_and_expiry() {
        let d = token_digest("t");
        let bytes = SlotValue { digest: d, expires_at: 100, payload: b"hello" }.encode();
        assert_eq!(SlotValue::decode(&bytes).unwrap().payload, b"hello");
        assert_eq!(SlotValue::payload_for(&bytes, &d, 99), Some(&b"hello"[..]));
        assert_eq!(SlotValue::payload_for(&bytes, &d, 100), None);
        assert_eq!(SlotValue::payload_for(&bytes, &token_digest("other"), 50), None);
        assert_eq!(SlotValue::decode(b"short"), None);
    }

    fn d(n: u32) -> Digest16 {
        token_digest(&n.to_string())
    }

    #[test]
    fn use_bucket_counts_up_to_max_and_round_trips() {
        let bucket = UseBucket::default();
        let UseTake::Counted(bytes) = bucket.take(&d(1), 2, 100, 0) else { panic!("first use") };
        let bucket = UseBucket::decode(&bytes);
        assert_eq!(bucket.used(&d(1), 0), 1);
        let UseTake::Counted(bytes) = bucket.take(&d(1), 2, 100, 1) else { panic!("second use") };
        let bucket = UseBucket::decode(&bytes);
        assert_eq!(bucket.used(&d(1), 1), 2);
        assert_eq!(bucket.take(&d(1), 2, 100, 2), UseTake::UsedUp);
        assert_eq!(bucket.used(&d(2), 2), 0);
        assert_eq!(UseBucket::default().take(&d(1), 0, 100, 0), UseTake::UsedUp);
    }

    #[test]
    fn use_bucket_full_of_live_counts_refuses_new_rpts_but_never_drops_a_live_count() {
        let mut bucket = UseBucket::default();
        for i in 0..USE_BUCKET_ENTRIES {
            let n = u32::try_from(i).unwrap();
            let UseTake::Counted(bytes) = bucket.take(&d(n), 1, 100 + i64::from(n), 0) else {
                panic!("room")
            };
            bucket = UseBucket::decode(&bytes);
        }
        assert_eq!(bucket.live(0), USE_BUCKET_ENTRIES);
        // Full of live counts: a new RPT is refused (fail closed), the used-up ones stay used up.
        assert_eq!(bucket.take(&d(999), 1, 1000, 50), UseTake::Full);
        for n in 0..16 {
            assert_eq!(bucket.take(&d(n), 1, 1000, 50), UseTake::UsedUp);
        }
        // Once the first RPT has expired its count makes room, and only its count goes.
        let UseTake::Counted(bytes) = bucket.take(&d(999), 1, 1000, 100) else { panic!("expired room") };
        let bucket = UseBucket::decode(&bytes);
        assert_eq!(bucket.live(100), USE_BUCKET_ENTRIES);
        assert_eq!(bucket.used(&d(0), 100), 0);
        for n in 1..16 {
            assert_eq!(bucket.used(&d(n), 100), 1);
        }
    }

    #[test]
    fn use_bucket_reads_the_single_count_layout_and_ignores_stray_bytes() {
        let old = SlotValue { digest: d(7), expires_at: 100, payload: &3u32.to_le_bytes() }.encode();
        assert_eq!(UseBucket::decode(&old).used(&d(7), 50), 3);
        let empty_old = SlotValue { digest: [0; 16], expires_at: 0, payload: &[] }.encode();
        assert_eq!(UseBucket::decode(&empty_old), UseBucket::default());
        assert_eq!(UseBucket::decode(b"short").live(0), 0);
    }

    #[test]
    fn local_cache_expires_and_stays_bounded() {
        let mut c = LocalCache::new(3);
        for i in 0..3 {
            c.insert(token_digest(&i.to_string()), 10, i, 0);
        }
        assert_eq!(c.get(&token_digest("1"), 5), Some(&1));
        assert_eq!(c.get(&token_digest("1"), 10), None);
        // Full of live entries: a new one resets the map.
        c.insert(token_digest("new"), 10, 9, 5);
        assert_eq!(c.len(), 1);
        // Full with expired entries: those go first.
        let mut c = LocalCache::new(2);
        c.insert(token_digest("old"), 1, 0, 0);
        c.insert(token_digest("live"), 100, 1, 0);
        c.insert(token_digest("third"), 100, 2, 50);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&token_digest("live"), 60), Some(&1));
    }
}
