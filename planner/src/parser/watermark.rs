//! The `WATERMARK FOR column AS expr` clause Runnel adds to the column list
//! of `CREATE TABLE` and `CREATE SOURCE`, taken out of the token stream
//! before sqlparser sees the statement.

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{Command, WatermarkClause, parse_standard, syntax_error};
use crate::{PlanError, PlanResult};

/// `CREATE TABLE …` with a `WATERMARK FOR` clause among its columns, if it
/// has one.
pub(super) fn create_table_with_watermark(text: &str) -> PlanResult<Option<Command>> {
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() else {
        return Ok(None);
    };
    let (rest, watermark) = take_watermark(&tokens)?;
    let Some(watermark) = watermark else {
        return Ok(None);
    };
    let sql: String = rest.iter().map(|t| t.to_string()).collect();
    let mut statements = parse_standard(&sql)?;
    match statements.as_slice() {
        [Statement::CreateTable(_)] => Ok(Some(Command::CreateTableWithWatermark {
            create: Box::new(statements.remove(0)),
            watermark,
        })),
        _ => Err(PlanError::Syntax {
            message: "WATERMARK FOR belongs in the column list of CREATE TABLE or CREATE SOURCE"
                .into(),
            position: None,
        }),
    }
}

/// Takes `WATERMARK FOR column AS expr` out of a source's column list
/// (`tokens` up to `WITH`), returning the tokens left and the clause.
pub(super) fn take_watermark(
    tokens: &[datafusion::sql::sqlparser::tokenizer::Token],
) -> PlanResult<(
    Vec<datafusion::sql::sqlparser::tokenizer::Token>,
    Option<WatermarkClause>,
)> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let syntax = |message: &str| PlanError::Syntax {
        message: format!("CREATE SOURCE: {message}"),
        position: None,
    };
    // Top-level elements of the first parenthesised group, as token ranges.
    let mut depth = 0;
    let mut elements = vec![];
    let mut start = None;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    start = Some(i + 1);
                }
            }
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start.take() {
                        elements.push(s..i);
                    }
                    break;
                }
            }
            Token::Comma if depth == 1 => {
                if let Some(s) = start.replace(i + 1) {
                    elements.push(s..i);
                }
            }
            _ => {}
        }
    }
    let words = |range: &std::ops::Range<usize>| -> Vec<Token> {
        tokens[range.clone()]
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .cloned()
            .collect()
    };
    let is_watermark = |range: &std::ops::Range<usize>| matches!(words(range).first(), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("watermark"));
    let found: Vec<usize> = (0..elements.len())
        .filter(|&i| is_watermark(&elements[i]))
        .collect();
    let index = match found.as_slice() {
        [] => return Ok((tokens.to_vec(), None)),
        [one] => *one,
        _ => return Err(syntax("a source takes one WATERMARK FOR clause")),
    };
    let element = words(&elements[index]);
    let keyword = |t: Option<&Token>, k: &str| matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(k));
    let column = match (keyword(element.get(1), "for"), element.get(2)) {
        (true, Some(Token::Word(w))) => match w.quote_style {
            Some(_) => w.value.clone(),
            None => w.value.to_ascii_lowercase(),
        },
        _ => return Err(syntax("expected WATERMARK FOR column AS expression")),
    };
    if !keyword(element.get(3), "as") || element.len() < 5 {
        return Err(syntax("expected WATERMARK FOR column AS expression"));
    }
    let expr_text: String = tokens[elements[index].clone()]
        .iter()
        .skip_while(|t| !matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("as")))
        .skip(1)
        .map(|t| t.to_string())
        .collect();
    let expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&expr_text)
        .and_then(|mut p| {
            let expr = p.parse_expr()?;
            p.expect_token(&Token::EOF)?;
            Ok(expr)
        })
        .map_err(|e| syntax_error(&expr_text, e))?;
    // Drop the element with the comma before it (or after it, if first).
    let range = &elements[index];
    let cut = if index > 0 {
        elements[index - 1].end..range.end
    } else if elements.len() > 1 {
        range.start..elements[1].start
    } else {
        return Err(syntax(
            "a source needs columns besides its WATERMARK FOR clause",
        ));
    };
    let mut left = tokens[..cut.start].to_vec();
    left.extend_from_slice(&tokens[cut.end..]);
    Ok((
        left,
        Some(WatermarkClause {
            column,
            expr: expr.to_string(),
        }),
    ))
}
