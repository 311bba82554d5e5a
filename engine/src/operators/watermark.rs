//! Watermark generation for a source with `WATERMARK FOR col AS expr`: rows
//! pass unchanged; after each chunk the watermark on `col` rises to the
//! largest `expr` seen so far. The value is kept in state at every barrier,
//! so a restarted job continues from where the committed epoch left it
//! rather than from the first rows it reads again. Behind a source whose
//! reader has splits (Kafka partitions) the source computes the watermark
//! per split (`runtime::split_watermarks`) and this operator passes it on.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::functions_aggregate::min_max::MaxAccumulator;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{StateTable, Store};

use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineResult, StreamChunk, Watermark};

const WATERMARK_KEY: &[u8] = b"watermark";

/// Emits the watermark of one event-time column.
#[derive(Debug)]
pub struct WatermarkOperator {
    column: usize,
    expr: Arc<dyn PhysicalExpr>,
    current: Option<ScalarValue>,
    state: StateTable,
    /// The state group the value is kept under: the subtask's, as each
    /// subtask behind a parallel source has a watermark of its own.
    group: u16,
    /// The source computes the watermark (per split) and sends it in line
    /// with the rows: pass it on, compute none here.
    from_source: bool,
}

impl WatermarkOperator {
    /// The watermark on `column`, the largest `expr` (over the input rows)
    /// seen; its last committed value is read from state table `state_id`,
    /// group `group` (the subtask's). With `from_source`, the source sends
    /// the watermark (per split) and this operator only passes on what
    /// rises.
    pub fn new(
        column: usize,
        expr: Arc<dyn PhysicalExpr>,
        store: Store,
        state_id: u64,
        group: u16,
        from_source: bool,
    ) -> EngineResult<Self> {
        let state = StateTable::new(store, state_id);
        let current = match state.get(group, WATERMARK_KEY)? {
            Some(bytes) => decode_scalars(&bytes)?.into_iter().next(),
            None => None,
        };
        Ok(Self {
            column,
            expr,
            current,
            state,
            group,
            from_source,
        })
    }

    fn rise(&mut self, value: ScalarValue, out: &mut Output) {
        if value.is_null() || self.current.as_ref().is_some_and(|c| c >= &value) {
            return;
        }
        self.current = Some(value.clone());
        out.emit_watermark(Watermark {
            column: self.column,
            value,
        });
    }
}

#[async_trait]
impl StreamOperator for WatermarkOperator {
    fn name(&self) -> &'static str {
        "watermark"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()> {
        if self.from_source {
            out.emit(chunk);
            return Ok(());
        }
        let values = self
            .expr
            .evaluate(chunk.data())?
            .into_array(chunk.num_rows())?;
        // DataFusion's max over the chunk; null when every value is.
        let mut max = MaxAccumulator::try_new(values.data_type())?;
        max.update_batch(&[values])?;
        out.emit(chunk);
        self.rise(max.evaluate()?, out);
        Ok(())
    }

    /// A source that ran out sends end-of-input watermarks: they close
    /// everything, this column's included. Others pass on.
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        if watermark.column == self.column {
            self.rise(watermark.value, out);
            return Ok(());
        }
        if watermark.is_end_of_input() {
            // Without a row or a committed watermark there is no window to
            // close, and the column's type is not known yet.
            let end = self.current.as_ref().map(|c| c.data_type());
            if let Some(end) = end.as_ref().and_then(Watermark::end_of_input) {
                self.rise(end, out);
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        if let Some(current) = &self.current {
            let mut bytes = vec![];
            encode_scalars(std::slice::from_ref(current), &mut bytes)?;
            self.state.put(self.group, WATERMARK_KEY, bytes);
        }
        self.state.seal_epoch(barrier.epoch.0, out.writes());
        Ok(())
    }
}
