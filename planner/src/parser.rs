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

/// Most operators an expression may chain, counted along its nesting (the
/// operators of every enclosing parenthesis level add up; commas start a new
/// chain). A chain parses into a tree as deep as the chain, and later passes
/// over it recurse: DataFusion's planner needs tens of MiB of stack for a
/// chain of 200 in a debug build, so without a bound a client could
/// overflow the server's stack and kill it. Postgres likewise refuses
/// over-deep expressions (54001).
pub const MAX_OPERATOR_CHAIN: usize = 128;

/// Refuses statements whose expressions chain more than
/// [`MAX_OPERATOR_CHAIN`] operators, from the tokens alone.
fn check_operator_chains(sql: &str) -> PlanResult<()> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize()
        .map_err(|e| syntax_error(sql, ParserError::TokenizerError(e.to_string())))?;
    // One counter per open parenthesis; commas and semicolons end a chain.
    let mut chains: Vec<usize> = vec![0];
    for token in tokens {
        let is_operator = match &token {
            Token::LParen => {
                chains.push(0);
                false
            }
            Token::RParen => {
                if chains.len() > 1 {
                    chains.pop();
                }
                false
            }
            Token::Comma | Token::SemiColon => {
                if let Some(current) = chains.last_mut() {
                    *current = 0;
                }
                false
            }
            Token::Word(word) => matches!(
                word.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::XOR
                    | Keyword::IS
                    | Keyword::NOT
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::IN
                    | Keyword::COLLATE
                    | Keyword::AT
            ),
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_)
            | Token::Placeholder(_)
            | Token::Period
            | Token::EOF => false,
            _ => true,
        };
        if is_operator && let Some(current) = chains.last_mut() {
            *current += 1;
            if chains.iter().sum::<usize>() > MAX_OPERATOR_CHAIN {
                return Err(PlanError::TooComplex(format!(
                    "an expression chains more than {MAX_OPERATOR_CHAIN} operators; split it or use parentheses and subqueries"
                )));
            }
        }
    }
    Ok(())
}

/// Parses `sql` into statements (none for empty text).
pub fn parse_sql(sql: &str) -> PlanResult<Vec<Statement>> {
    check_operator_chains(sql)?;
    if let Some(pieces) = split_runnel_statements(sql) {
        let mut out = vec![];
        for piece in pieces {
            match piece {
                Piece::Flush => out.push(flush_statement()),
                Piece::Sql(text) => out.extend(parse_standard(&text)?),
            }
        }
        return Ok(out);
    }
    parse_standard(sql)
}

/// `FLUSH`: Runnel's own statement, carried as sqlparser's MySQL-style
/// `FLUSH TABLES` (which Runnel has no other use for).
pub fn flush_statement() -> Statement {
    use datafusion::sql::sqlparser::ast::FlushType;
    Statement::Flush {
        object_type: FlushType::Tables,
        location: None,
        channel: None,
        read_lock: false,
        export: false,
        tables: vec![],
    }
}

enum Piece {
    Flush,
    Sql(String),
}

/// Splits `sql` into statements when one of them is Runnel's own `FLUSH`,
/// which sqlparser does not parse; None when there is none.
fn split_runnel_statements(sql: &str) -> Option<Vec<Piece>> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if !sql.to_ascii_lowercase().contains("flush") {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut pieces = vec![];
    let mut current = String::new();
    let mut found = false;
    let mut finish = |current: &mut String, pieces: &mut Vec<Piece>| {
        let text = std::mem::take(current);
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.len() == 1 && words[0].eq_ignore_ascii_case("flush") {
            found = true;
            pieces.push(Piece::Flush);
        } else if !words.is_empty() {
            pieces.push(Piece::Sql(text));
        }
    };
    for token in tokens {
        if token == Token::SemiColon {
            finish(&mut current, &mut pieces);
        } else {
            current.push_str(&token.to_string());
        }
    }
    finish(&mut current, &mut pieces);
    found.then_some(pieces)
}

fn parse_standard(sql: &str) -> PlanResult<Vec<Statement>> {
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
            return PlanError::TooComplex("the statement nests too deeply".into());
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
    fn long_operator_chains_are_refused_but_long_lists_are_not() {
        let chain = format!("SELECT {}", vec!["1"; MAX_OPERATOR_CHAIN + 2].join(" + "));
        assert!(matches!(parse_sql(&chain), Err(PlanError::TooComplex(_))));
        let ok_chain = format!("SELECT {}", vec!["1"; MAX_OPERATOR_CHAIN].join(" + "));
        assert!(parse_sql(&ok_chain).is_ok());
        let values = format!(
            "INSERT INTO t VALUES {}",
            vec!["(1, -2, 'x' || 'y')"; 5000].join(", ")
        );
        assert!(parse_sql(&values).is_ok());
        let conditions = format!(
            "SELECT 1 WHERE {}",
            (0..100)
                .map(|i| format!("(a = {i})"))
                .collect::<Vec<_>>()
                .join(" OR ")
        );
        assert!(parse_sql(&conditions).is_ok());
        let list = format!(
            "SELECT 1 WHERE a IN ({})",
            (0..3000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(parse_sql(&list).is_ok());
        // Chains add up through parentheses.
        let half = vec!["1"; MAX_OPERATOR_CHAIN / 2 + 1].join(" + ");
        let nested = format!("SELECT {half} + ({half})");
        assert!(matches!(parse_sql(&nested), Err(PlanError::TooComplex(_))));
    }

    #[test]
    fn flush_is_a_statement_of_its_own() {
        let statements = parse_sql("INSERT INTO t VALUES (1); flush ; SELECT 'flush'").unwrap();
        assert_eq!(statements.len(), 3);
        assert_eq!(statements[1], flush_statement());
        assert_eq!(parse_sql("FLUSH").unwrap(), vec![flush_statement()]);
        assert!(parse_sql("SELECT flush FROM t").unwrap().len() == 1);
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
