//! Set-returning functions of Postgres that DataFusion lacks, in select
//! lists: `generate_subscripts(array, dim)` becomes
//! `unnest(`[`SUBSCRIPTS_FUNCTION`]`(array, dim))` and
//! `information_schema._pg_expandarray(array)` (pgjdbc's key columns)
//! `unnest(`[`EXPAND_ARRAY_FUNCTION`]`(array))`, rows of `(x, n)` — both
//! functions the server provides. Beside another `unnest` of the same
//! array they zip row by row, as in Postgres.

use std::ops::ControlFlow;

use crate::sql_ast::{arg, call};

use datafusion::sql::sqlparser::ast::{Expr, FunctionArguments, Statement, visit_expressions_mut};

/// The function giving an array's subscripts as a list.
pub const SUBSCRIPTS_FUNCTION: &str = "runnel_subscripts";

/// The function giving an array's elements with their positions, a list
/// of `{x, n}`.
pub const EXPAND_ARRAY_FUNCTION: &str = "runnel_expandarray";

/// Rewrites every `generate_subscripts` and `_pg_expandarray` call of
/// `statement`.
pub fn rewrite_set_returning_functions(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        let Expr::Function(function) = expr else {
            return ControlFlow::<()>::Continue(());
        };
        let Some(name) = function.name.0.last().and_then(|p| p.as_ident()) else {
            return ControlFlow::Continue(());
        };
        let FunctionArguments::List(list) = &function.args else {
            return ControlFlow::Continue(());
        };
        let replacement = match (name.value.to_ascii_lowercase().as_str(), list.args.len()) {
            ("generate_subscripts", 2) => SUBSCRIPTS_FUNCTION,
            ("_pg_expandarray", 1) => EXPAND_ARRAY_FUNCTION,
            _ => return ControlFlow::Continue(()),
        };
        let inner = call(replacement, list.args.clone());
        *expr = call("unnest", vec![arg(inner)]);
        ControlFlow::Continue(())
    });
}
