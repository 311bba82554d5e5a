//! Top-N per window: the watermark of one partition column, the index of
//! partitions with state by that column's value, late rows, and reading
//! both back from state after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::RowDecoder;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{StateTable, Store, WriteSet};

use super::{TopNOperator, split_len};
use crate::graph::TopNWindow;
use crate::operator::Output;
use crate::watermarks::order_key;
use crate::{EngineResult, StreamChunk, Watermark};

const WATERMARK_KEY: &[u8] = b"watermark";

/// What a windowed Top-N needs from the runtime.
#[derive(Debug)]
pub struct TopNWindowSetup {
    pub spec: TopNWindow,
    /// The key groups this subtask owns.
    pub key_groups: Vec<u16>,
    /// The job's counter of late rows dropped.
    pub late_rows: Arc<AtomicU64>,
}

/// What a windowed Top-N keeps beside its rows.
pub(super) struct Window {
    setup: TopNWindowSetup,
    input_schema: SchemaRef,
    partition: Vec<usize>,
    watermark: Option<ScalarValue>,
    /// Partitions with state (bytes, key group), by window value
    /// (memcomparable).
    open: BTreeMap<Vec<u8>, BTreeSet<(Vec<u8>, u16)>>,
    loaded: bool,
    /// Table `state_id + 2`: the watermark as of the last barrier.
    meta: StateTable,
}

impl Window {
    pub(super) fn new(
        setup: TopNWindowSetup,
        input_schema: &SchemaRef,
        partition: &[usize],
        store: Store,
        meta_id: u64,
    ) -> EngineResult<Self> {
        Ok(Self {
            setup,
            input_schema: Arc::clone(input_schema),
            partition: partition.to_vec(),
            watermark: None,
            open: BTreeMap::new(),
            loaded: false,
            meta: StateTable::new(store, meta_id),
        })
    }

    /// Records that partition `partition` of row `row` has state.
    pub(super) fn track(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        partition: &[u8],
    ) -> EngineResult<()> {
        // The value's memcomparable form, as `order_key` makes it; a null
        // window never closes.
        let column = batch.column(self.setup.spec.input_column);
        if column.is_null(row) {
            return Ok(());
        }
        let mut window = vec![];
        encode_nullable_key(&[column], row, &mut window)?;
        let group = runnel_storage::state_table::key_group(partition);
        self.open
            .entry(window)
            .or_default()
            .insert((partition.to_vec(), group));
        Ok(())
    }

    /// Puts the watermark into the epoch's writes.
    pub(super) fn save(&mut self, epoch: u64, writes: &mut WriteSet) -> EngineResult<()> {
        if let (Some(watermark), Some(&first)) = (&self.watermark, self.setup.key_groups.first()) {
            let mut bytes = vec![];
            encode_scalars(std::slice::from_ref(watermark), &mut bytes)?;
            self.meta.put(first, WATERMARK_KEY, bytes);
        }
        self.meta.seal_epoch(epoch, writes);
        Ok(())
    }
}

impl TopNOperator {
    /// Reads a windowed Top-N's watermark and partitions from state, once.
    pub(super) fn load_window(&mut self) -> EngineResult<()> {
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if window.loaded {
            return Ok(());
        }
        let mut decoder = RowDecoder::new(&window.input_schema, None)?;
        for &group in &window.setup.key_groups {
            for (_, value) in self.rows.scan_prefix(group, b"")? {
                decoder.push(split_len(&value)?.1)?;
            }
        }
        let batch = decoder.finish()?;
        let window = self.window.as_mut().expect("checked above");
        let columns: Vec<&ArrayRef> = window.partition.iter().map(|&i| batch.column(i)).collect();
        for row in 0..batch.num_rows() {
            let mut partition = vec![];
            encode_nullable_key(&columns, row, &mut partition)?;
            window.track(&batch, row, &partition)?;
        }
        if let Some(&first) = window.setup.key_groups.first()
            && let Some(bytes) = window.meta.get(first, WATERMARK_KEY)?
        {
            window.watermark = decode_scalars(&bytes)?.into_iter().next();
        }
        window.loaded = true;
        Ok(())
    }

    /// Drops the rows of `chunk` whose partition the watermark passed,
    /// counting them.
    pub(super) fn drop_late(&self, chunk: StreamChunk) -> EngineResult<StreamChunk> {
        let Some(window) = &self.window else {
            return Ok(chunk);
        };
        let Some(watermark) = &window.watermark else {
            return Ok(chunk);
        };
        let values = Arc::clone(chunk.data().column(window.setup.spec.input_column));
        crate::watermarks::drop_late(chunk, &values, watermark, &window.setup.late_rows)
    }

    /// Emits the pending changes, then deletes the state of every partition
    /// the watermark passed and passes the watermark on.
    pub(super) fn close_partitions(
        &mut self,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if watermark.column != window.setup.spec.input_column {
            return Ok(());
        }
        self.load_window()?;
        let window = self.window.as_mut().expect("checked above");
        if window
            .watermark
            .as_ref()
            .is_some_and(|w| w >= &watermark.value)
        {
            return Ok(());
        }
        window.watermark = Some(watermark.value.clone());
        let closed = match order_key(&watermark.value)? {
            Some(bound) => {
                let open = window.open.split_off(&bound);
                std::mem::replace(&mut window.open, open)
            }
            None => BTreeMap::new(),
        };
        let outputs = window.setup.spec.outputs.clone();
        if let Some(chunk) = self.flush_dirty()? {
            out.emit(chunk);
        }
        for (partition, group) in closed.into_values().flatten() {
            for (key, _) in self.rows.scan_prefix(group, &partition)? {
                self.rows.delete(group, &key);
            }
            for (key, _) in self.emitted.scan_prefix(group, &partition)? {
                self.emitted.delete(group, &key);
            }
        }
        for column in outputs {
            out.emit_watermark(Watermark {
                column,
                value: watermark.value.clone(),
            });
        }
        Ok(())
    }
}
