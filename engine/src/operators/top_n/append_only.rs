//! Top-N over an input that only inserts (Flink's and RisingWave's
//! append-only Top-N): a row that falls out of its partition's first
//! `offset + limit` can never come back, so only those rows are kept, and
//! each partition's rows, with what was last emitted for it, are held in
//! memory (a [`StateCache`] charged to `state.cache-mb`). A row that does
//! not make it into its partition's top costs one comparison and no state
//! write; a barrier compares cached rows instead of scanning the store.
//!
//! The cache is written through: every change goes to the state tables in
//! the same step, so an evicted partition is read back from them.

use std::sync::Arc;

use runnel_storage::{StateCache, StateTable, Store};

use super::{Ranked, split_len};
use crate::{EngineError, EngineResult};

/// A row as emitted: (stream key, (rank, row)).
type EmittedRow = (Vec<u8>, (i64, Vec<u8>));

/// One partition in memory.
#[derive(Debug, Default)]
struct Partition {
    /// Sort key + stream key (the rows table's key after the partition)
    /// and the stored value, ascending; at most `kept` of them.
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// What the last barrier emitted: (stream key, (rank, row)), by
    /// stream key (a vector: a map's smallest node would cost more than
    /// the one row most partitions emit).
    emitted: Vec<EmittedRow>,
    /// The bytes of `rows` and `emitted`, for the cache's budget.
    bytes: usize,
}

/// What one kept row costs beyond its bytes (two vectors and a map node).
const ROW_OVERHEAD: usize = 96;

impl Partition {
    fn emitted_bytes<'a>(emitted: impl IntoIterator<Item = &'a EmittedRow>) -> usize {
        emitted
            .into_iter()
            .map(|(key, (_, row))| key.len() + row.len() + 8 + ROW_OVERHEAD)
            .sum()
    }
}

/// The kept rows of every partition this instance saw lately.
pub(super) struct KeptRows {
    /// How many rows of a partition can still be output: offset + limit.
    kept: usize,
    partitions: StateCache<Vec<u8>, Partition>,
}

impl KeptRows {
    /// Keeps `kept` rows per partition; the cache assumes it knows every
    /// partition while `empty` state is all there is.
    pub(super) fn new(store: &Store, kept: usize, empty: bool) -> Self {
        let mut partitions = StateCache::new(Arc::clone(store.cache_budget()));
        if empty {
            partitions.assume_complete();
        }
        Self { kept, partitions }
    }

    /// Reads `partition` from the tables (nothing when the cache knows
    /// every partition).
    fn read(
        &self,
        rows: &mut StateTable,
        emitted: &StateTable,
        group: u16,
        partition: &[u8],
    ) -> EngineResult<Partition> {
        let mut loaded = Partition::default();
        if self.partitions.knows_absent(partition) {
            return Ok(loaded);
        }
        for (key, value) in rows.scan_prefix(group, partition)? {
            if loaded.rows.len() == self.kept {
                // Rows beyond the top (kept by an older plan) can never
                // be output again.
                rows.delete(group, &key);
                continue;
            }
            loaded.bytes += key.len() + value.len() + ROW_OVERHEAD;
            loaded.rows.push((key[partition.len()..].to_vec(), value));
        }
        for (key, value) in emitted.scan_prefix(group, partition)? {
            let (rank, row) = split_len(&value)?;
            let rank = i64::from_le_bytes(
                rank.try_into()
                    .map_err(|_| EngineError::Internal("Top-N rank is not 8 bytes".into()))?,
            );
            loaded
                .emitted
                .push((key[partition.len()..].to_vec(), (rank, row.to_vec())));
        }
        loaded.bytes += Partition::emitted_bytes(&loaded.emitted);
        Ok(loaded)
    }

