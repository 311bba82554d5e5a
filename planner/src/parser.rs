//! SQL text to statements.
//!
//! The text is parsed twice: once with the plain Postgres dialect, which
//! keeps token positions so a syntax error can say where it is, and then by
//! `datafusion-pg-catalog`'s compatibility parser, which rewrites the catalog
//! queries of `psql`, JDBC and BI tools into forms DataFusion plans.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::{PlanError, PlanResult};

static COMPATIBILITY: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// Parses `sql` into statements (none for empty text).
pub fn parse_sql(sql: &str) -> PlanResult<Vec<Statement>> {
    let plain = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| syntax_error(sql, e))?;
    match COMPATIBILITY.parse(sql) {
        Ok(rewritten) if rewritten.len() == plain.len() => Ok(rewritten),
        // The token-level rewrites changed the statement count or failed:
        // keep what the user wrote, with the AST-level rewrites only.
        _ => Ok(plain
            .into_iter()
            .map(|s| COMPATIBILITY.rewrite(s))
            .collect()),
    }
}

fn syntax_error(sql: &str, error: ParserError) -> PlanError {
    let text = match &error {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => {
            return PlanError::Syntax {
                message: "statement is nested too deeply".into(),
                position: None,
            };
        }
    };
    let (message, position) = match text.rfind(" at Line: ") {
        Some(at) => (
            text[..at].to_string(),
            line_column(&text[at + " at Line: ".len()..]).map(|(l, c)| char_offset(sql, l, c)),
        ),
        None => (text, None),
    };
    PlanError::Syntax { message, position }
}

/// Parses `"3, Column: 14"` into `(3, 14)`.
fn line_column(rest: &str) -> Option<(usize, usize)> {
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// The 1-based character offset of 1-based `line` and `column` in `sql`.
fn char_offset(sql: &str, line: usize, column: usize) -> usize {
    let before: usize = sql
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    before + column
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_statements() {
        assert_eq!(parse_sql("SELECT 1; SELECT 2;").unwrap().len(), 2);
        assert!(parse_sql("  ").unwrap().is_empty());
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let Err(PlanError::Syntax { message, position }) = parse_sql("SELECT 1;\nSELEC 2") else {
            panic!("expected a syntax error");
        };
        assert!(message.contains("SELEC"), "{message}");
        assert_eq!(position, Some(11));
    }

    #[test]
    fn psql_catalog_queries_are_rewritten() {
        // `psql` qualifies pg_catalog functions; the rewrite strips them so
        // DataFusion finds its UDFs.
        let statements =
            parse_sql("SELECT pg_catalog.pg_table_is_visible(c.oid) FROM pg_catalog.pg_class c")
                .unwrap();
        assert!(
            !statements[0]
                .to_string()
                .contains("pg_catalog.pg_table_is_visible")
        );
    }
}
