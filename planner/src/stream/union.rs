//! `UNION ALL`: the branches' fragments meet in one, where rows get a key
//! made of their branch's.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::Union;
use runnel_engine::graph::{Distribution, FragmentInput, FragmentOutput, OperatorSpec};

use super::{Node, Planner};
use crate::PlanResult;

impl Planner<'_> {
    pub(super) fn union(&mut self, union: &Union) -> PlanResult<Node> {
        let visible = union.schema.fields().len();
        let branches = union
            .inputs
            .iter()
            .map(|input| self.plan(input))
            .collect::<PlanResult<Vec<_>>>()?;
        let id = self.reserve();
        let mut keys = vec![];
        let mut inputs = vec![];
        // A column carries a watermark when it does in every branch.
        let watermarks: Vec<usize> = (0..visible)
            .filter(|c| branches.iter().all(|b| b.watermarks.contains(c)))
            .collect();
        for (port, node) in branches.into_iter().enumerate() {
            keys.push(node.key.clone());
            inputs.push(FragmentInput::Exchange { fragment: node.id });
            self.close(
                node,
                FragmentOutput::exchange(id, port, Distribution::Single),
            );
        }
        let mut fields: Vec<Field> = union
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("_runnel_union_key", DataType::Binary, false));
        let schema = Arc::new(Schema::new(fields));
        Ok(Node {
            id,
            inputs,
            operators: vec![OperatorSpec::Union {
                keys,
                schema: Arc::clone(&schema),
            }],
            parallelism: 1,
            schema,
            key: vec![visible],
            watermarks,
        })
    }
}
