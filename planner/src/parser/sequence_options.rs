//! `CREATE SEQUENCE` options in any order, as Postgres takes them:
//! sqlparser reads them only in one order (INCREMENT, MINVALUE, MAXVALUE,
//! START, CACHE, CYCLE), and pg_dump writes `START WITH 1 INCREMENT BY 1
//! NO MINVALUE NO MAXVALUE CACHE 1`. The options are put in sqlparser's
//! order before parsing.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// `text` with its sequence options reordered, or None when it is not a
/// `CREATE SEQUENCE` whose options this understands (left to the parser).
pub fn reorder_sequence_options(text: &str) -> Option<String> {
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, text)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let mut i = 0;
    if word(i) != "CREATE" {
        return None;
    }
    i += 1;
    if word(i) == "TEMP" || word(i) == "TEMPORARY" {
        i += 1;
    }
    if word(i) != "SEQUENCE" {
        return None;
    }
    i += 1;
    if word(i) == "IF" {
        i += 3;
    }
    // The name: words joined by periods.
    i += 1;
    while tokens.get(i) == Some(&Token::Period) {
        i += 2;
    }
    let head = i.min(tokens.len());
    let mut groups: Vec<(usize, Vec<Token>)> = vec![];
    let number_end = |at: usize| match tokens.get(at) {
        Some(Token::Minus | Token::Plus) => {
            matches!(tokens.get(at + 1), Some(Token::Number(..))).then_some(at + 2)
        }
        Some(Token::Number(..)) => Some(at + 1),
        _ => None,
    };
    while i < tokens.len() {
        let (rank, end) = match (word(i).as_str(), word(i + 1).as_str()) {
            (_, _) if matches!(tokens[i], Token::SemiColon | Token::EOF) => break,
            ("AS", _) => (0, i + 2),
            ("INCREMENT", "BY") => (1, number_end(i + 2)?),
            ("INCREMENT", _) => (1, number_end(i + 1)?),
            ("MINVALUE", _) => (2, number_end(i + 1)?),
            ("NO", "MINVALUE") => (2, i + 2),
            ("MAXVALUE", _) => (3, number_end(i + 1)?),
            ("NO", "MAXVALUE") => (3, i + 2),
            ("START", "WITH") => (4, number_end(i + 2)?),
            ("START", _) => (4, number_end(i + 1)?),
            ("CACHE", _) => (5, number_end(i + 1)?),
            ("NO", "CYCLE") => (6, i + 2),
            ("CYCLE", _) => (6, i + 1),
            ("OWNED", "BY") => (7, tokens.len()),
            _ => return None,
        };
        let end = end.min(tokens.len());
        groups.push((rank, tokens[i..end].to_vec()));
        i = end;
    }
    groups.sort_by_key(|(rank, _)| *rank);
    let mut out: Vec<String> = tokens[..head].iter().map(|t| t.to_string()).collect();
    for (_, group) in groups {
        out.extend(group.iter().map(|t| t.to_string()));
    }
    out.extend(tokens[i..].iter().map(|t| t.to_string()));
    Some(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_options_in_the_parsers_order() {
        assert_eq!(
            reorder_sequence_options(
                "CREATE SEQUENCE public.s START WITH 1 INCREMENT BY -1 NO MINVALUE NO MAXVALUE CACHE 1"
            )
            .as_deref(),
            Some("CREATE SEQUENCE public . s INCREMENT BY - 1 NO MINVALUE NO MAXVALUE START WITH 1 CACHE 1")
        );
        assert_eq!(
            reorder_sequence_options(
                "CREATE SEQUENCE IF NOT EXISTS \"S\" CYCLE AS integer START 5"
            )
            .as_deref(),
            Some("CREATE SEQUENCE IF NOT EXISTS \"S\" AS integer START 5 CYCLE")
        );
        assert_eq!(reorder_sequence_options("CREATE TABLE t (a int)"), None);
        assert_eq!(reorder_sequence_options("CREATE SEQUENCE s FOO 1"), None);
    }
}
