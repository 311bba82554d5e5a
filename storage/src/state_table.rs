//! Operator state: one [`StateTable`] per stateful operator instance, its
//! rows keyed by key group so state can be redistributed when parallelism
//! changes (DESIGN.md, "State").
//!
//! Writes of the running epoch stay in memory; at a barrier
//! [`StateTable::seal_epoch`] moves them into the epoch's [`WriteSet`], which
//! the barrier manager commits atomically with every other operator's
//! writes. Until that commit lands they stay readable from memory, so reads
//! see committed rows overlaid by the table's own newer writes.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::ops::Bound;
use std::sync::Arc;

use crate::StorageResult;
use crate::WriteSet;
use crate::epoch_buffer::{BufferCharge, ENTRY_OVERHEAD};
use crate::store::Store;

/// Key groups per stateful operator (Flink's default maximum parallelism).
/// Fixed for the life of the state: changing it would rehash every key.
pub const KEY_GROUPS: u16 = 128;

/// The key group of an encoded partition key. The hash (FNV-1a) is part of
/// the stored state's layout, so it must never change.
pub fn key_group(key: &[u8]) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(KEY_GROUPS)) as u16
}

#[derive(Debug, Clone)]
struct Pending {
    value: Option<Vec<u8>>,
    /// Written this epoch by [`StateTable::insert_new`] with the store
    /// holding no row at the key: deleting it before the epoch is sealed
    /// leaves nothing to write.
    fresh: bool,
}

/// The state rows of one operator, addressed by key group and key.
#[derive(Debug)]
pub struct StateTable {
    store: Store,
    id: u64,
    /// The running epoch's writes, by key group (big endian) + key.
    pending: BTreeMap<Vec<u8>, Pending>,
    /// What `pending` costs the epoch buffer.
    pending_cost: usize,
    /// The writes of the epoch sealed last, readable until the next seal
    /// (by then the barrier manager has committed them).
    sealed: BTreeMap<Vec<u8>, Pending>,
    sealed_epoch: Option<u64>,
    sealed_cost: usize,
    /// The writes' share of the store's [`EpochBuffer`](crate::EpochBuffer).
    charge: BufferCharge,
}

/// What a pending write costs the epoch buffer.
fn cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

fn local_key(group: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The entries of `map` under `start` (a key group and key prefix).
fn prefixed<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    start: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    map.range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(start))
}

impl StateTable {
    /// The state table `id` of `store`.
    pub fn new(store: Store, id: u64) -> Self {
        Self {
            charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
            store,
            id,
            pending: BTreeMap::new(),
            pending_cost: 0,
            sealed: BTreeMap::new(),
            sealed_epoch: None,
            sealed_cost: 0,
        }
    }

    /// The table's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the table holds no row, committed or pending.
    pub fn is_empty(&self) -> StorageResult<bool> {
        Ok(self.pending.values().all(|p| p.value.is_none())
            && self.sealed.values().all(|p| p.value.is_none())
            && self.store.state_is_empty(self.id)?)
    }

    /// The value at `key` in key group `group`.
    pub fn get(&self, group: u16, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let local = local_key(group, key);
        if let Some(p) = self.pending.get(&local) {
            return Ok(p.value.clone());
        }
        if let Some(p) = self.sealed.get(&local) {
            return Ok(p.value.clone());
        }
        self.store.get_state(self.id, &local)
    }

    /// Sets `key` in key group `group` to `value`.
    pub fn put(&mut self, group: u16, key: &[u8], value: Vec<u8>) {
        self.insert(local_key(group, key), Some(value), false);
    }

    /// Sets `key`, which the caller knows holds no row (a row inserted
    /// under its stream key: a key is inserted again only after its
    /// delete), to `value`. If it is deleted again before the epoch is
    /// sealed, neither write reaches the store.
    pub fn insert_new(&mut self, group: u16, key: &[u8], value: Vec<u8>) {
        self.insert(local_key(group, key), Some(value), true);
    }

    /// Removes `key` from key group `group`.
    pub fn delete(&mut self, group: u16, key: &[u8]) {
        self.insert(local_key(group, key), None, false);
    }

