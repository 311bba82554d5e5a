//! Top-N per partition with retractions. Every input row is kept in state
//! ordered by partition, then sort key, then stream key; at each barrier the
//! first rows of every partition that changed are read back and compared
//! with what was emitted before, and only the difference goes out (row
//! numbers included, so rows whose rank moved are updated). Over an input
//! that only inserts, only each partition's top rows are kept, in memory
//! (see `append_only.rs`).
//!
//! Per window (a partition column carries a watermark, as in `ROW_NUMBER()
//! OVER (PARTITION BY window_start …) <= N`), a partition the watermark
//! passed is final: its state is deleted and the watermark goes on (see
//! `window.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::{RowDecoder, encode_row};
use runnel_storage::state_table::key_group;
use runnel_storage::{StateTable, Store};

use crate::graph::SortOrder;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, Op, StreamChunk};

mod append_only;
#[cfg(test)]
mod oracle_tests;
mod window;
use append_only::KeptRows;
pub use window::TopNWindowSetup;
use window::Window;

/// The most rows per partition (offset + limit) an append-only Top-N keeps
/// in memory, in order; a larger one keeps every row in state, as over a
/// changing input.
pub const MAX_KEPT_IN_MEMORY: usize = 1024;

/// The rows of one partition's result: stream key → (rank, row).
type Ranked = BTreeMap<Vec<u8>, (i64, Vec<u8>)>;

/// One parallel instance of a Top-N.
pub struct TopNOperator {
    partition: Vec<usize>,
    order: Vec<SortOrder>,
    offset: usize,
    limit: usize,
    rank_column: Option<usize>,
    input_schema: SchemaRef,
    stream_key: Vec<usize>,
    schema: SchemaRef,
    /// Partition + sort key + stream key → stream key and row.
    rows: StateTable,
    /// Partition + stream key → rank and row, as last emitted.
    emitted: StateTable,
    /// Partitions changed in this epoch.
    dirty: BTreeMap<Vec<u8>, u16>,
    window: Option<Window>,
    /// Over an input that only inserts: the top rows of each partition.
    kept: Option<KeptRows>,
    store: Store,
    /// Buffers a row's partition, and its sort and stream key, are encoded
    /// into.
    partition_buf: Vec<u8>,
    suffix_buf: Vec<u8>,
}

impl std::fmt::Debug for TopNOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopNOperator")
            .field("limit", &self.limit)
            .finish()
    }
}

/// Appends the sort key of `row`: per column a null marker placed by
/// NULLS FIRST/LAST, then the value, its bytes inverted when descending.
fn encode_sort_key(
    columns: &[ArrayRef],
    order: &[SortOrder],
    row: usize,
    out: &mut Vec<u8>,
) -> EngineResult<()> {
    for o in order {
        let column = &columns[o.column];
        if column.is_null(row) {
            out.push(if o.nulls_first { 0x00 } else { 0xFF });
            continue;
        }
        out.push(0x01);
        let mut value = vec![];
        encode_nullable_key(&[column], row, &mut value)?;
        // Skip the nullable encoding's own marker byte.
        let value = &value[1..];
        if o.descending {
            out.extend(value.iter().map(|b| !b));
        } else {
            out.extend_from_slice(value);
        }
    }
    Ok(())
}

