//! `(expression).field` — pgjdbc's `(information_schema._pg_expandarray(
//! i.indkey)).n`, `(result.keys).x` — which DataFusion's planner refuses
//! ("Dot access not supported for non-string expr"), as `get_field(
//! expression, 'field')`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{AccessExpr, Expr, Statement, Value, visit_expressions_mut};

use crate::sql_ast::{arg, call};

/// Rewrites the field accesses of parenthesized expressions in `statement`.
pub fn rewrite_field_access(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::CompoundFieldAccess { root, access_chain } = expr
            && matches!(root.as_ref(), Expr::Nested(_))
            && !access_chain.is_empty()
            && access_chain
                .iter()
                .all(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_))))
        {
            let mut out = root.as_ref().clone();
            for access in access_chain.iter() {
                if let AccessExpr::Dot(Expr::Identifier(field)) = access {
                    let name = Expr::value(Value::SingleQuotedString(field.value.to_lowercase()));
                    out = call("get_field", vec![arg(out), arg(name)]);
                }
            }
            *expr = out;
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[test]
    fn fields_of_parenthesized_expressions() {
        let mut statement = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT (f(a)).n, (r.keys).x, r.keys FROM r",
        )
        .unwrap()
        .remove(0);
        rewrite_field_access(&mut statement);
        assert_eq!(
            statement.to_string(),
            "SELECT get_field((f(a)), 'n'), get_field((r.keys), 'x'), r.keys FROM r"
        );
    }
}
