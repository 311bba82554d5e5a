//! The bare keyword `user`, which Postgres reads as `current_user` (a
//! column called user must be quoted there): Grafana's search_path lookup
//! compares schemas with it. DataFusion reads it as a column.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, Statement, visit_expressions_mut};

use crate::sql_ast::call;

/// Rewrites unquoted `user` in the expressions of `statement`.
pub fn rewrite_user_keyword(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        let bare_user = match &*expr {
            Expr::Identifier(ident) => {
                ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("user")
            }
            // sqlparser reads it as a call without parentheses.
            Expr::Function(f) => {
                matches!(f.args, FunctionArguments::None)
                    && f.name.0.len() == 1
                    && f.name.0[0].as_ident().is_some_and(|i| {
                        i.quote_style.is_none() && i.value.eq_ignore_ascii_case("user")
                    })
            }
            _ => false,
        };
        if bare_user {
            *expr = call("current_user", vec![]);
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
    fn bare_user_is_current_user() {
        let mut statement = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT user, \"user\", t.user FROM t",
        )
        .unwrap()
        .remove(0);
        rewrite_user_keyword(&mut statement);
        assert_eq!(
            statement.to_string(),
            "SELECT current_user(), \"user\", t.user FROM t"
        );
    }
}
