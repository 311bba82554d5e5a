//! Arrow batches to pgwire rows and back for parameters: `arrow-pg` does
//! the per-type text and binary encodings; this module adds what it does not
//! know (json and jsonb columns) and the session's format options.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use futures::{Stream, StreamExt};
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
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
        return Ok(if field.metadata().get(PG_TYPE_KEY).map(String::as_str) == Some("jsonb") {
            Type::JSONB
        } else {
            Type::JSON
        });
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
            Ok(
                FieldInfo::new(f.name().clone(), None, None, pg_type(f)?, format.format_for(i))
                    .with_format_options(Arc::clone(options)),
            )
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
            if matches!(*pg_field.datatype(), Type::JSON | Type::JSONB) {
                encode_json(&mut encoder, array, row, pg_field)?;
            } else {
                arrow_pg::encoder::encode_value(&mut encoder, array, row, schema.field(col), pg_field)?;
            }
        }
        rows.push(encoder.take_row());
    }
    Ok(rows)
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
pub fn row_stream(
    fields: Arc<Vec<FieldInfo>>,
    stream: SendableRecordBatchStream,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send {
    stream
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
        .param_types()
        .map_err(|e| sql_error_to_pgwire(&e))?
        .iter()
        .map(|t| match t {
            Some(t) => arrow_pg::datatypes::into_pg_type(t),
            None => Ok(Type::UNKNOWN),
        })
        .collect()
}

/// The values bound to a portal, decoded from text or binary.
pub fn parameter_values(portal: &Portal<Prepared>) -> PgWireResult<ParamValues> {
    let inferred = portal
        .statement
        .statement
        .param_types()
        .map_err(|e| sql_error_to_pgwire(&e))?;
    let inferred_refs: Vec<Option<&DataType>> = inferred.iter().map(Option::as_ref).collect();
    arrow_pg::datatypes::df::deserialize_parameters(portal, &inferred_refs)
}
