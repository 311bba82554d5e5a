//! HOP windows counted per slice, as Flink's slice assigner does: an
//! aggregation over `HOP(relation, ts, slide, size)` that emits on window
//! close is planned as two. The first groups each row once, by its slice
//! (`date_bin(slide, ts)`) and the other group keys, into partial results;
//! the second unnests each closed slice into the windows it belongs to
//! (the slice start and the starts `slide, 2·slide, …` before it: a window
//! of a HOP whose size is a multiple of its slide is a run of whole slices)
//! and merges the partials: `count` and `sum` by `sum`, `min` and `max` by
//! themselves. A row then costs one group look-up instead of one per
//! window, and a window's groups are written once per slice instead of once
//! per row.
//!
//! The result is the same as the unsliced plan's, late rows included: the
//! slice aggregation keeps rows whose slice already closed (see
//! `WindowedGroups::keep_late`) and emits them at the next watermark, so
//! the merge meets them under the watermark the unsliced aggregation would
//! have met them under, and counts them in the windows still open. That
//! holds for an input that only inserts (a late retraction could not take
//! back a slice already sent), so only such inputs are sliced. Across
//! several subtasks, which windows a late row still reaches depends on how
//! far each subtask got, in either plan (as in Flink).
//!
//! The rewrite applies when every aggregate is a plain `count`, `sum`,
//! `min` or `max` (no DISTINCT, FILTER or ORDER BY), the window bounds are
//! only grouped by (not aggregated, not mixed with other columns), and the
//! HOP's size is a multiple of its slide; anything else is planned as
//! written.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result as DfResult, ScalarValue};
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_nested::expr_fn::make_array;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator, Unnest, cast,
};

use crate::PlanResult;

/// The name of the slice aggregation's slice column; an aggregation
/// grouped by it keeps late rows.
pub(super) const SLICE_COLUMN: &str = "_runnel_hop_slice";
/// Stands for a HOP row's window start while expressions are traced down.
const WINDOW_START: &str = "_runnel_hop_window_start";
const WINDOWS: &str = "_runnel_hop_windows";

/// The plan of `aggregate` counted per slice, when it is an aggregation
/// over a HOP that can be (see the module doc). `inserts_only` says whether
/// the relation under the HOP only ever inserts.
pub(super) fn sliced(
    aggregate: &Aggregate,
    inserts_only: impl Fn(&LogicalPlan) -> PlanResult<bool>,
) -> PlanResult<Option<LogicalPlan>> {
    let Some(calls) = mergeable_calls(aggregate) else {
        return Ok(None);
    };
    let Some(traced) = trace(aggregate, &calls) else {
        return Ok(None);
    };
    if !inserts_only(&traced.relation)? {
        return Ok(None);
    }
    // The parts are plain aggregations and projections; one that fails
    // to plan is a bug here, and the query is still planned as written.
    Ok(build(aggregate, &calls, traced).unwrap_or_else(|error| {
        tracing::warn!(%error, "HOP windows not counted per slice");
        None
    }))
}

/// An aggregate call the rewrite can split, and how its partials merge.
struct Call<'a> {
    function: &'a AggregateFunction,
    merge: Arc<datafusion::logical_expr::AggregateUDF>,
}

fn mergeable_calls(aggregate: &Aggregate) -> Option<Vec<Call<'_>>> {
    aggregate
        .aggr_expr
        .iter()
        .map(|expr| {
            let Expr::AggregateFunction(function) = unaliased(expr) else {
                return None;
            };
            let params = &function.params;
            if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
                return None;
            }
            let merge = match function.func.name() {
                "count" | "sum" => sum_udaf(),
                "min" => min_udaf(),
                "max" => max_udaf(),
                _ => return None,
            };
            Some(Call { function, merge })
        })
        .collect()
}

fn unaliased(expr: &Expr) -> &Expr {
    match expr {
        Expr::Alias(alias) => unaliased(&alias.expr),
        other => other,
    }
}

/// The aggregation's expressions traced down to the relation under the
/// HOP.
struct Traced {
    /// The relation each HOP row comes from.
    relation: LogicalPlan,
    /// Group expressions, then each call's arguments, then filters met on
    /// the way: over the relation's columns and [`WINDOW_START`].
    exprs: Vec<Expr>,
    filters: usize,
    /// `date_bin(slide, ts)`: the slice of a row.
    slice: Expr,
    /// The shifts of the earlier window starts (`slide`, `2·slide`, …).
    shifts: Vec<Expr>,
}

