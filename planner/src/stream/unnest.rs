//! `unnest(list)`: each row expands into one row per element, keyed by
//! the row's key and the element's ordinal.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::Unnest;
use runnel_engine::graph::OperatorSpec;

use super::{Node, Planner, not_supported};
use crate::PlanResult;

impl Planner<'_> {
    pub(super) fn unnest(&mut self, unnest: &Unnest) -> PlanResult<Node> {
        if !unnest.struct_type_columns.is_empty()
            || unnest.list_type_columns.iter().any(|(_, l)| l.depth != 1)
            || unnest.options.recursions.iter().any(|r| r.depth != 1)
        {
            return Err(not_supported(
                "unnest of a struct or of nested levels in a materialized view (only unnest of a list, one level)",
            ));
        }
        let mut node = self.plan(&unnest.input)?;
        let lists: Vec<usize> = unnest.list_type_columns.iter().map(|(i, _)| *i).collect();
        let visible = unnest.schema.fields().len();
        if visible != unnest.input.schema().fields().len() {
            return Err(not_supported("this form of unnest in a materialized view"));
        }
        // The unnested columns, the input's hidden ones, then the ordinal.
        let mut fields: Vec<Field> = unnest
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            node.schema.fields()[visible..]
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        let ordinal = fields.len();
        fields.push(Field::new("_runnel_unnest_ordinal", DataType::Int64, false));
        let schema = Arc::new(Schema::new(fields));
        if node.key.iter().any(|k| lists.contains(k)) {
            return Err(not_supported(
                "unnest of a list column that identifies its rows in a materialized view",
            ));
        }
        // A watermarked list's elements keep its watermark (`rising`).
        node.key.push(ordinal);
        node.operators.push(OperatorSpec::Unnest {
            lists,
            options: unnest.options.clone(),
            schema: Arc::clone(&schema),
        });
        node.schema = schema;
        Ok(node)
    }
}
