//! Arrow batches to pgwire rows and back for parameters: `arrow-pg` does
//! the per-type text and binary encodings; this module adds what it does not
//! know (json and jsonb columns) and the session's format options.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::execution::SendableRecordBatchStream;
use std::panic::AssertUnwindSafe;

use futures::{Stream, StreamExt};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql};
use runnel_planner::types::{EXTENSION_NAME_KEY, JSON_EXTENSION, PG_TYPE_KEY};

use super::sql_error_to_pgwire;
use crate::error::ServerError;
use crate::session::{Prepared, Settings};

/// The wire type of an Arrow field.
pub fn pg_type(field: &Arc<Field>) -> PgWireResult<Type> {
    if field.metadata().get(EXTENSION_NAME_KEY).map(String::as_str) == Some(JSON_EXTENSION) {
        return Ok(
            if field.metadata().get(PG_TYPE_KEY).map(String::as_str) == Some("jsonb") {
                Type::JSONB
            } else {
                Type::JSON
            },
        );
    }
    if let Some(vector) = super::vectors::vector_type(field) {
        return Ok(vector);
    }
    arrow_pg::datatypes::field_into_pg_type(field)
}

/// The format options a session's settings ask for.
pub fn format_options(settings: &Settings) -> Arc<FormatOptions> {
    let mut options = FormatOptions::default();
    options.date_style = settings.value("datestyle");
    options.interval_style = settings.value("intervalstyle");
    options.bytea_output = settings.value("bytea_output");
    options.time_zone = settings.value("timezone");
    options.extra_float_digits = settings.value("extra_float_digits").parse().unwrap_or(1);
    Arc::new(options)
}

/// RowDescription fields of a schema.
pub fn fields(
    schema: &Schema,
    format: &Format,
    options: &Arc<FormatOptions>,
) -> PgWireResult<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(FieldInfo::new(
                runnel_planner::output_names::display_name(f.name()).to_string(),
                None,
                None,
                pg_type(f)?,
                format.format_for(i),
            )
            .with_format_options(Arc::clone(options)))
        })
        .collect()
}

/// A json or jsonb value: the text itself, with jsonb's version byte in
/// binary format.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for JsonText<'_> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
}

fn encode_batch(fields: &Arc<Vec<FieldInfo>>, batch: &RecordBatch) -> PgWireResult<Vec<DataRow>> {
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut encoder = DataRowEncoder::new(Arc::clone(fields));
    for row in 0..batch.num_rows() {
        for (col, array) in batch.columns().iter().enumerate() {
            let pg_field = &fields[col];
            if array.is_null(row) {
                // NULL is NULL for every type; not every arrow-pg encoder
                // checks validity (intervals did not).
                encoder.encode_field_with_type_and_format(
                    &None::<&str>,
                    pg_field.datatype(),
                    pg_field.format(),
                    pg_field.format_options(),
                )?;
            } else if matches!(*pg_field.datatype(), Type::JSON | Type::JSONB) {
                encode_json(&mut encoder, array, row, pg_field)?;
            } else if super::vectors::is_vector(pg_field.datatype()) {
                super::vectors::encode_vector(&mut encoder, array, row, pg_field)?;
            } else if let Some(text) =
                temporal_text(array, row, pg_field).or_else(|| float_text(array, row, pg_field))
            {
                encoder.encode_field_with_type_and_format(
                    &Some(text),
                    pg_field.datatype(),
                    pg_field.format(),
                    pg_field.format_options(),
                )?;
            } else {
                arrow_pg::encoder::encode_value(
                    &mut encoder,
                    array,
                    row,
                    schema.field(col),
                    pg_field,
                )?;
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
}

/// Postgres's text form of times and timestamps: seconds fraction without
/// trailing zeros, timestamptz in the session's time zone with its offset.
/// None for other types and for binary format.
fn temporal_text(array: &ArrayRef, row: usize, field: &FieldInfo) -> Option<String> {
    use chrono::{Offset, Timelike};
    use datafusion::arrow::array::timezone::Tz;
    use datafusion::arrow::datatypes::TimeUnit;
    if field.format() != pgwire::api::results::FieldFormat::Text {
        return None;
    }
    // Postgres keeps microseconds; finer units are truncated for display.
    let micros_of = |unit: &TimeUnit, v: i64| -> i64 {
        match unit {
            TimeUnit::Second => v.saturating_mul(1_000_000),
            TimeUnit::Millisecond => v.saturating_mul(1_000),
            TimeUnit::Microsecond => v,
            TimeUnit::Nanosecond => v.div_euclid(1_000),
        }
    };
    match array.data_type() {
        DataType::Time64(unit) => {
            let v = match unit {
                TimeUnit::Nanosecond => array
                    .as_primitive_opt::<datafusion::arrow::datatypes::Time64NanosecondType>()?
                    .value(row),
                _ => array
                    .as_primitive_opt::<datafusion::arrow::datatypes::Time64MicrosecondType>()?
                    .value(row),
            };
            let micros = micros_of(unit, v);
            let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (micros / 1_000_000) as u32,
                (micros % 1_000_000) as u32 * 1_000,
            )?;
            Some(format!(
                "{}{}",
                time.format("%H:%M:%S"),
                fraction(time.nanosecond())
            ))
        }
        DataType::Timestamp(unit, tz) => {
            let raw = runnel_storage::row_codec::timestamp_value(array.as_ref(), *unit, row);
            let utc = chrono::DateTime::from_timestamp_micros(micros_of(unit, raw))?;
            let frac = fraction(utc.timestamp_subsec_nanos());
            match tz {
                None => Some(format!(
                    "{}{frac}",
                    utc.naive_utc().format("%Y-%m-%d %H:%M:%S")
                )),
                Some(_) => {
                    let zone: Tz = field.format_options().time_zone.parse().ok()?;
                    let local = utc.with_timezone(&zone);
                    let offset = local.offset().fix().local_minus_utc();
                    let sign = if offset < 0 { '-' } else { '+' };
                    let (h, m) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
                    let offset = if m == 0 {
                        format!("{sign}{h:02}")
                    } else {
                        format!("{sign}{h:02}:{m:02}")
                    };
                    Some(format!(
                        "{}{frac}{offset}",
                        local.format("%Y-%m-%d %H:%M:%S")
                    ))
                }
            }
        }
        _ => None,
    }
}

/// Postgres's text form of real and double precision values: the shortest
/// digits that read back to the same value, in fixed notation for decimal
/// exponents from -4 up to 14 (5 for real) and as `1e+20` beyond, and
/// `NaN`, `Infinity`, `-Infinity`. None for other types and binary format.
fn float_text(array: &ArrayRef, row: usize, field: &FieldInfo) -> Option<String> {
    if field.format() != pgwire::api::results::FieldFormat::Text {
        return None;
    }
    let (v, fixed_below) = match array.data_type() {
        DataType::Float64 => {
            let v = array
                .as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>()?
                .value(row);
            (format!("{v:e}"), 15)
        }
        DataType::Float32 => {
            let v = array
                .as_primitive_opt::<datafusion::arrow::datatypes::Float32Type>()?
                .value(row);
            (format!("{v:e}"), 6)
        }
        _ => return None,
    };
    Some(pg_float(&v, fixed_below))
}

/// Lays out Rust's shortest scientific form (`-1.25e3`) as Postgres does.
fn pg_float(scientific: &str, fixed_below: i32) -> String {
    match scientific {
        "NaN" => return "NaN".into(),
        "inf" => return "Infinity".into(),
        "-inf" => return "-Infinity".into(),
        _ => {}
    }
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..fixed_below).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        return format!("{sign}{text}");
    }
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let mantissa = if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}.{rest}")
    };
    let exponent_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
}

