//! `CREATE SINK [IF NOT EXISTS] name FROM relation | AS query [EMIT ON
//! WINDOW CLOSE] WITH (…) [FORMAT f ENCODE e]` and `DROP SINK [IF EXISTS] name`.

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::options::{tokens, with_options};
use super::{Command, parse_standard, strip_emit_on_window_close, syntax_error};
use crate::{PlanError, PlanResult};

fn syntax(message: &str) -> PlanError {
    PlanError::Syntax {
        message: format!("CREATE SINK: {message}"),
        position: None,
    }
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

/// Parses a `CREATE SINK` statement.
pub(super) fn create_sink(text: &str) -> PlanResult<Command> {
    let tokens = tokens(text)?;
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    // CREATE SINK [IF NOT EXISTS] name …
    let mut at = 2;
    let if_not_exists = words.len() > 4
        && is_word(&tokens[words[2]], "if")
        && is_word(&tokens[words[3]], "not")
        && is_word(&tokens[words[4]], "exists");
    if if_not_exists {
        at = 5;
    }
    // The options start at the last WITH outside parentheses that opens a
    // parenthesis (a query's own WITH names a common table expression).
    let mut depth = 0i32;
    let mut with_at = None;
    for (position, &i) in words.iter().enumerate() {
        match &tokens[i] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            token
                if depth == 0
                    && is_word(token, "with")
                    && words
                        .get(position + 1)
                        .is_some_and(|&next| tokens[next] == Token::LParen) =>
            {
                with_at = Some(i);
            }
            _ => {}
        }
    }
    let with_at = with_at.ok_or_else(|| syntax("expected WITH (connector = '…', …)"))?;
    let options = with_options(&tokens, with_at, &syntax)?;
    let head: String = tokens[words[at]..with_at]
        .iter()
        .map(|t| t.to_string())
        .collect();
    let mut parser = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&head)
        .map_err(|e| syntax_error(&head, e))?;
    let name = parser
        .parse_object_name(false)
        .map_err(|e| syntax_error(&head, e))?;
    let mut emit_on_window_close = false;
    let query: Box<Query> = if parser.parse_keyword(Keyword::FROM) {
        let from = parser
            .parse_object_name(false)
            .map_err(|e| syntax_error(&head, e))?;
        parser
            .expect_token(&Token::EOF)
            .map_err(|e| syntax_error(&head, e))?;
        let mut statements = parse_standard(&format!("SELECT * FROM {from}"))?;
        match statements.pop() {
            Some(Statement::Query(query)) => query,
            _ => return Err(syntax("expected FROM relation")),
        }
    } else if parser.parse_keyword(Keyword::AS) {
        let after_as = find_after_as(&head).ok_or_else(|| syntax("expected a query after AS"))?;
        let after_as = match strip_emit_on_window_close(&after_as) {
            Some(query) => {
                emit_on_window_close = true;
                query
            }
            None => after_as,
        };
        let mut statements = parse_standard(&after_as)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(Statement::Query(query)), true) => query,
            _ => return Err(syntax("expected one query after AS")),
        }
    } else {
        return Err(syntax(
            "expected FROM relation or AS query after the sink's name",
        ));
    };
    Ok(Command::CreateSink {
        name,
        if_not_exists,
        query,
        options,
        emit_on_window_close,
    })
}

/// The text after the first top-level `AS` of `head` (`name AS query`).
fn find_after_as(head: &str) -> Option<String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, head)
        .tokenize()
        .ok()?;
    let at = tokens.iter().position(|t| is_word(t, "as"))?;
    Some(tokens[at + 1..].iter().map(|t| t.to_string()).collect())
}

/// Parses `DROP SINK [IF EXISTS] name`.
pub(super) fn drop_sink(text: &str) -> PlanResult<Command> {
    let rest = text.trim_start();
    let rest = rest["DROP".len()..].trim_start()["SINK".len()..].to_string();
    let mut parser = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&rest)
        .map_err(|e| syntax_error(&rest, e))?;
    let if_exists = parser.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name: ObjectName = parser
        .parse_object_name(false)
        .map_err(|e| syntax_error(&rest, e))?;
    parser
        .expect_token(&Token::EOF)
        .map_err(|e| syntax_error(&rest, e))?;
    Ok(Command::DropSink { name, if_exists })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_from_a_relation_or_a_query() {
        let Command::CreateSink {
            name,
            query,
            options,
            if_not_exists,
            emit_on_window_close,
        } = create_sink(
            "CREATE SINK IF NOT EXISTS out AS WITH t AS (SELECT 1 AS a) SELECT a FROM t \
             WITH (connector = 'kafka', topic = 'x') FORMAT UPSERT ENCODE JSON",
        )
        .unwrap()
        else {
            panic!("not a sink");
        };
        assert_eq!(name.to_string(), "out");
        assert!(if_not_exists);
        assert!(query.to_string().starts_with("WITH t AS"), "{query}");
        assert_eq!(options["format"], "upsert");
        assert_eq!(options["topic"], "x");
        assert!(!emit_on_window_close);
        let Command::CreateSink {
            query,
            emit_on_window_close,
            ..
        } = create_sink(
            "CREATE SINK w AS SELECT window_start, count(*) FROM t GROUP BY window_start \
             EMIT ON WINDOW CLOSE WITH (connector = 'blackhole')",
        )
        .unwrap()
        else {
            panic!("not a sink");
        };
        assert!(emit_on_window_close);
        assert!(
            query.to_string().ends_with("GROUP BY window_start"),
            "{query}"
        );
        let Command::CreateSink { query, .. } =
            create_sink("CREATE SINK s FROM v WITH (connector = 'kafka')").unwrap()
        else {
            panic!("not a sink");
        };
        assert_eq!(query.to_string(), "SELECT * FROM v");
        assert!(create_sink("CREATE SINK s WITH (connector = 'kafka')").is_err());
        assert!(create_sink("CREATE SINK s FROM v").is_err());
        assert_eq!(
            drop_sink("DROP SINK IF EXISTS s").unwrap(),
            Command::DropSink {
                name: ObjectName::from(vec![datafusion::sql::sqlparser::ast::Ident::new("s")]),
                if_exists: true
            }
        );
    }
}
