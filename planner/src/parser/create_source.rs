//! `CREATE SOURCE name (columns [, WATERMARK FOR …]) [INCLUDE …] WITH (…)
//! [FORMAT … ENCODE …]`: the columns as a `CREATE TABLE`, the options and
//! the metadata columns a Kafka source fills.

use super::{Command, options, parse_standard, take_watermark};
use crate::{PlanError, PlanResult};

/// Splits `CREATE SOURCE …` into its `CREATE TABLE` part and its options.
pub(super) fn create_source(text: &str) -> PlanResult<Command> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let tokens = options::tokens(text)?;
    let syntax = |message: &str| PlanError::Syntax {
        message: format!("CREATE SOURCE: {message}"),
        position: None,
    };
    // The column list is the first parenthesised group; WITH follows it.
    let mut depth = 0;
    let mut columns_end = None;
    let mut with_at = None;
    for (i, token) in tokens.iter().enumerate() {
        let seen_columns = columns_end.is_some();
        match token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 && !seen_columns {
                    columns_end = Some(i);
                }
            }
            Token::Word(w)
                if depth == 0 && seen_columns && w.value.eq_ignore_ascii_case("with") =>
            {
                with_at = Some(i);
                break;
            }
            _ => {}
        }
    }
    let with_at =
        with_at.ok_or_else(|| syntax("expected WITH (connector = '…', …) after the columns"))?;
    let options = options::with_options(&tokens, with_at, &syntax)?;
    let mut options = options;
    let columns_end = columns_end.unwrap_or(with_at.saturating_sub(1));
    let includes = parse_includes(&tokens[columns_end + 1..with_at])?;
    let (head, watermark) = take_watermark(&tokens[..=columns_end.min(with_at)])?;
    let mut head: String = head.iter().map(|t| t.to_string()).collect();
    if let Some(close) = head.rfind(')') {
        let mut added = String::new();
        for include in &includes {
            options.insert(format!("include.{}", include.kind), include.column.clone());
            added.push_str(&format!(", \"{}\" {}", include.column, include.sql_type));
        }
        head.insert_str(close, &added);
    }
    let head = head.trim_start();
    let columns = &head["CREATE".len()..].trim_start()["SOURCE".len()..];
    let mut statements = parse_standard(&format!("CREATE TABLE{columns}"))?;
    if statements.len() != 1 {
        return Err(syntax("expected one source"));
    }
    Ok(Command::CreateSource {
        create: Box::new(statements.remove(0)),
        options,
        watermark,
    })
}

/// One `INCLUDE kind [AS column]` of a source: a column filled from the
/// message's metadata rather than its value.
struct Include {
    kind: &'static str,
    column: String,
    sql_type: &'static str,
}

/// Message metadata a source can include, with the column type.
const INCLUDE_KINDS: &[(&str, &str)] = &[
    ("key", "bytea"),
    ("partition", "integer"),
    ("offset", "bigint"),
    ("timestamp", "timestamptz"),
];

/// `INCLUDE key [AS k] INCLUDE partition …` between a source's columns and
/// its WITH.
fn parse_includes(
    tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
) -> PlanResult<Vec<Include>> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let syntax = |message: String| PlanError::Syntax {
        message: format!("CREATE SOURCE: {message}"),
        position: None,
    };
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            // As Postgres does: unquoted names in lower case.
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
            Token::Word(w) => w.value.clone(),
            other => other.to_string(),
        })
        .collect();
    let mut includes: Vec<Include> = vec![];
    let mut i = 0;
    while i < words.len() {
        if !words[i].eq_ignore_ascii_case("include") {
            return Err(syntax(format!(
                "unexpected {} after the columns (expected INCLUDE … or WITH ( … ))",
                words[i]
            )));
        }
        let Some(word) = words.get(i + 1) else {
            return Err(syntax(
                "INCLUDE what? (key, partition, offset or timestamp)".into(),
            ));
        };
        let Some(&(kind, sql_type)) = INCLUDE_KINDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
        else {
            return Err(syntax(format!(
                "INCLUDE {word}: known are key, partition, offset and timestamp"
            )));
        };
        i += 2;
        let column = if words.get(i).is_some_and(|w| w.eq_ignore_ascii_case("as")) {
            let column = words
                .get(i + 1)
                .ok_or_else(|| syntax(format!("INCLUDE {kind} AS needs a column name")))?;
            i += 2;
            column.clone()
        } else {
            format!("_{kind}")
        };
        if includes.iter().any(|inc| inc.kind == kind) {
            return Err(syntax(format!("INCLUDE {kind} appears twice")));
        }
        includes.push(Include {
            kind,
            column,
            sql_type,
        });
    }
    Ok(includes)
}
