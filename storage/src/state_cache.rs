//! Caches of decoded operator state in front of the state tables, so a
//! group, join key or window touched in every epoch costs no RocksDB read
//! and no decoding after the first (DESIGN.md, "State").
//!
//! Each stateful operator instance keeps its own [`StateCache`] of decoded
//! entries; every cache of the process charges one [`CacheBudget`]
//! (`state.cache-mb`). When the budget is exceeded, the cache that is
//! inserting evicts its own least recently used entries until the process
//! is back under the budget (or only the new entry is left), so a busy
//! operator takes room from its own cold entries first and no cache grows
//! without bound.
//!
//! What a cache holds must never be newer or older than what its operator
//! wrote to the state table: operators update the cache in the same step
//! as the table (write-through), so an evicted entry is simply read back
//! from the table, whose uncommitted writes overlay the store. A cache
//! lives and dies with its operator instance: after a failure or restart
//! operators start with empty caches, so recovery and rescaling read only
//! the committed store.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::completeness::Completeness;
use crate::lagging::{LaggingBytes, SharedBytes};

/// What one cached entry costs beyond its own bytes: the map node, the
/// list links and the allocation headers.
pub const CACHE_ENTRY_OVERHEAD: usize = 128;

/// The process's budget for cached state, in bytes.
#[derive(Debug)]
pub struct CacheBudget {
    limit: usize,
    used: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheBudget {
    /// A budget of `limit` bytes (0: nothing is cached).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes all caches hold now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Lookups served from a cache and lookups that went to the state
    /// tables, since the process started.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Adds look-ups served from a cache and look-ups that went to the
    /// state tables.
    fn add_lookups(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }

    fn over(&self) -> bool {
        self.used() > self.limit
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// A share of the [`CacheBudget`] held by an operator that keeps its own
/// cached entries (a table of group slots rather than a [`StateCache`]):
/// it adds and subtracts what its entries cost and evicts when the process
/// is over budget. Released when dropped.
#[derive(Debug)]
pub struct CacheCharge {
    budget: Arc<CacheBudget>,
    /// The share; the budget follows it within [`UNSETTLED_BYTES`], so a
    /// group changed costs no update of a counter every thread shares.
    bytes: LaggingBytes,
}

impl CacheCharge {
    /// Nothing charged yet to `budget`.
    pub fn new(budget: Arc<CacheBudget>) -> Self {
        Self {
            budget,
            bytes: LaggingBytes::default(),
        }
    }

    /// The budget's limit in bytes (0: nothing is to be kept).
    pub fn limit(&self) -> usize {
        self.budget.limit()
    }

    /// Charges `bytes` more.
    pub fn add(&mut self, bytes: usize) {
        self.bytes.bytes += bytes;
        self.bytes.settle_beyond(&*self.budget, UNSETTLED_BYTES);
    }

    /// Releases `bytes` of what was charged.
    pub fn sub(&mut self, bytes: usize) {
        self.bytes.bytes -= bytes.min(self.bytes.bytes);
        self.bytes.settle_beyond(&*self.budget, UNSETTLED_BYTES);
    }

    /// What this share holds now.
    pub fn bytes(&self) -> usize {
        self.bytes.bytes
    }

    /// How far the process's caches are over the budget, in bytes (this
    /// share settled first).
    pub fn excess(&mut self) -> usize {
        self.bytes.settle_beyond(&*self.budget, 0);
        self.budget.used().saturating_sub(self.budget.limit())
    }

    /// Counts `hits` lookups served from memory and `misses` that went to
    /// the state table (an operator counting many adds them up first: the
    /// counters are shared by every thread).
    pub fn count_lookups(&self, hits: u64, misses: u64) {
        self.budget.add_lookups(hits, misses);
    }
}

impl Drop for CacheCharge {
    fn drop(&mut self) {
        self.bytes.bytes = 0;
        self.bytes.settle_beyond(&*self.budget, 0);
    }
}

impl SharedBytes for CacheBudget {
    fn charge(&self, bytes: usize) {
        CacheBudget::charge(self, bytes);
    }

    fn release(&self, bytes: usize) {
        CacheBudget::release(self, bytes);
    }
}

/// A least-recently-used map of decoded state entries of one operator
/// instance, charged to the process's [`CacheBudget`].
pub struct StateCache<K: Hash + Eq, V> {
    entries: lru::LruCache<K, (V, usize)>,
    budget: Arc<CacheBudget>,
    /// What this cache's entries cost; the budget follows it within
    /// [`UNSETTLED_BYTES`] when entries change in place, exactly when
    /// entries come and go (so a row written into a cached entry costs no
    /// shared counter update).
    charged: LaggingBytes,
    /// Whether every entry the state table holds is cached (set by an
    /// operator that started on empty state and caches everything it
    /// writes), but for the keys evicted since: a miss on any other key
    /// means the entry does not exist, with no state read.
    completeness: Completeness,
    /// Look-ups not yet added to the budget's shared counters: misses,
    /// hits.
    lookups: [u64; 2],
}

/// What a cache's or an operator's share may differ from what the budget
/// holds for it before it settles.
const UNSETTLED_BYTES: usize = 64 << 10;

/// Look-ups a cache counts before adding them to the shared counters.
const LOOKUPS_PER_REPORT: u64 = 4096;

impl<K: Hash + Eq, V> std::fmt::Debug for StateCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("entries", &self.entries.len())
            .field("charged", &self.charged.bytes)
            .finish()
    }
}

impl<K: Hash + Eq, V> StateCache<K, V> {
    /// An empty cache charging `budget`.
    pub fn new(budget: Arc<CacheBudget>) -> Self {
        Self {
            entries: lru::LruCache::unbounded(),
            budget,
            charged: LaggingBytes::default(),
            completeness: Completeness::default(),
            lookups: [0, 0],
        }
    }

