//! A transaction block's uncommitted row writes. Inside `BEGIN … COMMIT`
//! INSERT, UPDATE and DELETE change these instead of the store; the
//! block's own reads see them over the committed rows; COMMIT writes them
//! all in one atomic write (with the change log entries the views read),
//! ROLLBACK drops them, and a savepoint is a copy of them.
//!
//! Each row remembers the committed version it replaced when the block
//! first changed it. COMMIT finds the row still so, or fails: another
//! session's insert of the same key is a unique violation, any other
//! change a serialization failure (40001) — the first block to commit wins,
//! none is overwritten unseen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_planner::catalog::TableDef;
use runnel_storage::Store;

use crate::error::{ServerError, ServerResult};

/// One table's uncommitted rows.
#[derive(Debug, Clone)]
pub struct PendingTable {
    /// The table as the block wrote it.
    pub def: Arc<TableDef>,
    /// Row key → the block's version (None: deleted).
    pub rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Row key → the committed version the block's first change replaced.
    pub before: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The changes the rows make to the table's indexes.
    pub indexes: super::IndexChanges,
}

impl PendingTable {
    fn new(def: Arc<TableDef>) -> Self {
        Self {
            def,
            rows: BTreeMap::new(),
            before: BTreeMap::new(),
            indexes: Default::default(),
        }
    }

    /// The row at `key` as the block sees it.
    pub fn get(&self, store: &Store, key: &[u8]) -> ServerResult<Option<Vec<u8>>> {
        match self.rows.get(key) {
            Some(version) => Ok(version.clone()),
            None => Ok(store.table(self.def.id).get(key)?),
        }
    }

    /// Whether the block sees a row at `key`.
    pub fn contains(&self, store: &Store, key: &[u8]) -> ServerResult<bool> {
        match self.rows.get(key) {
            Some(version) => Ok(version.is_some()),
            None => Ok(store.table(self.def.id).contains(key)?),
        }
    }

    /// Records the block's new version of the row at `key`.
    pub fn write(
        &mut self,
        store: &Store,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    ) -> ServerResult<()> {
        if !self.before.contains_key(&key) {
            let committed = store.table(self.def.id).get(&key)?;
            self.before.insert(key.clone(), committed);
        }
        self.rows.insert(key, value);
        Ok(())
    }

    /// Fails when a row the block changed is no longer the committed version
    /// the block replaced.
    pub fn check_unchanged(&self, store: &Store) -> ServerResult<()> {
        let table = store.table(self.def.id);
        for (key, before) in &self.before {
            let now = table.get(key)?;
            if now == *before {
                continue;
            }
            let inserted = before.is_none() && self.rows.get(key).is_some_and(Option::is_some);
            return Err(if inserted && !self.def.primary_key.is_empty() {
                ServerError::UniqueViolation {
                    table: self.def.name.name.clone(),
                    key: "a key another session inserted since this block wrote it".into(),
                }
            } else {
                ServerError::SerializationFailure(format!(
                    "a row of {} that this transaction changed was changed by another session since",
                    self.def.name
                ))
            });
        }
        Ok(())
    }
}

/// Every table's uncommitted rows of one block.
#[derive(Debug, Clone, Default)]
pub struct PendingWrites {
    tables: BTreeMap<u64, PendingTable>,
}

impl PendingWrites {
    /// Table `def`'s pending rows, None when the block wrote none.
    pub fn table(&self, table_id: u64) -> Option<&PendingTable> {
        self.tables.get(&table_id)
    }

    /// Table `def`'s pending rows, started when there are none.
    pub fn table_mut(&mut self, def: &Arc<TableDef>) -> &mut PendingTable {
        self.tables
            .entry(def.id)
            .or_insert_with(|| PendingTable::new(Arc::clone(def)))
    }

    /// Forgets the rows of a table dropped or emptied within the block.
    pub fn forget(&mut self, table_id: u64) {
        self.tables.remove(&table_id);
    }

    /// Whether the block wrote anything.
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.rows.is_empty())
    }

    /// The tables the block wrote.
    pub fn tables(&self) -> impl Iterator<Item = &PendingTable> {
        self.tables.values()
    }
}

/// A session's block, shared with its table scans (through the DataFusion
/// session config) so they see the block's rows.
#[derive(Debug, Default)]
pub struct BlockWrites {
    pending: Mutex<Option<PendingWrites>>,
}

impl BlockWrites {
    /// The block's writes; None outside a block.
    pub fn lock(&self) -> MutexGuard<'_, Option<PendingWrites>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Table `table_id`'s pending rows, copied for a scan.
    pub fn table(&self, table_id: u64) -> Option<PendingTable> {
        self.lock()
            .as_ref()
            .and_then(|p| p.table(table_id).cloned())
    }
}
