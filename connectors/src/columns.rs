//! Decoded rows into the declared columns: fields matched by name and cast
//! to the declared types (Parquet files, Avro messages).

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;

/// What to do with a declared column the decoded rows do not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// The rows cannot be read ("no column … in the file").
    Refuse,
    /// The column is null (a field an older writer schema lacks).
    Null,
}

/// `batch` in `schema`: each declared column from the field of its name,
/// cast to the declared type.
pub(crate) fn by_name(
    batch: &RecordBatch,
    schema: &SchemaRef,
    missing: Missing,
    what: &str,
) -> Result<RecordBatch, String> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => cast(column, field.data_type()).map_err(|e| {
                format!(
                    "column \"{}\" of the {what} does not read as {}: {e}",
                    field.name(),
                    field.data_type()
                )
            }),
            None if missing == Missing::Null => {
                Ok(new_null_array(field.data_type(), batch.num_rows()))
            }
            None => Err(format!("no column \"{}\" in the {what}", field.name())),
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())
}
