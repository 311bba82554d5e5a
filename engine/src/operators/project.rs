//! Projection: DataFusion expressions evaluated on whole chunks, ops kept.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use crate::operator::{Output, StreamOperator};
use crate::{EngineResult, StreamChunk, Watermark};

/// Computes one output column per expression.
#[derive(Debug)]
pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    /// `exprs` over the input schema, producing `schema`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { exprs, schema }
    }
}

#[async_trait]
impl StreamOperator for ProjectOperator {
    fn name(&self) -> &'static str {
        "project"
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
        let rows = chunk.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(chunk.data())?.into_array(rows))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?;
        out.emit(chunk.with_data(data)?);
        Ok(())
    }

    /// A watermark passes to every output column that rises with its
    /// column (the column itself, window bounds and time buckets of it).
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        for (i, expr) in self.exprs.iter().enumerate() {
            let output_type = self.schema.field(i).data_type();
            if let Some(derived) = crate::rising::derive(expr, i, output_type, &watermark) {
                out.emit_watermark(derived);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::operators::harness::{Harness, chunk, schema};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{binary, col, lit};
    use datafusion::scalar::ScalarValue;

    #[tokio::test]
    async fn computes_columns_and_keeps_ops() {
        let input = schema();
        let doubled = binary(
            col("n", &input).unwrap(),
            Operator::Multiply,
            lit(2i64),
            &input,
        )
        .unwrap();
        let output = Arc::new(Schema::new(vec![
            Field::new("n2", DataType::Int64, true),
            Field::new("k", DataType::Utf8, true),
        ]));
        let op = ProjectOperator::new(vec![doubled, col("k", &input).unwrap()], output);
        let mut h = Harness::new(op);
        let out = h
            .push_chunk(chunk(&[(Op::Insert, "a", 1), (Op::Delete, "b", 2)]))
            .await
            .unwrap();
        assert_eq!(out, "+ 2 a\n- 4 b\n");
        // The watermark on `k` (input column 0) is output column 1.
        let wm = Watermark {
            column: 0,
            value: ScalarValue::from("m"),
        };
        let columns = |w: Vec<Watermark>| w.iter().map(|w| w.column).collect::<Vec<_>>();
        assert_eq!(columns(h.push_watermark(wm).await.unwrap()), vec![1]);
        // `n * 2` does not carry a watermark of `n` through (a product
        // rises only for positive factors).
        let wm = Watermark {
            column: 1,
            value: ScalarValue::from(5i64),
        };
        assert!(h.push_watermark(wm).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn division_by_zero_is_an_error_not_a_panic() {
        let input = schema();
        let ratio = binary(
            lit(1i64),
            Operator::Divide,
            col("n", &input).unwrap(),
            &input,
        )
        .unwrap();
        let output = Arc::new(Schema::new(vec![Field::new("r", DataType::Int64, true)]));
        let mut h = Harness::new(ProjectOperator::new(vec![ratio], output));
        assert!(h.push_chunk(chunk(&[(Op::Insert, "a", 0)])).await.is_err());
    }
}
