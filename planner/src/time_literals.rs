//! Timestamps written without seconds (`'2024-01-01 10:00'`), which
//! Postgres reads with zero seconds and Arrow's parser refuses: a cast of
//! such a text literal to a timestamp gets the seconds added first.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

use crate::expr_rewrite::rewrite_expressions;

/// `text` as Arrow reads it, when it is a date and a time Postgres
/// accepts but Arrow does not: a one-digit hour gets its zero, a time
/// without seconds gets `:00`. None when nothing needs changing.
pub fn with_seconds(text: &str) -> Option<String> {
    let separator = text.find([' ', 'T'])?;
    let date = &text[..separator];
    if date.len() < 8 || !date.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    let time = &text[separator + 1..];
    let colon = time.find(':')?;
    if colon == 0 || colon > 2 || !time[..colon].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let minutes = time.get(colon + 1..colon + 3)?;
    if !minutes.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = &time[colon + 3..];
    let seconds = rest.starts_with(':');
    if seconds && colon == 2 {
        return None;
    }
    Some(format!(
        "{date}{}{:0>2}:{minutes}{}{rest}",
        &text[separator..=separator],
        &time[..colon],
        if seconds { "" } else { ":00" }
    ))
}

fn fixed(expr: &Expr, to: &DataType) -> Option<Expr> {
    if !matches!(to, DataType::Timestamp(..)) {
        return None;
    }
    match expr {
        Expr::Literal(ScalarValue::Utf8(Some(text)), meta) => {
            with_seconds(text).map(|t| Expr::Literal(ScalarValue::Utf8(Some(t)), meta.clone()))
        }
        _ => None,
    }
}

/// The analyzer rule.
#[derive(Debug, Default)]
pub struct TimestampLiteralRule;

impl AnalyzerRule for TimestampLiteralRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, |e, _| match e {
            Expr::Cast(Cast { expr, field }) => match fixed(&expr, field.data_type()) {
                Some(expr) => Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
                    Box::new(expr),
                    field,
                )))),
                None => Ok(Transformed::no(Expr::Cast(Cast { expr, field }))),
            },
            Expr::TryCast(TryCast { expr, field }) => match fixed(&expr, field.data_type()) {
                Some(expr) => Ok(Transformed::yes(Expr::TryCast(TryCast::new_from_field(
                    Box::new(expr),
                    field,
                )))),
                None => Ok(Transformed::no(Expr::TryCast(TryCast { expr, field }))),
            },
            other => Ok(Transformed::no(other)),
        })
    }

    fn name(&self) -> &str {
        "runnel_timestamp_literals"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_added_only_where_missing() {
        assert_eq!(
            with_seconds("2024-01-01 10:00").as_deref(),
            Some("2024-01-01 10:00:00")
        );
        assert_eq!(
            with_seconds("2024-01-01T9:05+02").as_deref(),
            Some("2024-01-01T09:05:00+02")
        );
        assert_eq!(
            with_seconds("2024-01-01 9:05:07").as_deref(),
            Some("2024-01-01 09:05:07")
        );
        assert_eq!(with_seconds("2024-01-01 10:00:30"), None);
        assert_eq!(with_seconds("2024-01-01"), None);
        assert_eq!(with_seconds("hello world:12"), None);
    }
}
