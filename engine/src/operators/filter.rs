//! Filter: a DataFusion predicate evaluated on whole chunks; rows where it
//! is false or null are dropped, ops kept (a delete of a row that passed
//! the filter passes it again, so results stay consistent).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::physical_expr::PhysicalExpr;

use crate::operator::{Output, StreamOperator};
use crate::{EngineError, EngineResult, StreamChunk};

/// Keeps the rows a predicate accepts.
#[derive(Debug)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    /// A filter by `predicate`, a boolean expression over the input schema.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { predicate }
    }
}

#[async_trait]
impl StreamOperator for FilterOperator {
    fn name(&self) -> &'static str {
        "filter"
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
        let mask = self
            .predicate
            .evaluate(chunk.data())?
            .into_array(chunk.num_rows())?;
        let mask = mask
            .as_boolean_opt()
            .ok_or_else(|| EngineError::InvalidChunk("filter predicate is not boolean".into()))?;
        let mask: BooleanArray = if mask.null_count() > 0 {
            prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        out.emit(chunk.filter(&mask)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::operators::harness::{Harness, chunk, schema};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{binary, col, lit};

    #[tokio::test]
    async fn keeps_accepted_rows_with_their_ops() {
        let input = schema();
        let predicate = binary(col("n", &input).unwrap(), Operator::Gt, lit(1i64), &input).unwrap();
        let mut h = Harness::new(FilterOperator::new(predicate));
        let out = h
            .push_chunk(chunk(&[
                (Op::Insert, "a", 1),
                (Op::Delete, "b", 2),
                (Op::UpdateInsert, "c", 3),
            ]))
            .await
            .unwrap();
        assert_eq!(out, "- b 2\nU+ c 3\n");
        // Nothing passes: nothing is emitted.
        assert_eq!(
            h.push_chunk(chunk(&[(Op::Insert, "z", 0)])).await.unwrap(),
            ""
        );
        // A stateless operator owes nothing at a barrier.
        let barrier = crate::Barrier {
            epoch: crate::Epoch(1),
            kind: crate::BarrierKind::Checkpoint,
        };
        assert_eq!(h.push_barrier(barrier).await.unwrap(), "");
    }
}
