//! `to_regtype(text)`: the oid of the type a name denotes, NULL when no
//! type has that name (psycopg's `TypeInfo.fetch`, which SQLAlchemy's
//! psycopg dialect runs on connect, asks it for `hstore`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// The SQL spellings of types whose `pg_type` names differ.
const ALIASES: &[(&str, &str)] = &[
    ("smallint", "int2"),
    ("integer", "int4"),
    ("int", "int4"),
    ("bigint", "int8"),
    ("real", "float4"),
    ("float", "float8"),
    ("double precision", "float8"),
    ("boolean", "bool"),
    ("decimal", "numeric"),
    ("character varying", "varchar"),
    ("character", "bpchar"),
    ("timestamp without time zone", "timestamp"),
    ("timestamp with time zone", "timestamptz"),
    ("time without time zone", "time"),
    ("time with time zone", "timetz"),
    ("bit varying", "varbit"),
];

/// Type name → oid, from `pg_type`'s rows.
fn type_oids(pg_type: &[RecordBatch]) -> Result<HashMap<String, i32>> {
    let mut out = HashMap::new();
    for batch in pg_type {
        let (Some(names), Some(oids)) =
            (batch.column_by_name("typname"), batch.column_by_name("oid"))
        else {
            continue;
        };
        let names = cast(names, &DataType::Utf8)?;
        let oids = cast(oids, &DataType::Int32)?;
        let names = names.as_string::<i32>();
        let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        for row in 0..batch.num_rows() {
            if names.is_valid(row) && oids.is_valid(row) {
                out.insert(names.value(row).to_string(), oids.value(row));
            }
        }
    }
    Ok(out)
}

/// The oid `text` names: `pg_catalog.` and type modifiers dropped, SQL
/// spellings mapped, `[]` for the array type.
fn lookup(oids: &HashMap<String, i32>, text: &str) -> Option<i32> {
    let mut name = text.trim().to_ascii_lowercase();
    let array = name.ends_with("[]");
    if array {
        name.truncate(name.len() - 2);
    }
    if let Some(at) = name.find('(') {
        let close = name.rfind(')')?;
        name = format!("{}{}", &name[..at], &name[close + 1..]);
    }
    let name = name.trim();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
    let name = name.trim_matches('"');
    let base = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, typname)| *typname);
    if array {
        oids.get(&format!("_{base}")).copied()
    } else {
        oids.get(base).copied()
    }
}

/// `to_regtype(text)` over the types of `pg_type`.
pub fn to_regtype(pg_type: &[RecordBatch]) -> Result<ScalarUDF> {
    let oids = Arc::new(type_oids(pg_type)?);
    Ok(create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_string::<i32>();
            let out: Int32Array = names
                .iter()
                .map(|name| name.and_then(|n| lookup(&oids, n)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_arrays_and_unknown_types() {
        let oids: HashMap<String, i32> = [
            ("int4", 23),
            ("_int4", 1007),
            ("varchar", 1043),
            ("float8", 701),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_string(), o))
        .collect();
        assert_eq!(lookup(&oids, "integer"), Some(23));
        assert_eq!(lookup(&oids, "pg_catalog.int4"), Some(23));
        assert_eq!(lookup(&oids, "int4[]"), Some(1007));
        assert_eq!(lookup(&oids, "character varying(20)"), Some(1043));
        assert_eq!(lookup(&oids, "Double Precision"), Some(701));
        assert_eq!(lookup(&oids, "hstore"), None);
    }
}
