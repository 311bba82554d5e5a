//! `to_regtype(text)`: the oid of the type a name denotes, NULL when no
//! type has that name (psycopg's `TypeInfo.fetch`, which SQLAlchemy's
//! psycopg dialect runs on connect, asks it for `hstore`); and
//! `pg_get_function_result(oid)`, a function's result type as SQL
//! (pgjdbc's `getFunctions`).

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

/// A type's name as SQL spells it (`integer`, `text[]`).
fn sql_type_name(typname: &str) -> String {
    if let Some(element) = typname.strip_prefix('_') {
        return format!("{}[]", sql_type_name(element));
    }
    ALIASES
        .iter()
        .find(|(alias, name)| *name == typname && !matches!(*alias, "int" | "float" | "decimal"))
        .map_or(typname, |(alias, _)| *alias)
        .to_string()
}

/// `pg_get_function_result(oid)` over `pg_proc` and `pg_type`: the result
/// type, `SETOF type` for a set-returning function (Postgres writes
/// `TABLE(…)` for those with output arguments), NULL for no function.
pub fn function_result(pg_proc: &[RecordBatch], pg_type: &[RecordBatch]) -> Result<ScalarUDF> {
    let names: HashMap<i32, String> = type_oids(pg_type)?
        .into_iter()
        .map(|(name, oid)| (oid, sql_type_name(&name)))
        .collect();
    let mut results: HashMap<i32, String> = HashMap::new();
    for batch in pg_proc {
        let (Some(oids), Some(types), Some(sets)) = (
            batch.column_by_name("oid"),
            batch.column_by_name("prorettype"),
            batch.column_by_name("proretset"),
        ) else {
            continue;
        };
        let oids = cast(oids, &DataType::Int32)?;
        let types = cast(types, &DataType::Int32)?;
        let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        let types = types.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        let sets = sets.as_boolean();
        for row in 0..batch.num_rows() {
            let Some(name) = names.get(&types.value(row)) else {
                continue;
            };
            let set = sets.is_valid(row) && sets.value(row);
            results.insert(
                oids.value(row),
                if set {
                    format!("SETOF {name}")
                } else {
                    name.clone()
                },
            );
        }
    }
    let results = Arc::new(results);
    Ok(create_udf(
        "pg_get_function_result",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let oids = cast(&arrays[0], &DataType::Int32)?;
            let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let out: datafusion::arrow::array::StringArray = oids
                .iter()
                .map(|oid| oid.and_then(|o| results.get(&o).cloned()))
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
        assert_eq!(sql_type_name("int4"), "integer");
        assert_eq!(sql_type_name("_float8"), "double precision[]");
        assert_eq!(sql_type_name("text"), "text");
    }
}
