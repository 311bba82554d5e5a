//! A self-describing encoding of lists of `ScalarValue`s, for operator state
//! (accumulator states, previous outputs, source offsets). Each value carries
//! a type tag, so decoding needs no schema.

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::scalar::ScalarValue;

use crate::{StorageError, StorageResult};

/// Appends the encoding of `values` to `out`.
pub fn encode_scalars(values: &[ScalarValue], out: &mut Vec<u8>) -> StorageResult<()> {
    let count = u16::try_from(values.len())
        .map_err(|_| StorageError::corrupt("state", "more than 65535 values"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for value in values {
        encode_one(value, out)?;
    }
    Ok(())
}

/// Decodes what [`encode_scalars`] wrote.
pub fn decode_scalars(mut bytes: &[u8]) -> StorageResult<Vec<ScalarValue>> {
    let count = u16::from_le_bytes(take(&mut bytes)?) as usize;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(decode_one(&mut bytes)?);
    }
    Ok(values)
}

fn unit_code(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

fn unit_of(code: u8) -> StorageResult<TimeUnit> {
    Ok(match code {
        0 => TimeUnit::Second,
        1 => TimeUnit::Millisecond,
        2 => TimeUnit::Microsecond,
        3 => TimeUnit::Nanosecond,
        _ => return Err(StorageError::corrupt("state", "unknown time unit")),
    })
}

fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Writes a presence byte and the value when there is one.
macro_rules! present {
    ($out:ident, $value:expr) => {{
        match $value {
            None => $out.push(0),
            Some(v) => {
                $out.push(1);
                $out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }};
}

/// Writes a tag, then a presence byte and the value when there is one.
macro_rules! fixed {
    ($out:ident, $tag:expr, $value:expr) => {{
        $out.push($tag);
        present!($out, $value)
    }};
}

fn encode_one(value: &ScalarValue, out: &mut Vec<u8>) -> StorageResult<()> {
    match value {
        ScalarValue::Null => out.push(0),
        ScalarValue::Boolean(v) => fixed!(out, 1, v.map(u8::from)),
        ScalarValue::Int8(v) => fixed!(out, 2, v),
        ScalarValue::Int16(v) => fixed!(out, 3, v),
        ScalarValue::Int32(v) => fixed!(out, 4, v),
        ScalarValue::Int64(v) => fixed!(out, 5, v),
        ScalarValue::UInt8(v) => fixed!(out, 6, v),
        ScalarValue::UInt16(v) => fixed!(out, 7, v),
        ScalarValue::UInt32(v) => fixed!(out, 8, v),
        ScalarValue::UInt64(v) => fixed!(out, 9, v),
        ScalarValue::Float32(v) => fixed!(out, 10, v),
        ScalarValue::Float64(v) => fixed!(out, 11, v),
        ScalarValue::Date32(v) => fixed!(out, 12, v),
        ScalarValue::Time64Microsecond(v) => fixed!(out, 13, v),
        ScalarValue::Time64Nanosecond(v) => fixed!(out, 14, v),
        ScalarValue::Decimal128(v, p, s) => {
            out.extend_from_slice(&[15, *p, *s as u8]);
            present!(out, v);
        }
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            out.push(16);
            match v {
                None => out.push(0),
                Some(s) => {
                    out.push(1);
                    put_bytes(s.as_bytes(), out);
                }
            }
        }
        ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
            out.push(17);
            match v {
                None => out.push(0),
                Some(b) => {
                    out.push(1);
                    put_bytes(b, out);
                }
            }
        }
        ScalarValue::TimestampSecond(v, tz)
        | ScalarValue::TimestampMillisecond(v, tz)
        | ScalarValue::TimestampMicrosecond(v, tz)
        | ScalarValue::TimestampNanosecond(v, tz) => {
            let DataType::Timestamp(unit, _) = value.data_type() else {
                unreachable!("a timestamp scalar has a timestamp type")
            };
            out.extend_from_slice(&[18, unit_code(&unit)]);
            put_bytes(tz.as_deref().unwrap_or("").as_bytes(), out);
            present!(out, v);
        }
        ScalarValue::IntervalMonthDayNano(v) => {
            out.push(19);
            match v {
                None => out.push(0),
                Some(i) => {
                    out.push(1);
                    out.extend_from_slice(&i.months.to_le_bytes());
                    out.extend_from_slice(&i.days.to_le_bytes());
                    out.extend_from_slice(&i.nanoseconds.to_le_bytes());
                }
            }
        }
        other => return Err(StorageError::UnsupportedType(other.data_type())),
    }
    Ok(())
}

fn take<const N: usize>(bytes: &mut &[u8]) -> StorageResult<[u8; N]> {
    if bytes.len() < N {
        return Err(StorageError::corrupt("state", "value cut short"));
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    Ok(head.try_into().expect("split at N"))
}

fn take_bytes(bytes: &mut &[u8]) -> StorageResult<Vec<u8>> {
    let len = u32::from_le_bytes(take(bytes)?) as usize;
    if bytes.len() < len {
        return Err(StorageError::corrupt("state", "bytes cut short"));
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head.to_vec())
}

/// Reads the tag of a fixed-width value, then its presence byte and value.
macro_rules! read_fixed {
    ($bytes:ident, $ty:ty, $n:expr) => {{
        let [present] = take::<1>($bytes)?;
        if present == 0 {
            None
        } else {
            Some(<$ty>::from_le_bytes(take::<$n>($bytes)?))
        }
    }};
}

fn decode_one(bytes: &mut &[u8]) -> StorageResult<ScalarValue> {
    let [tag] = take::<1>(bytes)?;
    Ok(match tag {
        0 => ScalarValue::Null,
        1 => ScalarValue::Boolean(read_fixed!(bytes, u8, 1).map(|v| v != 0)),
        2 => ScalarValue::Int8(read_fixed!(bytes, i8, 1)),
        3 => ScalarValue::Int16(read_fixed!(bytes, i16, 2)),
        4 => ScalarValue::Int32(read_fixed!(bytes, i32, 4)),
        5 => ScalarValue::Int64(read_fixed!(bytes, i64, 8)),
        6 => ScalarValue::UInt8(read_fixed!(bytes, u8, 1)),
        7 => ScalarValue::UInt16(read_fixed!(bytes, u16, 2)),
        8 => ScalarValue::UInt32(read_fixed!(bytes, u32, 4)),
        9 => ScalarValue::UInt64(read_fixed!(bytes, u64, 8)),
        10 => ScalarValue::Float32(read_fixed!(bytes, f32, 4)),
        11 => ScalarValue::Float64(read_fixed!(bytes, f64, 8)),
        12 => ScalarValue::Date32(read_fixed!(bytes, i32, 4)),
        13 => ScalarValue::Time64Microsecond(read_fixed!(bytes, i64, 8)),
        14 => ScalarValue::Time64Nanosecond(read_fixed!(bytes, i64, 8)),
        15 => {
            let [p, s] = take::<2>(bytes)?;
            ScalarValue::Decimal128(read_fixed!(bytes, i128, 16), p, s as i8)
        }
        16 => {
            let [present] = take::<1>(bytes)?;
            ScalarValue::Utf8(if present == 0 {
                None
            } else {
                Some(
                    String::from_utf8(take_bytes(bytes)?)
                        .map_err(|_| StorageError::corrupt("state", "text is not UTF-8"))?,
                )
            })
        }
        17 => {
            let [present] = take::<1>(bytes)?;
            ScalarValue::Binary(if present == 0 {
                None
            } else {
                Some(take_bytes(bytes)?)
            })
        }
        18 => {
            let [unit] = take::<1>(bytes)?;
            let tz = String::from_utf8(take_bytes(bytes)?)
                .map_err(|_| StorageError::corrupt("state", "time zone is not UTF-8"))?;
            let tz = (!tz.is_empty()).then(|| tz.into());
            let v = read_fixed!(bytes, i64, 8);
            match unit_of(unit)? {
                TimeUnit::Second => ScalarValue::TimestampSecond(v, tz),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(v, tz),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(v, tz),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(v, tz),
            }
        }
        19 => {
            let [present] = take::<1>(bytes)?;
            ScalarValue::IntervalMonthDayNano(if present == 0 {
                None
            } else {
                let months = i32::from_le_bytes(take(bytes)?);
                let days = i32::from_le_bytes(take(bytes)?);
                let nanoseconds = i64::from_le_bytes(take(bytes)?);
                Some(IntervalMonthDayNano::new(months, days, nanoseconds))
            })
        }
        other => {
            return Err(StorageError::corrupt(
                "state",
                format!("unknown value tag {other}"),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let values = vec![
            ScalarValue::Null,
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Int64(None),
            ScalarValue::Int64(Some(-5)),
            ScalarValue::UInt64(Some(7)),
            ScalarValue::Float64(Some(1.5)),
            ScalarValue::Decimal128(Some(-12345), 20, 3),
            ScalarValue::Decimal128(None, 10, 2),
            ScalarValue::Utf8(Some("héllo".into())),
            ScalarValue::Utf8(None),
            ScalarValue::Binary(Some(vec![0, 1, 2])),
            ScalarValue::TimestampMicrosecond(Some(42), Some("+00:00".into())),
            ScalarValue::TimestampMicrosecond(None, None),
            ScalarValue::Date32(Some(3)),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 2, 3))),
        ];
        let mut bytes = vec![];
        encode_scalars(&values, &mut bytes).unwrap();
        assert_eq!(decode_scalars(&bytes).unwrap(), values);
        assert!(decode_scalars(&bytes[..bytes.len() - 1]).is_err());
    }
}
