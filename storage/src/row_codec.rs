//! The value encoding of a table row, and decoding many rows back into an
//! Arrow `RecordBatch`.
//!
//! Layout: a little-endian `u16` column count, then per column a presence
//! byte (`0` null, `1` value) followed by the value: fixed-width little-endian
//! for numbers and times, a `u32` length and the bytes for text and binary.
//! The count lets a row written before `ALTER TABLE … ADD COLUMN` be read with
//! the wider schema (the missing trailing columns read as null). The format is
//! ours and stable; it does not depend on Arrow's in-memory layouts.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, IntervalMonthDayNanoArray,
    RecordBatch, RecordBatchOptions, StringArray, Time64MicrosecondArray, Time64NanosecondArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, SchemaRef,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};

use crate::{StorageError, StorageResult};

/// True when the row codec can store a column of this Arrow type.
pub fn is_storable(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::Binary
            | DataType::Date32
            | DataType::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond)
            | DataType::Timestamp(_, _)
            | DataType::Interval(IntervalUnit::MonthDayNano)
    )
}

/// Appends the encoding of row `row` of `columns` to `out`.
///
/// The arrays must have storable types ([`is_storable`]); the caller checks
/// the schema once when the table is created.
pub fn encode_row(columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) -> StorageResult<()> {
    let count = u16::try_from(columns.len())
        .map_err(|_| StorageError::corrupt("row", "more than 65535 columns"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for column in columns {
        if column.is_null(row) {
            out.push(0);
            continue;
        }
        out.push(1);
        encode_value(column.as_ref(), row, out)?;
    }
    Ok(())
}

fn encode_value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> StorageResult<()> {
    match array.data_type() {
        DataType::Boolean => out.push(u8::from(array.as_boolean().value(row))),
        DataType::Int16 => put(
            out,
            array.as_primitive::<Int16Type>().value(row).to_le_bytes(),
        ),
        DataType::Int32 => put(
            out,
            array.as_primitive::<Int32Type>().value(row).to_le_bytes(),
        ),
        DataType::Int64 => put(
            out,
            array.as_primitive::<Int64Type>().value(row).to_le_bytes(),
        ),
        DataType::Float32 => put(
            out,
            array.as_primitive::<Float32Type>().value(row).to_le_bytes(),
        ),
        DataType::Float64 => put(
            out,
            array.as_primitive::<Float64Type>().value(row).to_le_bytes(),
        ),
        DataType::Decimal128(_, _) => put(
            out,
            array
                .as_primitive::<Decimal128Type>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Date32 => put(
            out,
            array.as_primitive::<Date32Type>().value(row).to_le_bytes(),
        ),
        DataType::Time64(TimeUnit::Microsecond) => put(
            out,
            array
                .as_primitive::<Time64MicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Time64(TimeUnit::Nanosecond) => put(
            out,
            array
                .as_primitive::<Time64NanosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Timestamp(unit, _) => put(out, timestamp_value(array, *unit, row).to_le_bytes()),
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
            put(out, v.months.to_le_bytes());
            put(out, v.days.to_le_bytes());
            put(out, v.nanoseconds.to_le_bytes());
        }
        DataType::Utf8 => put_bytes(out, array.as_string::<i32>().value(row).as_bytes()),
        DataType::Binary => put_bytes(out, array.as_binary::<i32>().value(row)),
        other => return Err(StorageError::UnsupportedType(other.clone())),
    }
    Ok(())
}

/// The raw value of row `row` of a timestamp array of `unit`.
pub fn timestamp_value(array: &dyn Array, unit: TimeUnit, row: usize) -> i64 {
    match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
    }
}

fn put<const N: usize>(out: &mut Vec<u8>, bytes: [u8; N]) {
    out.extend_from_slice(&bytes);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are bounded by the 4 GiB a u32 holds; Arrow's i32 offsets
    // already bound a single value to 2 GiB.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads encoded rows back into columns of a schema, keeping only the
/// projected columns.
pub struct RowDecoder {
    schema: SchemaRef,
    /// For each table column, the index of its output column, if projected.
    output_slot: Vec<Option<usize>>,
    /// Types of every table column, to skip the unprojected ones.
    table_types: Vec<DataType>,
    columns: Vec<ColumnValues>,
    rows: usize,
}

impl RowDecoder {
    /// A decoder for rows of `table_schema`, producing `projection` (indices
    /// into the table schema, in output order; `None` means all columns).
    pub fn new(table_schema: &SchemaRef, projection: Option<&[usize]>) -> StorageResult<Self> {
        let all: Vec<usize> = (0..table_schema.fields().len()).collect();
        let projection = projection.unwrap_or(&all);
        let mut output_slot = vec![None; table_schema.fields().len()];
        let mut columns = Vec::with_capacity(projection.len());
        for (slot, &index) in projection.iter().enumerate() {
            output_slot[index] = Some(slot);
            columns.push(ColumnValues::new(table_schema.field(index).data_type())?);
        }
        let schema = Arc::new(table_schema.project(projection)?);
        let table_types = table_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Self {
            schema,
            output_slot,
            table_types,
            columns,
            rows: 0,
        })
    }

    /// Rows decoded since the last [`RowDecoder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decodes one stored row.
    pub fn push(&mut self, mut bytes: &[u8]) -> StorageResult<()> {
        let count = u16::from_le_bytes(take(&mut bytes)?) as usize;
        for column in 0..self.output_slot.len() {
            let slot = self.output_slot[column];
            if column >= count {
                // Written before the column was added.
                if let Some(slot) = slot {
                    self.columns[slot].push_null();
                }
                continue;
            }
            let [present] = take::<1>(&mut bytes)?;
            match (present, slot) {
                (0, Some(slot)) => self.columns[slot].push_null(),
                (0, None) => {}
                (_, Some(slot)) => self.columns[slot].push_value(&mut bytes)?,
                (_, None) => skip_value(&self.table_types[column], &mut bytes)?,
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Builds the batch of every row pushed so far and starts a new one.
    pub fn finish(&mut self) -> StorageResult<RecordBatch> {
        let arrays = self
            .columns
            .iter_mut()
            .map(ColumnValues::finish)
            .collect::<StorageResult<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            arrays,
            &options,
        )?)
    }
}

fn take<const N: usize>(bytes: &mut &[u8]) -> StorageResult<[u8; N]> {
    if bytes.len() < N {
        return Err(StorageError::corrupt("row", "value cut short"));
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok(out)
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> StorageResult<&'a [u8]> {
    let len = u32::from_le_bytes(take(bytes)?) as usize;
    if bytes.len() < len {
        return Err(StorageError::corrupt(
            "row",
            "text or binary value cut short",
        ));
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

/// Width in bytes of a fixed-width value, `None` for length-prefixed ones.
fn fixed_width(data_type: &DataType) -> StorageResult<Option<usize>> {
    Ok(Some(match data_type {
        DataType::Boolean => 1,
        DataType::Int16 => 2,
        DataType::Int32 | DataType::Float32 | DataType::Date32 => 4,
        DataType::Int64 | DataType::Float64 | DataType::Time64(_) | DataType::Timestamp(_, _) => 8,
        DataType::Decimal128(_, _) | DataType::Interval(IntervalUnit::MonthDayNano) => 16,
        DataType::Utf8 | DataType::Binary => return Ok(None),
        other => return Err(StorageError::UnsupportedType(other.clone())),
    }))
}

fn skip_value(data_type: &DataType, bytes: &mut &[u8]) -> StorageResult<()> {
    match fixed_width(data_type)? {
        Some(width) if bytes.len() >= width => {
            *bytes = &bytes[width..];
            Ok(())
        }
        Some(_) => Err(StorageError::corrupt("row", "value cut short")),
        None => take_bytes(bytes).map(|_| ()),
    }
}

/// Decoded values of one output column.
enum ColumnValues {
    Boolean(Vec<Option<bool>>),
    Int16(Vec<Option<i16>>),
    Int32(Vec<Option<i32>>),
    Int64(Vec<Option<i64>>),
    Float32(Vec<Option<f32>>),
    Float64(Vec<Option<f64>>),
    Decimal128(Vec<Option<i128>>, u8, i8),
    Utf8(Vec<Option<String>>),
    Binary(Vec<Option<Vec<u8>>>),
    Date32(Vec<Option<i32>>),
    Time64(Vec<Option<i64>>, TimeUnit),
    Timestamp(Vec<Option<i64>>, TimeUnit, Option<Arc<str>>),
    Interval(Vec<Option<IntervalMonthDayNano>>),
}

impl ColumnValues {
    fn new(data_type: &DataType) -> StorageResult<Self> {
        Ok(match data_type {
            DataType::Boolean => Self::Boolean(vec![]),
            DataType::Int16 => Self::Int16(vec![]),
            DataType::Int32 => Self::Int32(vec![]),
            DataType::Int64 => Self::Int64(vec![]),
            DataType::Float32 => Self::Float32(vec![]),
            DataType::Float64 => Self::Float64(vec![]),
            DataType::Decimal128(p, s) => Self::Decimal128(vec![], *p, *s),
            DataType::Utf8 => Self::Utf8(vec![]),
            DataType::Binary => Self::Binary(vec![]),
            DataType::Date32 => Self::Date32(vec![]),
            DataType::Time64(unit @ (TimeUnit::Microsecond | TimeUnit::Nanosecond)) => {
                Self::Time64(vec![], *unit)
            }
            DataType::Timestamp(unit, tz) => Self::Timestamp(vec![], *unit, tz.clone()),
            DataType::Interval(IntervalUnit::MonthDayNano) => Self::Interval(vec![]),
            other => return Err(StorageError::UnsupportedType(other.clone())),
        })
    }

    fn push_null(&mut self) {
        match self {
            Self::Boolean(v) => v.push(None),
            Self::Int16(v) => v.push(None),
            Self::Int32(v) | Self::Date32(v) => v.push(None),
            Self::Int64(v) | Self::Time64(v, _) | Self::Timestamp(v, _, _) => v.push(None),
            Self::Float32(v) => v.push(None),
            Self::Float64(v) => v.push(None),
            Self::Decimal128(v, _, _) => v.push(None),
            Self::Utf8(v) => v.push(None),
            Self::Binary(v) => v.push(None),
            Self::Interval(v) => v.push(None),
        }
    }

    fn push_value(&mut self, bytes: &mut &[u8]) -> StorageResult<()> {
        match self {
            Self::Boolean(v) => v.push(Some(take::<1>(bytes)?[0] != 0)),
            Self::Int16(v) => v.push(Some(i16::from_le_bytes(take(bytes)?))),
            Self::Int32(v) | Self::Date32(v) => v.push(Some(i32::from_le_bytes(take(bytes)?))),
            Self::Int64(v) | Self::Time64(v, _) | Self::Timestamp(v, _, _) => {
                v.push(Some(i64::from_le_bytes(take(bytes)?)))
            }
            Self::Float32(v) => v.push(Some(f32::from_le_bytes(take(bytes)?))),
            Self::Float64(v) => v.push(Some(f64::from_le_bytes(take(bytes)?))),
            Self::Decimal128(v, _, _) => v.push(Some(i128::from_le_bytes(take(bytes)?))),
            Self::Utf8(v) => {
                let raw = take_bytes(bytes)?;
                let text = std::str::from_utf8(raw)
                    .map_err(|e| StorageError::corrupt("row", format!("text is not UTF-8: {e}")))?;
                v.push(Some(text.to_owned()))
            }
            Self::Binary(v) => v.push(Some(take_bytes(bytes)?.to_vec())),
            Self::Interval(v) => {
                let months = i32::from_le_bytes(take(bytes)?);
                let days = i32::from_le_bytes(take(bytes)?);
                let nanoseconds = i64::from_le_bytes(take(bytes)?);
                v.push(Some(IntervalMonthDayNano::new(months, days, nanoseconds)))
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> StorageResult<ArrayRef> {
        Ok(match self {
            Self::Boolean(v) => Arc::new(BooleanArray::from(std::mem::take(v))),
            Self::Int16(v) => Arc::new(Int16Array::from(std::mem::take(v))),
            Self::Int32(v) => Arc::new(Int32Array::from(std::mem::take(v))),
            Self::Int64(v) => Arc::new(Int64Array::from(std::mem::take(v))),
            Self::Float32(v) => Arc::new(Float32Array::from(std::mem::take(v))),
            Self::Float64(v) => Arc::new(Float64Array::from(std::mem::take(v))),
            Self::Decimal128(v, p, s) => {
                Arc::new(Decimal128Array::from(std::mem::take(v)).with_precision_and_scale(*p, *s)?)
            }
            Self::Utf8(v) => Arc::new(StringArray::from(std::mem::take(v))),
            Self::Binary(v) => {
                let values = std::mem::take(v);
                Arc::new(BinaryArray::from_iter(values))
            }
            Self::Date32(v) => Arc::new(Date32Array::from(std::mem::take(v))),
            Self::Time64(v, TimeUnit::Microsecond) => {
                Arc::new(Time64MicrosecondArray::from(std::mem::take(v)))
            }
            Self::Time64(v, _) => Arc::new(Time64NanosecondArray::from(std::mem::take(v))),
            Self::Timestamp(v, unit, tz) => {
                let values = std::mem::take(v);
                match unit {
                    TimeUnit::Second => {
                        Arc::new(TimestampSecondArray::from(values).with_timezone_opt(tz.clone()))
                            as ArrayRef
                    }
                    TimeUnit::Millisecond => Arc::new(
                        TimestampMillisecondArray::from(values).with_timezone_opt(tz.clone()),
                    ),
                    TimeUnit::Microsecond => Arc::new(
                        TimestampMicrosecondArray::from(values).with_timezone_opt(tz.clone()),
                    ),
                    TimeUnit::Nanosecond => Arc::new(
                        TimestampNanosecondArray::from(values).with_timezone_opt(tz.clone()),
                    ),
                }
            }
            Self::Interval(v) => Arc::new(IntervalMonthDayNanoArray::from(std::mem::take(v))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Boolean, true),
            Field::new("i", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new("iv", DataType::Interval(IntervalUnit::MonthDayNano), true),
            Field::new("bin", DataType::Binary, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), None])),
            Arc::new(Int32Array::from(vec![Some(-7), Some(i32::MAX)])),
            Arc::new(StringArray::from(vec![Some("héllo"), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), Some(-1)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_000), None])
                    .with_timezone("+00:00"),
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
            ])),
            Arc::new(BinaryArray::from_iter(vec![
                Some(b"\x00\x01".to_vec()),
                Some(vec![]),
            ])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn encode_all(batch: &RecordBatch) -> Vec<Vec<u8>> {
        (0..batch.num_rows())
            .map(|row| {
                let mut out = vec![];
                encode_row(batch.columns(), row, &mut out).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn rows_round_trip() {
        let batch = sample();
        let mut decoder = RowDecoder::new(&batch.schema(), None).unwrap();
        for row in encode_all(&batch) {
            decoder.push(&row).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), batch);
    }

    #[test]
    fn projection_skips_columns() {
        let batch = sample();
        let mut decoder = RowDecoder::new(&batch.schema(), Some(&[6, 2])).unwrap();
        for row in encode_all(&batch) {
            decoder.push(&row).unwrap();
        }
        assert_eq!(decoder.finish().unwrap(), batch.project(&[6, 2]).unwrap());
    }

    #[test]
    fn rows_written_before_add_column_read_null() {
        let batch = sample();
        let narrow = batch.project(&[0, 1]).unwrap();
        let mut decoder = RowDecoder::new(&batch.schema(), Some(&[1, 2])).unwrap();
        for row in encode_all(&narrow) {
            decoder.push(&row).unwrap();
        }
        let out = decoder.finish().unwrap();
        assert_eq!(out.column(0).as_ref(), batch.column(1).as_ref());
        assert_eq!(out.column(1).null_count(), 2);
    }

    #[test]
    fn truncated_rows_are_errors_not_panics() {
        let batch = sample();
        let row = &encode_all(&batch)[0];
        let mut decoder = RowDecoder::new(&batch.schema(), None).unwrap();
        for cut in 0..row.len() {
            assert!(decoder.push(&row[..cut]).is_err(), "cut at {cut}");
        }
    }
}
