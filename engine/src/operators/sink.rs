//! The end of a sink's job: stages what the sink must write, epoch by
//! epoch, in the store, as part of the epoch's commit. Delivery to the
//! outside system (see `runtime::sink`) reads the staged changes only
//! once their epoch is committed — with checkpoints, once a checkpoint
//! holds it — so what is written out is exactly what the committed state
//! says, and a crash before delivery loses nothing.
//!
//! An append-only input is staged as it comes. A keyed input is
//! consolidated per key over the epoch (as a materialized view is: the
//! delete of a row's old version and the insert of its new one may come in
//! either order), and the staged changes say, per changed key, what was
//! written before (kept in state) and what is now: an insert, an update
//! pair or a delete.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::row_codec::{RowDecoder, encode_row};
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::state_table::key_group;
use runnel_storage::{BufferCharge, StateTable, Store};

use super::keyed_changes::KeyedChanges;
use crate::log_codec::RowChanges;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, Epoch, Op, StreamChunk};

const NEXT_SEQ: &[u8] = b"sink_next_seq";

/// One epoch's staged changes, as delivery reads them back.
#[derive(Debug)]
pub struct StagedEpoch {
    pub epoch: Epoch,
    pub changes: RowChanges,
}

impl StagedEpoch {
    /// The stored form: the epoch, then the changes.
    pub fn encode(epoch: Epoch, changes: &RowChanges) -> Vec<u8> {
        let mut out = epoch.0.to_be_bytes().to_vec();
        out.extend_from_slice(&changes.encode());
        out
    }

    /// Reads what [`StagedEpoch::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> EngineResult<Self> {
        let (epoch, changes) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| EngineError::Internal("staged sink entry too short".into()))?;
        Ok(Self {
            epoch: Epoch(u64::from_be_bytes(*epoch)),
            changes: RowChanges::decode(changes)?,
        })
    }

    /// The changes as a chunk of the sink's input `schema`.
    pub fn to_chunk(&self, schema: &SchemaRef) -> EngineResult<StreamChunk> {
        let mut decoder = RowDecoder::new(schema, None)?;
        for value in &self.changes.values {
            decoder.push(value)?;
        }
        StreamChunk::new(decoder.finish()?, &self.changes.ops)
    }
}

/// Stages a sink's changes under its id.
#[derive(Debug)]
pub struct SinkOperator {
    sink_id: u64,
    /// Key columns; None for append-only input.
    key: Option<Vec<usize>>,
    /// Append-only input: the epoch's rows so far.
    appended: RowChanges,
    /// Keyed input: key → newest row of the epoch (None: deleted).
    pending: KeyedChanges,
    /// Append-only input: the rows' share of the epoch buffer.
    charge: BufferCharge,
    next_seq: u64,
    position: StateTable,
    /// Keyed input: the last row staged per key.
    written: StateTable,
}

impl SinkOperator {
    /// Stages changes of sink `sink_id` keyed by `key` (None: append-only),
    /// its position in state table `state_id` and, keyed, its rows in
    /// `state_id + 1`.
    pub fn new(
        sink_id: u64,
        key: Option<Vec<usize>>,
        store: Store,
        state_id: u64,
    ) -> EngineResult<Self> {
        let position = StateTable::new(store.clone(), state_id);
        let next_seq = match position.get(0, NEXT_SEQ)? {
            None => 0,
            Some(bytes) => match decode_scalars(&bytes)?.first() {
                Some(ScalarValue::UInt64(Some(seq))) => *seq,
                other => {
                    return Err(EngineError::Internal(format!(
                        "stored sink position is {other:?}"
                    )));
                }
            },
        };
        Ok(Self {
            sink_id,
            key,
            appended: RowChanges::default(),
            pending: KeyedChanges::new(&store),
            charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
            next_seq,
            position,
            written: StateTable::new(store, state_id + 1),
        })
    }

    /// The epoch's changes per key against what was written before.
    fn consolidate(&mut self) -> EngineResult<RowChanges> {
        let mut changes = RowChanges::default();
        for (key, new) in self.pending.take() {
            let group = key_group(&key);
            let old = self.written.get(group, &key)?;
            if old == new {
                continue;
            }
            match (old, new) {
                (Some(old), Some(new)) => {
                    changes.push(Op::UpdateDelete, vec![], old);
                    changes.push(Op::UpdateInsert, vec![], new.clone());
                    self.written.put(group, &key, new);
                }
                (None, Some(new)) => {
                    changes.push(Op::Insert, vec![], new.clone());
                    self.written.put(group, &key, new);
                }
                (Some(old), None) => {
                    changes.push(Op::Delete, vec![], old);
                    self.written.delete(group, &key);
                }
                (None, None) => {}
            }
        }
        Ok(changes)
    }
}

