//! Planning Top-N: `ORDER BY … LIMIT`, `row_number() OVER (…) <= N`, and
//! Top-N per window (a partition column with a watermark).

use std::sync::Arc;

use super::*;

/// The N of a filter `rn <= N` (or `rn < N + 1`, `rn = 1`), when `rn` is
/// the row_number() of a window right below it (through projections).
pub(super) fn rank_limit(filter: &datafusion::logical_expr::Filter) -> Option<usize> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    use datafusion::scalar::ScalarValue;
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &filter.predicate else {
        return None;
    };
    let (Expr::Column(column), Expr::Literal(value, _)) = (left.as_ref(), right.as_ref()) else {
        return None;
    };
    let n = match value {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
        ScalarValue::Int32(Some(n)) => i64::from(*n),
        _ => return None,
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    // Follow the column down to the window that computes it.
    let mut name = column.name.clone();
    let mut plan = filter.input.as_ref();
    loop {
        match plan {
            LogicalPlan::SubqueryAlias(alias) => plan = alias.input.as_ref(),
            LogicalPlan::Projection(projection) => {
                let index = projection
                    .schema
                    .fields()
                    .iter()
                    .position(|f| f.name() == &name)?;
                match projection.expr[index].clone().unalias() {
                    Expr::Column(c) => name = c.name,
                    _ => return None,
                }
                plan = projection.input.as_ref();
            }
            LogicalPlan::Window(window) => {
                let is_rank = window
                    .schema
                    .fields()
                    .last()
                    .is_some_and(|f| f.name() == &name);
                return (is_rank && limit >= 0).then_some(limit as usize);
            }
            _ => return None,
        }
    }
}

impl Planner<'_> {
    /// The first `fetch` rows after `skip` of `input` in `order`, over all
    /// rows (one partition).
    pub(super) fn top_n(
        &mut self,
        input: &LogicalPlan,
        order: &[datafusion::logical_expr::SortExpr],
        skip: usize,
        fetch: usize,
    ) -> PlanResult<Node> {
        let node = self.plan(input)?;
        self.finish_top_n(node, input.schema(), vec![], order, skip, fetch, None)
    }

    /// `row_number() OVER (PARTITION BY … ORDER BY …)` under a filter that
    /// keeps the first rows of each partition.
    pub(super) fn ranked_top_n(
        &mut self,
        window: &datafusion::logical_expr::Window,
    ) -> PlanResult<Node> {
        if window
            .window_expr
            .iter()
            .any(|e| session::session_function(e).is_some())
        {
            return Err(not_supported(
                "a SESSION window in a materialized view outside an aggregation: group it by its partition columns and window_start or window_end",
            ));
        }
        let Some(limit) = self.rank_limit.take() else {
            return Err(not_supported(
                "a window function in a materialized view (only row_number() <= N, a Top-N, is)",
            ));
        };
        let [Expr::WindowFunction(function)] = window.window_expr.as_slice() else {
            return Err(not_supported(
                "several window functions in one materialized view",
            ));
        };
        if function.fun.name() != "row_number" {
            return Err(not_supported(format!(
                "window function {} in a materialized view (only row_number() <= N is)",
                function.fun.name()
            )));
        }
        let mut node = self.plan(&window.input)?;
        let logical = window.input.schema();
        let partition_exprs: Vec<&Expr> = function.params.partition_by.iter().collect();
        let partition =
            self.append_columns(&mut node, &partition_exprs, logical, "_runnel_partition_")?;
        // Top-N per window: a partition column with a watermark.
        let windowed = partition
            .iter()
            .zip(&partition_exprs)
            .find(|(c, _)| node.watermarks.contains(c))
            .map(|(&c, e)| {
                let visible_copy = match e {
                    Expr::Column(column) => logical.index_of_column(column).ok(),
                    _ => None,
                };
                (c, visible_copy)
            });
        let order = &function.params.order_by;
        let mut node =
            self.finish_top_n(node, logical, partition, order, 0, limit, Some(window))?;
        if let Some((input_column, visible_copy)) = windowed {
            // The watermark's table, right after the Top-N's two.
            self.state_ids(1);
            let Some(OperatorSpec::TopN {
                window: top_n_window,
                ..
            }) = node.operators.last_mut()
            else {
                return Err(PlanError::Internal(
                    "a Top-N was planned without its operator".into(),
                ));
            };
            // The row number sits after the visible columns, pushing the
            // hidden ones (the partition copy among them) one further.
            let mut outputs = vec![input_column + 1];
            outputs.extend(visible_copy);
            *top_n_window = Some(runnel_engine::graph::TopNWindow {
                input_column,
                outputs: outputs.clone(),
            });
            node.watermarks = outputs;
        }
        Ok(node)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_top_n(
        &mut self,
        mut node: Node,
        logical: &DFSchema,
        partition: Vec<usize>,
        order: &[datafusion::logical_expr::SortExpr],
        offset: usize,
        limit: usize,
        window: Option<&datafusion::logical_expr::Window>,
    ) -> PlanResult<Node> {
        let order_exprs: Vec<&Expr> = order.iter().map(|o| &o.expr).collect();
        let order_columns =
            self.append_columns(&mut node, &order_exprs, logical, "_runnel_order_")?;
        let order = order
            .iter()
            .zip(order_columns)
            .map(|(o, column)| runnel_engine::graph::SortOrder {
                column,
                descending: !o.asc,
                nulls_first: o.nulls_first,
            })
            .collect();
        let (distribution, parallelism) = if partition.is_empty() {
            (Distribution::Single, 1)
        } else {
            (Distribution::Hash(partition.clone()), self.parallelism)
        };
        let mut next = self.exchange(node, distribution, parallelism);
        let input_schema = Arc::clone(&next.schema);
        let visible = logical.fields().len();
        let (schema, rank_column, key) = match window {
            Some(window) => {
                // Output: the input's visible columns, the row number, then
                // the input's hidden columns.
                let mut fields: Vec<Field> = window
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.extend(
                    input_schema.fields()[visible..]
                        .iter()
                        .map(|f| f.as_ref().clone()),
                );
                let key = next
                    .key
                    .iter()
                    .map(|&k| if k < visible { k } else { k + 1 })
                    .collect();
                (Arc::new(Schema::new(fields)), Some(visible), key)
            }
            None => (Arc::clone(&input_schema), None, next.key.clone()),
        };
        let state_id = self.state_ids(2);
        let append_only_input = self.node_append_only(&next);
        next.operators.push(OperatorSpec::TopN {
            partition,
            order,
            offset,
            limit,
            rank_column,
            input_schema,
            stream_key: next.key.clone(),
            schema: Arc::clone(&schema),
            state_id,
            window: None,
            append_only_input,
        });
        next.schema = schema;
        next.key = key;
        // A Top-N holds watermarks back (see the operator), unless it is
        // per window (set by the caller).
        next.watermarks = vec![];
        Ok(next)
    }
}
