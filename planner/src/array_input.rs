//! Text cast to an array type reads Postgres's array input format:
//! `'{a,"b c",NULL}'::text[]` is three elements (the last NULL), where
//! DataFusion's own cast makes a one-element list of the whole text. This
//! is how array parameters arrive from drivers that send them as text
//! (lib/pq, node-postgres: `$1::text[]`, `= ANY($1)`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarUDF, Volatility, create_udf,
};
use datafusion::optimizer::AnalyzerRule;

use crate::expr_rewrite::rewrite_expressions;
use crate::pg_compat::is_text;

/// Name of the function that parses Postgres array text.
pub const ARRAY_IN: &str = "runnel_array_in";

/// The elements of a one-dimensional Postgres array literal, NULL as None.
pub fn parse_array(text: &str) -> std::result::Result<Vec<Option<String>>, String> {
    let malformed = || format!("malformed array literal: \"{text}\"");
    let mut body = text.trim();
    // An explicit bounds decoration (`[1:2]={…}`) says nothing we keep.
    if body.starts_with('[') {
        body = body
            .split_once('=')
            .map(|(_, b)| b.trim())
            .ok_or_else(malformed)?;
    }
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(malformed)?;
    let mut out = vec![];
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        let mut quoted = false;
        match chars.peek() {
            Some('"') => {
                quoted = true;
                chars.next();
                loop {
                    match chars.next() {
                        Some('\\') => value.push(chars.next().ok_or_else(malformed)?),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(malformed()),
                    }
                }
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some('{') => {
                return Err(format!(
                    "{}: arrays of more than one dimension are not supported",
                    malformed()
                ));
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        value.push(chars.next().ok_or_else(malformed)?);
                    } else if c == '"' || c == '{' || c == '}' {
                        return Err(malformed());
                    } else {
                        value.push(c);
                    }
                }
                value = value.trim_end().to_string();
            }
        }
        out.push((quoted || !value.eq_ignore_ascii_case("null")).then_some(value));
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(_) => return Err(malformed()),
        }
    }
    Ok(out)
}

/// The function text-to-array casts are rewritten to (then cast to the
/// array's element type).
pub fn array_in_udf() -> ScalarUDF {
    let list = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    create_udf(
        ARRAY_IN,
        vec![DataType::Utf8],
        list,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = arrays[0].as_string::<i32>();
            let mut builder = ListBuilder::new(StringBuilder::new());
            for row in 0..input.len() {
                if input.is_null(row) {
                    builder.append_null();
                    continue;
                }
                let elements = parse_array(input.value(row)).map_err(DataFusionError::Execution)?;
                for element in elements {
                    builder.values().append_option(element);
                }
                builder.append(true);
            }
            let array: ArrayRef = Arc::new(builder.finish());
            Ok(ColumnarValue::Array(array))
        }),
    )
}

/// Rewrites `CAST(<text> AS <list>)` into [`ARRAY_IN`] and a cast of its
/// elements. Runs after type coercion, so bound parameters are covered.
#[derive(Debug)]
pub struct ArrayInputRule {
    udf: Arc<ScalarUDF>,
}

impl Default for ArrayInputRule {
    fn default() -> Self {
        Self {
            udf: Arc::new(array_in_udf()),
        }
    }
}

impl AnalyzerRule for ArrayInputRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| match e {
            Expr::Cast(Cast { expr, field })
                if matches!(field.data_type(), DataType::List(_)) && is_text(&expr, schema) =>
            {
                let parsed = Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::clone(&self.udf),
                    vec![*expr],
                ));
                Ok(Transformed::yes(Expr::Cast(Cast {
                    expr: Box::new(parsed),
                    field,
                })))
            }
            other => Ok(Transformed::no(other)),
        })
    }

    fn name(&self) -> &str {
        "runnel_array_input"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some(v.to_string())).collect()
    }

    #[test]
    fn array_literals() {
        assert_eq!(parse_array("{a,b}").unwrap(), some(&["a", "b"]));
        assert_eq!(parse_array(" { 1 , 2 } ").unwrap(), some(&["1", "2"]));
        assert_eq!(parse_array("{}").unwrap(), vec![]);
        assert_eq!(
            parse_array(r#"{"b c",NULL,"NULL","x\"y",e\,f}"#).unwrap(),
            vec![
                Some("b c".into()),
                None,
                Some("NULL".into()),
                Some("x\"y".into()),
                Some("e,f".into())
            ]
        );
        assert_eq!(parse_array("[1:2]={7,8}").unwrap(), some(&["7", "8"]));
        assert!(parse_array("a,b").is_err());
        assert!(parse_array("{{1},{2}}").is_err());
        assert!(parse_array("{\"open}").is_err());
    }
}
