//! The `WITH (key = 'value', …) [FORMAT f ENCODE e]` tail of CREATE
//! SOURCE and CREATE SINK.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::{PlanError, PlanResult};

/// The tokens of a CREATE SOURCE or CREATE SINK statement.
pub(super) fn tokens(text: &str) -> PlanResult<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .map_err(|e| PlanError::Syntax {
            message: e.to_string(),
            position: None,
        })
}

/// The options from the `WITH` at `tokens[with_at]` to the end, keys in
/// lower case; `FORMAT f ENCODE e` becomes options `format` and `encode`,
/// and the options of `ENCODE e (key = 'value', …)` join the others (as
/// RisingWave writes `ENCODE AVRO (schema.registry = '…')`).
pub(super) fn with_options(
    tokens: &[Token],
    with_at: usize,
    syntax: &dyn Fn(&str) -> PlanError,
) -> PlanResult<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    let mut i = skip_whitespace(tokens, with_at + 1);
    if tokens.get(i) != Some(&Token::LParen) {
        return Err(syntax("expected ( after WITH"));
    }
    i = option_list(tokens, i + 1, &mut options, "WITH", syntax)?;
    // FORMAT … ENCODE … is kept as options for connectors that read it.
    let rest: Vec<usize> = (i..tokens.len())
        .filter(|&t| !matches!(tokens[t], Token::Whitespace(_) | Token::SemiColon))
        .collect();
    let text = |at: &[usize]| -> String {
        at.iter()
            .map(|&t| tokens[t].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let words: Vec<String> = rest
        .iter()
        .take(4)
        .map(|&t| tokens[t].to_string())
        .collect();
    match words.as_slice() {
        [] => {}
        [format, f, encode, e]
            if format.eq_ignore_ascii_case("format") && encode.eq_ignore_ascii_case("encode") =>
        {
            options.insert("format".into(), f.to_ascii_lowercase());
            options.insert("encode".into(), e.to_ascii_lowercase());
            match rest.get(4) {
                None => {}
                // The encoding's own options, in parentheses.
                Some(&at) if tokens[at] == Token::LParen => {
                    let end = option_list(tokens, at + 1, &mut options, "ENCODE", syntax)?;
                    let trailing: Vec<usize> = rest.iter().copied().filter(|&t| t >= end).collect();
                    if !trailing.is_empty() {
                        return Err(syntax(&format!(
                            "unexpected {} after ENCODE {e} ( … )",
                            text(&trailing)
                        )));
                    }
                }
                Some(_) => {
                    return Err(syntax(&format!(
                        "unexpected {} after ENCODE {e}",
                        text(&rest[4..])
                    )));
                }
            }
        }
        _ => {
            return Err(syntax(&format!(
                "unexpected {} after the options",
                text(&rest)
            )));
        }
    }
    Ok(options)
}

fn skip_whitespace(tokens: &[Token], mut i: usize) -> usize {
    while matches!(tokens.get(i), Some(Token::Whitespace(_))) {
        i += 1;
    }
    i
}

/// Reads `key = 'value', …)` from `tokens[i]` (just after the opening
/// parenthesis) into `options`; returns where the tokens after the closing
/// parenthesis start.
fn option_list(
    tokens: &[Token],
    mut i: usize,
    options: &mut BTreeMap<String, String>,
    what: &str,
    syntax: &dyn Fn(&str) -> PlanError,
) -> PlanResult<usize> {
    let mut key = String::new();
    let mut value: Option<String> = None;
    let mut after_equals = false;
    loop {
        let Some(token) = tokens.get(i) else {
            return Err(syntax(&format!("unterminated {what} ( … )")));
        };
        i += 1;
        match token {
            Token::Whitespace(_) => {}
            Token::Comma | Token::RParen => {
                let Some(v) = value.take() else {
                    return Err(syntax("each option is key = 'value'"));
                };
                if key.is_empty() {
                    return Err(syntax("each option is key = 'value'"));
                }
                options.insert(key.to_ascii_lowercase(), v);
                key.clear();
                after_equals = false;
                if *token == Token::RParen {
                    return Ok(i);
                }
            }
            Token::Eq => after_equals = true,
            Token::SingleQuotedString(s) if after_equals => value = Some(s.clone()),
            Token::Number(n, _) if after_equals => value = Some(n.clone()),
            Token::Word(w) if after_equals => value = Some(w.value.clone()),
            other if !after_equals => key.push_str(&other.to_string()),
            other => return Err(syntax(&format!("unexpected {other} in an option value"))),
        }
    }
}