    /// Runs `change` on `partition` (cached, or read from the tables and
    /// then cached as far as the budget allows).
    fn with_partition<R>(
        &mut self,
        rows: &mut StateTable,
        emitted: &StateTable,
        group: u16,
        partition: &[u8],
        change: impl FnOnce(&mut Partition, &mut StateTable) -> EngineResult<R>,
    ) -> EngineResult<R> {
        if let Some(entry) = self.partitions.get_mut(partition) {
            let result = change(entry, rows)?;
            let bytes = entry.bytes;
            self.partitions.recharge(partition, bytes);
            return Ok(result);
        }
        let mut loaded = self.read(rows, emitted, group, partition)?;
        let result = change(&mut loaded, rows)?;
        let bytes = loaded.bytes;
        // Written through: what does not fit is read back when needed.
        self.partitions.insert(partition.to_vec(), loaded, bytes);
        Ok(result)
    }

    /// Adds a row (`suffix`: its sort key and stream key; `value`: what
    /// the rows table stores) to its partition if it is among the kept
    /// ones, writing the table; true if it was.
    pub(super) fn insert(
        &mut self,
        rows: &mut StateTable,
        emitted: &StateTable,
        group: u16,
        partition: &[u8],
        suffix: &[u8],
        value: impl FnOnce() -> EngineResult<Vec<u8>>,
    ) -> EngineResult<bool> {
        let kept = self.kept;
        self.with_partition(rows, emitted, group, partition, |entry, rows| {
            let full = entry.rows.len() >= kept;
            if kept == 0
                || (full
                    && entry
                        .rows
                        .last()
                        .is_some_and(|(last, _)| suffix >= &last[..]))
            {
                return Ok(false);
            }
            let value = value()?;
            let mut key = Vec::with_capacity(partition.len() + suffix.len());
            key.extend_from_slice(partition);
            key.extend_from_slice(suffix);
            rows.put(group, &key, value.clone());
            let added = suffix.len() + value.len() + ROW_OVERHEAD;
            match entry
                .rows
                .binary_search_by(|(k, _)| k.as_slice().cmp(suffix))
            {
                Ok(at) => {
                    let old = std::mem::replace(&mut entry.rows[at].1, value);
                    entry.bytes = entry.bytes + added - (suffix.len() + old.len() + ROW_OVERHEAD);
                }
                Err(at) => {
                    entry.rows.insert(at, (suffix.to_vec(), value));
                    entry.bytes += added;
                }
            }
            if entry.rows.len() > kept
                && let Some((dropped, value)) = entry.rows.pop()
            {
                entry.bytes -= dropped.len() + value.len() + ROW_OVERHEAD;
                key.truncate(partition.len());
                key.extend_from_slice(&dropped);
                rows.delete(group, &key);
            }
            Ok(true)
        })
    }

    /// The partition's output rows now (stream key → (rank, row), ranks
    /// counted from `offset + 1`) and what was emitted before; the now
    /// becomes what was emitted.
    pub(super) fn take_change(
        &mut self,
        rows: &mut StateTable,
        emitted: &StateTable,
        group: u16,
        partition: &[u8],
        offset: usize,
    ) -> EngineResult<(Ranked, Ranked)> {
        self.with_partition(rows, emitted, group, partition, |entry, _| {
            let mut top = Ranked::new();
            for (rank, (_, value)) in entry.rows.iter().enumerate().skip(offset) {
                let (stream_key, row) = split_len(value)?;
                top.insert(stream_key.to_vec(), ((rank + 1) as i64, row.to_vec()));
            }
            let before_bytes = Partition::emitted_bytes(&entry.emitted);
            let before: Ranked = entry.emitted.drain(..).collect();
            entry.emitted = top.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            entry.bytes = entry.bytes + Partition::emitted_bytes(&entry.emitted) - before_bytes;
            Ok((top, before))
        })
    }

    /// Forgets a partition whose state was deleted.
    pub(super) fn forget(&mut self, partition: &[u8]) {
        self.partitions.remove(partition);
    }
}
