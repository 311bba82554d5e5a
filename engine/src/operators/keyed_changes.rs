//! An epoch's changes per row key, consolidated the way a materialized
//! view and a keyed sink need them: the newest version of each changed
//! key (None: deleted). With parallel upstream subtasks the delete of a
//! row's old version and the insert of its new one can arrive in either
//! order, so a delete only removes the version it names.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::encode_row;
use runnel_storage::{BufferCharge, Store};

use crate::{EngineResult, StreamChunk};

/// Row key → newest row value of the running epoch, charged to the
/// store's epoch buffer.
#[derive(Debug)]
pub(crate) struct KeyedChanges {
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    charge: BufferCharge,
}

impl KeyedChanges {
    pub(crate) fn new(store: &Store) -> Self {
        Self {
            changes: BTreeMap::new(),
            charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
        }
    }

    /// Records the rows of `chunk`, keyed by the `key` columns.
    pub(crate) fn add(&mut self, chunk: &StreamChunk, key: &[usize]) -> EngineResult<()> {
        let batch = chunk.data();
        let key_columns: Vec<&ArrayRef> = key.iter().map(|&i| batch.column(i)).collect();
        for row in 0..batch.num_rows() {
            let mut key = vec![];
            encode_nullable_key(&key_columns, row, &mut key)?;
            let mut value = vec![];
            encode_row(batch.columns(), row, &mut value)?;
            if chunk.op(row)?.sign() > 0 {
                self.change(key, Some(value));
            } else {
                match self.changes.get(&key) {
                    // A newer version arrived first: this delete is of
                    // the version it replaced.
                    Some(Some(pending)) if *pending != value => {}
                    _ => self.change(key, None),
                }
            }
        }
        Ok(())
    }

    /// The changes so far.
    pub(crate) fn pending(&self) -> &BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        &self.changes
    }

    /// Takes the changes (at a barrier), releasing their share of the
    /// epoch buffer.
    pub(crate) fn take(&mut self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.charge.clear();
        std::mem::take(&mut self.changes)
    }

    /// Records the epoch's newest version of the row at `key`.
    fn change(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let cost = |key: &[u8], value: &Option<Vec<u8>>| {
            key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
        };
        match self.changes.entry(key) {
            Entry::Occupied(mut entry) => {
                self.charge.add(cost(entry.key(), &value));
                let old = cost(entry.key(), entry.get());
                entry.insert(value);
                self.charge.sub(old);
            }
            Entry::Vacant(entry) => {
                self.charge.add(cost(entry.key(), &value));
                entry.insert(value);
            }
        }
    }
}