fn with_len(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Splits `[u32 len][first][rest]`.
fn split_len(bytes: &[u8]) -> EngineResult<(&[u8], &[u8])> {
    let corrupt = || EngineError::Internal("Top-N state row cut short".into());
    let len = u32::from_le_bytes(
        bytes
            .get(..4)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let first = bytes.get(4..4 + len).ok_or_else(corrupt)?;
    Ok((first, &bytes[4 + len..]))
}

impl TopNOperator {
    /// A Top-N over rows of `input_schema` producing `schema`; state in
    /// tables `state_id` and `state_id + 1`, and `state_id + 2` when
    /// windowed.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partition: Vec<usize>,
        order: Vec<SortOrder>,
        offset: usize,
        limit: usize,
        rank_column: Option<usize>,
        input_schema: SchemaRef,
        stream_key: Vec<usize>,
        schema: SchemaRef,
        store: Store,
        state_id: u64,
        window: Option<TopNWindowSetup>,
    ) -> EngineResult<Self> {
        let window = window
            .map(|setup| {
                Window::new(
                    setup,
                    &input_schema,
                    &partition,
                    store.clone(),
                    state_id + 2,
                )
            })
            .transpose()?;
        Ok(Self {
            partition,
            order,
            offset,
            limit,
            rank_column,
            input_schema,
            stream_key,
            schema,
            rows: StateTable::new(store.clone(), state_id),
            emitted: StateTable::new(store.clone(), state_id + 1),
            dirty: BTreeMap::new(),
            window,
            kept: None,
            store,
            partition_buf: vec![],
            suffix_buf: vec![],
        })
    }

    /// Says that the input only ever inserts rows: only each partition's
    /// first `offset + limit` rows are kept (when they are at most
    /// [`MAX_KEPT_IN_MEMORY`]). Call before the first chunk; the planner
    /// says the same for the same query every time.
    pub fn with_append_only_input(mut self, append_only: bool) -> EngineResult<Self> {
        let kept = self.offset.saturating_add(self.limit);
        if append_only && kept <= MAX_KEPT_IN_MEMORY {
            let empty = self.rows.is_empty()? && self.emitted.is_empty()?;
            self.kept = Some(KeptRows::new(&self.store, kept, empty));
        }
        Ok(self)
    }

    /// The partition's current top rows: stream key → (rank, row).
    fn current_top(&self, group: u16, partition: &[u8]) -> EngineResult<Ranked> {
        let mut top = BTreeMap::new();
        for (rank, (_, value)) in self
            .rows
            .scan_prefix(group, partition)?
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .enumerate()
        {
            let (stream_key, row) = split_len(&value)?;
            top.insert(
                stream_key.to_vec(),
                ((self.offset + rank + 1) as i64, row.to_vec()),
            );
        }
        Ok(top)
    }

    /// What was emitted for the partition: stream key → (rank, row).
    fn emitted_top(&self, group: u16, partition: &[u8]) -> EngineResult<Ranked> {
        let mut before = BTreeMap::new();
        for (key, value) in self.emitted.scan_prefix(group, partition)? {
            let (rank, row) = split_len(&value)?;
            let rank = i64::from_le_bytes(
                rank.try_into()
                    .map_err(|_| EngineError::Internal("Top-N rank is not 8 bytes".into()))?,
            );
            before.insert(key[partition.len()..].to_vec(), (rank, row.to_vec()));
        }
        Ok(before)
    }

    fn build(&self, out: Vec<(Op, i64, Vec<u8>)>) -> EngineResult<StreamChunk> {
        let mut decoder = RowDecoder::new(&self.input_schema, None)?;
        for (_, _, row) in &out {
            decoder.push(row)?;
        }
        let mut columns: Vec<ArrayRef> = decoder.finish()?.columns().to_vec();
        if let Some(at) = self.rank_column {
            let ranks: ArrayRef =
                Arc::new(Int64Array::from_iter_values(out.iter().map(|(_, r, _)| *r)));
            let ranks =
                datafusion::arrow::compute::cast(&ranks, self.schema.field(at).data_type())?;
            columns.insert(at, ranks);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let ops: Vec<Op> = out.iter().map(|(op, _, _)| *op).collect();
        StreamChunk::new(batch, &ops)
    }
}

#[async_trait]
impl StreamOperator for TopNOperator {
    fn name(&self) -> &'static str {
        "top_n"
    }

    fn preserves_append_only(&self) -> bool {
        false
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        _out: &mut Output,
    ) -> EngineResult<()> {
        self.load_window()?;
        let chunk = self.drop_late(chunk)?;
        let batch = chunk.data();
        let partition_columns: Vec<&ArrayRef> =
            self.partition.iter().map(|&i| batch.column(i)).collect();
        let key_columns: Vec<&ArrayRef> =
            self.stream_key.iter().map(|&i| batch.column(i)).collect();
        let mut partition = std::mem::take(&mut self.partition_buf);
        let mut suffix = std::mem::take(&mut self.suffix_buf);
        let mut stream_key = vec![];
        for row in 0..batch.num_rows() {
            partition.clear();
            encode_nullable_key(&partition_columns, row, &mut partition)?;
            let group = key_group(&partition);
            stream_key.clear();
            encode_nullable_key(&key_columns, row, &mut stream_key)?;
            suffix.clear();
            encode_sort_key(batch.columns(), &self.order, row, &mut suffix)?;
            suffix.extend_from_slice(&stream_key);
            let value = || -> EngineResult<Vec<u8>> {
                let mut value = vec![];
                with_len(&stream_key, &mut value);
                encode_row(batch.columns(), row, &mut value)?;
                Ok(value)
            };
            let insert = chunk.op(row)?.sign() > 0;
            let changed = match self.kept.as_mut() {
                Some(kept) if insert => kept.insert(
                    &mut self.rows,
                    &self.emitted,
                    group,
                    &partition,
                    &suffix,
                    value,
                )?,
                Some(_) => {
                    return Err(EngineError::Internal(
                        "a Top-N planned over an input that only inserts got a retraction".into(),
                    ));
                }
                None => {
                    let mut key = partition.clone();
                    key.extend_from_slice(&suffix);
                    if insert {
                        self.rows.put(group, &key, value()?);
                    } else {
                        self.rows.delete(group, &key);
                    }
                    true
                }
            };
            if !changed {
                continue;
            }
            if let Some(window) = self.window.as_mut() {
                window.track(batch, row, &partition)?;
            }
            if !self.dirty.contains_key(partition.as_slice()) {
                self.dirty.insert(partition.clone(), group);
            }
        }
        self.partition_buf = partition;
        self.suffix_buf = suffix;
        Ok(())
    }

    /// Without a window, watermarks stop here: a deleted top row lets an
    /// older stored row into the output, however far behind the watermark
    /// it is. With one, the partitions the watermark passed are final.
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: crate::Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        self.close_partitions(watermark, out)
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        if let Some(chunk) = self.flush_dirty()? {
            out.emit(chunk);
        }
        self.rows.seal_epoch(barrier.epoch.0, out.writes());
        self.emitted.seal_epoch(barrier.epoch.0, out.writes());
        if let Some(window) = self.window.as_mut() {
            window.save(barrier.epoch.0, out.writes())?;
        }
        Ok(())
    }
}