    /// Writes `value` at `key` (None deletes it). `new` says the store holds
    /// no row there; a write stays fresh while it replaces a fresh write of
    /// the running epoch, and a pending write of any other kind makes it
    /// not. Deleting a fresh write forgets it: nothing reaches the store.
    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>, new: bool) {
        let mut pending = Pending { value, fresh: new };
        match self.pending.entry(key) {
            Entry::Occupied(mut entry) => {
                let old = entry.get();
                pending.fresh = old.fresh;
                let old = cost(entry.key(), &old.value);
                self.pending_cost -= old;
                self.charge.sub(old);
                if pending.fresh && pending.value.is_none() {
                    entry.remove();
                    return;
                }
                let new = cost(entry.key(), &pending.value);
                self.pending_cost += new;
                self.charge.add(new);
                entry.insert(pending);
            }
            Entry::Vacant(entry) => {
                let new = cost(entry.key(), &pending.value);
                self.pending_cost += new;
                self.charge.add(new);
                entry.insert(pending);
            }
        }
    }

    /// Every row of key group `group` whose key starts with `prefix`, in key
    /// order, as (key without the group, value).
    pub fn scan_prefix(&self, group: u16, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = local_key(group, prefix);
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .store
            .scan_state(self.id, &start)?
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for (key, p) in prefixed(&self.sealed, &start) {
            merged.insert(key.clone(), p.value.clone());
        }
        for (key, p) in prefixed(&self.pending, &start) {
            merged.insert(key.clone(), p.value.clone());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k[2..].to_vec(), v)))
            .collect())
    }

    /// Ends epoch `epoch`: adds the epoch's writes to `writes` and forgets
    /// writes of earlier epochs, which the barrier manager has committed
    /// before injecting `epoch`'s barrier.
    pub fn seal_epoch(&mut self, epoch: u64, writes: &mut WriteSet) {
        let running = std::mem::take(&mut self.pending);
        for (key, p) in &running {
            match &p.value {
                Some(value) => writes.put_state(self.id, key, value),
                None => writes.delete_state(self.id, key),
            }
        }
        let running_cost = std::mem::take(&mut self.pending_cost);
        if self.sealed_epoch.is_some_and(|sealed| sealed >= epoch) {
            // Sealed again (nothing committed in between): keep both.
            self.sealed.extend(running);
            self.sealed_cost += running_cost;
        } else {
            self.charge.sub(self.sealed_cost);
            self.sealed = running;
            self.sealed_cost = running_cost;
        }
        self.sealed_epoch = Some(epoch);
    }

    /// Uncommitted writes held in memory.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.sealed.len()
    }
}

/// Adds the deletion of every row of state table `id` to `writes`.
pub fn delete_state_table(id: u64, writes: &mut WriteSet) {
    delete_state_tables(id, id + 1, writes);
}

/// Adds the deletion of every row of state tables `from..to` to `writes`.
pub fn delete_state_tables(from: u64, to: u64, writes: &mut WriteSet) {
    writes.delete_state_tables(from, to);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn pending_writes_overlay_committed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut table = StateTable::new(store.clone(), 3);
        table.put(1, b"a", b"1".to_vec());
        table.put(1, b"b", b"2".to_vec());
        table.put(2, b"a", b"x".to_vec());
        let mut writes = WriteSet::new();
        table.seal_epoch(1, &mut writes);
        assert_eq!(writes.len(), 3);
        store.write(writes).unwrap();

        table.delete(1, b"a");
        table.put(1, b"c", b"3".to_vec());
        assert_eq!(table.get(1, b"a").unwrap(), None);
        assert_eq!(table.get(1, b"b").unwrap(), Some(b"2".to_vec()));
        let rows = table.scan_prefix(1, b"").unwrap();
        assert_eq!(
            rows,
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        let mut writes = WriteSet::new();
        table.seal_epoch(2, &mut writes);
        // Epoch 1's writes are forgotten, epoch 2's kept until the next seal.
        assert_eq!(writes.len(), 2);
        assert_eq!(table.pending_len(), 2);
        store.write(writes).unwrap();
        // Only the two kept writes are charged to the epoch buffer (which
        // the charge settles with beyond its slack).
        let kept = 2 * (3 + ENTRY_OVERHEAD) + 1;
        assert_eq!(table.charge.bytes(), kept);
        drop(table);
        assert_eq!(store.epoch_buffer().held(), 0);

        let fresh = StateTable::new(store.clone(), 3);
        assert_eq!(fresh.scan_prefix(1, b"").unwrap().len(), 2);
        assert_eq!(fresh.get(2, b"a").unwrap(), Some(b"x".to_vec()));
        let mut writes = WriteSet::new();
        delete_state_table(3, &mut writes);
        store.write(writes).unwrap();
        assert!(fresh.scan_prefix(1, b"").unwrap().is_empty());
    }

    #[test]
    fn a_new_row_deleted_in_its_epoch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut table = StateTable::new(store.clone(), 4);
        // Inserted and deleted in one epoch, updated in between: gone.
        table.insert_new(1, b"gone", b"1".to_vec());
        table.put(1, b"gone", b"2".to_vec());
        table.delete(1, b"gone");
        // Inserted, sealed, then deleted: the delete is written.
        table.insert_new(1, b"kept", b"1".to_vec());
        assert_eq!(table.get(1, b"gone").unwrap(), None);
        assert_eq!(table.pending_len(), 1);
        let mut writes = WriteSet::new();
        table.seal_epoch(1, &mut writes);
        assert_eq!(writes.len(), 1);
        store.write(writes).unwrap();
        table.delete(1, b"kept");
        // Deleted, inserted again and deleted in one epoch: the first
        // delete still reaches the store.
        table.put(1, b"back", b"1".to_vec());
        let mut writes = WriteSet::new();
        table.seal_epoch(2, &mut writes);
        store.write(writes).unwrap();
        table.delete(1, b"back");
        table.insert_new(1, b"back", b"2".to_vec());
        table.delete(1, b"back");
        let mut writes = WriteSet::new();
        table.seal_epoch(3, &mut writes);
        assert_eq!(writes.len(), 1);
        store.write(writes).unwrap();
        let reopened = StateTable::new(store.clone(), 4);
        assert!(reopened.scan_prefix(1, b"").unwrap().is_empty());
        drop(table);
        assert_eq!(store.epoch_buffer().held(), 0);
    }
}
