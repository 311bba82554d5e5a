//! Postgres semantics DataFusion does not have on its own, added to its
//! planning: text cast to `bytea` reads Postgres's bytea input formats
//! (`'\x00ff'` is two bytes, not six).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarUDF, Volatility, create_udf,
};
use datafusion::optimizer::AnalyzerRule;

use crate::expr_rewrite::rewrite_expressions;

/// Name of the function that parses Postgres bytea text.
pub const BYTEA_IN: &str = "runnel_bytea_in";

/// Parses one bytea text value: `\x` hex, or the escape format.
pub fn parse_bytea(text: &str) -> std::result::Result<Vec<u8>, String> {
    if let Some(hex) = text
        .strip_prefix("\\x")
        .or_else(|| text.strip_prefix("\\X"))
    {
        if hex.len() % 2 != 0 {
            return Err("invalid hexadecimal data: odd number of digits".into());
        }
        return (0..hex.len() / 2)
            .map(|i| {
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| {
                    format!(
                        "invalid hexadecimal digit in \"{}\"",
                        &hex[2 * i..2 * i + 2]
                    )
                })
            })
            .collect();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).map_err(|e| e.to_string())?);
            i += 4;
        } else {
            return Err("invalid input syntax for type bytea".into());
        }
    }
    Ok(out)
}

/// The function text-to-bytea casts are rewritten to.
pub fn bytea_in_udf() -> ScalarUDF {
    create_udf(
        BYTEA_IN,
        vec![DataType::Utf8],
        DataType::Binary,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = arrays[0].as_string::<i32>();
            let mut builder = BinaryBuilder::with_capacity(input.len(), input.len() * 4);
            for value in input.iter() {
                match value {
                    None => builder.append_null(),
                    Some(text) => builder.append_value(
                        parse_bytea(text)
                            .map_err(|e| DataFusionError::Execution(format!("{e}: cast error")))?,
                    ),
                }
            }
            let array: ArrayRef = Arc::new(builder.finish());
            Ok(ColumnarValue::Array(array))
        }),
    )
}

pub(crate) fn is_text(expr: &Expr, schema: Option<&datafusion::common::DFSchema>) -> bool {
    match (expr, schema) {
        (Expr::Literal(value, _), _) => value.data_type() == DataType::Utf8,
        (_, Some(schema)) => matches!(expr.get_type(schema), Ok(DataType::Utf8)),
        _ => false,
    }
}

/// Rewrites `CAST(<text> AS bytea)` into [`BYTEA_IN`]. Runs after type
/// coercion, so the casts coercion adds (INSERT of a text literal into a
/// bytea column) are rewritten too.
#[derive(Debug)]
pub struct ByteaInputRule {
    udf: Arc<ScalarUDF>,
}

impl Default for ByteaInputRule {
    fn default() -> Self {
        Self {
            udf: Arc::new(bytea_in_udf()),
        }
    }
}

impl AnalyzerRule for ByteaInputRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        rewrite_expressions(plan, |e, schema| match e {
            Expr::Cast(Cast { expr, field })
                if field.data_type() == &DataType::Binary && is_text(&expr, schema) =>
            {
                Ok(Transformed::yes(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::clone(&self.udf), vec![*expr]),
                )))
            }
            other => Ok(Transformed::no(other)),
        })
    }

    fn name(&self) -> &str {
        "runnel_bytea_input"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_formats() {
        assert_eq!(parse_bytea("\\x00ff").unwrap(), vec![0, 255]);
        assert_eq!(parse_bytea("ab\\\\c\\001").unwrap(), b"ab\\c\x01".to_vec());
        assert_eq!(parse_bytea("plain").unwrap(), b"plain".to_vec());
        assert!(parse_bytea("\\x0").is_err());
        assert!(parse_bytea("\\xzz").is_err());
        assert!(parse_bytea("bad\\9").is_err());
    }
}