impl TopNOperator {
    /// Compares every changed partition's top rows with what was emitted
    /// for it and returns the difference.
    fn flush_dirty(&mut self) -> EngineResult<Option<StreamChunk>> {
        // All deletes go before all inserts: a row that moved between
        // partitions in this epoch keeps its stream key, and its insert in
        // the new partition must not be undone by the old one's delete.
        let mut deletes = vec![];
        let mut inserts = vec![];
        for (partition, group) in std::mem::take(&mut self.dirty) {
            let (top, before) = match self.kept.as_mut() {
                Some(kept) => kept.take_change(
                    &mut self.rows,
                    &self.emitted,
                    group,
                    &partition,
                    self.offset,
                )?,
                None => (
                    self.current_top(group, &partition)?,
                    self.emitted_top(group, &partition)?,
                ),
            };
            for (stream_key, (rank, row)) in &before {
                if top.get(stream_key) != Some(&(*rank, row.clone())) {
                    deletes.push((Op::Delete, *rank, row.clone()));
                    let mut key = partition.clone();
                    key.extend_from_slice(stream_key);
                    self.emitted.delete(group, &key);
                }
            }
            for (stream_key, (rank, row)) in top {
                if before.get(&stream_key) != Some(&(rank, row.clone())) {
                    let mut key = partition.clone();
                    key.extend_from_slice(&stream_key);
                    let mut value = vec![];
                    with_len(&rank.to_le_bytes(), &mut value);
                    value.extend_from_slice(&row);
                    self.emitted.put(group, &key, value);
                    inserts.push((Op::Insert, rank, row));
                }
            }
        }
        deletes.extend(inserts);
        if deletes.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.build(deletes)?))
    }
}
