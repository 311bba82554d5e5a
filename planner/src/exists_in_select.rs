//! `EXISTS (subquery)` in a select list — psql's `\d` of an index writes
//! `(NOT i.indimmediate) AND EXISTS (SELECT 1 FROM pg_constraint WHERE …)`
//! — which DataFusion plans only in filters ("Physical plan does not
//! support logical expression Exists"). There it becomes
//! `(SELECT count(*) FROM … WHERE …) > 0` (`= 0` for NOT EXISTS), a scalar
//! subquery DataFusion decorrelates, with the same value.

use std::ops::ControlFlow;

use crate::sql_ast::{call, is_grouped};

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, Query, SelectItem, SetExpr, Statement,
    Value, VisitMut, VisitorMut, visit_expressions_mut,
};

/// Rewrites the EXISTS of every select list of `statement`.
pub fn rewrite_exists_in_select_lists(statement: &mut Statement) {
    struct Lists;
    impl VisitorMut for Lists {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_mut() {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                    {
                        rewrite_exists(e);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Lists);
}

fn rewrite_exists(expr: &mut Expr) {
    let _ = visit_expressions_mut(expr, |e| {
        if let Expr::Exists { subquery, negated } = e
            && let Some(counted) = counting(subquery)
        {
            *e = Expr::Nested(Box::new(Expr::BinaryOp {
                left: Box::new(Expr::Subquery(Box::new(counted))),
                op: if *negated {
                    BinaryOperator::Eq
                } else {
                    BinaryOperator::Gt
                },
                right: Box::new(Expr::value(Value::Number("0".into(), false))),
            }));
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `query` counting its rows instead of returning them, when it is a plain
/// SELECT (no grouping, aggregates, DISTINCT, LIMIT) whose row count
/// therefore is what EXISTS tests.
fn counting(query: &Query) -> Option<Query> {
    if query.limit_clause.is_some() || query.fetch.is_some() || query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let grouped = is_grouped(&select.group_by);
    let aggregated = select.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            crate::scalar_subquery::aggregates(e)
        }
        _ => false,
    });
    if grouped || aggregated || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let mut counted = query.clone();
    counted.order_by = None;
    if let SetExpr::Select(select) = counted.body.as_mut() {
        let star = FunctionArg::Unnamed(FunctionArgExpr::Wildcard);
        select.projection = vec![SelectItem::UnnamedExpr(call("count", vec![star]))];
    }
    Some(counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::sql_ast::rewritten_with(sql, rewrite_exists_in_select_lists)
    }

    #[test]
    fn exists_in_select_lists_counts() {
        assert_eq!(
            rewritten(
                "SELECT a.f AND EXISTS (SELECT 1 FROM b WHERE b.k = a.k) AS x, NOT EXISTS (SELECT * FROM c) FROM a"
            ),
            "SELECT a.f AND ((SELECT count(*) FROM b WHERE b.k = a.k) > 0) AS x, ((SELECT count(*) FROM c) = 0) FROM a"
        );
    }

    #[test]
    fn keeps_exists_in_filters_and_over_aggregates() {
        for kept in [
            "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM b WHERE b.k = t.k)",
            "SELECT EXISTS (SELECT max(x) FROM b) FROM t",
            "SELECT EXISTS (SELECT x FROM b LIMIT 1) FROM t",
        ] {
            assert_eq!(rewritten(kept), kept);
        }
    }
}
