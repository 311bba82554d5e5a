//! Decoding bound parameters (text or binary) into DataFusion values of the
//! types the statement's plan expects.

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::api::results::FieldFormat;
use pgwire::error::PgWireResult;
use postgres_types::FromSql;
use rust_decimal::Decimal;

use super::{encode, sql_error_to_pgwire};
use crate::error::ServerError;
use crate::session::Prepared;

/// What a decoded value is, for its error message.
#[derive(Debug, Clone, Copy)]
pub enum Label<'a> {
    /// Bound parameter `$n` (0-based here).
    Param(usize),
    /// A COPY value: column name and line.
    Copied(&'a str, u64),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Param(i) => write!(f, "parameter ${}", i + 1),
            Label::Copied(column, line) => write!(f, "COPY line {line}, column {column}"),
        }
    }
}

fn bad(label: Label<'_>, reason: impl std::fmt::Display) -> pgwire::error::PgWireError {
    sql_error_to_pgwire(&ServerError::InvalidParameter(format!("{label}: {reason}")))
}

/// The values bound to a portal, as the statement's parameter types.
pub fn parameter_values(portal: &Portal<Prepared>) -> PgWireResult<ParamValues> {
    let prepared = &portal.statement.statement;
    let fields = prepared
        .param_fields()
        .map_err(|e| sql_error_to_pgwire(&e))?;
    let mut values = Vec::with_capacity(portal.parameters.len());
    for (i, raw) in portal.parameters.iter().enumerate() {
        let client_type = portal.statement.parameter_types.get(i).cloned().flatten();
        let field = fields.get(i).cloned().flatten();
        let wire_type = match (client_type, &field) {
            (Some(t), _) if t != Type::UNKNOWN => t,
            (_, Some(f)) => encode::pg_type(f)?,
            _ => Type::UNKNOWN,
        };
        let target = field.map(|f| f.data_type().clone());
        let binary = portal.parameter_format.format_for(i) == FieldFormat::Binary;
        let value = match raw {
            None => match &target {
                Some(t) => ScalarValue::try_from(t).map_err(|e| bad(Label::Param(i), e))?,
                None => ScalarValue::Null,
            },
            Some(bytes) if binary => decode_binary(Label::Param(i), &wire_type, bytes)?,
            Some(bytes) => decode_text(Label::Param(i), &wire_type, bytes)?,
        };
        let value = match (&target, value) {
            (Some(t), ScalarValue::Utf8(Some(text))) => {
                ScalarValue::Utf8(Some(without_zone(&text, t).to_string()))
            }
            (_, value) => value,
        };
        let value = match &target {
            Some(t) if value.data_type() != *t && !value.is_null() => value
                .cast_to(t)
                .map_err(|e| bad(Label::Param(i), format!("cannot convert to {t}: {e}")))?,
            _ => value,
        };
        values.push(value.into());
    }
    Ok(ParamValues::List(values))
}

/// The text of a date, time or timestamp value without the time zone a
/// driver appended (pgjdbc sends `setDate` as `2024-01-01 +00` and
/// `setTime` as `12:00:00+00`, untyped): Postgres ignores a zone given to a
/// type without one.
pub(super) fn without_zone<'a>(text: &'a str, target: &DataType) -> &'a str {
    let text = text.trim();
    let cut_zone = |time: &'a str| -> &'a str {
        let end = time.find(['+', '-', 'Z', 'z']).map_or(time.len(), |at| at);
        time[..end].trim_end()
    };
    match target {
        DataType::Date32 | DataType::Date64 => text.split_whitespace().next().unwrap_or(text),
        DataType::Time32(_) | DataType::Time64(_) => cut_zone(text),
        DataType::Timestamp(_, None) => match text.find([' ', 'T']) {
            Some(at) => {
                let time = cut_zone(&text[at + 1..]);
                &text[..at + 1 + time.len()]
            }
            None => text,
        },
        _ => text,
    }
}

fn from_sql<'a, T: FromSql<'a>>(i: Label<'_>, ty: &Type, raw: &'a [u8]) -> PgWireResult<T> {
    T::from_sql(ty, raw).map_err(|e| bad(i, e))
}

