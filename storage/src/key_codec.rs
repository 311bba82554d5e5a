//! Memcomparable encoding of primary keys: the byte order of two encoded
//! keys is the SQL order of the key values, so RocksDB keeps a table sorted by
//! its primary key and a key is found with one point lookup.
//!
//! Integers flip their sign bit and are written big endian; floats use the
//! usual sign-dependent bit flip; text and binary escape `0x00` as
//! `0x00 0xFF` and end with `0x00 0x00`, so a prefix sorts before its
//! extensions. Key columns are never null (primary keys imply NOT NULL).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, Time64NanosecondType,
    TimeUnit, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::row_codec::timestamp_value;
use crate::{StorageError, StorageResult};

/// Appends the key of row `row` made of `columns` to `out`.
///
/// Fails for a null key value or a type that cannot be a key.
pub fn encode_key(columns: &[&ArrayRef], row: usize, out: &mut Vec<u8>) -> StorageResult<()> {
    for column in columns {
        if column.is_null(row) {
            return Err(StorageError::corrupt("key", "null in a primary key column"));
        }
        encode_key_value(column.as_ref(), row, out)?;
    }
    Ok(())
}

/// Appends a key of row `row` made of `columns` that may hold nulls (group
/// keys, join keys, stream keys): each value is preceded by `0` for null or
/// `1` for a value, so nulls sort first and equal keys encode equally.
pub fn encode_nullable_key(
    columns: &[&ArrayRef],
    row: usize,
    out: &mut Vec<u8>,
) -> StorageResult<()> {
    for column in columns {
        if column.is_null(row) {
            out.push(0);
        } else {
            out.push(1);
            encode_key_value(column.as_ref(), row, out)?;
        }
    }
    Ok(())
}

fn encode_key_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> StorageResult<()> {
    match array.data_type() {
        DataType::Boolean => out.push(u8::from(array.as_boolean().value(row))),
        DataType::Int16 => {
            let v = array.as_primitive::<Int16Type>().value(row);
            out.extend_from_slice(&((v as u16) ^ 0x8000).to_be_bytes());
        }
        DataType::Int32 | DataType::Date32 => {
            let v = if matches!(array.data_type(), DataType::Int32) {
                array.as_primitive::<Int32Type>().value(row)
            } else {
                array.as_primitive::<Date32Type>().value(row)
            };
            out.extend_from_slice(&flip_i32(v));
        }
        DataType::Int64 => {
            out.extend_from_slice(&flip_i64(array.as_primitive::<Int64Type>().value(row)))
        }
        DataType::Time64(TimeUnit::Microsecond) => out.extend_from_slice(&flip_i64(
            array.as_primitive::<Time64MicrosecondType>().value(row),
        )),
        DataType::Time64(TimeUnit::Nanosecond) => out.extend_from_slice(&flip_i64(
            array.as_primitive::<Time64NanosecondType>().value(row),
        )),
        DataType::Timestamp(unit, _) => {
            out.extend_from_slice(&flip_i64(timestamp_value(array, *unit, row)))
        }
        DataType::Decimal128(_, _) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            out.extend_from_slice(&((v as u128) ^ (1u128 << 127)).to_be_bytes());
        }
        DataType::Float32 => {
            let bits = array.as_primitive::<Float32Type>().value(row).to_bits();
            let ordered = if bits >> 31 == 1 {
                !bits
            } else {
                bits ^ (1 << 31)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        DataType::Float64 => {
            let bits = array.as_primitive::<Float64Type>().value(row).to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            out.extend_from_slice(&flip_i32(v.months));
            out.extend_from_slice(&flip_i32(v.days));
            out.extend_from_slice(&flip_i64(v.nanoseconds));
        }
        DataType::Int8 => out.push((array.as_primitive::<Int8Type>().value(row) as u8) ^ 0x80),
        DataType::UInt8 => out.push(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => {
            out.extend_from_slice(&array.as_primitive::<UInt16Type>().value(row).to_be_bytes())
        }
        DataType::UInt32 => {
            out.extend_from_slice(&array.as_primitive::<UInt32Type>().value(row).to_be_bytes())
        }
        DataType::UInt64 => {
            out.extend_from_slice(&array.as_primitive::<UInt64Type>().value(row).to_be_bytes())
        }
        DataType::Utf8 => escape_bytes(array.as_string::<i32>().value(row).as_bytes(), out),
        DataType::LargeUtf8 => escape_bytes(array.as_string::<i64>().value(row).as_bytes(), out),
        DataType::Utf8View => escape_bytes(array.as_string_view().value(row).as_bytes(), out),
        DataType::Binary => escape_bytes(array.as_binary::<i32>().value(row), out),
        other => return Err(StorageError::UnsupportedType(other.clone())),
    }
    Ok(())
}

fn flip_i32(v: i32) -> [u8; 4] {
    ((v as u32) ^ 0x8000_0000).to_be_bytes()
}

fn flip_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ 0x8000_0000_0000_0000).to_be_bytes()
}

fn escape_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    fn keys(array: ArrayRef) -> Vec<Vec<u8>> {
        (0..array.len())
            .map(|row| {
                let mut out = vec![];
                encode_key(&[&array], row, &mut out).unwrap();
                out
            })
            .collect()
    }

    fn assert_order_preserved(array: ArrayRef, sorted_rows: &[usize]) {
        let encoded = keys(array);
        for pair in sorted_rows.windows(2) {
            assert!(encoded[pair[0]] < encoded[pair[1]], "rows {pair:?}");
        }
    }

    #[test]
    fn integers_sort_like_numbers() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![5, -3, i64::MIN, 0, i64::MAX]));
        assert_order_preserved(a, &[2, 1, 3, 0, 4]);
    }

    #[test]
    fn floats_sort_like_numbers() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            1.5,
            -2.0,
            0.0,
            -0.5,
            f64::INFINITY,
        ]));
        assert_order_preserved(a, &[1, 3, 2, 0, 4]);
    }

    #[test]
    fn text_prefix_sorts_first_and_nul_is_escaped() {
        let a: ArrayRef = Arc::new(StringArray::from(vec!["ab", "a", "a\0", "b", ""]));
        assert_order_preserved(a, &[4, 1, 2, 0, 3]);
    }

    #[test]
    fn null_key_is_refused() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![None]));
        assert!(encode_key(&[&a], 0, &mut vec![]).is_err());
    }
}
