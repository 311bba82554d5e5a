//! `json_build_object(k1, v1, …)` and `jsonb_build_object`, as SQLAlchemy's
//! column reflection builds identity options with them: a JSON object of
//! the arguments in order, printed as Postgres prints `json` values
//! (`{"a" : 1, "b" : "x"}`; jsonb: `{"a": 1, "b": "x"}`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Both functions.
pub fn json_build_functions() -> Vec<ScalarUDF> {
    [false, true]
        .into_iter()
        .map(|binary| {
            ScalarUDF::new_from_impl(BuildObject {
                binary,
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BuildObject {
    /// `jsonb_build_object` (its printing) rather than `json_build_object`.
    binary: bool,
    signature: Signature,
}

/// `value` as a JSON value's text.
fn json_value(value: &ScalarValue) -> Result<String> {
    if value.is_null() {
        return Ok("null".into());
    }
    Ok(match value {
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..) => value.to_string(),
        ScalarValue::Float32(Some(f)) if f.is_finite() => value.to_string(),
        ScalarValue::Float64(Some(f)) if f.is_finite() => value.to_string(),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => quoted(s),
        other => quoted(&other.to_string()),
    })
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

impl ScalarUDFImpl for BuildObject {
    fn name(&self) -> &str {
        if self.binary {
            "jsonb_build_object"
        } else {
            "json_build_object"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(format!(
                "argument list must have even number of elements (call {} with key, value pairs)",
                self.name()
            )));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let separator = if self.binary { ": " } else { " : " };
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut pairs = Vec::with_capacity(arrays.len() / 2);
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(DataFusionError::Execution(
                        "argument 1: key value must not be null".into(),
                    ));
                }
                let key = match &key {
                    ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
                    other => other.to_string(),
                };
                let value = json_value(&ScalarValue::try_from_array(&pair[1], row)?)?;
                pairs.push((key, value));
            }
            if self.binary {
                // jsonb orders keys by length, then bytes; the last of equal keys wins.
                pairs.reverse();
                let mut seen = std::collections::HashSet::new();
                pairs.retain(|(k, _)| seen.insert(k.clone()));
                pairs.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            }
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}{separator}{v}", quoted(k)))
                .collect();
            out.push(format!("{{{}}}", body.join(", ")));
        }
        Ok(ColumnarValue::Array(
            Arc::new(StringArray::from(out)) as ArrayRef
        ))
    }
}
