//! `unnest(list)`: each input row becomes one row per element of its list
//! columns, with the same change (an insert's elements are inserted, a
//! delete's deleted). DataFusion's own `UnnestExec` does the expanding, on
//! each chunk, so a view unnests exactly as its batch query does. The
//! output ends in the element's ordinal within its row, which joins the
//! input's stream key: the same row always expands into the same ordinals.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, AsArray, Int8Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef, UInt32Type};
use datafusion::common::UnnestOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::unnest::{ListUnnest, UnnestExec};

use crate::operator::{Output, StreamOperator};
use crate::{EngineResult, Op, StreamChunk, Watermark};

/// Expands list columns into rows.
#[derive(Debug)]
pub struct UnnestOperator {
    /// Input columns holding lists to expand (one level each).
    lists: Vec<usize>,
    options: UnnestOptions,
    /// The input's columns, the list columns with their element types,
    /// then the ordinal.
    schema: SchemaRef,
}

impl UnnestOperator {
    /// Unnests `lists` of the input into `schema`.
    pub fn new(lists: Vec<usize>, options: UnnestOptions, schema: SchemaRef) -> Self {
        Self {
            lists,
            options,
            schema,
        }
    }

    /// Runs `UnnestExec` over the chunk with two extra columns, the op
    /// code and the row number, which come out repeated per element.
    async fn expand(&self, chunk: &StreamChunk) -> EngineResult<Option<StreamChunk>> {
        let data = chunk.data();
        let ops: Vec<i8> = chunk.ops()?.into_iter().map(|op| op as i8).collect();
        let mut columns = data.columns().to_vec();
        columns.push(Arc::new(Int8Array::from(ops)));
        columns.push(Arc::new(UInt32Array::from_iter_values(
            0..data.num_rows() as u32,
        )));
        let mut fields: Vec<Field> = data
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("_runnel_op", DataType::Int8, false));
        fields.push(Field::new("_runnel_row", DataType::UInt32, false));
        let input_schema = Arc::new(Schema::new(fields));
        let input = RecordBatch::try_new(Arc::clone(&input_schema), columns)?;
        let mut output_fields: Vec<Field> = self.schema.fields()[..self.schema.fields().len() - 1]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        output_fields.push(Field::new("_runnel_op", DataType::Int8, false));
        output_fields.push(Field::new("_runnel_row", DataType::UInt32, false));
        let exec = UnnestExec::new(
            MemorySourceConfig::try_new_exec(&[vec![input]], input_schema, None)?,
            self.lists
                .iter()
                .map(|&index| ListUnnest {
                    index_in_input_schema: index,
                    depth: 1,
                })
                .collect(),
            vec![],
            Arc::new(Schema::new(output_fields)),
            self.options.clone(),
        )?;
        let batches =
            datafusion::physical_plan::collect(Arc::new(exec), Arc::new(TaskContext::default()))
                .await?;
        let mut chunks = vec![];
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let width = batch.num_columns();
            let codes = batch.column(width - 2).as_primitive::<Int8Type>();
            let rows = batch.column(width - 1).as_primitive::<UInt32Type>();
            let mut ops = Vec::with_capacity(batch.num_rows());
            let mut ordinals = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                // An update's halves no longer pair up row for row.
                ops.push(match Op::from_code(codes.value(i))? {
                    Op::UpdateDelete => Op::Delete,
                    Op::UpdateInsert => Op::Insert,
                    op => op,
                });
                let same_row = i > 0 && rows.value(i - 1) == rows.value(i);
                ordinals.push(if same_row {
                    ordinals.last().copied().unwrap_or(0) + 1
                } else {
                    0i64
                });
            }
            let mut columns: Vec<ArrayRef> = batch.columns()[..width - 2].to_vec();
            columns.push(Arc::new(Int64Array::from(ordinals)));
            let data = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            chunks.push(StreamChunk::new(data, &ops)?);
        }
        Ok(match chunks.len() {
            0 => None,
            1 => chunks.pop(),
            _ => {
                let ops: Vec<Op> = chunks
                    .iter()
                    .map(|c| c.ops())
                    .collect::<EngineResult<Vec<_>>>()?
                    .concat();
                let batches: Vec<RecordBatch> = chunks.iter().map(|c| c.data().clone()).collect();
                let data = datafusion::arrow::compute::concat_batches(&self.schema, &batches)?;
                Some(StreamChunk::new(data, &ops)?)
            }
        })
    }
}

#[async_trait]
impl StreamOperator for UnnestOperator {
    fn name(&self) -> &'static str {
        "unnest"
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
        if let Some(chunk) = self.expand(&chunk).await? {
            out.emit(chunk);
        }
        Ok(())
    }

    /// Every watermark passes on as it is: an unnested column keeps its
    /// list's position, and a watermark on a list already bounds its
    /// elements (`crate::rising`).
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        out.emit_watermark(watermark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::harness::Harness;
    use datafusion::arrow::array::{Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    #[tokio::test]
    async fn each_element_becomes_a_row_with_the_rows_change() {
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            Some(vec![]),
            Some(vec![Some(3)]),
        ]);
        let input_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("l", lists.data_type().clone(), true),
        ]));
        let data = RecordBatch::try_new(
            input_schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(lists),
            ],
        )
        .unwrap();
        let chunk = StreamChunk::new(data, &[Op::Insert, Op::Insert, Op::Delete]).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("l", DataType::Int32, true),
            Field::new("_runnel_ordinal", DataType::Int64, false),
        ]));
        let options = UnnestOptions::new().with_preserve_nulls(false);
        let mut h = Harness::new(UnnestOperator::new(vec![1], options, schema));
        assert_eq!(
            h.push_chunk(chunk).await.unwrap(),
            "+ a 1 0\n+ a 2 1\n- c 3 0\n"
        );
    }
}
