//! Whether a cache of state knows that a key it misses is absent from its
//! state table. A cache that started on empty state and holds every entry
//! its operator writes is complete: a miss is a new key, with no state
//! read. Evicting an entry used to end that for every key; instead the
//! hashes of evicted keys are remembered (charged 16 bytes each with their
//! slot in the set, against the hundreds an entry costs), so only a miss
//! on one of those (or on a key sharing its hash) reads the table, and a
//! new key still costs nothing.
//! When the remembered hashes would take more than a quarter of the cache
//! budget, completeness ends as before.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

/// What one remembered hash costs: the value and its table slot.
pub const EVICTED_KEY_COST: usize = 16;

/// Hashes already hashed: the set's own hasher passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Whether misses of one cache mean absent, key by key.
#[derive(Debug, Default)]
pub struct Completeness {
    complete: bool,
    evicted: HashSet<u64, BuildHasherDefault<Prehashed>>,
    hasher: RandomState,
}

impl Completeness {
    /// Says the state table is empty and every write will be cached.
    pub fn assume(&mut self) {
        self.complete = true;
        self.evicted.clear();
    }

    /// Ends completeness for good.
    pub fn lose(&mut self) {
        self.complete = false;
        self.evicted = HashSet::default();
    }

    /// Whether a miss on `key` means it is absent from the table.
    pub fn knows_absent<Q: Hash + ?Sized>(&self, key: &Q) -> bool {
        self.complete && !self.evicted.contains(&self.hasher.hash_one(key))
    }

    /// Remembers that `key` was evicted (it may be in the table), or ends
    /// completeness when the hashes would cost more than `limit` bytes;
    /// [`Completeness::bytes`] says what they take after.
    pub fn evict<Q: Hash + ?Sized>(&mut self, key: &Q, limit: usize) {
        if !self.complete {
            return;
        }
        if (self.evicted.len() + 1) * EVICTED_KEY_COST > limit {
            self.lose();
            return;
        }
        self.evicted.insert(self.hasher.hash_one(key));
    }

    /// The bytes the remembered hashes take.
    pub fn bytes(&self) -> usize {
        self.evicted.len() * EVICTED_KEY_COST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicted_keys_are_no_longer_known_absent_and_others_still_are() {
        let mut c = Completeness::default();
        assert!(!c.knows_absent(b"a".as_slice()));
        c.assume();
        assert!(c.knows_absent(b"a".as_slice()));
        c.evict(b"a".as_slice(), 1 << 20);
        c.evict(b"a".as_slice(), 1 << 20);
        assert_eq!(c.bytes(), EVICTED_KEY_COST);
        assert!(!c.knows_absent(b"a".as_slice()));
        assert!(c.knows_absent(b"b".as_slice()));
        // A Vec key hashes as the slice it borrows as.
        assert!(!c.knows_absent(&b"a".to_vec()));
        // Too many hashes for the limit: complete no more.
        c.evict(b"c".as_slice(), EVICTED_KEY_COST);
        assert!(!c.knows_absent(b"b".as_slice()));
        assert_eq!(c.bytes(), 0);
    }
}
