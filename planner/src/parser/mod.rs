//! SQL text to statements.
//!
//! The text is parsed twice: once with the plain Postgres dialect, which
//! keeps token positions so a syntax error can say where it is, and then by
//! `datafusion-pg-catalog`'s compatibility parser, which rewrites the catalog
//! queries of `psql`, JDBC and BI tools into forms DataFusion plans.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::{PlanError, PlanResult};

mod create_sink;
mod create_source;
mod options;
mod sequence_options;
mod watermark;

use watermark::{create_table_with_watermark, take_watermark};

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

/// A statement as Runnel runs it: SQL that sqlparser knows, or one of
/// Runnel's own commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Sql(Box<Statement>),
    /// `FLUSH`: wait until every committed change is in every view.
    Flush,
    /// `CHECK MATERIALIZED VIEW name`: compare a view with its query.
    CheckMaterializedView(ObjectName),
    /// `REFRESH MATERIALIZED VIEW [CONCURRENTLY] name`: views are always
    /// fresh, so this waits as `FLUSH` does.
    RefreshMaterializedView(ObjectName),
    /// `CREATE SOURCE name (columns [, WATERMARK FOR col AS expr]) WITH
    /// (options) [FORMAT … ENCODE …]`: the columns as a `CREATE TABLE`, the
    /// options by lower-case key.
    CreateSource {
        create: Box<Statement>,
        options: std::collections::BTreeMap<String, String>,
        watermark: Option<WatermarkClause>,
    },
    /// `CREATE MATERIALIZED VIEW … EMIT ON WINDOW CLOSE` (or an `EXPLAIN`
    /// of one): the statement without the clause.
    EmitOnWindowClose(Box<Statement>),
    /// `CREATE SINK name FROM relation | AS query WITH (options) [FORMAT …
    /// ENCODE …]`: `FROM relation` as `SELECT * FROM relation`.
    CreateSink {
        name: ObjectName,
        if_not_exists: bool,
        query: Box<Query>,
        options: std::collections::BTreeMap<String, String>,
        /// `AS query EMIT ON WINDOW CLOSE`: windowed results go out once,
        /// final.
        emit_on_window_close: bool,
    },
    /// `DROP SINK [IF EXISTS] name`.
    DropSink {
        name: ObjectName,
        if_exists: bool,
    },
    /// `CREATE TABLE name (columns, WATERMARK FOR col AS expr)`: the
    /// `CREATE TABLE` without the clause.
    CreateTableWithWatermark {
        create: Box<Statement>,
        watermark: WatermarkClause,
    },
}

/// `WATERMARK FOR column AS expr` in a source's column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkClause {
    pub column: String,
    /// The expression as SQL text (parsed once, so known to be valid).
    pub expr: String,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Sql(statement) => write!(f, "{statement}"),
            Command::Flush => write!(f, "FLUSH"),
            Command::CheckMaterializedView(name) => write!(f, "CHECK MATERIALIZED VIEW {name}"),
            Command::RefreshMaterializedView(name) => {
                write!(f, "REFRESH MATERIALIZED VIEW {name}")
            }
            Command::CreateSource {
                create,
                options,
                watermark,
            } => {
                let text = create.to_string();
                let mut rest = text
                    .strip_prefix("CREATE TABLE")
                    .unwrap_or(&text)
                    .to_string();
                if let Some(w) = watermark
                    && rest.ends_with(')')
                {
                    rest.pop();
                    rest.push_str(&format!(", WATERMARK FOR {} AS {})", w.column, w.expr));
                }
                let options: Vec<String> = options
                    .iter()
                    .map(|(k, v)| format!("{k} = '{v}'"))
                    .collect();
                write!(f, "CREATE SOURCE{rest} WITH ({})", options.join(", "))
            }
            Command::EmitOnWindowClose(statement) => write!(f, "{statement} EMIT ON WINDOW CLOSE"),
            Command::CreateSink {
                name,
                query,
                options,
                emit_on_window_close,
                ..
            } => {
                let options: Vec<String> = options
                    .iter()
                    .map(|(k, v)| format!("{k} = '{v}'"))
                    .collect();
                let emit = if *emit_on_window_close {
                    " EMIT ON WINDOW CLOSE"
                } else {
                    ""
                };
                write!(
                    f,
                    "CREATE SINK {name} AS {query}{emit} WITH ({})",
                    options.join(", ")
                )
            }
            Command::DropSink { name, .. } => write!(f, "DROP SINK {name}"),
            Command::CreateTableWithWatermark { create, watermark } => {
                let mut text = create.to_string();
                if text.ends_with(')') {
                    text.pop();
                    text.push_str(&format!(
                        ", WATERMARK FOR {} AS {})",
                        watermark.column, watermark.expr
                    ));
                }
                write!(f, "{text}")
            }
        }
    }
}

