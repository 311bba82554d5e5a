//! The `WITH (key = 'value', …) [FORMAT f ENCODE e]` tail of CREATE
//! SOURCE and CREATE SINK.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::tokenizer::Token;

use crate::{PlanError, PlanResult};

/// The options from the `WITH` at `tokens[with_at]` to the end, keys in
/// lower case; `FORMAT f ENCODE e` becomes options `format` and `encode`.
pub(super) fn with_options(
    tokens: &[Token],
    with_at: usize,
    syntax: &dyn Fn(&str) -> PlanError,
) -> PlanResult<BTreeMap<String, String>> {
    let mut options = BTreeMap::new();
    let mut i = with_at + 1;
    while matches!(tokens.get(i), Some(Token::Whitespace(_))) {
        i += 1;
    }
    if tokens.get(i) != Some(&Token::LParen) {
        return Err(syntax("expected ( after WITH"));
    }
    i += 1;
    let mut key = String::new();
    let mut value: Option<String> = None;
    let mut after_equals = false;
    loop {
        let Some(token) = tokens.get(i) else {
            return Err(syntax("unterminated WITH ( … )"));
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
                    break;
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
    // FORMAT … ENCODE … is kept as options for connectors that read it.
    let rest: Vec<String> = tokens[i..]
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
        .map(|t| t.to_string())
        .collect();
    match rest.as_slice() {
        [] => {}
        [format, f, encode, e]
            if format.eq_ignore_ascii_case("format") && encode.eq_ignore_ascii_case("encode") =>
        {
            options.insert("format".into(), f.to_ascii_lowercase());
            options.insert("encode".into(), e.to_ascii_lowercase());
        }
        _ => {
            return Err(syntax(&format!(
                "unexpected {} after the options",
                rest.join(" ")
            )));
        }
    }
    Ok(options)
}