/// `.5`, `.123456`, or nothing for whole seconds (microsecond precision).
fn fraction(nanos: u32) -> String {
    let micros = nanos / 1_000;
    if micros == 0 {
        return String::new();
    }
    let digits = format!(".{micros:06}");
    digits.trim_end_matches('0').to_string()
}

fn encode_json(
    encoder: &mut DataRowEncoder,
    array: &ArrayRef,
    row: usize,
    field: &FieldInfo,
) -> PgWireResult<()> {
    let value = (!array.is_null(row)).then(|| match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row),
        DataType::LargeUtf8 => array.as_string::<i64>().value(row),
        _ => array.as_string_view().value(row),
    });
    encoder.encode_field_with_type_and_format(
        &value.map(JsonText),
        field.datatype(),
        field.format(),
        field.format_options(),
    )
}

/// The rows of a result stream, encoded as the fields say.
///
/// Query execution is lazy and runs while pgwire polls this stream, so a
/// panic inside it is caught here and becomes this statement's error.
pub fn row_stream(
    fields: Arc<Vec<FieldInfo>>,
    stream: SendableRecordBatchStream,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send {
    let mut panicked = false;
    AssertUnwindSafe(stream)
        .catch_unwind()
        .take_while(move |item| {
            let go = !panicked;
            panicked |= item.is_err();
            futures::future::ready(go)
        })
        .map(|item| match item {
            Ok(batch) => batch,
            Err(panic) => {
                let what = super::panic_message(panic.as_ref());
                tracing::error!(panic = %what, "query execution panicked");
                Err(datafusion::error::DataFusionError::Internal(format!(
                    "statement failed unexpectedly: {what}"
                )))
            }
        })
        .map(move |batch| {
            let rows: Vec<PgWireResult<DataRow>> = match batch {
                Ok(batch) => match encode_batch(&fields, &batch) {
                    Ok(rows) => rows.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(sql_error_to_pgwire(&ServerError::from(e)))],
            };
            futures::stream::iter(rows)
        })
        .flatten()
}

/// The parameter types a prepared statement announces.
pub fn parameter_types(prepared: &Prepared) -> PgWireResult<Vec<Type>> {
    prepared
        .param_fields()
        .map_err(|e| sql_error_to_pgwire(&e))?
        .iter()
        .map(|f| match f {
            Some(f) => pg_type(f),
            None => Ok(Type::UNKNOWN),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pg_float;

    fn double(v: f64) -> String {
        pg_float(&format!("{v:e}"), 15)
    }

    #[test]
    fn doubles_print_as_in_postgres() {
        for (v, text) in [
            (6.0, "6"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1.25e20, "1.25e+20"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (-0.0, "-0"),
        ] {
            assert_eq!(double(v), text, "{v}");
        }
        let real = |v: f32| pg_float(&format!("{v:e}"), 6);
        assert_eq!(real(1.1), "1.1");
        assert_eq!(real(123456.0), "123456");
        assert_eq!(real(1234567.0), "1.234567e+06");
    }
}
