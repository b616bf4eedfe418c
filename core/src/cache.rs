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

/// A short identity of a configuration (hex of 8 bytes of its SHA-256): the namespace of
/// everything a filter keeps in shared data.
pub fn config_fingerprint(config: &[u8]) -> String {
    Sha256::digest(config).iter().take(8).map(|b| format!("{b:02x}")).collect()
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
    fn fingerprints_tell_configurations_apart() {
        let a = config_fingerprint(br#"{"issuer":"a"}"#);
        assert_eq!(a.len(), 16);
        assert_eq!(a, config_fingerprint(br#"{"issuer":"a"}"#));
        assert_ne!(a, config_fingerprint(br#"{"issuer":"b"}"#));
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
