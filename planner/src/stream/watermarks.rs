//! What the streaming planner knows of watermarks: which output columns of
//! a projection carry one, which join conditions bound one watermarked
//! column by another (window and interval joins), and whether a plan can
//! `EMIT ON WINDOW CLOSE`.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use runnel_engine::graph::{JoinOffset, StreamGraph};
use runnel_engine::rising::rising_column;

use crate::{PlanError, PlanResult};

/// The columns of a projection's output that carry a watermark: those whose
/// expression rises with a watermarked input column.
pub(super) fn projected_watermarks(
    watermarks: &[usize],
    exprs: &[Arc<dyn PhysicalExpr>],
) -> Vec<usize> {
    exprs
        .iter()
        .enumerate()
        .filter(|(_, e)| rising_column(e).is_some_and(|c| watermarks.contains(&c)))
        .map(|(i, _)| i)
        .collect()
}

/// `-value`: DataFusion's negation, and durations (which fixed time
/// shifts become, see `time_shift`), which it lacks.
fn negated(value: &datafusion::scalar::ScalarValue) -> Option<datafusion::scalar::ScalarValue> {
    use datafusion::scalar::ScalarValue as S;
    let neg = |v: &Option<i64>| match v {
        Some(v) => v.checked_neg().map(Some),
        None => Some(None),
    };
    Some(match value {
        S::DurationSecond(v) => S::DurationSecond(neg(v)?),
        S::DurationMillisecond(v) => S::DurationMillisecond(neg(v)?),
        S::DurationMicrosecond(v) => S::DurationMicrosecond(neg(v)?),
        S::DurationNanosecond(v) => S::DurationNanosecond(neg(v)?),
        other => other.arithmetic_negate().ok()?,
    })
}

/// A column of one join side, possibly shifted by a constant: (side, column
/// within the side, offset; None for none).
fn shifted_column(
    expr: &Expr,
    schema: &DFSchema,
    left_visible: usize,
) -> Option<(usize, usize, Option<datafusion::scalar::ScalarValue>)> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    match expr {
        Expr::Column(column) => {
            let index = schema.index_of_column(column).ok()?;
            Some(if index < left_visible {
                (0, index, None)
            } else {
                (1, index - left_visible, None)
            })
        }
        Expr::Cast(cast) => shifted_column(&cast.expr, schema, left_visible),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let Expr::Literal(value, _) = right.as_ref() else {
                return None;
            };
            let (side, column, None) = shifted_column(left, schema, left_visible)? else {
                return None;
            };
            let offset = match op {
                Operator::Plus => value.clone(),
                Operator::Minus => negated(value)?,
                _ => return None,
            };
            Some((side, column, Some(offset)))
        }
        _ => None,
    }
}

/// Bounds a join condition puts on one watermarked column of each side by
/// the other: the columns, and offsets with `left >= right + lower` and
/// `left <= right + upper` for every match.
pub(super) type IntervalBounds = ([usize; 2], Option<JoinOffset>, Option<JoinOffset>);

/// Finds, among the conjuncts of `filter` (over both sides' visible
/// columns), comparisons `left.a [±c] <op> right.b [±c]` of two watermarked
/// columns (`BETWEEN` included), as an interval join has them.
pub(super) fn interval_bounds(
    filter: &Expr,
    schema: &DFSchema,
    left_visible: usize,
    left_watermarks: &[usize],
    right_watermarks: &[usize],
) -> Option<IntervalBounds> {
    use datafusion::logical_expr::utils::split_conjunction;
    use datafusion::logical_expr::{Between, BinaryExpr, Operator};
    let mut comparisons: Vec<(Expr, Operator, Expr)> = vec![];
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                comparisons.push((left.as_ref().clone(), *op, right.as_ref().clone()))
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                comparisons.push((expr.as_ref().clone(), Operator::GtEq, low.as_ref().clone()));
                comparisons.push((expr.as_ref().clone(), Operator::LtEq, high.as_ref().clone()));
            }
            _ => {}
        }
    }
    let mut found: Option<IntervalBounds> = None;
    for (a, op, b) in comparisons {
        let (Some(ta), Some(tb)) = (
            shifted_column(&a, schema, left_visible),
            shifted_column(&b, schema, left_visible),
        ) else {
            continue;
        };
        // Left term first: left + oa <op> right + ob.
        let ((_, l, oa), op, (_, r, ob)) = match (ta.0, tb.0) {
            (0, 1) => (ta, op, tb),
            (1, 0) => match op.swap() {
                Some(swapped) => (tb, swapped, ta),
                None => continue,
            },
            _ => continue,
        };
        if !left_watermarks.contains(&l) || !right_watermarks.contains(&r) {
            continue;
        }
        // left <op> right + (ob - oa), with one of them zero.
        let offset = match (oa, ob) {
            (None, None) => JoinOffset::Zero,
            (None, Some(ob)) => JoinOffset::By(ob),
            (Some(oa), None) => match negated(&oa) {
                Some(negated) => JoinOffset::By(negated),
                None => continue,
            },
            (Some(_), Some(_)) => continue,
        };
        let entry = found.get_or_insert(([l, r], None, None));
        if entry.0 != [l, r] {
            continue;
        }
        match op {
            Operator::Gt | Operator::GtEq if entry.1.is_none() => entry.1 = Some(offset),
            Operator::Lt | Operator::LtEq if entry.2.is_none() => entry.2 = Some(offset),
            _ => {}
        }
    }
    found.filter(|(_, lower, upper)| lower.is_some() || upper.is_some())
}

/// `EMIT ON WINDOW CLOSE` needs a windowed aggregation, and a result that
/// then only grows.
pub(super) fn check_emit_on_window_close(graph: &StreamGraph, windowed: usize) -> PlanResult<()> {
    if windowed == 0 {
        return Err(PlanError::InvalidObject(
            "EMIT ON WINDOW CLOSE needs a GROUP BY on a window column that carries a watermark: \
             group by window_start or window_end of TUMBLE(…) or HOP(…) over a source declared \
             with WATERMARK FOR, or drop EMIT ON WINDOW CLOSE"
                .into(),
        ));
    }
    let root = graph.fragments.len() - 1;
    if !graph.is_append_only(root) {
        return Err(PlanError::InvalidObject(
            "EMIT ON WINDOW CLOSE needs a result that only grows, but this query changes rows \
             after its windows close (an aggregation without a window, a join or a Top-N above \
             the window); drop EMIT ON WINDOW CLOSE or move the window outermost"
                .into(),
        ));
    }
    Ok(())
}
