//! Building `pg_catalog` rows by column name: a row names the columns it
//! fills, every other column gets what Postgres stores for "nothing" (NULL
//! where the column allows it, else zero, false or empty text).

use std::collections::HashMap;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_empty_array};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};

/// Rows for a table of `schema`, collected column by column.
pub struct PgRows {
    schema: SchemaRef,
    columns: Vec<Vec<ScalarValue>>,
    index: HashMap<String, usize>,
}

impl PgRows {
    /// No rows yet, for a table of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        let index = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name().clone(), i))
            .collect();
        let columns = vec![vec![]; schema.fields().len()];
        Self {
            schema,
            columns,
            index,
        }
    }

    /// Adds a row with `values` in the named columns; naming a column the
    /// table lacks is an error (a typo, not data).
    pub fn push(&mut self, values: Vec<(&str, ScalarValue)>) -> Result<()> {
        let mut row: Vec<Option<ScalarValue>> = vec![None; self.columns.len()];
        for (name, value) in values {
            let index = *self.index.get(name).ok_or_else(|| {
                DataFusionError::Internal(format!("pg_catalog column {name} missing"))
            })?;
            row[index] = Some(value);
        }
        for ((column, value), field) in self.columns.iter_mut().zip(row).zip(self.schema.fields()) {
            let value = match value {
                Some(ScalarValue::Null) | None if field.is_nullable() => {
                    ScalarValue::try_from(field.data_type())?
                }
                Some(v) => v.cast_to(field.data_type())?,
                None => nothing(field.data_type())?,
            };
            column.push(value);
        }
        Ok(())
    }

    /// Adds row `row` of `batch` (a table of the same columns), with
    /// `changes` in the named columns.
    pub fn push_existing(
        &mut self,
        batch: &RecordBatch,
        row: usize,
        changes: Vec<(&str, ScalarValue)>,
    ) -> Result<()> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (field, array) in batch.schema_ref().fields().iter().zip(batch.columns()) {
            if !changes.iter().any(|(name, _)| name == field.name()) {
                values.push((
                    field.name().as_str(),
                    ScalarValue::try_from_array(array, row)?,
                ));
            }
        }
        values.extend(changes);
        self.push(values)
    }

    /// The rows as one batch.
    pub fn finish(self) -> Result<RecordBatch> {
        let arrays = self
            .columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(values, field)| -> Result<ArrayRef> {
                if values.is_empty() {
                    Ok(new_empty_array(field.data_type()))
                } else {
                    ScalarValue::iter_to_array(values)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema, arrays)?)
    }
}

/// The value of a NOT NULL column a row does not fill.
fn nothing(data_type: &DataType) -> Result<ScalarValue> {
    Ok(match data_type {
        DataType::Utf8 => ScalarValue::Utf8(Some(String::new())),
        DataType::Boolean => ScalarValue::Boolean(Some(false)),
        other => ScalarValue::new_zero(other)?,
    })
}

/// Text.
pub fn text(value: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(value.into()))
}

/// An `int4` / `oid`.
pub fn int4(value: i32) -> ScalarValue {
    ScalarValue::Int32(Some(value))
}

/// An `int2`.
pub fn int2(value: usize) -> ScalarValue {
    ScalarValue::Int16(Some(i16::try_from(value).unwrap_or(i16::MAX)))
}

/// An `int8`.
pub fn int8(value: i64) -> ScalarValue {
    ScalarValue::Int64(Some(value))
}

/// A `bool`.
pub fn boolean(value: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(value))
}

/// An `int2[]` / `int2vector`.
pub fn int2_list(values: impl IntoIterator<Item = i32>) -> ScalarValue {
    let items: Vec<ScalarValue> = values
        .into_iter()
        .map(|v| ScalarValue::Int16(Some(i16::try_from(v).unwrap_or(i16::MAX))))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int16))
}

/// An `oid[]` / `oidvector`.
pub fn oid_list(values: impl IntoIterator<Item = i32>) -> ScalarValue {
    let items: Vec<ScalarValue> = values.into_iter().map(int4).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int32))
}

/// The numbers of a vector or array as Postgres prints it (`1 2`,
/// `{1,2}`), as the library's static tables hold them.
pub fn parse_numbers(text: &str) -> Vec<i32> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split([' ', ','])
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// A NULL of the column's type (cast when the rows are finished).
pub fn null() -> ScalarValue {
    ScalarValue::Null
}
