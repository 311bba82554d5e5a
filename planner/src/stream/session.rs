//! Planning an aggregation over `SESSION(…)`: the batch rewrite computes
//! session bounds with window functions (`crate::windows::session`), which
//! no incremental operator can maintain row by row; grouped by the session
//! keys and bounds, though, the whole thing is one session aggregation.
//! This finds that shape under an `Aggregate` (through aliases and
//! projections), rewrites the aggregation's expressions over the window's
//! input, and plans the engine's `SessionAggregate`.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Window};
use runnel_engine::graph::{
    Distribution, FragmentInput, OperatorSpec, SessionColumn, SessionWindow, operators_append_only,
};
use std::sync::Arc;

use super::{Node, Planner, df, not_supported};
use crate::PlanResult;
use crate::windows::session::{SESSION_END, SESSION_START};

/// Stands for a session bound in expressions rewritten below the window.
const START_MARKER: &str = "__runnel_session_window_start";
const END_MARKER: &str = "__runnel_session_window_end";

/// The session window function `expr` calls, if it is one.
pub(super) fn session_function(expr: &Expr) -> Option<&WindowFunction> {
    match expr {
        Expr::Alias(alias) => session_function(&alias.expr),
        Expr::WindowFunction(function)
            if matches!(function.fun.name(), SESSION_START | SESSION_END) =>
        {
            Some(function)
        }
        _ => None,
    }
}

/// Maps a column of a plan's output to an expression over its input.
type ColumnMap<'a> = Box<dyn Fn(&Column) -> Option<Expr> + 'a>;

/// Rewrites `exprs` (over `plan`'s output) down through aliases and
/// projections to the session window below, if that is what `plan` is:
/// columns become the window input's, session bounds become markers.
fn down_to_session(
    mut plan: &LogicalPlan,
    mut exprs: Vec<Expr>,
) -> PlanResult<Option<(&Window, Vec<Expr>)>> {
    loop {
        let (next, replace): (&LogicalPlan, ColumnMap<'_>) = match plan {
            LogicalPlan::SubqueryAlias(alias) => (
                alias.input.as_ref(),
                Box::new(|c: &Column| {
                    let index = alias.schema.index_of_column(c).ok()?;
                    Some(Expr::Column(Column::from(
                        alias.input.schema().qualified_field(index),
                    )))
                }),
            ),
            LogicalPlan::Projection(projection) => (
                projection.input.as_ref(),
                Box::new(|c: &Column| {
                    let index = projection.schema.index_of_column(c).ok()?;
                    Some(projection.expr[index].clone().unalias())
                }),
            ),
            LogicalPlan::Window(window)
                if !window.window_expr.is_empty()
                    && window
                        .window_expr
                        .iter()
                        .all(|e| session_function(e).is_some()) =>
            {
                let inputs = window.input.schema().fields().len();
                let replace = |c: &Column| {
                    let index = window.schema.index_of_column(c).ok()?;
                    Some(if index < inputs {
                        Expr::Column(Column::from(window.input.schema().qualified_field(index)))
                    } else {
                        let function = session_function(&window.window_expr[index - inputs])?;
                        let marker = if function.fun.name() == SESSION_START {
                            START_MARKER
                        } else {
                            END_MARKER
                        };
                        Expr::Column(Column::from_name(marker))
                    })
                };
                let exprs = rewrite_columns(exprs, &replace)?;
                return Ok(Some((window, exprs)));
            }
            _ => return Ok(None),
        };
        exprs = rewrite_columns(exprs, replace.as_ref())?;
        plan = next;
    }
}

fn rewrite_columns(
    exprs: Vec<Expr>,
    replace: &dyn Fn(&Column) -> Option<Expr>,
) -> PlanResult<Vec<Expr>> {
    exprs
        .into_iter()
        .map(|expr| {
            expr.transform(|e| match &e {
                Expr::Column(c) => match replace(c) {
                    Some(new) => Ok(Transformed::yes(new)),
                    None => Ok(Transformed::no(e)),
                },
                _ => Ok(Transformed::no(e)),
            })
            .map(|t| t.data)
            .map_err(df)
        })
        .collect()
}

fn marker_of(expr: &Expr) -> Option<SessionColumn> {
    match expr {
        Expr::Column(c) if c.relation.is_none() && c.name == START_MARKER => {
            Some(SessionColumn::Start)
        }
        Expr::Column(c) if c.relation.is_none() && c.name == END_MARKER => Some(SessionColumn::End),
        _ => None,
    }
}

fn mentions_marker(expr: &Expr) -> bool {
    expr.column_refs()
        .iter()
        .any(|c| c.relation.is_none() && (c.name == START_MARKER || c.name == END_MARKER))
}

