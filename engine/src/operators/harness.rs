//! The one harness operator tests go through: push messages, read what the
//! operator emitted as a pretty-printed table.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineResult, Op, StreamChunk, Watermark};

/// Drives one operator instance.
pub struct Harness<O: StreamOperator> {
    operator: O,
    out: Output,
    /// Where each barrier's state writes are committed, if anywhere.
    store: Option<runnel_storage::Store>,
}

impl<O: StreamOperator> Harness<O> {
    pub fn new(operator: O) -> Self {
        Self {
            operator,
            out: Output::default(),
            store: None,
        }
    }

    /// A harness that commits the operator's state writes to `store` at
    /// every barrier, as the barrier manager would.
    pub fn with_store(operator: O, store: runnel_storage::Store) -> Self {
        Self {
            store: Some(store),
            ..Self::new(operator)
        }
    }

    fn drain(&mut self) -> EngineResult<String> {
        pretty(&self.out.take())
    }

    /// Pushes a chunk on input 0 and returns what came out.
    pub async fn push_chunk(&mut self, chunk: StreamChunk) -> EngineResult<String> {
        self.push_chunk_on(0, chunk).await
    }

    /// Pushes a chunk on input `input` and returns what came out.
    pub async fn push_chunk_on(
        &mut self,
        input: usize,
        chunk: StreamChunk,
    ) -> EngineResult<String> {
        let chunks = self.push_chunk_chunks(input, chunk).await?;
        pretty(&chunks)
    }

    /// Pushes a chunk on input `input` and returns the chunks that came out.
    pub async fn push_chunk_chunks(
        &mut self,
        input: usize,
        chunk: StreamChunk,
    ) -> EngineResult<Vec<StreamChunk>> {
        self.operator
            .process_chunk(input, chunk, &mut self.out)
            .await?;
        Ok(self.out.take())
    }

    /// Pushes a watermark and returns the watermarks forwarded (the chunks
    /// it released stay for [`Harness::drain_chunks`]).
    pub async fn push_watermark(&mut self, watermark: Watermark) -> EngineResult<Vec<Watermark>> {
        self.push_watermark_on(0, watermark).await
    }

    /// Pushes a watermark on input `input`; returns the watermarks forwarded.
    pub async fn push_watermark_on(
        &mut self,
        input: usize,
        watermark: Watermark,
    ) -> EngineResult<Vec<Watermark>> {
        self.operator
            .on_watermark(input, watermark, &mut self.out)
            .await?;
        Ok(self.out.take_watermarks())
    }

    /// What the operator emitted and nobody read yet.
    pub fn drain_chunks(&mut self) -> EngineResult<String> {
        self.drain()
    }

    /// Pushes a barrier and returns what came out before it.
    pub async fn push_barrier(&mut self, barrier: Barrier) -> EngineResult<String> {
        self.barrier_and_commit(barrier).await?;
        self.drain()
    }

    /// Pushes a barrier and returns the chunks that came out before it.
    pub async fn push_barrier_chunks(
        &mut self,
        barrier: Barrier,
    ) -> EngineResult<Vec<StreamChunk>> {
        self.barrier_and_commit(barrier).await?;
        Ok(self.out.take())
    }

    async fn barrier_and_commit(&mut self, barrier: Barrier) -> EngineResult<()> {
        self.operator.on_barrier(&barrier, &mut self.out).await?;
        let writes = self.out.take_writes();
        if let Some(store) = &self.store {
            store.write(writes)?;
        }
        Ok(())
    }
}

/// Chunks as pretty-printed tables, one after the other.
fn pretty(chunks: &[StreamChunk]) -> EngineResult<String> {
    let mut text = String::new();
    for chunk in chunks {
        text.push_str(&chunk.to_pretty_string()?);
    }
    Ok(text)
}

/// A checkpoint barrier of epoch `epoch`.
pub fn barrier(epoch: u64) -> Barrier {
    Barrier {
        epoch: crate::Epoch(epoch),
        kind: crate::BarrierKind::Checkpoint,
    }
}

/// The schema of [`chunk`]: `k text, n bigint`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]))
}

/// A chunk of `(op, k, n)` rows.
pub fn chunk(rows: &[(Op, &str, i64)]) -> StreamChunk {
    let data = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("test rows fit the schema");
    let ops: Vec<Op> = rows.iter().map(|r| r.0).collect();
    StreamChunk::new(data, &ops).expect("one op per row")
}

