//! The end of every materialized view's job: writes the view's rows (keyed
//! by the stream key) at each barrier and feeds the view's change log, so
//! views on this view see its changes in the same epoch.
//!
//! Changes are consolidated per key over the epoch. With parallel upstream
//! subtasks, the delete of a row's old version and the insert of its new
//! version can arrive in either order; a delete only removes the version it
//! names. The log gets, per changed key, the delete of the committed row and
//! the insert of the new one, in that order. Over an append-only input
//! (every row a new key) there is no committed row to delete, and none is
//! looked up.

use std::sync::Arc;

use async_trait::async_trait;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{StateTable, Store};

use super::keyed_changes::KeyedChanges;

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
    changes: KeyedChanges,
    log: Arc<ChangeLog>,
    state: StateTable,
    append_only_input: bool,
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
            changes: KeyedChanges::new(&store),
            log,
            state: StateTable::new(store.clone(), state_id),
            store,
            append_only_input: false,
        }
    }

    /// Says that the input only inserts rows, each under a new key (as an
    /// append-only stream's key is): the committed row of a changed key is
    /// then known to be absent, with no read of the view's table.
    pub fn with_append_only_input(mut self, append_only: bool) -> Self {
        self.append_only_input = append_only;
        self
    }

    /// The epoch's consolidated changes as a chunk: per key, the delete of
    /// the committed row, then the insert of the new one.
    fn consolidated(&self) -> EngineResult<Option<StreamChunk>> {
        let table = self.store.table(self.table_id);
        let mut decoder = runnel_storage::row_codec::RowDecoder::new(&self.schema, None)?;
        let mut ops = vec![];
        for (key, new) in self.changes.pending() {
            let old = if self.append_only_input {
                None
            } else {
                table.get(key)?
            };
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
        self.changes.add(&chunk, &self.key)
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        // The previous epoch is committed (barriers wait for it), so the
        // store holds the rows as they were before this epoch.
        if let Some(chunk) = self.consolidated()? {
            self.log.appender().append(chunk);
        }
        let writes = out.writes();
        for (key, value) in self.changes.take() {
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
