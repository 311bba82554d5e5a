//! Conditions of a scalar subquery that read only the outer query's
//! columns — psql's `\d` writes `(SELECT … FROM pg_attrdef d WHERE
//! d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef)` — are
//! moved out of it: `CASE WHEN a.atthasdef THEN (SELECT … WHERE …) END`.
//! Both give NULL when the condition does not hold (the subquery finds no
//! row), and DataFusion can decorrelate what is left, which it cannot
//! while an outer column stands alone in the subquery's filter.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Query, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins,
    visit_expressions, visit_expressions_mut,
};

/// Rewrites every scalar subquery of `statement` whose filter has
/// conjuncts over outer columns only.
pub fn hoist_outer_conditions(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Subquery(query) = expr
            && let Some(condition) = take_outer_conjuncts(query)
        {
            let subquery = std::mem::replace(
                expr,
                Expr::value(datafusion::sql::sqlparser::ast::Value::Null),
            );
            *expr = Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
                    condition,
                    result: subquery,
                }],
                else_result: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Removes the conjuncts of `query`'s WHERE that name only relations
/// outside its FROM, and returns them joined by AND.
fn take_outer_conjuncts(query: &mut Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    // An aggregate answers even for no rows (count gives 0): keep those.
    let grouped = crate::sql_ast::is_grouped(&select.group_by);
    if grouped
        || select.having.is_some()
        || select.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                crate::scalar_subquery::aggregates(e)
            }
            _ => true,
        })
    {
        return None;
    }
    let inner = relation_names(&select.from);
    if inner.is_empty() {
        return None;
    }
    // DataFusion cannot plan the CASE around a subquery whose value reads
    // the outer query (it can without the CASE): leave those alone.
    let reads_outer = select.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            names_outer_column(e, &inner)
        }
        _ => true,
    });
    if reads_outer {
        return None;
    }
    let selection = select.selection.take()?;
    let (outer, kept): (Vec<Expr>, Vec<Expr>) = conjuncts(selection)
        .into_iter()
        .partition(|c| only_outer(c, &inner));
    select.selection = and_all(kept);
    and_all(outer)
}

/// The names the FROM clause binds: aliases, else the tables' last names.
fn relation_names(from: &[TableWithJoins]) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut add = |factor: &TableFactor| match factor {
        TableFactor::Table { alias: Some(a), .. }
        | TableFactor::Derived { alias: Some(a), .. }
        | TableFactor::Function { alias: Some(a), .. }
        | TableFactor::UNNEST { alias: Some(a), .. } => {
            names.insert(a.name.value.to_ascii_lowercase());
        }
        TableFactor::Table {
            name, alias: None, ..
        } => {
            if let Some(last) = name.0.last() {
                names.insert(last.to_string().to_ascii_lowercase());
            }
        }
        // Anything else might bind names we cannot see: keep everything.
        _ => {
            names.insert(String::new());
        }
    };
    for table in from {
        add(&table.relation);
        for join in &table.joins {
            add(&join.relation);
        }
    }
    names
}

fn conjuncts(expr: Expr) -> Vec<Expr> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = conjuncts(*left);
            out.extend(conjuncts(*right));
            out
        }
        Expr::Nested(inner)
            if matches!(
                *inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(*inner)
        }
        other => vec![other],
    }
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    })
}

/// Whether `expr` names a column qualified by a name `inner` does not bind.
fn names_outer_column(expr: &Expr, inner: &HashSet<String>) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::CompoundIdentifier(parts)
            if !inner.contains(
                &parts[..parts.len().saturating_sub(1)]
                    .last()
                    .map(|p| p.value.to_ascii_lowercase())
                    .unwrap_or_default(),
            ) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether `expr` reads at least one column and every column it reads is
/// qualified by a name that `inner` does not bind (so it is the outer
/// query's). Unqualified columns and nested subqueries keep it inside.
fn only_outer(expr: &Expr, inner: &HashSet<String>) -> bool {
    if inner.contains("") {
        return false;
    }
    let mut columns = 0;
    let outer = visit_expressions(expr, |e| match e {
        Expr::Identifier(_) | Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            ControlFlow::Break(())
        }
        Expr::CompoundIdentifier(parts) => {
            columns += 1;
            let qualifier = parts[..parts.len().saturating_sub(1)]
                .last()
                .map(|p| p.value.to_ascii_lowercase())
                .unwrap_or_default();
            if inner.contains(&qualifier) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    })
    .is_continue();
    outer && columns > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::sql_ast::rewritten_with(sql, hoist_outer_conditions)
    }

    #[test]
    fn moves_conditions_on_outer_columns_only() {
        assert_eq!(
            rewritten("SELECT (SELECT x FROM d WHERE d.k = a.k AND a.flag AND a.n > 1) FROM a"),
            "SELECT CASE WHEN a.flag AND a.n > 1 THEN (SELECT x FROM d WHERE d.k = a.k) END FROM a"
        );
        assert_eq!(
            rewritten("SELECT (SELECT x FROM pg_attrdef WHERE pg_attrdef.k = a.k AND a.f) FROM a"),
            "SELECT CASE WHEN a.f THEN (SELECT x FROM pg_attrdef WHERE pg_attrdef.k = a.k) END FROM a"
        );
    }

    #[test]
    fn keeps_conditions_that_read_the_subquery_or_unqualified_columns() {
        for kept in [
            "SELECT (SELECT x FROM d WHERE d.k = a.k AND d.f) FROM a",
            "SELECT (SELECT x FROM d WHERE flag) FROM a",
            "SELECT (SELECT x FROM d AS e WHERE e.k = a.k AND a.k IN (SELECT 1)) FROM a",
            "SELECT (SELECT x FROM d WHERE 1 = 1) FROM a",
            "SELECT (SELECT count(*) FROM d WHERE d.k = a.k AND a.f) FROM a",
            "SELECT (SELECT a.x + d.y FROM d WHERE d.k = a.k AND a.f) FROM a",
        ] {
            assert_eq!(rewritten(kept), kept);
        }
    }
}