/// Applies emitted changes to `view` (a row as text → how many times it
/// is there), as a materialized view would; fails on a delete of a row
/// the view does not hold.
pub fn apply_changes(view: &mut BTreeMap<String, i64>, chunks: &[StreamChunk]) {
    for chunk in chunks {
        let batch = chunk.data();
        for row in 0..batch.num_rows() {
            let text = batch
                .columns()
                .iter()
                .map(|c| {
                    datafusion::scalar::ScalarValue::try_from_array(c, row)
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(" ");
            let count = view.entry(text.clone()).or_default();
            *count += chunk.op(row).unwrap().sign();
            assert!(*count >= 0, "deleted a row the view does not hold: {text}");
            if *count == 0 {
                view.remove(&text);
            }
        }
    }
}

/// Replays `epochs` (changes of rows keyed by `key`) through an operator
/// made by `make` on a store with a cache budget of `cache_bytes` (made
/// again, reading its state back, before epoch `restart_at`), and after
/// each barrier hands `check` the epoch, the rows alive by key, and the
/// rows of a view the emitted changes were applied to (sorted text).
pub async fn replay_changelog<O: StreamOperator, R: Clone>(
    cache_bytes: usize,
    make: impl Fn(&runnel_storage::Store) -> O,
    restart_at: Option<usize>,
    epochs: Vec<Vec<Vec<(Op, R)>>>,
    key: impl Fn(&R) -> String,
    chunk: impl Fn(&[(Op, R)]) -> StreamChunk,
    mut check: impl FnMut(usize, &BTreeMap<String, R>, Vec<String>),
) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = runnel_storage::StoreOptions {
        state_cache_bytes: cache_bytes,
        ..runnel_storage::StoreOptions::default()
    };
    let store = runnel_storage::Store::open(dir.path(), &options).expect("a store");
    let mut h = Harness::with_store(make(&store), store.clone());
    let mut live = BTreeMap::new();
    let mut view = BTreeMap::new();
    for (epoch, chunks) in epochs.into_iter().enumerate() {
        if restart_at == Some(epoch) {
            // A restart: state only from the store.
            h = Harness::with_store(make(&store), store.clone());
        }
        for rows in chunks {
            for (op, row) in &rows {
                if op.sign() > 0 {
                    live.insert(key(row), row.clone());
                } else {
                    live.remove(&key(row));
                }
            }
            h.push_chunk(chunk(&rows))
                .await
                .expect("the chunk is taken");
        }
        let emitted = h
            .push_barrier_chunks(barrier(epoch as u64 + 1))
            .await
            .expect("the barrier is taken");
        apply_changes(&mut view, &emitted);
        check(epoch, &live, view.keys().cloned().collect());
    }
}

/// A random changelog: per epoch, one to three chunks of one to
/// `max_rows` changes, each an insert of a new row made by `row` or (unless
/// `inserts_only`, one time in two) a delete or update pair of a live one.
pub fn random_changelog<R: Clone>(
    rng: &mut Rng,
    epochs: usize,
    max_rows: u64,
    inserts_only: bool,
    mut row: impl FnMut(&mut Rng) -> R,
) -> Vec<Vec<Vec<(crate::Op, R)>>> {
    use crate::Op;
    let mut live: Vec<R> = vec![];
    (0..epochs)
        .map(|_| {
            (0..1 + rng.below(3))
                .map(|_| {
                    let mut rows = vec![];
                    for _ in 0..1 + rng.below(max_rows) {
                        let choice = rng.below(4);
                        if inserts_only || live.is_empty() || choice < 2 {
                            let new = row(rng);
                            live.push(new.clone());
                            rows.push((Op::Insert, new));
                        } else {
                            let old = live.swap_remove(rng.below(live.len() as u64) as usize);
                            if choice == 2 {
                                rows.push((Op::Delete, old));
                            } else {
                                let new = row(rng);
                                live.push(new.clone());
                                rows.push((Op::UpdateDelete, old));
                                rows.push((Op::UpdateInsert, new));
                            }
                        }
                    }
                    rows
                })
                .collect()
        })
        .collect()
}

/// A small deterministic random source (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}