/// Parses `sql` into commands (none for empty text).
pub fn parse_commands(sql: &str) -> PlanResult<Vec<Command>> {
    check_operator_chains(sql)?;
    match split_runnel_commands(sql)? {
        Some(commands) => Ok(commands),
        None => Ok(parse_standard(sql)?
            .into_iter()
            .map(|s| Command::Sql(Box::new(s)))
            .collect()),
    }
}

/// Parses `sql` into SQL statements only (text Runnel generates itself).
pub fn parse_sql(sql: &str) -> PlanResult<Vec<Statement>> {
    parse_commands(sql)?
        .into_iter()
        .map(|command| match command {
            Command::Sql(statement) => Ok(*statement),
            other => Err(PlanError::NotSupported(format!("{other} here"))),
        })
        .collect()
}

/// Splits `sql` into commands when one of them is Runnel's own (`FLUSH`,
/// `CHECK MATERIALIZED VIEW`), which sqlparser does not parse, or needs
/// its text adjusted first (`CREATE SEQUENCE` options); None when there
/// is none.
fn split_runnel_commands(sql: &str) -> PlanResult<Option<Vec<Command>>> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("flush")
        && !lower.contains("check")
        && !lower.contains("source")
        && !lower.contains("sink")
        && !lower.contains("emit")
        && !lower.contains("watermark")
        && !lower.contains("refresh")
        && !lower.contains("sequence")
    {
        return Ok(None);
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(None);
    };
    let mut pieces = vec![String::new()];
    for token in tokens {
        use datafusion::sql::sqlparser::tokenizer::Whitespace;
        if token == Token::SemiColon {
            pieces.push(String::new());
        } else if let Some(last) = pieces.last_mut() {
            match token {
                // Comments (psql -f passes them on) do not start a command.
                Token::Whitespace(
                    Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
                ) => last.push('\n'),
                token => last.push_str(&token.to_string()),
            }
        }
    }
    let mut commands = vec![];
    let mut found = false;
    for text in pieces {
        let words: Vec<&str> = text.split_whitespace().collect();
        let upper: Vec<String> = words
            .iter()
            .take(3)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        if words.is_empty() {
            continue;
        }
        if words.len() == 1 && upper[0] == "FLUSH" {
            found = true;
            commands.push(Command::Flush);
        } else if upper.len() >= 2 && upper[0] == "CREATE" && upper[1] == "SOURCE" {
            found = true;
            commands.push(create_source::create_source(&text)?);
        } else if upper.len() >= 2
            && upper[0] == "CREATE"
            && upper[1] == "TABLE"
            && let Some(command) = create_table_with_watermark(&text)?
        {
            found = true;
            commands.push(command);
        } else if let Some(statement) = strip_emit_on_window_close(&text) {
            found = true;
            let mut statements = parse_standard(&statement)?;
            if statements.len() != 1
                || !matches!(
                    &statements[0],
                    Statement::CreateView(v) if v.materialized
                ) && !matches!(
                    &statements[0],
                    Statement::Explain { statement, .. }
                        if matches!(statement.as_ref(), Statement::CreateView(v) if v.materialized)
                )
            {
                return Err(PlanError::Syntax {
                    message: "EMIT ON WINDOW CLOSE ends a CREATE MATERIALIZED VIEW".into(),
                    position: None,
                });
            }
            commands.push(Command::EmitOnWindowClose(Box::new(statements.remove(0))));
        } else if upper.len() >= 2 && upper[0] == "CREATE" && upper[1] == "SINK" {
            found = true;
            commands.push(create_sink::create_sink(&text)?);
        } else if upper.len() >= 2 && upper[0] == "DROP" && upper[1] == "SINK" {
            found = true;
            commands.push(create_sink::drop_sink(&text)?);
        } else if upper.len() >= 2 && upper[0] == "DROP" && upper[1] == "SOURCE" {
            // A source is a table with a connector: DROP TABLE drops it.
            found = true;
            let text = text.trim_start();
            let rest = &text["DROP".len()..].trim_start()["SOURCE".len()..];
            commands.extend(
                parse_standard(&format!("DROP TABLE{rest}"))?
                    .into_iter()
                    .map(|s| Command::Sql(Box::new(s))),
            );
        } else if upper.len() == 3
            && (upper[0] == "CHECK" || upper[0] == "REFRESH")
            && upper[1] == "MATERIALIZED"
            && upper[2] == "VIEW"
        {
            found = true;
            let rest = text
                .trim_start()
                .splitn(4, char::is_whitespace)
                .nth(3)
                .unwrap_or("")
                .to_string();
            let refresh = upper[0] == "REFRESH";
            let name = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&rest)
                .and_then(|mut p| {
                    if refresh {
                        let _concurrently = p.parse_keyword(Keyword::CONCURRENTLY);
                    }
                    let name = p.parse_object_name(false)?;
                    if refresh && p.parse_keyword(Keyword::WITH) {
                        // WITH DATA is what a view always has; WITH NO DATA
                        // would empty it, which a view kept fresh cannot be.
                        if p.parse_keyword(Keyword::NO) {
                            return Err(ParserError::ParserError(
                                "REFRESH MATERIALIZED VIEW … WITH NO DATA is not supported: views are always kept fresh".into(),
                            ));
                        }
                        p.expect_keyword(Keyword::DATA)?;
                    }
                    p.expect_token(&Token::EOF)?;
                    Ok(name)
                })
                .map_err(|e| syntax_error(&rest, e))?;
            commands.push(if refresh {
                Command::RefreshMaterializedView(name)
            } else {
                Command::CheckMaterializedView(name)
            });
        } else {
            let reordered = sequence_options::reorder_sequence_options(&text);
            found |= reordered.is_some();
            let text = reordered.unwrap_or(text);
            commands.extend(
                parse_standard(&text)?
                    .into_iter()
                    .map(|s| Command::Sql(Box::new(s))),
            );
        }
    }
    Ok(found.then_some(commands))
}