#[async_trait]
impl StreamOperator for SinkOperator {
    fn name(&self) -> &'static str {
        "sink"
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
        let Some(key) = &self.key else {
            for row in 0..batch.num_rows() {
                if chunk.op(row)? != Op::Insert {
                    return Err(EngineError::Internal(
                        "an append-only sink received a retraction".into(),
                    ));
                }
                let mut value = vec![];
                encode_row(batch.columns(), row, &mut value)?;
                self.charge.add(value.len() + ENTRY_OVERHEAD);
                self.appended.push(Op::Insert, vec![], value);
            }
            return Ok(());
        };
        self.pending.add(&chunk, key)
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        let changes = if self.key.is_some() {
            self.consolidate()?
        } else {
            std::mem::take(&mut self.appended)
        };
        self.charge.clear();
        if !changes.is_empty() {
            let entry = StagedEpoch::encode(barrier.epoch, &changes);
            out.writes().put_change(self.sink_id, self.next_seq, &entry);
            self.next_seq += 1;
            let mut position = vec![];
            encode_scalars(&[ScalarValue::UInt64(Some(self.next_seq))], &mut position)?;
            self.position.put(0, NEXT_SEQ, position);
        }
        self.position.seal_epoch(barrier.epoch.0, out.writes());
        self.written.seal_epoch(barrier.epoch.0, out.writes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::harness::{Harness, barrier, chunk, schema};
    use runnel_storage::StoreOptions;

    fn staged(store: &Store, schema: &SchemaRef) -> Vec<(u64, String)> {
        store
            .scan_changes(5, 0)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| {
                let staged = StagedEpoch::decode(&bytes).unwrap();
                let chunk = staged.to_chunk(schema).unwrap();
                (staged.epoch.0, chunk.to_pretty_string().unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn keyed_changes_are_consolidated_per_epoch_against_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let operator = SinkOperator::new(5, Some(vec![0]), store.clone(), 9).unwrap();
        let mut h = Harness::with_store(operator, store.clone());
        h.push_chunk(chunk(&[
            (Op::Insert, "a", 1),
            (Op::Insert, "b", 2),
            (Op::Delete, "b", 2),
        ]))
        .await
        .unwrap();
        h.push_barrier(barrier(1)).await.unwrap();
        // The new version of a before the delete of its old one.
        h.push_chunk(chunk(&[
            (Op::UpdateInsert, "a", 3),
            (Op::UpdateDelete, "a", 1),
            (Op::Insert, "c", 4),
        ]))
        .await
        .unwrap();
        h.push_barrier(barrier(2)).await.unwrap();
        h.push_chunk(chunk(&[(Op::Delete, "c", 4)])).await.unwrap();
        h.push_barrier(barrier(3)).await.unwrap();
        // Nothing changed: nothing is staged.
        h.push_chunk(chunk(&[(Op::Delete, "a", 3), (Op::Insert, "a", 3)]))
            .await
            .unwrap();
        h.push_barrier(barrier(4)).await.unwrap();
        assert_eq!(
            staged(&store, &schema()),
            [
                (1, "+ a 1\n".to_string()),
                (2, "U- a 1\nU+ a 3\n+ c 4\n".to_string()),
                (3, "- c 4\n".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn append_only_rows_are_staged_as_they_come_and_resume_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let operator = SinkOperator::new(5, None, store.clone(), 9).unwrap();
        let mut h = Harness::with_store(operator, store.clone());
        h.push_chunk(chunk(&[(Op::Insert, "a", 1), (Op::Insert, "a", 1)]))
            .await
            .unwrap();
        h.push_barrier(barrier(1)).await.unwrap();
        drop(h);
        let operator = SinkOperator::new(5, None, store.clone(), 9).unwrap();
        let mut h = Harness::with_store(operator, store.clone());
        h.push_chunk(chunk(&[(Op::Insert, "b", 2)])).await.unwrap();
        h.push_barrier(barrier(2)).await.unwrap();
        let seqs: Vec<u64> = store
            .scan_changes(5, 0)
            .unwrap()
            .iter()
            .map(|(seq, _)| *seq)
            .collect();
        assert_eq!(seqs, [0, 1], "a restart continues the sequence");
        assert_eq!(
            staged(&store, &schema()),
            [
                (1, "+ a 1\n+ a 1\n".to_string()),
                (2, "+ b 2\n".to_string())
            ]
        );
        let bad = SinkOperator::new(6, None, store.clone(), 20).unwrap();
        let mut h = Harness::with_store(bad, store);
        assert!(
            h.push_chunk(chunk(&[(Op::Delete, "a", 1)])).await.is_err(),
            "an append-only sink refuses a retraction"
        );
    }
}
