//! The walk Runnel's analyzer rules share: every expression of every plan
//! node (subqueries included), bottom up, rewritten with the node's input
//! schema at hand, the rewritten expressions keeping their names.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// Rewrites the expressions of every node of `plan` with `rewrite`, given
/// the node's input schema (None for a node without exactly one input).
/// A rewritten expression keeps its name, except in VALUES rows, which
/// have none to keep.
pub fn rewrite_expressions(
    plan: LogicalPlan,
    rewrite: impl Fn(Expr, Option<&DFSchema>) -> Result<Transformed<Expr>>,
) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let schema = match node.inputs().as_slice() {
            [one] => Some(Arc::clone(one.schema())),
            _ => None,
        };
        let is_values = matches!(node, LogicalPlan::Values(_));
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let saved = names.save(&expr);
            let rewritten = expr.transform_up(|e| rewrite(e, schema.as_deref()))?;
            Ok(if rewritten.transformed && !is_values {
                rewritten.update_data(|e| saved.restore(e))
            } else {
                rewritten
            })
        })
    })
    .map(|t| t.data)
}
