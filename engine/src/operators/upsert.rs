//! Upsert: turns what a changelog source says by primary key (Kafka `FORMAT
//! UPSERT`, `FORMAT DEBEZIUM`) into a consistent change log. The last row of
//! every key is kept in state: an upsert of a new key is an insert, of a
//! known key an update that retracts the stored row, a delete of a known key
//! retracts its row, and a delete of an unknown key emits nothing. A message
//! delivered twice upstream (at-least-once CDC) so changes nothing.
//!
//! Input rows with op Insert or UpdateInsert are upserts; Delete or
//! UpdateDelete are deletes, of which only the key columns are read.

use async_trait::async_trait;
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::{RowDecoder, encode_row};
use runnel_storage::state_table::key_group;
use runnel_storage::{StateTable, Store};

use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineResult, Op, StreamChunk};

/// Keeps the last row per key and emits the changes between them.
#[derive(Debug)]
pub struct UpsertOperator {
    key: Vec<usize>,
    schema: SchemaRef,
    state: StateTable,
}

impl UpsertOperator {
    /// Rows of `schema` keyed by the columns `key`, their last versions in
    /// state table `state_id`.
    pub fn new(key: Vec<usize>, schema: SchemaRef, store: Store, state_id: u64) -> Self {
        Self {
            key,
            schema,
            state: StateTable::new(store, state_id),
        }
    }
}

#[async_trait]
impl StreamOperator for UpsertOperator {
    fn name(&self) -> &'static str {
        "upsert"
    }

    fn preserves_append_only(&self) -> bool {
        false
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()> {
        let data = chunk.data();
        let key_columns: Vec<&ArrayRef> = self.key.iter().map(|&i| data.column(i)).collect();
        let mut rows = RowDecoder::new(&self.schema, None)?;
        let mut ops = vec![];
        let mut key = vec![];
        for row in 0..data.num_rows() {
            key.clear();
            encode_nullable_key(&key_columns, row, &mut key)?;
            let group = key_group(&key);
            let stored = self.state.get(group, &key)?;
            match chunk.op(row)? {
                Op::Insert | Op::UpdateInsert => {
                    let mut new = vec![];
                    encode_row(data.columns(), row, &mut new)?;
                    if stored.as_ref() == Some(&new) {
                        continue;
                    }
                    match &stored {
                        Some(old) => {
                            rows.push(old)?;
                            ops.push(Op::UpdateDelete);
                            rows.push(&new)?;
                            ops.push(Op::UpdateInsert);
                        }
                        None => {
                            rows.push(&new)?;
                            ops.push(Op::Insert);
                        }
                    }
                    self.state.put(group, &key, new);
                }
                Op::Delete | Op::UpdateDelete => {
                    if let Some(old) = stored {
                        rows.push(&old)?;
                        ops.push(Op::Delete);
                        self.state.delete(group, &key);
                    }
                }
            }
        }
        if !ops.is_empty() {
            out.emit(StreamChunk::new(rows.finish()?, &ops)?);
        }
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        self.state.seal_epoch(barrier.epoch.0, out.writes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::harness::{Harness, barrier, chunk, schema};
    use runnel_storage::StoreOptions;

    fn harness() -> (tempfile::TempDir, Harness<UpsertOperator>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let operator = UpsertOperator::new(vec![0], schema(), store.clone(), 7);
        (dir, Harness::with_store(operator, store))
    }

    #[tokio::test]
    async fn upserts_and_deletes_by_key_become_a_change_log() {
        let (_dir, mut h) = harness();
        let out = h
            .push_chunk(chunk(&[
                (Op::Insert, "a", 1),
                (Op::Insert, "b", 2),
                (Op::Insert, "a", 3),
                (Op::Delete, "c", 0),
            ]))
            .await
            .unwrap();
        assert_eq!(
            out, "+ a 1\n+ b 2\nU- a 1\nU+ a 3\n",
            "the upsert of a known key retracts the old row"
        );
        h.push_barrier(barrier(1)).await.unwrap();
        let out = h
            .push_chunk(chunk(&[
                (Op::Delete, "a", 0),
                (Op::Insert, "b", 2),
                (Op::Delete, "a", 0),
            ]))
            .await
            .unwrap();
        assert_eq!(
            out, "- a 3\n",
            "a committed row is deleted with its stored values; a repeat changes nothing"
        );
    }
}