    /// Counts a look-up as a hit or a miss, adding the counts to the
    /// shared counters now and then (every thread updates those).
    fn count(lookups: &mut [u64; 2], budget: &CacheBudget, hit: bool) {
        lookups[usize::from(hit)] += 1;
        if lookups[0] + lookups[1] >= LOOKUPS_PER_REPORT {
            Self::report_lookups(lookups, budget);
        }
    }

    fn report_lookups(lookups: &mut [u64; 2], budget: &CacheBudget) {
        let [misses, hits] = std::mem::take(lookups);
        budget.add_lookups(hits, misses);
    }

    /// Says that the state table behind the cache is empty and that the
    /// operator will cache every entry it writes: misses then mean absent
    /// until the first eviction.
    pub fn assume_complete(&mut self) {
        if self.budget.limit() > 0 {
            self.completeness.assume();
        }
    }

    /// Whether a miss on `key` means the entry does not exist.
    pub fn knows_absent<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.completeness.knows_absent(key)
    }

    /// Ends completeness, uncharging what it remembered.
    fn lose_completeness(&mut self) {
        let freed = self.completeness.bytes();
        self.completeness.lose();
        self.uncharge(freed);
    }

    /// The entry at `key`, marked as used most recently; counts a hit or a
    /// miss.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.entries.get_mut(key).map(|(value, _)| value);
        Self::count(&mut self.lookups, &self.budget, found.is_some());
        found
    }

    /// Whether `key` is cached, without marking it used or counting.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.contains(key)
    }

    /// The entry at `key` if cached, without marking it used or counting.
    pub fn peek_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.peek_mut(key).map(|(value, _)| value)
    }

    /// Takes the entry at `key` out of the cache (the caller puts it back
    /// with [`StateCache::insert`] once it changed); counts a hit or miss.
    pub fn take<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let taken = self.entries.pop(key);
        Self::count(&mut self.lookups, &self.budget, taken.is_some());
        let (value, cost) = taken?;
        self.uncharge(cost);
        Some(value)
    }

    /// Caches `value` at `key`, costing `cost` bytes (its own bytes; the
    /// entry overhead is added), then evicts the least recently used
    /// entries while the process is over its budget.
    pub fn insert(&mut self, key: K, value: V, cost: usize) {
        self.insert_evicting(key, value, cost);
    }

    /// Like [`StateCache::insert`], and returns what is not cached after
    /// it: the entries evicted to make room, or the new entry itself when
    /// the budget is nothing. An operator whose entries hold writes not yet
    /// in its state table writes those out.
    pub fn insert_evicting(&mut self, key: K, value: V, cost: usize) -> Vec<(K, V)> {
        if self.budget.limit() == 0 {
            self.lose_completeness();
            return vec![(key, value)];
        }
        let cost = cost + CACHE_ENTRY_OVERHEAD;
        self.charged.bytes += cost;
        self.charged.settle_beyond(&*self.budget, 0);
        if let Some((_, old)) = self.entries.put(key, (value, cost)) {
            self.uncharge(old);
        }
        let mut evicted = vec![];
        while self.budget.over() && self.entries.len() > 1 {
            match self.entries.pop_lru() {
                Some((key, (value, cost))) => {
                    let before = self.completeness.bytes();
                    self.completeness.evict(&key, self.budget.limit() / 4);
                    self.charged.bytes = self.charged.bytes + self.completeness.bytes() - before;
                    self.uncharge(cost);
                    evicted.push((key, value));
                }
                None => break,
            }
        }
        evicted
    }

    /// Changes what the entry at `key` costs (it grew or shrank in place).
    pub fn recharge<Q>(&mut self, key: &Q, cost: usize)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.update(key, |_| ((), cost));
    }

    /// Changes the entry at `key` in place with `change`, which returns
    /// what it gives back and the entry's new cost; None (and `change` not
    /// called) when the key is not cached. Neither counted as a look-up
    /// nor marked used.
    pub fn update<Q, R>(&mut self, key: &Q, change: impl FnOnce(&mut V) -> (R, usize)) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, charged) = self.entries.peek_mut(key)?;
        let (result, cost) = change(value);
        let cost = cost + CACHE_ENTRY_OVERHEAD;
        let old = std::mem::replace(charged, cost);
        self.charged.bytes = self.charged.bytes + cost - old;
        self.charged.settle_beyond(&*self.budget, UNSETTLED_BYTES);
        Some(result)
    }

    /// Forgets the entry at `key`.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, cost) = self.entries.pop(key)?;
        self.uncharge(cost);
        Some(value)
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.completeness.lose();
        self.entries.clear();
        self.charged.bytes = 0;
        self.charged.settle_beyond(&*self.budget, 0);
    }

    /// Entries cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn uncharge(&mut self, cost: usize) {
        self.charged.bytes = self.charged.bytes.saturating_sub(cost);
        self.charged.settle_beyond(&*self.budget, 0);
    }
}