/// Follows the aggregation's input through aliases, projections and
/// filters to the HOP's unnest, rewriting every expression in terms of the
/// plan below it.
fn trace(aggregate: &Aggregate, calls: &[Call]) -> Option<Traced> {
    let mut exprs: Vec<Expr> = aggregate.group_expr.clone();
    for call in calls {
        exprs.extend(call.function.params.args.iter().cloned());
    }
    let mut filters = 0;
    let mut plan = aggregate.input.as_ref();
    loop {
        let schema = plan.schema();
        match plan {
            LogicalPlan::SubqueryAlias(alias) => {
                let below = alias.input.schema();
                exprs = substitute(exprs, schema, |i| Some(column_at(below, i)))?;
                plan = &alias.input;
            }
            LogicalPlan::Projection(projection) => {
                exprs = substitute(exprs, schema, |i| {
                    projection.expr.get(i).map(|e| unaliased(e).clone())
                })?;
                plan = &projection.input;
            }
            LogicalPlan::Filter(filter) => {
                exprs.push(filter.predicate.clone());
                filters += 1;
                plan = &filter.input;
            }
            LogicalPlan::Unnest(unnest) => return trace_unnest(unnest, exprs, filters),
            _ => return None,
        }
    }
}

/// Below the HOP's unnest: its list is `make_array` of the window starts,
/// `date_bin(slide, ts - k·slide)` for k = 0, 1, ….
fn trace_unnest(unnest: &Unnest, exprs: Vec<Expr>, filters: usize) -> Option<Traced> {
    let [(list, how)] = unnest.list_type_columns.as_slice() else {
        return None;
    };
    if how.depth != 1 || !unnest.struct_type_columns.is_empty() {
        return None;
    }
    let LogicalPlan::Projection(arrays) = unnest.input.as_ref() else {
        return None;
    };
    let below = unnest.input.schema();
    let exprs = substitute(exprs, &unnest.schema, |i| {
        let from = *unnest.dependency_indices.get(i)?;
        Some(if from == *list {
            Expr::Column(Column::from_name(WINDOW_START))
        } else {
            column_at(below, from)
        })
    })?;
    let exprs = substitute(exprs, below, |i| {
        arrays.expr.get(i).map(|e| unaliased(e).clone())
    })?;
    let Expr::ScalarFunction(array) = unaliased(arrays.expr.get(*list)?) else {
        return None;
    };
    if array.func.name() != "make_array" || array.args.len() < 2 {
        return None;
    }
    let (slide, time) = date_bin_of(&array.args[0])?;
    let Expr::Column(time_column) = time else {
        return None;
    };
    let slide_nanos = fixed_nanos(slide)?;
    let mut shifts = vec![];
    for (k, element) in array.args.iter().enumerate().skip(1) {
        let (element_slide, shifted) = date_bin_of(element)?;
        let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Minus,
            right,
        }) = shifted
        else {
            return None;
        };
        let Expr::Literal(shift, _) = right.as_ref() else {
            return None;
        };
        let same_column = matches!(left.as_ref(), Expr::Column(c) if c == time_column);
        if element_slide != slide
            || !same_column
            || fixed_nanos(shift)? != slide_nanos.checked_mul(k as i128)?
        {
            return None;
        }
        shifts.push(right.as_ref().clone());
    }
    let relation = arrays.input.as_ref().clone();
    let is_timestamp = relation
        .schema()
        .field_with_name(time_column.relation.as_ref(), &time_column.name)
        .is_ok_and(|f| {
            matches!(
                f.data_type(),
                datafusion::arrow::datatypes::DataType::Timestamp(..)
            )
        });
    is_timestamp.then(|| Traced {
        relation,
        exprs,
        filters,
        slice: array.args[0].clone(),
        shifts,
    })
}

/// `date_bin(slide, x)` (without an origin): the slide literal and `x`.
fn date_bin_of(expr: &Expr) -> Option<(&ScalarValue, &Expr)> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = expr else {
        return None;
    };
    match (func.name(), args.as_slice()) {
        ("date_bin", [Expr::Literal(slide, _), x]) => Some((slide, x)),
        _ => None,
    }
}

