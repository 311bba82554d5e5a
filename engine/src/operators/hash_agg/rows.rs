//! Encoded rows of a group's values and of its last emitted result, and
//! many of them decoded back into columns at once.
//!
//! Rows of types the storage row codec knows (every SQL type Runnel has)
//! use it: fixed-width values, no `ScalarValue` on the way. Anything else
//! (an `array_agg` result, say) goes through the scalar codec.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, new_empty_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use runnel_storage::row_codec::{RowDecoder, encode_row, is_storable};
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};

use crate::{EngineError, EngineResult};

/// How rows of some columns are encoded.
#[derive(Debug)]
pub(super) enum RowFormat {
    /// The storage row codec: every column's type is storable.
    Codec { schema: SchemaRef },
    /// `ScalarValue`s through the scalar codec.
    Scalars { types: Vec<DataType> },
}

impl RowFormat {
    /// The format for rows of columns of `types`.
    pub fn new(types: &[DataType]) -> Self {
        if types.iter().all(is_storable) {
            let fields: Vec<Field> = types
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
                .collect();
            Self::Codec {
                schema: Arc::new(Schema::new(fields)),
            }
        } else {
            Self::Scalars {
                types: types.to_vec(),
            }
        }
    }

    /// Appends row `row` of `columns` to `out`.
    pub fn encode(&self, columns: &[ArrayRef], row: usize, out: &mut Vec<u8>) -> EngineResult<()> {
        match self {
            Self::Codec { .. } => encode_row(columns, row, out)?,
            Self::Scalars { .. } => {
                let values = columns
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect::<Result<Vec<_>, _>>()?;
                encode_scalars(&values, out)?;
            }
        }
        Ok(())
    }

    /// The columns of the encoded `rows`, in their order.
    pub fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> EngineResult<Vec<ArrayRef>> {
        match self {
            Self::Codec { schema } => {
                let mut decoder = RowDecoder::new(schema, None)?;
                for row in rows {
                    decoder.push(row)?;
                }
                Ok(decoder.finish()?.columns().to_vec())
            }
            Self::Scalars { types } => {
                let mut columns: Vec<Vec<ScalarValue>> = vec![vec![]; types.len()];
                for row in rows {
                    let values = decode_scalars(row)?;
                    if values.len() != types.len() {
                        return Err(EngineError::Internal(format!(
                            "an aggregation's stored row has {} values, not {}",
                            values.len(),
                            types.len()
                        )));
                    }
                    for (column, value) in columns.iter_mut().zip(values) {
                        column.push(value);
                    }
                }
                columns
                    .into_iter()
                    .zip(types)
                    .map(|(values, t)| {
                        if values.is_empty() {
                            return Ok(new_empty_array(t));
                        }
                        // The codec reads some types back as their plain
                        // kin (a string view as a string).
                        let array = ScalarValue::iter_to_array(values)?;
                        if array.data_type() == t {
                            Ok(array)
                        } else {
                            Ok(cast(&array, t)?)
                        }
                    })
                    .collect()
            }
        }
    }

    /// Column `column` of one encoded row.
    pub fn value(&self, row: &[u8], column: usize) -> EngineResult<ScalarValue> {
        let columns = self.decode(std::iter::once(row))?;
        let array = columns.get(column).ok_or_else(|| {
            EngineError::Internal(format!("an aggregation's stored row lacks column {column}"))
        })?;
        Ok(ScalarValue::try_from_array(array, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, StringViewArray, UInt32Array};

    /// Encodes every row of `columns`, checks they decode back to the same
    /// columns, and returns the encoded rows.
    fn round_trip(format: &RowFormat, columns: &[ArrayRef]) -> Vec<Vec<u8>> {
        let rows: Vec<Vec<u8>> = (0..columns[0].len())
            .map(|row| {
                let mut out = vec![];
                format.encode(columns, row, &mut out).unwrap();
                out
            })
            .collect();
        let decoded = format.decode(rows.iter().map(Vec::as_slice)).unwrap();
        for (decoded, column) in decoded.iter().zip(columns) {
            assert_eq!(decoded.as_ref(), column.as_ref());
        }
        rows
    }

    #[test]
    fn rows_come_back_as_the_columns_they_were() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
        ];
        let format = RowFormat::new(&[DataType::Int64, DataType::Utf8]);
        assert!(matches!(format, RowFormat::Codec { .. }));
        let rows = round_trip(&format, &columns);
        assert_eq!(
            format.value(&rows[1], 1).unwrap(),
            ScalarValue::Utf8(Some("b".into()))
        );
    }

    #[test]
    fn types_the_row_codec_lacks_go_through_scalars() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![Some(7), None])),
            Arc::new(StringViewArray::from(vec![Some("x"), Some("y")])),
        ];
        let types: Vec<DataType> = columns.iter().map(|c| c.data_type().clone()).collect();
        let format = RowFormat::new(&types);
        assert!(matches!(format, RowFormat::Scalars { .. }));
        round_trip(&format, &columns);
        assert!(format.decode(std::iter::empty()).unwrap()[0].is_empty());
    }
}