/// The time column, gap and partition keys every function of the window
/// shares.
fn session_spec(window: &Window) -> PlanResult<(Expr, i64, Vec<Expr>)> {
    let mut spec: Option<(Expr, i64, Vec<Expr>)> = None;
    for expr in &window.window_expr {
        let function = session_function(expr).expect("checked by the caller");
        let params = &function.params;
        let (Some(time), Some(Expr::Literal(ScalarValue::Int64(Some(gap)), _))) =
            (params.args.first(), params.args.get(1))
        else {
            return Err(not_supported(
                "session window functions other than the ones SESSION(…) writes",
            ));
        };
        let this = (time.clone(), *gap, params.partition_by.clone());
        match &spec {
            Some(seen) if seen != &this => {
                return Err(not_supported(
                    "two different SESSION windows over one relation",
                ));
            }
            _ => spec = Some(this),
        }
    }
    spec.ok_or_else(|| not_supported("an empty session window"))
}

impl Planner<'_> {
    /// Plans `aggregate` as a session aggregation when it groups a
    /// `SESSION(…)`; None when its input is no session window.
    pub(super) fn session_aggregate(&mut self, aggregate: &Aggregate) -> PlanResult<Option<Node>> {
        let exprs: Vec<Expr> = aggregate
            .group_expr
            .iter()
            .chain(&aggregate.aggr_expr)
            .cloned()
            .collect();
        let Some((window, exprs)) = down_to_session(&aggregate.input, exprs)? else {
            return Ok(None);
        };
        let (group_exprs, aggr_exprs) = exprs.split_at(aggregate.group_expr.len());
        let (time, gap_nanos, keys) = session_spec(window)?;
        let mut groups = vec![];
        for expr in group_exprs {
            let expr = expr.clone().unalias();
            groups.push(match marker_of(&expr) {
                Some(bound) => bound,
                None if mentions_marker(&expr) => {
                    return Err(not_supported(format!(
                        "grouping by an expression of a session bound ({expr}) in a materialized view; group by window_start or window_end itself"
                    )));
                }
                None => match keys.iter().position(|k| k == &expr) {
                    Some(i) => SessionColumn::Key(i),
                    None => {
                        return Err(not_supported(format!(
                            "grouping a SESSION window by {expr} in a materialized view: group by its partition columns (the arguments after the gap) and window_start or window_end only"
                        )));
                    }
                },
            });
        }
        let bounded = groups
            .iter()
            .any(|g| matches!(g, SessionColumn::Start | SessionColumn::End));
        let all_keys = (0..keys.len()).all(|i| groups.contains(&SessionColumn::Key(i)));
        if !bounded || !all_keys {
            return Err(not_supported(
                "a SESSION window in a materialized view must be grouped by window_start or window_end and by every partition column it was given",
            ));
        }
        if aggr_exprs.iter().any(mentions_marker) {
            return Err(not_supported(
                "an aggregate over window_start or window_end of a SESSION window in a materialized view",
            ));
        }
        let mut node = self.plan(&window.input)?;
        if !self.node_append_only(&node) {
            return Err(not_supported(
                "a SESSION window over rows that can be updated or deleted in a materialized view: read a source, or a table declared with WATERMARK FOR (which takes only INSERT)",
            ));
        }
        let logical = window.input.schema();
        let mut appended: Vec<&Expr> = keys.iter().collect();
        appended.push(&time);
        let columns = self.append_columns(&mut node, &appended, logical, "_runnel_session_")?;
        let (key_columns, time_column) = (columns[..keys.len()].to_vec(), columns[keys.len()]);
        let aggregates = self.lower_aggregates(aggr_exprs, logical, &node.schema)?;
        let watermarked = node.watermarks.contains(&time_column);
        let (distribution, parallelism) = if key_columns.is_empty() {
            (Distribution::Single, 1)
        } else {
            (Distribution::Hash(key_columns.clone()), self.parallelism)
        };
        let mut next = self.exchange(node, distribution, parallelism);
        let input_schema = Arc::clone(&next.schema);
        let schema = Arc::new(aggregate.schema.as_arrow().clone());
        let state_id = self.state_ids(2);
        if watermarked {
            self.windowed_aggregates += 1;
        }
        next.operators.push(OperatorSpec::SessionAggregate {
            window: SessionWindow {
                keys: key_columns,
                time: time_column,
                gap_nanos,
                groups,
                watermarked,
                emit_on_close: self.emit_on_window_close && watermarked,
            },
            aggregates,
            input_schema,
            schema: Arc::clone(&schema),
            state_id,
        });
        next.key = (0..aggregate.group_expr.len()).collect();
        next.schema = schema;
        // Sessions closed later may start long before the watermark.
        next.watermarks = vec![];
        Ok(Some(next))
    }

    /// Whether `node`'s rows so far are inserts only.
    pub(super) fn node_append_only(&self, node: &Node) -> bool {
        operators_append_only(self.inputs_append_only(&node.inputs), &node.operators)
    }

    fn inputs_append_only(&self, inputs: &[FragmentInput]) -> bool {
        inputs.iter().all(|input| match input {
            FragmentInput::Source(source) => source.insert_only,
            FragmentInput::Exchange { fragment } => {
                self.fragments[*fragment].as_ref().is_some_and(|f| {
                    operators_append_only(self.inputs_append_only(&f.inputs), &f.operators)
                })
            }
        })
    }
}
