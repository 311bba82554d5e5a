//! The end of every materialized view's job: writes the view's rows (keyed
//! by the stream key) at each barrier and feeds the view's change log, so
//! views on this view see its changes in the same epoch.
//!
//! Changes are consolidated per key over the epoch. With parallel upstream
//! subtasks, the delete of a row's old version and the insert of its new
//! version can arrive in either order; a delete only removes the version it
//! names. The log gets, per changed key, the delete of the committed row and
//! the insert of the new one, in that order.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::encode_row;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{BufferCharge, StateTable, Store};

use crate::log::ChangeLog;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineResult, Op, StreamChunk};

const LOG_POSITION: &[u8] = b"log_next_seq";

/// Writes a view's rows.
#[derive(Debug)]
pub struct MaterializeOperator {
    table_id: u64,
    key: Vec<usize>,
    schema: datafusion::arrow::datatypes::SchemaRef,
    store: Store,
    /// Row key → new row value (None: deleted) of the running epoch.
    changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The changes' share of the store's epoch buffer.
    charge: BufferCharge,
    log: Arc<ChangeLog>,
    state: StateTable,
}

impl MaterializeOperator {
    /// Writes rows of view `table_id` keyed by the `key` columns, appending
    /// what it receives to `log`; remembers the log's position in state
    /// table `state_id`.
    pub fn new(
        table_id: u64,
        key: Vec<usize>,
        schema: datafusion::arrow::datatypes::SchemaRef,
        log: Arc<ChangeLog>,
        store: Store,
        state_id: u64,
    ) -> Self {
        Self {
            table_id,
            key,
            schema,
            changes: BTreeMap::new(),
            charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
            log,
            state: StateTable::new(store.clone(), state_id),
            store,
        }
    }

    /// The epoch's consolidated changes as a chunk: per key, the delete of
    /// the committed row, then the insert of the new one.
    fn consolidated(&self) -> EngineResult<Option<StreamChunk>> {
        let table = self.store.table(self.table_id);
        let mut decoder = runnel_storage::row_codec::RowDecoder::new(&self.schema, None)?;
        let mut ops = vec![];
        for (key, new) in &self.changes {
            let old = table.get(key)?;
            if &old == new {
                continue;
            }
            if let Some(old) = old {
                decoder.push(&old)?;
                ops.push(Op::Delete);
            }
            if let Some(new) = new {
                decoder.push(new)?;
                ops.push(Op::Insert);
            }
        }
        if ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(StreamChunk::new(decoder.finish()?, &ops)?))
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

    /// Where the view's change log continues after a restart: the position
    /// stored at the last committed epoch.
    pub fn stored_log_position(store: &Store, state_id: u64) -> EngineResult<Option<u64>> {
        let state = StateTable::new(store.clone(), state_id);
        match state.get(0, LOG_POSITION)? {
            None => Ok(None),
            Some(bytes) => match decode_scalars(&bytes)?.first() {
                Some(datafusion::scalar::ScalarValue::UInt64(Some(seq))) => Ok(Some(*seq)),
                other => Err(crate::EngineError::Internal(format!(
                    "stored log position is {other:?}"
                ))),
            },
        }
    }
}

#[async_trait]
impl StreamOperator for MaterializeOperator {
    fn name(&self) -> &'static str {
        "materialize"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        _out: &mut Output,
    ) -> EngineResult<()> {
        let batch = chunk.data();
        let key_columns: Vec<&ArrayRef> = self.key.iter().map(|&i| batch.column(i)).collect();
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

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        // The previous epoch is committed (barriers wait for it), so the
        // store holds the rows as they were before this epoch.
        if let Some(chunk) = self.consolidated()? {
            self.log.appender().append(chunk);
        }
        let writes = out.writes();
        self.charge.clear();
        for (key, value) in std::mem::take(&mut self.changes) {
            match value {
                Some(value) => writes.put_row(self.table_id, &key, &value),
                None => writes.delete_row(self.table_id, &key),
            }
        }
        self.log.seal(barrier.epoch);
        let mut position = vec![];
        encode_scalars(
            &[datafusion::scalar::ScalarValue::UInt64(Some(
                self.log.next_seq(),
            ))],
            &mut position,
        )?;
        self.state.put(0, LOG_POSITION, position);
        self.state.seal_epoch(barrier.epoch.0, out.writes());
        Ok(())
    }
}
