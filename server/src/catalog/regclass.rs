//! `x::regclass` (rewritten by the planner into [`REGCLASS_FUNCTION`]),
//! `to_regclass(name)` and `x::regclass::text` ([`REGCLASS_NAME_FUNCTION`]):
//! the oid `pg_class` shows for the relation a name denotes, resolved as
//! Postgres does — `pg_catalog` first, then the search path — and back.
//! An oid (or a string of digits) stands for itself; an unknown name is
//! 42P01 for the cast and NULL for `to_regclass`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use runnel_planner::catalog::RelationName;
use runnel_planner::catalog_names::{
    ADDED_PG_CATALOG_RELATIONS, REGCLASS_FUNCTION, REGCLASS_NAME_FUNCTION,
};

use super::Catalog;
use super::pg_objects::{indexes, object_name_parts, quote_ident, relation_oid};
use crate::error::ServerError;

/// `runnel_regclass` and `to_regclass` for a session that sees `catalog`
/// with `search_path`.
pub fn regclass_functions(catalog: &Arc<Catalog>, search_path: &[String]) -> Vec<ScalarUDF> {
    [Kind::Cast, Kind::ToRegclass, Kind::Name]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(RegClass {
                kind,
                signature: Signature::any(1, Volatility::Stable),
                catalog: Arc::clone(catalog),
                search_path: search_path.to_vec(),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `::regclass`: fails for an unknown name.
    Cast,
    /// `to_regclass`: NULL for an unknown name.
    ToRegclass,
    /// `::regclass::text`: the name of the relation.
    Name,
}

#[derive(Debug)]
struct RegClass {
    kind: Kind,
    signature: Signature,
    catalog: Arc<Catalog>,
    search_path: Vec<String>,
}

impl PartialEq for RegClass {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.search_path == other.search_path
    }
}

impl Eq for RegClass {}

impl std::hash::Hash for RegClass {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.hash(state);
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

    /// Every relation we know: pg_catalog's, then our schemas'.
    fn all_relations(&self) -> Vec<RelationName> {
        let mut out: Vec<RelationName> = PG_CATALOG_TABLES
            .iter()
            .chain(ADDED_PG_CATALOG_RELATIONS)
            .map(|name| RelationName::new("pg_catalog", *name))
            .collect();
        for schema in self.catalog.schema_names() {
            for name in self.catalog.relation_names(&schema) {
                out.push(RelationName::new(schema.clone(), name));
            }
        }
        for def in self.catalog.tables() {
            out.extend(
                indexes(&def)
                    .into_iter()
                    .map(|i| RelationName::new(def.name.schema.clone(), i.name)),
            );
        }
        out.extend(
            self.catalog
                .sequences()
                .iter()
                .map(|s| s.def().name.clone()),
        );
        out
    }

    /// The names `::regclass::text` prints, by oid: qualified unless
    /// the schema is searched.
    fn names_by_oid(&self) -> std::collections::HashMap<i32, String> {
        self.all_relations()
            .into_iter()
            .map(|name| {
                let shown =
                    if name.schema == "pg_catalog" || self.search_path.contains(&name.schema) {
                        quote_ident(&name.name)
                    } else {
                        format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
                    };
                (relation_oid(&name.schema, &name.name), shown)
            })
            .collect()
    }

    fn resolve(&self, text: &str) -> Option<i32> {
        if let Ok(oid) = text.trim().parse::<i32>() {
            return Some(oid);
        }
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
        match self.kind {
            Kind::Cast => REGCLASS_FUNCTION,
            Kind::ToRegclass => "to_regclass",
            Kind::Name => REGCLASS_NAME_FUNCTION,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Name => DataType::Utf8,
            _ => DataType::Int32,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let input = arrays
            .first()
            .ok_or_else(|| DataFusionError::Plan(format!("{} needs a name", self.name())))?;
        let texts = cast(input, &DataType::Utf8)?;
        let texts = texts.as_string::<i32>();
        let mut oids = Vec::with_capacity(texts.len());
        for row in 0..texts.len() {
            if texts.is_null(row) {
                oids.push(None);
                continue;
            }
            let text = texts.value(row);
            let oid = self.resolve(text);
            if oid.is_none() && self.kind != Kind::ToRegclass {
                return Err(DataFusionError::External(Box::new(
                    ServerError::UndefinedTable(text.to_string()),
                )));
            }
            oids.push(oid);
        }
        Ok(ColumnarValue::Array(match self.kind {
            Kind::Name => {
                // The oid itself when no relation has it, as Postgres.
                let names = self.names_by_oid();
                Arc::new(StringArray::from(
                    oids.into_iter()
                        .map(|oid| {
                            oid.map(|oid| {
                                names.get(&oid).cloned().unwrap_or_else(|| oid.to_string())
                            })
                        })
                        .collect::<Vec<_>>(),
                ))
            }
            _ => Arc::new(Int32Array::from(oids)),
        }))
    }
}