/// The statement before a trailing `EMIT ON WINDOW CLOSE`, if it has one.
fn strip_emit_on_window_close(text: &str) -> Option<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .ok()?;
    let mut words: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    if words.len() < 5 {
        return None;
    }
    let tail = words.split_off(words.len() - 4);
    let clause = ["EMIT", "ON", "WINDOW", "CLOSE"];
    let matches = tail.iter().zip(clause).all(|(&i, word)| {
        matches!(&tokens[i], Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
    });
    matches.then(|| tokens[..tail[0]].iter().map(|t| t.to_string()).collect())
}

fn parse_standard(sql: &str) -> PlanResult<Vec<Statement>> {
    let plain = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| syntax_error(sql, e))?;
    let rewrite_named = |statements: Vec<Statement>| -> PlanResult<Vec<Statement>> {
        statements
            .into_iter()
            .map(|mut s| {
                // Named as the user wrote them: the rewrites below turn
                // `current_user` into `session_user()` and casts into
                // subqueries, which would name them otherwise.
                crate::output_names::name_output_columns(&mut s)?;
                crate::outer_conditions::hoist_outer_conditions(&mut s);
                crate::catalog_names::rewrite_regclass_literals(&mut s);
                crate::exists_in_select::rewrite_exists_in_select_lists(&mut s);
                crate::scalar_subquery::shield_select_list_subqueries(&mut s);
                Ok(COMPATIBILITY.rewrite(s))
            })
            .collect()
    };
    let mut statements = match COMPATIBILITY.parse(sql) {
        // The library answers Grafana's search_path lookup with nothing
        // (no tables listed); Runnel has current_setting and plans it.
        Ok(mut rewritten)
            if rewritten.len() == plain.len()
                && !sql
                    .to_ascii_lowercase()
                    .contains("string_to_array(current_setting('search_path')") =>
        {
            let untouched = plain
                .iter()
                .zip(&rewritten)
                .all(|(p, r)| COMPATIBILITY.rewrite(p.clone()) == *r);
            if untouched {
                rewrite_named(plain)?
            } else {
                // A client's catalog query that the token-level rewrites
                // replaced: name what replaced it.
                for statement in &mut rewritten {
                    crate::output_names::name_output_columns(statement)?;
                }
                rewritten
            }
        }
        // The token-level rewrites changed the statement count or failed:
        // keep what the user wrote, with the AST-level rewrites only.
        _ => rewrite_named(plain)?,
    };
    for statement in &mut statements {
        crate::catalog_names::qualify_added_catalog_relations(statement);
        crate::set_returning::rewrite_set_returning_functions(statement);
        crate::field_access::rewrite_field_access(statement);
        crate::from_functions::rewrite_from_functions(statement);
        crate::user_keyword::rewrite_user_keyword(statement);
        crate::windows::rewrite_window_functions(statement)?;
        crate::scalar_subquery::aggregate_scalar_subqueries(statement);
    }
    Ok(statements)
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
    fn comments_before_runnel_commands() {
        let commands = parse_commands(
            "-- a source\n/* of rows */ CREATE SOURCE s (a int) WITH (connector = 'datagen');\n-- then\nFLUSH",
        )
        .unwrap();
        assert!(
            matches!(commands[0], Command::CreateSource { .. }),
            "{commands:?}"
        );
        assert!(matches!(commands[1], Command::Flush), "{commands:?}");
    }

    #[test]
    fn several_statements() {
        assert_eq!(parse_sql("SELECT 1; SELECT 2;").unwrap().len(), 2);
        assert!(parse_sql("  ").unwrap().is_empty());
    }

    #[test]
    fn encode_takes_options_of_its_own() {
        let parsed = parse_commands(
            "CREATE SOURCE s (v bigint) WITH (connector = 'kafka', topic = 't') FORMAT PLAIN ENCODE AVRO (schema.registry = 'http://127.0.0.1:8081', Message = 'x');",
        )
        .unwrap();
        let Command::CreateSource { options, .. } = &parsed[0] else {
            panic!("not a source: {parsed:?}");
        };
        assert_eq!(options["encode"], "avro");
        assert_eq!(options["schema.registry"], "http://127.0.0.1:8081");
        assert_eq!(options["message"], "x");
        assert_eq!(options["topic"], "t");
        for bad in [
            "CREATE SOURCE s (v bigint) WITH (connector = 'kafka') FORMAT PLAIN ENCODE AVRO schema",
            "CREATE SOURCE s (v bigint) WITH (connector = 'kafka') FORMAT PLAIN ENCODE AVRO (a = 'b') c",
            "CREATE SOURCE s (v bigint) WITH (connector = 'kafka') FORMAT PLAIN ENCODE AVRO (a = 'b'",
        ] {
            assert!(parse_commands(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_source_includes_message_metadata_as_columns() {
        let parsed = parse_commands(
            "CREATE SOURCE s (v text) INCLUDE key AS k INCLUDE Offset WITH (connector = 'kafka') FORMAT PLAIN ENCODE BYTES",
        )
        .unwrap();
        let [
            Command::CreateSource {
                create, options, ..
            },
        ] = parsed.as_slice()
        else {
            panic!("{parsed:?}");
        };
        assert_eq!(options["include.key"], "k");
        assert_eq!(options["include.offset"], "_offset");
        let Statement::CreateTable(table) = create.as_ref() else {
            panic!("{create:?}");
        };
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("{} {}", c.name.value, c.data_type))
            .collect();
        assert_eq!(columns, ["v TEXT", "k BYTEA", "_offset BIGINT"]);
        let error =
            parse_commands("CREATE SOURCE s (v text) INCLUDE header WITH (connector = 'kafka')")
                .unwrap_err()
                .to_string();
        assert!(error.contains("INCLUDE header"), "{error}");
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
    fn runnel_commands_mix_with_sql() {
        let commands = parse_commands(
            "INSERT INTO t VALUES (1); flush ; SELECT 'flush'; check materialized view s.v",
        )
        .unwrap();
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[1], Command::Flush);
        assert_eq!(commands[3].to_string(), "CHECK MATERIALIZED VIEW s.v");
        assert_eq!(parse_commands("FLUSH").unwrap(), vec![Command::Flush]);
        assert_eq!(parse_commands("SELECT flush FROM t").unwrap().len(), 1);
        assert!(parse_commands("CHECK MATERIALIZED VIEW a b").is_err());
        assert!(parse_sql("FLUSH").is_err());
        let source = parse_commands(
            "CREATE SOURCE s (id bigint, name text) WITH (connector = 'datagen', rows.per.second = '5', fields.id.kind = 'sequence') FORMAT PLAIN ENCODE JSON",
        )
        .unwrap();
        let Command::CreateSource { options, .. } = &source[0] else {
            panic!("not a source: {source:?}");
        };
        assert_eq!(options["rows.per.second"], "5");
        assert_eq!(options["fields.id.kind"], "sequence");
        assert_eq!(options["encode"], "json");
        assert!(parse_commands("CREATE SOURCE s (id int)").is_err());
        let with_watermark = parse_commands(
            "CREATE SOURCE s (ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '4' SECOND, id int) WITH (connector = 'datagen')",
        )
        .unwrap();
        let Command::CreateSource {
            create, watermark, ..
        } = &with_watermark[0]
        else {
            panic!("not a source: {with_watermark:?}");
        };
        let watermark = watermark.as_ref().unwrap();
        assert_eq!(watermark.column, "ts");
        assert_eq!(watermark.expr, "ts - INTERVAL '4' SECOND");
        assert_eq!(create.to_string(), "CREATE TABLE s (ts TIMESTAMP, id INT)");
        assert!(
            with_watermark[0]
                .to_string()
                .contains("id INT, WATERMARK FOR ts AS ts - INTERVAL '4' SECOND)")
        );
        assert!(
            parse_commands(
                "CREATE SOURCE s (ts timestamp, WATERMARK FOR ts) WITH (connector = 'datagen')"
            )
            .is_err()
        );
        let eowc =
            parse_commands("CREATE MATERIALIZED VIEW v AS SELECT 1 FROM t emit on window close")
                .unwrap();
        assert!(matches!(&eowc[0], Command::EmitOnWindowClose(_)));
        assert!(parse_commands("SELECT 1 EMIT ON WINDOW CLOSE").is_err());
        let table = parse_commands(
            "CREATE TABLE t (id int, at timestamp, WATERMARK FOR at AS at - INTERVAL '1' MINUTE)",
        )
        .unwrap();
        let Command::CreateTableWithWatermark { create, watermark } = &table[0] else {
            panic!("no watermark: {table:?}");
        };
        assert_eq!(create.to_string(), "CREATE TABLE t (id INT, at TIMESTAMP)");
        assert_eq!(watermark.column, "at");
        assert!(matches!(
            &parse_commands("CREATE TABLE watermark (id int)").unwrap()[0],
            Command::Sql(_)
        ));
        assert!(matches!(
            &parse_commands("DROP SOURCE IF EXISTS s").unwrap()[0],
            Command::Sql(_)
        ));
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
