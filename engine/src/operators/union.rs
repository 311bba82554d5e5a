//! `UNION ALL`: rows of every input, each given a stream key that cannot
//! collide across inputs (the input's port, then its own key).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::key_codec::encode_nullable_key;

use crate::operator::{Output, StreamOperator};
use crate::watermarks::WatermarkMerge;
use crate::{EngineResult, StreamChunk, Watermark};

/// Merges its inputs into `schema`: the visible columns, then a binary key.
#[derive(Debug)]
pub struct UnionOperator {
    schema: SchemaRef,
    /// Per input port, the columns of its stream key.
    keys: Vec<Vec<usize>>,
    watermarks: WatermarkMerge,
}

impl UnionOperator {
    /// Merges inputs whose stream keys are `keys` (one list per port); an
    /// input whose watermark stands still for `idle_timeout` stops holding
    /// the others back.
    pub fn new(
        schema: SchemaRef,
        keys: Vec<Vec<usize>>,
        idle_timeout: Option<std::time::Duration>,
    ) -> Self {
        Self {
            schema,
            keys,
            watermarks: WatermarkMerge::with_idle_timeout(idle_timeout),
        }
    }
}

#[async_trait]
impl StreamOperator for UnionOperator {
    fn name(&self) -> &'static str {
        "union"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    async fn process_chunk(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()> {
        let batch = chunk.data();
        let visible = self.schema.fields().len() - 1;
        let key_columns: Vec<&ArrayRef> =
            self.keys[input].iter().map(|&i| batch.column(i)).collect();
        let mut keys = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let mut key = vec![input as u8];
            encode_nullable_key(&key_columns, row, &mut key)?;
            keys.push(key);
        }
        let mut columns: Vec<ArrayRef> = batch.columns()[..visible].to_vec();
        columns.push(Arc::new(BinaryArray::from_iter_values(
            keys.iter().map(Vec::as_slice),
        )));
        let data = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        out.emit(chunk.with_data(data)?);
        Ok(())
    }

    /// The visible columns are the same in every input and keep their
    /// place: their watermark is the minimum over the inputs. The hidden
    /// ones differ per input and are replaced by the key, so their
    /// watermarks stop here.
    async fn on_watermark(
        &mut self,
        input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        if watermark.column < self.schema.fields().len() - 1
            && let Some(combined) = self.watermarks.update(input, self.keys.len(), watermark)
        {
            out.emit_watermark(combined);
        }
        Ok(())
    }

    /// Inputs may have gone idle since the last watermark arrived.
    async fn on_barrier(
        &mut self,
        _barrier: &crate::Barrier,
        out: &mut Output,
    ) -> EngineResult<()> {
        for combined in self.watermarks.poll() {
            out.emit_watermark(combined);
        }
        Ok(())
    }
}