pub(super) fn decode_binary(i: Label<'_>, ty: &Type, raw: &Bytes) -> PgWireResult<ScalarValue> {
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(Some(from_sql(i, ty, raw)?)),
        Type::INT2 => ScalarValue::Int16(Some(from_sql(i, ty, raw)?)),
        Type::INT4 => ScalarValue::Int32(Some(from_sql(i, ty, raw)?)),
        Type::INT8 => ScalarValue::Int64(Some(from_sql(i, ty, raw)?)),
        Type::OID => ScalarValue::UInt32(Some(from_sql(i, ty, raw)?)),
        Type::FLOAT4 => ScalarValue::Float32(Some(from_sql(i, ty, raw)?)),
        Type::FLOAT8 => ScalarValue::Float64(Some(from_sql(i, ty, raw)?)),
        Type::NUMERIC => decimal(from_sql::<Decimal>(i, ty, raw)?),
        Type::BYTEA => ScalarValue::Binary(Some(raw.to_vec())),
        Type::DATE => {
            let date: NaiveDate = from_sql(i, ty, raw)?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            ScalarValue::Date32(Some((date - epoch).num_days() as i32))
        }
        Type::TIME => {
            let time: NaiveTime = from_sql(i, ty, raw)?;
            let micros = (time - NaiveTime::MIN).num_microseconds().unwrap_or(0);
            ScalarValue::Time64Microsecond(Some(micros))
        }
        Type::TIMESTAMP => {
            let ts: NaiveDateTime = from_sql(i, ty, raw)?;
            ScalarValue::TimestampMicrosecond(Some(ts.and_utc().timestamp_micros()), None)
        }
        Type::TIMESTAMPTZ => {
            let ts: DateTime<Utc> = from_sql(i, ty, raw)?;
            ScalarValue::TimestampMicrosecond(Some(ts.timestamp_micros()), Some("+00:00".into()))
        }
        Type::INTERVAL => {
            if raw.len() != 16 {
                return Err(bad(i, "binary interval must be 16 bytes"));
            }
            let micros = i64::from_be_bytes(raw[0..8].try_into().unwrap_or_default());
            let days = i32::from_be_bytes(raw[8..12].try_into().unwrap_or_default());
            let months = i32::from_be_bytes(raw[12..16].try_into().unwrap_or_default());
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                months,
                days,
                micros.saturating_mul(1000),
            )))
        }
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => ScalarValue::Utf8(Some(utf8(i, rest)?)),
            _ => return Err(bad(i, "unsupported binary jsonb version")),
        },
        // text, varchar, name, json, unknown: the bytes are the text.
        _ => ScalarValue::Utf8(Some(utf8(i, raw)?)),
    })
}

fn utf8(i: Label<'_>, raw: &[u8]) -> PgWireResult<String> {
    String::from_utf8(raw.to_vec()).map_err(|e| bad(i, format!("not UTF-8: {e}")))
}

fn decimal(d: Decimal) -> ScalarValue {
    ScalarValue::Decimal128(Some(d.mantissa()), 38, d.scale() as i8)
}

pub(super) fn decode_text(i: Label<'_>, ty: &Type, raw: &Bytes) -> PgWireResult<ScalarValue> {
    let text = utf8(i, raw)?;
    Ok(match *ty {
        Type::BOOL => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" | "y" => ScalarValue::Boolean(Some(true)),
            "f" | "false" | "no" | "off" | "0" | "n" => ScalarValue::Boolean(Some(false)),
            _ => {
                return Err(bad(
                    i,
                    format!("invalid input syntax for type boolean: \"{text}\""),
                ));
            }
        },
        Type::NUMERIC => decimal(
            text.trim()
                .parse::<Decimal>()
                .map_err(|e| bad(i, format!("invalid numeric \"{text}\": {e}")))?,
        ),
        Type::BYTEA => {
            let hex = text
                .strip_prefix("\\x")
                .ok_or_else(|| bad(i, "bytea text must be hex (\\x…)"))?;
            let bytes = (0..hex.len() / 2)
                .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(i, format!("invalid hex in bytea: {e}")))?;
            ScalarValue::Binary(Some(bytes))
        }
        Type::INTERVAL => ScalarValue::Utf8(Some(text))
            .cast_to(&DataType::Interval(
                datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
            ))
            .map_err(|e| bad(i, format!("invalid interval: {e}")))?,
        Type::TIMESTAMPTZ => ScalarValue::Utf8(Some(text))
            .cast_to(&DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("+00:00".into()),
            ))
            .map_err(|e| bad(i, format!("invalid timestamptz: {e}")))?,
        // Numbers, dates, times and text are cast from their text by the
        // caller to the type the statement expects.
        _ => ScalarValue::Utf8(Some(text)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_sent_with_a_zoneless_type_is_dropped() {
        assert_eq!(
            without_zone("2024-01-01 +00", &DataType::Date32),
            "2024-01-01"
        );
        assert_eq!(
            without_zone("12:00:01+00", &DataType::Time64(TimeUnit::Microsecond)),
            "12:00:01"
        );
        assert_eq!(
            without_zone(
                "12:00:01.5 -05:30",
                &DataType::Time64(TimeUnit::Microsecond)
            ),
            "12:00:01.5"
        );
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(
            without_zone("2024-01-01 12:00:00+00", &timestamp),
            "2024-01-01 12:00:00"
        );
        assert_eq!(without_zone("2024-01-01", &timestamp), "2024-01-01");
        assert_eq!(without_zone("hello", &DataType::Utf8), "hello");
    }
}
