//! Functions in FROM as Postgres reads them. A function that returns one
//! value (`string_to_array(…) s`) is a one-row relation whose column is
//! named by the alias — DataFusion knows only table functions there — and
//! a one-column set-returning function's alias names its column too
//! (`generate_series(1, 3) AS i` gives a column `i`, where DataFusion
//! says `value`). Grafana's search_path lookup is written so.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Statement, TableAlias, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
    visit_expressions,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Set-returning functions of one column, whose alias names the column.
const ONE_COLUMN_SETS: &[&str] = &[
    "generate_series",
    "range",
    "unnest",
    "generate_subscripts",
    "regexp_split_to_table",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_object_keys",
    "jsonb_object_keys",
];

/// Functions of one value seen in FROM clauses. Others are left alone:
/// they may be table functions (Runnel's TUMBLE, HOP, SESSION).
const SCALARS: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "current_schemas",
    "current_setting",
    "array_append",
    "array_cat",
    "make_array",
];

/// Rewrites the functions in the FROM clauses of `statement`.
pub fn rewrite_from_functions(statement: &mut Statement) {
    // `alias.value` is DataFusion's name for a series' column, which
    // queries written for Runnel use: such an alias keeps naming the table.
    let mut value_qualifiers = HashSet::new();
    let _ = visit_expressions(statement, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && let [qualifier, column] = parts.as_slice()
            && column.value.eq_ignore_ascii_case("value")
        {
            value_qualifiers.insert(qualifier.value.to_ascii_lowercase());
        }
        ControlFlow::<()>::Continue(())
    });
    struct Functions(HashSet<String>);
    impl VisitorMut for Functions {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let Some(replacement) = rewritten(factor, &self.0) {
                *factor = replacement;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Functions(value_qualifiers));
}

fn rewritten(factor: &mut TableFactor, value_qualifiers: &HashSet<String>) -> Option<TableFactor> {
    let TableFactor::Table {
        name,
        args: Some(args),
        alias,
        ..
    } = factor
    else {
        return None;
    };
    let function = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let alias = alias.as_mut()?;
    if ONE_COLUMN_SETS.contains(&function.as_str()) {
        if alias.columns.is_empty()
            && !value_qualifiers.contains(&alias.name.value.to_ascii_lowercase())
        {
            alias.columns = vec![TableAliasColumnDef::from_name(alias.name.value.clone())];
        }
        return None;
    }
    if !SCALARS.contains(&function.as_str()) {
        return None;
    }
    // A function of one value: a derived table of one row.
    let column: Ident = alias
        .columns
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| alias.name.clone());
    let arguments: Vec<String> = args.args.iter().map(|a| a.to_string()).collect();
    let table = TableAlias {
        columns: vec![],
        ..alias.clone()
    };
    let sql = format!(
        "(SELECT {name}({}) AS {column}) AS {table}",
        arguments.join(", ")
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_table_factor())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten_sql(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite_from_functions(&mut statement);
        statement.to_string()
    }

    #[test]
    fn scalar_functions_are_one_row_and_aliases_name_columns() {
        assert_eq!(
            rewritten_sql(
                "SELECT s[i] FROM generate_series(1, 3) AS i, string_to_array('a,b', ',') s"
            ),
            "SELECT s[i] FROM generate_series(1, 3) AS i (i), (SELECT string_to_array('a,b', ',') AS s) AS s"
        );
        for kept in [
            "SELECT * FROM generate_series(1, 3)",
            "SELECT * FROM generate_series(1, 3) AS g (n)",
            "SELECT a.value FROM generate_series(1, 3) a JOIN generate_series(1, 3) b ON a.value = b.value",
            "SELECT * FROM pg_get_keywords() AS k",
            "SELECT * FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) AS e",
            "SELECT * FROM t AS x",
        ] {
            assert_eq!(rewritten_sql(kept), kept);
        }
    }
}
