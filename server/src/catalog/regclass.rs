//! `'name'::regclass` (rewritten by the planner into
//! [`REGCLASS_FUNCTION`]) and `to_regclass(name)`: the oid `pg_class`
//! shows for the relation a name denotes, resolved as Postgres does —
//! `pg_catalog` first, then the search path. An unknown name is 42P01 for
//! the cast and NULL for `to_regclass`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use runnel_planner::catalog::RelationName;
use runnel_planner::catalog_names::{ADDED_PG_CATALOG_RELATIONS, REGCLASS_FUNCTION};

use super::Catalog;
use super::pg_objects::{indexes, object_name_parts, relation_oid};
use crate::error::ServerError;

/// `runnel_regclass` and `to_regclass` for a session that sees `catalog`
/// with `search_path`.
pub fn regclass_functions(catalog: &Arc<Catalog>, search_path: &[String]) -> Vec<ScalarUDF> {
    [true, false]
        .into_iter()
        .map(|strict| {
            ScalarUDF::new_from_impl(RegClass {
                strict,
                signature: Signature::exact(vec![DataType::Utf8], Volatility::Stable),
                catalog: Arc::clone(catalog),
                search_path: search_path.to_vec(),
            })
        })
        .collect()
}

#[derive(Debug)]
struct RegClass {
    /// The cast (fails for an unknown name) rather than `to_regclass`.
    strict: bool,
    signature: Signature,
    catalog: Arc<Catalog>,
    search_path: Vec<String>,
}

impl PartialEq for RegClass {
    fn eq(&self, other: &Self) -> bool {
        self.strict == other.strict
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.search_path == other.search_path
    }
}

impl Eq for RegClass {}

impl std::hash::Hash for RegClass {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.strict.hash(state);
        self.search_path.hash(state);
    }
}

impl RegClass {
    /// Whether relation `name` exists in our schema `schema` (tables,
    /// views, sources, indexes with primary keys', sequences).
    fn exists(&self, schema: &str, name: &str) -> bool {
        let relation = RelationName::new(schema, name);
        self.catalog.relation(&relation).is_some()
            || self.catalog.sequence(&relation).is_some()
            || self
                .catalog
                .tables()
                .iter()
                .filter(|t| t.name.schema == schema)
                .any(|t| indexes(t).iter().any(|i| i.name == name))
    }

    fn resolve(&self, text: &str) -> Option<i32> {
        let in_pg_catalog = |name: &str| {
            PG_CATALOG_TABLES.contains(&name) || ADDED_PG_CATALOG_RELATIONS.contains(&name)
        };
        match object_name_parts(text).as_slice() {
            [name] if in_pg_catalog(name) => Some(relation_oid("pg_catalog", name)),
            [name] => self
                .search_path
                .iter()
                .find(|schema| self.exists(schema, name))
                .map(|schema| relation_oid(schema, name)),
            [schema, name] if schema == "pg_catalog" => {
                in_pg_catalog(name).then(|| relation_oid(schema, name))
            }
            [schema, name] => self
                .exists(schema, name)
                .then(|| relation_oid(schema, name)),
            _ => None,
        }
    }
}

impl ScalarUDFImpl for RegClass {
    fn name(&self) -> &str {
        if self.strict {
            REGCLASS_FUNCTION
        } else {
            "to_regclass"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = arrays
            .first()
            .ok_or_else(|| DataFusionError::Plan(format!("{} needs a name", self.name())))?;
        let names = cast(names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let mut out = Vec::with_capacity(names.len());
        for row in 0..names.len() {
            if names.is_null(row) {
                out.push(None);
                continue;
            }
            let text = names.value(row);
            let oid = self.resolve(text);
            if oid.is_none() && self.strict {
                return Err(DataFusionError::External(Box::new(
                    ServerError::UndefinedTable(text.to_string()),
                )));
            }
            out.push(oid);
        }
        Ok(ColumnarValue::Array(Arc::new(Int32Array::from(out))))
    }
}
