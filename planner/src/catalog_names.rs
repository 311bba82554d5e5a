//! Names of catalog objects in client queries: unqualified names of the
//! `pg_catalog` relations Runnel adds to those `datafusion-pg-catalog`
//! knows (`pg_indexes`, `pg_sequences`, …) resolve in `pg_catalog`, as
//! Postgres searches `pg_catalog` first; `'name'::regclass` becomes a call
//! of [`REGCLASS_FUNCTION`], which the server resolves as Postgres does
//! (`pg_catalog`, then the search path; 42P01 for an unknown name).

use std::ops::ControlFlow;

use crate::sql_ast::{arg, call};

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Statement, TableFactor, Value, VisitMut, VisitorMut, visit_expressions_mut,
};

/// The function a `'name'::regclass` literal is turned into.
pub const REGCLASS_FUNCTION: &str = "runnel_regclass";

/// The function `x::regclass::text` is turned into: the relation's name.
pub const REGCLASS_NAME_FUNCTION: &str = "runnel_regclass_name";

/// Rewrites `x::regclass` (and `CAST(x AS regclass)`) into
/// [`REGCLASS_FUNCTION`]`(x)` — an oid stays itself, a name is resolved —
/// and `x::regclass::text` into [`REGCLASS_NAME_FUNCTION`]`(x)`.
pub fn rewrite_regclass_literals(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        let Expr::Cast {
            expr: inner,
            data_type,
            ..
        } = expr
        else {
            return ControlFlow::<()>::Continue(());
        };
        if is_named_type(data_type, "regproc")
            && let Expr::Value(value) = inner.as_ref()
            && let Value::SingleQuotedString(name) = &value.value
        {
            // `pg_type.typinput` and friends hold function names here, not
            // oids: a regproc literal compares as the function's name.
            let bare = name.rsplit('.').next().unwrap_or(name).to_string();
            *expr = Expr::value(Value::SingleQuotedString(bare));
        } else if is_regclass(data_type) {
            let argument = inner.as_ref().clone();
            *expr = call(REGCLASS_FUNCTION, vec![arg(argument)]);
        } else if matches!(data_type, DataType::Text | DataType::Varchar(_))
            && let Expr::Function(function) = inner.as_ref()
            && function.name.to_string() == REGCLASS_FUNCTION
            && let FunctionArguments::List(list) = &function.args
            && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))] = list.args.as_slice()
        {
            let argument = argument.clone();
            *expr = call(REGCLASS_NAME_FUNCTION, vec![arg(argument)]);
        }
        ControlFlow::<()>::Continue(())
    });
}

fn is_regclass(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Regclass) || is_named_type(data_type, "regclass")
}

/// Whether `data_type` is the (possibly `pg_catalog.`-qualified) type `name`.
fn is_named_type(data_type: &DataType, name: &str) -> bool {
    match data_type {
        DataType::Custom(type_name, modifiers) => {
            modifiers.is_empty()
                && type_name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| i.value.eq_ignore_ascii_case(name))
        }
        _ => false,
    }
}

/// Relations of `pg_catalog` the server adds.
pub const ADDED_PG_CATALOG_RELATIONS: &[&str] = &["pg_indexes", "pg_sequences", "pg_user"];

/// Qualifies bare references to [`ADDED_PG_CATALOG_RELATIONS`].
pub fn qualify_added_catalog_relations(statement: &mut Statement) {
    struct Qualify;
    impl VisitorMut for Qualify {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name, args: None, ..
            } = factor
                && let [ObjectNamePart::Identifier(ident)] = name.0.as_slice()
                && ident.quote_style.is_none()
                && ADDED_PG_CATALOG_RELATIONS
                    .iter()
                    .any(|added| added.eq_ignore_ascii_case(&ident.value))
            {
                let table = ident.clone();
                *name = ObjectName(vec![
                    ObjectNamePart::Identifier(Ident::new("pg_catalog")),
                    ObjectNamePart::Identifier(table),
                ]);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Qualify);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::sql_ast::rewritten_with(sql, |s| {
            rewrite_regclass_literals(s);
            qualify_added_catalog_relations(s);
        })
    }

    #[test]
    fn regclass_literals_become_calls() {
        assert_eq!(
            rewritten(
                "SELECT 'public.t'::regclass, CAST('t' AS pg_catalog.regclass), c.oid::regclass FROM c"
            ),
            "SELECT runnel_regclass('public.t'), runnel_regclass('t'), runnel_regclass(c.oid) FROM c"
        );
    }

    #[test]
    fn regproc_literals_are_function_names() {
        assert_eq!(
            rewritten("SELECT typinput = 'pg_catalog.array_in'::regproc FROM pg_type"),
            "SELECT typinput = 'array_in' FROM pg_type"
        );
    }

    #[test]
    fn regclass_to_text_names_the_relation() {
        assert_eq!(
            rewritten("SELECT CAST(CAST(a.attrelid AS REGCLASS) AS TEXT), 't'::regclass::text"),
            "SELECT runnel_regclass_name(a.attrelid), runnel_regclass_name('t')"
        );
    }

    #[test]
    fn added_catalog_relations_resolve_in_pg_catalog() {
        assert_eq!(
            rewritten(
                "SELECT * FROM pg_indexes JOIN \"pg_user\" ON true JOIN app.pg_sequences ON true"
            ),
            "SELECT * FROM pg_catalog.pg_indexes JOIN \"pg_user\" ON true JOIN app.pg_sequences ON true"
        );
    }
}