/// A literal's length in nanoseconds, if it is fixed: a duration, or an
/// interval of neither months nor days.
fn fixed_nanos(value: &ScalarValue) -> Option<i128> {
    let nanos = match value {
        ScalarValue::DurationSecond(Some(v)) => i128::from(*v) * 1_000_000_000,
        ScalarValue::DurationMillisecond(Some(v)) => i128::from(*v) * 1_000_000,
        ScalarValue::DurationMicrosecond(Some(v)) => i128::from(*v) * 1_000,
        ScalarValue::DurationNanosecond(Some(v)) => i128::from(*v),
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 && v.days == 0 => {
            i128::from(v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) if v.days == 0 => {
            i128::from(v.milliseconds) * 1_000_000
        }
        _ => return None,
    };
    (nanos > 0).then_some(nanos)
}

/// Column `i` of `schema` as an expression.
fn column_at(schema: &DFSchema, i: usize) -> Expr {
    Expr::Column(Column::from(schema.qualified_field(i)))
}

/// `exprs` with each column of `schema` replaced by `replacement(its
/// index)` (the window start stays); None when a column is not found or
/// has no replacement.
fn substitute(
    exprs: Vec<Expr>,
    schema: &DFSchema,
    replacement: impl Fn(usize) -> Option<Expr>,
) -> Option<Vec<Expr>> {
    exprs
        .into_iter()
        .map(|expr| {
            expr.transform_up(|e| match e {
                Expr::Column(column) if column.name != WINDOW_START => {
                    let found = schema.index_of_column(&column).ok().and_then(&replacement);
                    match found {
                        Some(replaced) => Ok(Transformed::yes(replaced)),
                        None => datafusion::common::plan_err!("unresolved {column}"),
                    }
                }
                other => Ok(Transformed::no(other)),
            })
            .ok()
            .map(|t| t.data)
        })
        .collect()
}

/// Whether `expr` reads the window start, and whether it reads anything
/// else.
fn reads(expr: &Expr) -> (bool, bool) {
    let columns = expr.column_refs();
    let window = columns.iter().any(|c| c.name == WINDOW_START);
    let other = columns.iter().any(|c| c.name != WINDOW_START);
    (window, other)
}

/// The two aggregations (see the module doc), under a projection giving
/// the aggregation's own output names and types.
fn build(aggregate: &Aggregate, calls: &[Call], traced: Traced) -> DfResult<Option<LogicalPlan>> {
    let groups = aggregate.group_expr.len();
    let (group_exprs, rest) = traced.exprs.split_at(groups);
    let (args, filters) = rest.split_at(rest.len() - traced.filters);
    // Window bounds are only grouped by, on their own.
    let mut windowed = false;
    for group in group_exprs {
        match reads(group) {
            (true, true) => return Ok(None),
            (true, false) => windowed = true,
            _ => {}
        }
    }
    if !windowed || args.iter().chain(filters).any(|e| reads(e).0) {
        return Ok(None);
    }

    // Per slice and key: the partial results.
    let mut input = LogicalPlanBuilder::from(traced.relation);
    if let Some(predicate) = conjunction(filters.iter().cloned()) {
        input = input.filter(predicate)?;
    }
    let mut slice_groups = vec![traced.slice.alias(SLICE_COLUMN)];
    let mut keys = vec![];
    for (i, group) in group_exprs.iter().enumerate() {
        if !reads(group).0 {
            keys.push(i);
            slice_groups.push(group.clone().alias(format!("_runnel_hop_key_{i}")));
        }
    }
    let mut partials = vec![];
    let mut next_arg = 0;
    for (j, call) in calls.iter().enumerate() {
        let count = call.function.params.args.len();
        let function = AggregateFunction::new_udf(
            Arc::clone(&call.function.func),
            args[next_arg..next_arg + count].to_vec(),
            false,
            None,
            vec![],
            call.function.params.null_treatment,
        );
        next_arg += count;
        partials.push(Expr::AggregateFunction(function).alias(format!("_runnel_hop_part_{j}")));
    }
    let slices = input.aggregate(slice_groups, partials)?.build()?;

    // Each slice into the windows it belongs to.
    let slice_schema = Arc::clone(slices.schema());
    let slice = column_at(&slice_schema, 0);
    let mut starts = vec![slice.clone()];
    for shift in traced.shifts {
        starts.push(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(slice.clone()),
            Operator::Minus,
            Box::new(shift),
        )));
    }
    let mut columns = vec![make_array(starts).alias(WINDOWS)];
    columns.extend((1..slice_schema.fields().len()).map(|i| column_at(&slice_schema, i)));
    let unnested = LogicalPlanBuilder::from(slices)
        .project(columns)?
        .unnest_column(WINDOWS)?
        .build()?;

    // Per window and key: the partials merged.
    let unnested_schema = Arc::clone(unnested.schema());
    let window_start = column_at(&unnested_schema, 0);
    let mut window_groups = vec![];
    for (i, group) in group_exprs.iter().enumerate() {
        let expr = match keys.iter().position(|&k| k == i) {
            Some(key) => column_at(&unnested_schema, 1 + key),
            None => {
                group
                    .clone()
                    .transform_up(|e| match e {
                        Expr::Column(c) if c.name == WINDOW_START => {
                            Ok(Transformed::yes(window_start.clone()))
                        }
                        other => Ok(Transformed::no(other)),
                    })?
                    .data
            }
        };
        window_groups.push(expr.alias(format!("_runnel_hop_group_{i}")));
    }
    let merged: Vec<Expr> = calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let partial = column_at(&unnested_schema, 1 + keys.len() + j);
            Expr::AggregateFunction(AggregateFunction::new_udf(
                Arc::clone(&call.merge),
                vec![partial],
                false,
                None,
                vec![],
                None,
            ))
            .alias(format!("_runnel_hop_agg_{j}"))
        })
        .collect();
    let windows = LogicalPlanBuilder::from(unnested)
        .aggregate(window_groups, merged)?
        .build()?;

    // The aggregation's own names and types.
    let windows_schema = Arc::clone(windows.schema());
    let mut named = vec![];
    for (i, (qualifier, field)) in aggregate.schema.iter().enumerate() {
        let mut expr = column_at(&windows_schema, i);
        if windows_schema.field(i).data_type() != field.data_type() {
            expr = cast(expr, field.data_type().clone());
        }
        named.push(expr.alias_qualified(qualifier.cloned(), field.name()));
    }
    Ok(Some(
        LogicalPlanBuilder::from(windows).project(named)?.build()?,
    ))
}
