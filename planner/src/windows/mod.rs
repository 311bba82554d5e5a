//! Window table functions in `FROM`, as RisingWave and Flink write them:
//! `TUMBLE(relation, time_col, size)` and `HOP(relation, time_col, slide,
//! size)`. Each is rewritten, before planning, into a subquery over the
//! relation that adds `window_start` and `window_end`:
//!
//! - TUMBLE: `SELECT *, date_bin(size, time_col) AS window_start,
//!   date_bin(size, time_col) + size AS window_end FROM relation`;
//! - HOP: the relation scanned once, each row unnested into the windows
//!   it falls in (`ceil(size / slide)` starts, `date_bin(slide, time_col -
//!   k * slide)` for k = 0, 1, …, in one `make_array`);
//! - SESSION (`SESSION(relation, time_col, gap [, key, …])`, the keys
//!   being Flink's `PARTITION BY`): the window functions of [`session`]
//!   over `PARTITION BY keys ORDER BY time_col`; rows with a null time
//!   belong to no session.
//!
//! TUMBLE's and HOP's bounds rise with `time_col`, so a watermark on it carries through to
//! them (see `runnel_engine::rising`), which is what lets a `GROUP BY
//! window_start` close windows. The same rewrite serves batch `SELECT`s and
//! materialized views, so a view and its batch query agree by construction.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, ObjectName, Query, Statement, TableAlias, TableFactor,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::{PlanError, PlanResult};

pub mod session;

/// Rewrites every window table function in `statement`.
pub fn rewrite_window_functions(statement: &mut Statement) -> PlanResult<()> {
    match statement.visit(&mut WindowRewriter) {
        ControlFlow::Break(error) => Err(error),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct WindowRewriter;

impl VisitorMut for WindowRewriter {
    type Break = PlanError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<PlanError> {
        let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let function = name.to_string().to_ascii_lowercase();
        let rewritten = match function.as_str() {
            "tumble" => tumble(&args.args),
            "hop" => hop(&args.args),
            "session" => session(&args.args),
            _ => return ControlFlow::Continue(()),
        };
        match rewritten {
            Ok((relation, query)) => {
                let alias = alias.clone().or_else(|| {
                    relation.0.last().and_then(|part| {
                        part.as_ident().map(|ident| TableAlias {
                            explicit: true,
                            name: ident.clone(),
                            columns: vec![],
                            at: None,
                        })
                    })
                });
                *factor = TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(query),
                    alias,
                    sample: None,
                };
                ControlFlow::Continue(())
            }
            Err(error) => ControlFlow::Break(error),
        }
    }
}

/// The plain expression of a function argument.
fn argument<'a>(function: &str, args: &'a [FunctionArg], i: usize) -> PlanResult<&'a Expr> {
    match args.get(i) {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))) => Ok(expr),
        _ => Err(PlanError::InvalidParameter(format!(
            "{function}: argument {} must be {}",
            i + 1,
            match i {
                0 => "the relation to window",
                1 => "its time column",
                _ => "an interval such as INTERVAL '10' SECOND",
            }
        ))),
    }
}

/// The relation and time column of a window function.
fn relation_and_column(function: &str, args: &[FunctionArg]) -> PlanResult<(ObjectName, String)> {
    let relation = match argument(function, args, 0)? {
        Expr::Identifier(ident) => ObjectName::from(vec![ident.clone()]),
        Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()),
        _ => {
            return Err(PlanError::InvalidParameter(format!(
                "{function}: the first argument must name a table, source or view"
            )));
        }
    };
    let column = match argument(function, args, 1)? {
        Expr::Identifier(ident) => ident.to_string(),
        _ => {
            return Err(PlanError::InvalidParameter(format!(
                "{function}: the second argument must name a time column of {relation}"
            )));
        }
    };
    Ok((relation, column))
}