impl<K: Hash + Eq, V> Drop for StateCache<K, V> {
    fn drop(&mut self) {
        Self::report_lookups(&mut self.lookups, &self.budget);
        self.charged.bytes = 0;
        self.charged.settle_beyond(&*self.budget, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entries_go_when_the_budget_is_full() {
        let budget = Arc::new(CacheBudget::new(3 * (100 + CACHE_ENTRY_OVERHEAD)));
        let mut cache = StateCache::new(Arc::clone(&budget));
        for key in 0..3 {
            cache.insert(key, key * 10, 100);
        }
        assert_eq!(cache.len(), 3);
        // Touch 0: 1 is now the least recently used.
        assert_eq!(cache.get_mut(&0), Some(&mut 0));
        cache.insert(3, 30, 100);
        assert_eq!(cache.len(), 3);
        assert!(cache.contains(&0) && !cache.contains(&1));
        assert_eq!(budget.used(), 3 * (100 + CACHE_ENTRY_OVERHEAD));
        // A taken entry is no longer charged.
        assert_eq!(cache.take(&0), Some(0));
        assert_eq!(budget.used(), 2 * (100 + CACHE_ENTRY_OVERHEAD));
        drop(cache);
        assert_eq!(budget.used(), 0);
        let (hits, misses) = budget.hits_and_misses();
        assert_eq!((hits, misses), (2, 0));
    }

    #[test]
    fn an_eviction_ends_completeness_for_the_evicted_key_only() {
        let budget = Arc::new(CacheBudget::new(2 * (10 + CACHE_ENTRY_OVERHEAD)));
        let mut cache = StateCache::new(Arc::clone(&budget));
        cache.assume_complete();
        cache.insert(1, (), 10);
        cache.insert(2, (), 10);
        assert!(cache.knows_absent(&1) && cache.knows_absent(&4));
        cache.insert(3, (), 10);
        assert!(cache.get_mut(&1).is_none());
        assert!(!cache.knows_absent(&1));
        assert!(cache.knows_absent(&4));
        // Evicted keys are remembered within a quarter of the budget;
        // beyond, no miss means absent any more.
        for key in 4..20 {
            cache.insert(key, (), 10);
        }
        assert!(!cache.knows_absent(&100));
        let mut none = StateCache::new(Arc::new(CacheBudget::new(0)));
        none.assume_complete();
        assert!(!none.knows_absent(&1));
        none.insert(1, (), 1);
        assert!(!none.knows_absent(&2));
    }

    #[test]
    fn caches_share_the_budget_and_a_zero_budget_caches_nothing() {
        let budget = Arc::new(CacheBudget::new(2 * (10 + CACHE_ENTRY_OVERHEAD)));
        let mut a = StateCache::new(Arc::clone(&budget));
        let mut b = StateCache::new(Arc::clone(&budget));
        a.insert("a1", (), 10);
        a.insert("a2", (), 10);
        // b's insert goes over: b has only its new entry, so a keeps both
        // until a inserts again.
        b.insert("b1", (), 10);
        assert_eq!((a.len(), b.len()), (2, 1));
        a.insert("a3", (), 10);
        assert_eq!(a.len(), 1);
        assert!(budget.used() <= 2 * (10 + CACHE_ENTRY_OVERHEAD));

        let none = Arc::new(CacheBudget::new(0));
        let mut c = StateCache::new(none);
        c.insert(1, 1, 1);
        assert!(c.is_empty());
    }
}
