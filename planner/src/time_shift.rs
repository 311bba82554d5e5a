//! Timestamps moved by a fixed span of time (`ts - INTERVAL '4' SECOND`,
//! as watermarks, HOP windows and interval joins write them) computed as
//! plain integer arithmetic: an interval literal with neither months nor
//! days is the same span whatever the date and time zone, so it becomes a
//! duration literal in the timestamp's own unit. Arrow adds an interval to
//! a timestamp value by value through calendar arithmetic (with time zone
//! conversions); a duration is one subtraction per value. The result has
//! the same type and, through the name preserver, the same name.

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

use crate::expr_rewrite::rewrite_expressions;

/// Rewrites `timestamp ± INTERVAL` of whole units of the timestamp into
/// `timestamp ± duration`. Runs after type coercion.
#[derive(Debug, Default)]
pub struct TimeShiftRule;

/// The duration literal of `interval` in `unit`, if it is a fixed span
/// (no months, no days) of whole units.
fn as_duration(interval: &IntervalMonthDayNano, unit: &TimeUnit) -> Option<ScalarValue> {
    if interval.months != 0 || interval.days != 0 {
        return None;
    }
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    let nanos = interval.nanoseconds;
    if nanos % per_unit != 0 {
        return None;
    }
    let value = Some(nanos / per_unit);
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(value),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(value),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(value),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(value),
    })
}

impl AnalyzerRule for TimeShiftRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| {
            let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
                return Ok(Transformed::no(e));
            };
            let duration = match (schema.map(|s| left.get_type(s)), right.as_ref()) {
                (
                    Some(Ok(DataType::Timestamp(unit, _))),
                    Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(i)), _),
                ) if matches!(op, Operator::Plus | Operator::Minus) => as_duration(i, &unit),
                _ => None,
            };
            Ok(match duration {
                Some(d) => Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right: Box::new(Expr::Literal(d, None)),
                })),
                None => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
            })
        })
    }

    fn name(&self) -> &str {
        "runnel_time_shift"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fixed_spans_of_whole_units_become_durations() {
        let span = |months, days, nanoseconds| IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        };
        assert_eq!(
            as_duration(&span(0, 0, 4_000_000_000), &TimeUnit::Microsecond),
            Some(ScalarValue::DurationMicrosecond(Some(4_000_000)))
        );
        assert_eq!(
            as_duration(&span(0, 0, -2_000_000_000), &TimeUnit::Second),
            Some(ScalarValue::DurationSecond(Some(-2)))
        );
        assert_eq!(as_duration(&span(0, 1, 0), &TimeUnit::Second), None);
        assert_eq!(as_duration(&span(1, 0, 0), &TimeUnit::Second), None);
        assert_eq!(
            as_duration(&span(0, 0, 1_500), &TimeUnit::Microsecond),
            None
        );
    }
}