/// An interval argument in nanoseconds (days count as 24 hours; months
/// are refused, their length varies).
fn interval_nanos(function: &str, what: &str, expr: &Expr) -> PlanResult<i128> {
    let text = match expr {
        Expr::Interval(interval) => {
            let value = match interval.value.as_ref() {
                Expr::Value(v) => match &v.value {
                    datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            match &interval.leading_field {
                Some(unit) => format!("{value} {unit}"),
                None => value,
            }
        }
        _ => {
            return Err(PlanError::InvalidParameter(format!(
                "{function}: the {what} must be an interval literal such as INTERVAL '10' SECOND, not {expr}"
            )));
        }
    };
    let parsed = datafusion::arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(
        &text.to_ascii_lowercase(),
    )
    .map_err(|e| PlanError::InvalidParameter(format!("{function}: the {what} {expr}: {e}")))?;
    if parsed.months != 0 {
        return Err(PlanError::InvalidParameter(format!(
            "{function}: a {what} in months or years is not fixed in length; give it in days or smaller units"
        )));
    }
    let nanos = i128::from(parsed.days) * 86_400_000_000_000 + i128::from(parsed.nanoseconds);
    if nanos <= 0 {
        return Err(PlanError::InvalidParameter(format!(
            "{function}: the {what} must be positive, not {expr}"
        )));
    }
    Ok(nanos)
}

/// An interval literal of `nanos` nanoseconds.
fn interval_literal(nanos: i128) -> String {
    if nanos % 1000 == 0 {
        format!("INTERVAL '{} microseconds'", nanos / 1000)
    } else {
        format!("INTERVAL '{nanos} nanoseconds'")
    }
}

fn parse_query(sql: &str) -> PlanResult<Query> {
    let mut parser = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .map_err(|e| PlanError::Internal(format!("window rewrite: {e}")))?;
    parser
        .parse_query()
        .map(|q| *q)
        .map_err(|e| PlanError::Internal(format!("window rewrite of {sql}: {e}")))
}

fn tumble(args: &[FunctionArg]) -> PlanResult<(ObjectName, Query)> {
    if args.len() != 3 {
        return Err(PlanError::InvalidParameter(
            "TUMBLE takes (relation, time column, size)".into(),
        ));
    }
    let (relation, column) = relation_and_column("TUMBLE", args)?;
    let size = interval_literal(interval_nanos(
        "TUMBLE",
        "size",
        argument("TUMBLE", args, 2)?,
    )?);
    let start = format!("date_bin({size}, {column})");
    let sql = format!(
        "SELECT *, {start} AS window_start, {start} + {size} AS window_end FROM {relation}"
    );
    Ok((relation, parse_query(&sql)?))
}

fn hop(args: &[FunctionArg]) -> PlanResult<(ObjectName, Query)> {
    if args.len() != 4 {
        return Err(PlanError::InvalidParameter(
            "HOP takes (relation, time column, slide, size)".into(),
        ));
    }
    let (relation, column) = relation_and_column("HOP", args)?;
    let slide = interval_nanos("HOP", "slide", argument("HOP", args, 2)?)?;
    let size = interval_nanos("HOP", "size", argument("HOP", args, 3)?)?;
    if slide > size {
        return Err(PlanError::InvalidParameter(format!(
            "HOP: the slide ({}) is larger than the size ({}), so some rows would fall in no window; use a slide no larger than the size",
            argument("HOP", args, 2)?,
            argument("HOP", args, 3)?
        )));
    }
    let windows = (size + slide - 1) / slide;
    if windows > 64 {
        return Err(PlanError::InvalidParameter(format!(
            "HOP: every row falls in {windows} windows; use at most 64 (a larger slide or a smaller size)"
        )));
    }
    let (slide_sql, size_sql) = (interval_literal(slide), interval_literal(size));
    // Each row's window starts, newest first: one scan of the relation,
    // one row per window after the unnest. Each start bins the time moved
    // back by whole slides (the same as binning it and moving the bin
    // back), so no expression repeats: the optimizer's names for repeated
    // ones are numbered per query, and two HOPs over one relation must
    // plan alike to be computed once.
    let starts: Vec<String> = (0..windows)
        .map(|i| match i {
            0 => format!("date_bin({slide_sql}, {column})"),
            _ => format!(
                "date_bin({slide_sql}, {column} - {})",
                interval_literal(slide * i)
            ),
        })
        .collect();
    // Only the oldest window may end before the row when the size is not
    // a multiple of the slide.
    let filter = if size % slide != 0 {
        format!(" WHERE {column} < window_start + {size_sql}")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT *, window_start + {size_sql} AS window_end FROM \
         (SELECT *, unnest(make_array({})) AS window_start FROM {relation}) AS _runnel_hop{filter}",
        starts.join(", ")
    );
    Ok((relation, parse_query(&sql)?))
}

/// `SESSION(relation, time_col, gap [, key, …])`: each row with its
/// session's bounds, sessions formed per key (Flink's `PARTITION BY`) by
/// the window functions of [`session`].
fn session(args: &[FunctionArg]) -> PlanResult<(ObjectName, Query)> {
    if args.len() < 3 {
        return Err(PlanError::InvalidParameter(
            "SESSION takes (relation, time column, gap [, partition column, …])".into(),
        ));
    }
    let (relation, column) = relation_and_column("SESSION", args)?;
    let gap = interval_nanos("SESSION", "gap", argument("SESSION", args, 2)?)?;
    let gap = i64::try_from(gap).map_err(|_| {
        PlanError::InvalidParameter("SESSION: the gap is too large; give at most 292 years".into())
    })?;
    let mut keys = vec![];
    for (i, arg) in args.iter().enumerate().skip(3) {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(ident))) => {
                keys.push(ident.to_string())
            }
            _ => {
                return Err(PlanError::InvalidParameter(format!(
                    "SESSION: argument {} must name a column of {relation} to form sessions by",
                    i + 1
                )));
            }
        }
    }
    let partition = if keys.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {} ", keys.join(", "))
    };
    let over = format!("OVER ({partition}ORDER BY {column})");
    let sql = format!(
        "SELECT *, {}({column}, {gap}) {over} AS window_start, \
         {}({column}, {gap}) {over} AS window_end \
         FROM {relation} WHERE {column} IS NOT NULL",
        session::SESSION_START,
        session::SESSION_END
    );
    Ok((relation, parse_query(&sql)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> PlanResult<String> {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite_window_functions(&mut statements[0])?;
        Ok(statements[0].to_string())
    }

    #[test]
    fn tumble_adds_window_bounds() {
        let sql = rewrite(
            "SELECT window_start, count(*) FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start",
        )
        .unwrap();
        assert!(
            sql.contains("date_bin(INTERVAL '10000000 microseconds', date_time) AS window_start"),
            "{sql}"
        );
        assert!(sql.contains("FROM bid) AS bid"), "{sql}");
        let aliased = rewrite("SELECT * FROM tumble(s.t, ts, INTERVAL '1 minute') AS w").unwrap();
        assert!(aliased.contains("FROM s.t) AS w"), "{aliased}");
    }

    #[test]
    fn hop_unnests_one_start_per_window() {
        let sql =
            rewrite("SELECT * FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)")
                .unwrap();
        assert_eq!(sql.matches("date_bin(").count(), 5, "{sql}");
        assert_eq!(sql.matches("date_time - INTERVAL").count(), 4, "{sql}");
        assert_eq!(sql.matches("FROM bid").count(), 1, "{sql}");
        assert!(!sql.contains("WHERE"), "{sql}");
        let uneven =
            rewrite("SELECT * FROM HOP(bid, date_time, INTERVAL '3' SECOND, INTERVAL '10' SECOND)")
                .unwrap();
        assert_eq!(uneven.matches("date_bin(").count(), 4, "{uneven}");
        assert_eq!(uneven.matches("WHERE").count(), 1, "{uneven}");
    }

    #[test]
    fn session_partitions_by_its_keys() {
        let sql =
            rewrite("SELECT * FROM SESSION(bid, date_time, INTERVAL '10' SECOND, bidder)").unwrap();
        assert!(
            sql.contains(
                "session_window_start(date_time, 10000000000) OVER (PARTITION BY bidder ORDER BY date_time) AS window_start"
            ),
            "{sql}"
        );
        assert!(sql.contains("WHERE date_time IS NOT NULL) AS bid"), "{sql}");
        let global = rewrite("SELECT * FROM SESSION(t, ts, INTERVAL '1' MINUTE)").unwrap();
        assert!(global.contains("OVER (ORDER BY ts)"), "{global}");
    }

    #[test]
    fn bad_windows_say_what_to_change() {
        for (sql, expected) in [
            (
                "SELECT * FROM TUMBLE(t, ts, INTERVAL '0' SECOND)",
                "must be positive",
            ),
            (
                "SELECT * FROM TUMBLE(t, ts, INTERVAL '-5' SECOND)",
                "must be positive",
            ),
            ("SELECT * FROM TUMBLE(t, ts, INTERVAL '1' MONTH)", "months"),
            ("SELECT * FROM TUMBLE(t, ts, 10)", "interval literal"),
            ("SELECT * FROM TUMBLE(t, ts)", "TUMBLE takes"),
            (
                "SELECT * FROM HOP(t, ts, INTERVAL '20' SECOND, INTERVAL '10' SECOND)",
                "larger than the size",
            ),
        ] {
            match rewrite(sql) {
                Err(PlanError::InvalidParameter(message)) => {
                    assert!(message.contains(expected), "{sql}: {message}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        for (sql, expected) in [
            ("SELECT * FROM SESSION(t, ts)", "SESSION takes"),
            (
                "SELECT * FROM SESSION(t, ts, INTERVAL '0' SECOND)",
                "must be positive",
            ),
            (
                "SELECT * FROM SESSION(t, ts, INTERVAL '1' SECOND, k + 1)",
                "argument 4 must name a column",
            ),
        ] {
            match rewrite(sql) {
                Err(PlanError::InvalidParameter(message)) => {
                    assert!(message.contains(expected), "{sql}: {message}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        // Other table functions are left alone.
        assert!(rewrite("SELECT * FROM generate_series(1, 3)").is_ok());
    }
}
