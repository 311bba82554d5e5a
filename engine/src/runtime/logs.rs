//! The registry of change logs: which tables and views have readers, so DML
//! knows whether to log and the manager what to seal and trim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::Store;

use crate::log::ChangeLog;
use crate::log_codec::RowChanges;
use crate::{EngineError, EngineResult, Epoch};

struct Entry {
    log: Arc<ChangeLog>,
    /// A table's log (durable, sealed at injection) or a view's.
    is_table: bool,
    readers: usize,
}

/// Every live change log, by relation id.
#[derive(Default)]
pub struct LogRegistry {
    logs: Mutex<HashMap<u64, Entry>>,
}

/// The catalog record holding the sequence number a table's next change-log
/// entry gets.
pub fn table_log_seq_key(table_id: u64) -> Vec<u8> {
    format!("log_seq/{table_id:020}").into_bytes()
}

impl LogRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log of table `id` if some job reads it (DML appends to it).
    pub fn table_log(&self, id: u64) -> Option<Arc<ChangeLog>> {
        self.lock()
            .get(&id)
            .filter(|e| e.is_table && e.readers > 0)
            .map(|e| Arc::clone(&e.log))
    }

    /// The log of table `id`, opened from the store if not live: entries a
    /// reader has not committed past are read back.
    pub(crate) fn open_table_log(
        &self,
        store: &Store,
        id: u64,
        name: &str,
        schema: &SchemaRef,
    ) -> EngineResult<Arc<ChangeLog>> {
        let mut logs = self.lock();
        if let Some(entry) = logs.get(&id) {
            return Ok(Arc::clone(&entry.log));
        }
        let next_seq = match store.meta_scan(&table_log_seq_key(id))?.into_iter().next() {
            Some((_, bytes)) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                EngineError::Internal(format!("log position of {name} is not 8 bytes"))
            })?),
            None => 0,
        };
        let log = Arc::new(ChangeLog::new(name, next_seq));
        for (seq, bytes) in store.scan_changes(id, 0)? {
            log.restore(seq, RowChanges::decode(&bytes)?.to_chunk(schema)?);
        }
        logs.insert(
            id,
            Entry {
                log: Arc::clone(&log),
                is_table: true,
                readers: 0,
            },
        );
        Ok(log)
    }

    /// The log of view `id`, created (continuing at `next_seq`) if needed.
    pub(crate) fn view_log(&self, id: u64, name: &str, next_seq: u64) -> Arc<ChangeLog> {
        let mut logs = self.lock();
        let entry = logs.entry(id).or_insert_with(|| Entry {
            log: Arc::new(ChangeLog::new(name, next_seq)),
            is_table: false,
            readers: 0,
        });
        Arc::clone(&entry.log)
    }

    /// The live log of view `id`, if its job runs.
    pub(crate) fn live_view_log(&self, id: u64) -> Option<Arc<ChangeLog>> {
        self.lock()
            .get(&id)
            .filter(|e| !e.is_table)
            .map(|e| Arc::clone(&e.log))
    }

    pub(crate) fn add_reader(&self, id: u64) {
        if let Some(entry) = self.lock().get_mut(&id) {
            entry.readers += 1;
        }
    }

    pub(crate) fn remove_reader(&self, id: u64) {
        let mut logs = self.lock();
        if let Some(entry) = logs.get_mut(&id) {
            entry.readers = entry.readers.saturating_sub(1);
            if entry.readers == 0 && entry.is_table {
                logs.remove(&id);
            }
        }
    }

    /// Ends a view's log for good (its job stopped).
    pub(crate) fn close(&self, id: u64, reason: &str) {
        if let Some(entry) = self.lock().remove(&id) {
            entry.log.close(reason);
        }
    }

    /// Seals every table log for `epoch` (views seal their own).
    pub(crate) fn seal_tables(&self, epoch: Epoch) {
        for entry in self.lock().values().filter(|e| e.is_table) {
            entry.log.seal(epoch);
        }
    }

    /// For every log: (relation, where `epoch` ended, durable?).
    pub(crate) fn trim_points(&self, epoch: Epoch) -> Vec<(u64, u64, bool)> {
        self.lock()
            .iter()
            .filter_map(|(id, e)| e.log.seal_end(epoch).map(|seq| (*id, seq, e.is_table)))
            .collect()
    }

    pub(crate) fn trim(&self, id: u64, seq: u64, epoch: Epoch) {
        if let Some(entry) = self.lock().get(&id) {
            entry.log.trim(seq, epoch);
        }
    }
}
