//! `int2vector` and `oidvector` columns (`pg_index.indkey`, `indclass`,
//! …): Arrow lists marked with [`PG_TYPE_KEY`] that travel as Postgres's
//! vector types — text `1 2` (SQLAlchemy splits `indoption`), binary an
//! array with lower bound 0 — while queries can still `unnest` them.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type};
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, Type};
use runnel_planner::types::PG_TYPE_KEY;

/// The vector type a field is marked as, if any.
pub fn vector_type(field: &Field) -> Option<Type> {
    match field.metadata().get(PG_TYPE_KEY).map(String::as_str) {
        Some("int2vector") => Some(Type::INT2_VECTOR),
        Some("oidvector") => Some(Type::OID_VECTOR),
        _ => None,
    }
}

/// Whether values of `ty` are encoded here.
pub fn is_vector(ty: &Type) -> bool {
    *ty == Type::INT2_VECTOR || *ty == Type::OID_VECTOR
}

#[derive(Debug)]
struct Vector(Vec<i64>);

impl ToSql for Vector {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let (element, width) = if *ty == Type::INT2_VECTOR {
            (Type::INT2, 2)
        } else {
            (Type::OID, 4)
        };
        out.put_i32(1); // dimensions
        out.put_i32(0); // no NULLs
        out.put_u32(element.oid());
        out.put_i32(i32::try_from(self.0.len())?);
        out.put_i32(0); // lower bound, as Postgres's vectors have
        for value in &self.0 {
            out.put_i32(width);
            if width == 2 {
                out.put_i16(i16::try_from(*value)?);
            } else {
                out.put_u32(u32::try_from(*value)?);
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        is_vector(ty)
    }

    postgres_types::to_sql_checked!();
}

impl ToSqlText for Vector {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text: Vec<String> = self.0.iter().map(i64::to_string).collect();
        out.put_slice(text.join(" ").as_bytes());
        Ok(IsNull::No)
    }
}

/// Encodes row `row` of list `array` as the field's vector type.
pub fn encode_vector(
    encoder: &mut DataRowEncoder,
    array: &ArrayRef,
    row: usize,
    field: &FieldInfo,
) -> PgWireResult<()> {
    let value = match array.data_type() {
        DataType::List(_) if !array.is_null(row) => {
            let items = array.as_list::<i32>().value(row);
            let items = datafusion::arrow::compute::cast(&items, &DataType::Int64)
                .map_err(|e| super::sql_error_to_pgwire(&crate::error::ServerError::Arrow(e)))?;
            let items = items.as_primitive::<Int64Type>();
            Some(Vector(items.iter().map(|v| v.unwrap_or(0)).collect()))
        }
        _ => None,
    };
    encoder.encode_field_with_type_and_format(
        &value,
        field.datatype(),
        field.format(),
        field.format_options(),
    )
}
