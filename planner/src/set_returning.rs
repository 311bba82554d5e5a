//! Set-returning functions of Postgres that DataFusion lacks, in select
//! lists: `generate_subscripts(array, dim)` becomes
//! `unnest(`[`SUBSCRIPTS_FUNCTION`]`(array, dim))`, which the server
//! provides; beside another `unnest` of the same array the two zip row by
//! row, as in Postgres.

use std::ops::ControlFlow;

use crate::sql_ast::{arg, call};

use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, Statement, visit_expressions_mut};

/// The function giving an array's subscripts as a list.
pub const SUBSCRIPTS_FUNCTION: &str = "runnel_subscripts";

/// Rewrites every `generate_subscripts` call of `statement`.
pub fn rewrite_set_returning_functions(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        if let Expr::Function(function) = expr
            && function
                .name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("generate_subscripts"))
            && let FunctionArguments::List(list) = &function.args
            && list.args.len() == 2
        {
            let inner = call(SUBSCRIPTS_FUNCTION, list.args.clone());
            *expr = call("unnest", vec![arg(inner)]);
        }
        ControlFlow::<()>::Continue(())
    });
}
