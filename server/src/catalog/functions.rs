//! Postgres functions that clients and catalog queries call and that
//! `datafusion-pg-catalog` does not provide (`to_regtype` is in
//! `regtype.rs`): `current_setting`, `quote_ident` (quoting keywords as
//! Postgres does),
//! `pg_typeof`, `pg_size_pretty`, `pg_is_in_recovery`, the visibility
//! tests and the comment look-ups.
//!
//! `obj_description`, `col_description` and `shobj_description` answer
//! NULL: Runnel keeps no comments (`COMMENT ON` is refused), so NULL is
//! what they truly are.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility, create_udf,
};
use datafusion::scalar::ScalarValue;

/// Every function of this module that does not depend on the session.
pub fn fixed_functions() -> Vec<ScalarUDF> {
    let mut out = vec![
        ScalarUDF::new_from_impl(PgTypeof::default()),
        create_udf(
            "pg_size_pretty",
            vec![DataType::Int64],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(size_pretty),
        ),
        create_udf(
            "pg_is_in_recovery",
            vec![],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(|_: &[ColumnarValue]| {
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))))
            }),
        ),
    ];
    out.extend(super::json_build::json_build_functions());
    out.push(create_udf(
        "quote_ident",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let out: StringArray = names
                .iter()
                .map(|n| n.map(super::pg_objects::quote_ident))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ));
    out.push(super::subscripts::subscripts_function());
    out.push(super::subscripts::expand_array_function());
    for name in ["pg_function_is_visible", "pg_type_is_visible"] {
        out.push(ScalarUDF::new_from_impl(Constant {
            name,
            signature: Signature::any(1, Volatility::Stable),
            value: ScalarValue::Boolean(Some(true)),
        }));
    }
    for (name, arguments) in [
        ("obj_description", vec![1, 2]),
        ("col_description", vec![2]),
        ("shobj_description", vec![2]),
    ] {
        out.push(ScalarUDF::new_from_impl(Constant {
            name,
            signature: Signature::one_of(
                arguments.into_iter().map(TypeSignature::Any).collect(),
                Volatility::Stable,
            ),
            value: ScalarValue::Utf8(None),
        }));
    }
    out
}

/// `current_setting(name [, missing_ok])` over the session's settings as
/// they are now (registered again whenever a setting changes).
pub fn current_setting(settings: BTreeMap<String, String>) -> ScalarUDF {
    ScalarUDF::new_from_impl(CurrentSetting {
        settings,
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Stable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    /// Setting name (lower case) → value, sorted.
    settings: BTreeMap<String, String>,
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let names = arrays[0].as_string::<i32>();
        let missing_ok = arrays.get(1).map(|a| a.as_boolean().clone());
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            if names.is_null(row) {
                out.push(None);
                continue;
            }
            let name = names.value(row).to_ascii_lowercase();
            match self.settings.get(&name) {
                Some(value) => out.push(Some(value.clone())),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|m| !m.is_null(row) && m.value(row)) =>
                {
                    out.push(None)
                }
                None => {
                    return Err(DataFusionError::Plan(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// A function answering the same value for any arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    value: ScalarValue,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

/// `pg_typeof(x)`: the Postgres name of x's type.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl Default for PgTypeof {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = pg_type_name(&args.arg_fields[0].data_type().clone());
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name))))
    }
}

/// The name Postgres gives the type Runnel keeps as `data_type`.
pub fn pg_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "unknown".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Interval(IntervalUnit::MonthDayNano | IntervalUnit::DayTime)
        | DataType::Interval(IntervalUnit::YearMonth)
        | DataType::Duration(TimeUnit::Microsecond) => "interval".into(),
        DataType::List(field) | DataType::LargeList(field) => {
            format!("{}[]", pg_type_name(field.data_type()))
        }
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// Postgres 15's `pg_size_pretty(bigint)`: bytes below 10 kB, then kB, MB,
/// GB, TB and PB, each rounded half away from zero.
fn size_pretty(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    if let [ColumnarValue::Scalar(size)] = args {
        let size = match size {
            ScalarValue::Int64(size) => size.map(pretty),
            _ => None,
        };
        return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(size)));
    }
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let sizes = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let out: StringArray = sizes.iter().map(|size| size.map(pretty)).collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

fn pretty(size: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if size.abs() < LIMIT {
        return format!("{size} bytes");
    }
    let mut size = size >> 9; // one more bit, for rounding
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_in_postgres() {
        assert_eq!(pretty(1024), "1024 bytes");
        assert_eq!(pretty(10 * 1024), "10 kB");
        assert_eq!(pretty(20 * 1024 * 1024), "20 MB");
        assert_eq!(pretty(1_500_000_000), "1431 MB");
        assert_eq!(pretty(-12345678), "-12 MB");
    }
}
