//! Scalar subqueries that aggregate nothing — `(SELECT x FROM t WHERE
//! t.k = outer.k)`, as catalog queries of SQLAlchemy and other tools
//! write them — which DataFusion refuses when correlated ("must be
//! aggregated"). Their value is wrapped in [`SINGLE_VALUE`], an aggregate
//! the server provides that gives the one row's value, NULL for no row,
//! and fails for more (21000) — what Postgres does for such a subquery.

use std::ops::ControlFlow;

use crate::sql_ast::{arg, call, is_grouped};

use datafusion::sql::sqlparser::ast::{
    Expr, Query, SelectItem, SetExpr, Statement, Value, VisitMut, VisitorMut, visit_expressions,
    visit_expressions_mut,
};

/// The aggregate a subquery's single value is wrapped in.
pub const SINGLE_VALUE: &str = "__runnel_single_value";

/// Aggregate functions: a subquery using one is aggregated already.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "approx_distinct",
    "median",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "first_value",
    "last_value",
    "xmlagg",
];

/// Puts every subquery that is a whole select-list item in parentheses,
/// out of reach of `datafusion-pg-catalog`'s rewrite that replaces such
/// subqueries by NULL when correlated and cuts them to one row otherwise —
/// a wrong answer, where Runnel plans them (see
/// [`aggregate_scalar_subqueries`]) or refuses them.
///
/// Catalog queries (reading `pg_catalog` or `information_schema`) are left
/// to that rewrite: clients' catalog queries correlate in ways DataFusion
/// cannot plan yet (`AND a.atthasdef`), and psql's `\d` needs them to run.
pub fn shield_select_list_subqueries(statement: &mut Statement) {
    if reads_catalog(statement) {
        return;
    }
    struct Shield;
    impl VisitorMut for Shield {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                        && matches!(e, Expr::Subquery(_))
                    {
                        let inner = std::mem::replace(e, Expr::value(Value::Null));
                        *e = Expr::Nested(Box::new(inner));
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Shield);
}

/// Whether `statement` reads a relation of `pg_catalog` or
/// `information_schema` (named so, or a bare `pg_…` name).
fn reads_catalog(statement: &Statement) -> bool {
    datafusion::sql::sqlparser::ast::visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().to_ascii_lowercase())
            .collect();
        let catalog = parts
            .iter()
            .any(|p| p == "pg_catalog" || p == "information_schema")
            || (parts.len() == 1 && parts[0].starts_with("pg_"));
        if catalog {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Wraps the value of every scalar subquery of `statement` that
/// aggregates nothing in [`SINGLE_VALUE`].
pub fn aggregate_scalar_subqueries(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Subquery(query) = expr {
            wrap(query);
        }
        ControlFlow::<()>::Continue(())
    });
}

fn wrap(query: &mut Query) {
    if query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
        || query.with.is_some()
    {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = is_grouped(&select.group_by);
    if select.projection.len() != 1
        || select.distinct.is_some()
        || grouped
        || select.having.is_some()
        || !select.named_window.is_empty()
    {
        return;
    }
    let expr = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return,
    };
    if aggregates(expr) {
        return;
    }
    let inner = std::mem::replace(expr, Expr::value(Value::Null));
    *expr = call(SINGLE_VALUE, vec![arg(inner)]);
}

/// Whether `expr` calls an aggregate or window function.
pub(crate) fn aggregates(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Function(f)
            if f.over.is_some()
                || f.name.0.last().is_some_and(|part| {
                    let name = part.to_string().to_ascii_lowercase();
                    AGGREGATES.contains(&name.as_str())
                }) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::sql_ast::rewritten_with(sql, aggregate_scalar_subqueries)
    }

    #[test]
    fn wraps_only_unaggregated_single_column_subqueries() {
        assert_eq!(
            rewritten("SELECT (SELECT b FROM u WHERE u.a = t.a) AS x FROM t"),
            "SELECT (SELECT __runnel_single_value(b) FROM u WHERE u.a = t.a) AS x FROM t"
        );
        for kept in [
            "SELECT (SELECT max(b) FROM u WHERE u.a = t.a) FROM t",
            "SELECT (SELECT b FROM u ORDER BY b LIMIT 1) FROM t",
            "SELECT (SELECT b FROM u GROUP BY b) FROM t",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u)",
            "SELECT EXISTS (SELECT b FROM u) FROM t",
        ] {
            assert_eq!(rewritten(kept), kept);
        }
    }
}
