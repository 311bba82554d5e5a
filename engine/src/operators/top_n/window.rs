//! Top-N per window: the watermark of one partition column, the index of
//! partitions with state by that column's value, late rows, and reading
//! both back from state after a restart.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::RowDecoder;
use runnel_storage::{Store, WriteSet};

use super::{TopNOperator, split_len};
use crate::graph::TopNWindow;
use crate::operator::Output;
use crate::operators::window_state::{KeptWatermark, OpenWindows};
use crate::{EngineResult, StreamChunk, Watermark};

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
    /// The watermark of the window column (table `state_id + 2`).
    watermark: KeptWatermark,
    /// Partitions with state (bytes, key group).
    open: OpenWindows<(Vec<u8>, u16)>,
    loaded: bool,
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
            watermark: KeptWatermark::new(store, meta_id, &setup.key_groups),
            setup,
            input_schema: Arc::clone(input_schema),
            partition: partition.to_vec(),
            open: OpenWindows::default(),
            loaded: false,
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
        self.open.insert(window, (partition.to_vec(), group));
        Ok(())
    }

    /// Puts the watermark into the epoch's writes.
    pub(super) fn save(&mut self, epoch: u64, writes: &mut WriteSet) -> EngineResult<()> {
        self.watermark.seal(epoch, writes)
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
        window.watermark.load()?;
        window.loaded = true;
        Ok(())
    }

    /// Drops the rows of `chunk` whose partition the watermark passed,
    /// counting them.
    pub(super) fn drop_late(&self, chunk: StreamChunk) -> EngineResult<StreamChunk> {
        let Some(window) = &self.window else {
            return Ok(chunk);
        };
        let Some(watermark) = window.watermark.value() else {
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
        if !window.watermark.advance(&watermark.value) {
            return Ok(());
        }
        let closed = window.open.close_below(&watermark.value)?;
        let outputs = window.setup.spec.outputs.clone();
        if let Some(chunk) = self.flush_dirty()? {
            out.emit(chunk);
        }
        for (partition, group) in closed {
            for (key, _) in self.rows.scan_prefix(group, &partition)? {
                self.rows.delete(group, &key);
            }
            for (key, _) in self.emitted.scan_prefix(group, &partition)? {
                self.emitted.delete(group, &key);
            }
            if let Some(kept) = self.kept.as_mut() {
                kept.forget(&partition);
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
