//! Corrections to `datafusion-pg-catalog`'s `pg_catalog`, which knows
//! Runnel's relations only as DataFusion tables with Arrow types.
//!
//! In front of the library's tables: `pg_class` gets oids derived from
//! names ([`super::pg_objects`]), the kinds of materialized views, owners,
//! and rows for indexes and sequences; `pg_attribute` the Postgres column
//! types, modifiers and `atthasdef`; `pg_attrdef` the DEFAULT expressions;
//! `pg_index` and `pg_constraint` primary keys, unique constraints, indexes
//! and CHECKs; `pg_depend` the columns that own sequences; `pg_sequence`, `pg_views`, `pg_matviews` and `pg_roles` our
//! objects. Added relations the library lacks: `pg_indexes`,
//! `pg_sequences`, `pg_user`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use runnel_planner::catalog::RelationName;
use runnel_planner::types::PG_TYPE_KEY;

use super::Catalog;

/// The `pg_catalog` schema with our corrections in front of the original.
#[derive(Debug)]
pub struct PgCatalogOverrides {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

impl PgCatalogOverrides {
    /// Wraps the `pg_catalog` schema `inner`.
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<Catalog>) -> Self {
        Self { inner, catalog }
    }
}

/// Which table is corrected or added, and how.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fix {
    Attribute,
    AttrDef,
    Class,
    Index,
    Constraint,
    Sequence,
    Depend,
    Views,
    MatViews,
    Roles,
    Settings,
    /// Added: `pg_indexes`.
    Indexes,
    /// Added: `pg_sequences`.
    Sequences,
    /// Added: `pg_user`.
    User,
}

impl Fix {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "pg_attribute" => Self::Attribute,
            "pg_attrdef" => Self::AttrDef,
            "pg_class" => Self::Class,
            "pg_index" => Self::Index,
            "pg_constraint" => Self::Constraint,
            "pg_sequence" => Self::Sequence,
            "pg_depend" => Self::Depend,
            "pg_views" => Self::Views,
            "pg_matviews" => Self::MatViews,
            "pg_roles" => Self::Roles,
            "pg_settings" => Self::Settings,
            "pg_indexes" => Self::Indexes,
            "pg_sequences" => Self::Sequences,
            "pg_user" => Self::User,
            _ => return None,
        })
    }

    /// The library's `schema` with Postgres's array types where it has
    /// text (`indkey`, `conkey`, … so `unnest` works) and the columns it
    /// lacks (`reloptions`).
    fn corrected_schema(self, schema: SchemaRef) -> SchemaRef {
        let list = |item: DataType| DataType::List(Arc::new(Field::new_list_field(item, true)));
        // (column, item type, the vector type it travels as)
        let retyped: &[(&str, DataType, Option<&str>)] = match self {
            Self::Index => &[
                ("indkey", DataType::Int16, Some("int2vector")),
                ("indoption", DataType::Int16, Some("int2vector")),
                ("indcollation", DataType::Int32, Some("oidvector")),
                ("indclass", DataType::Int32, Some("oidvector")),
            ],
            Self::Constraint => &[
                ("conkey", DataType::Int16, None),
                ("confkey", DataType::Int16, None),
            ],
            _ => &[],
        };
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(
                |f| match retyped.iter().find(|(name, ..)| name == f.name()) {
                    Some((_, item, vector)) => {
                        let field = Field::new(f.name(), list(item.clone()), true);
                        match vector {
                            Some(v) => field
                                .with_metadata([(PG_TYPE_KEY.to_string(), v.to_string())].into()),
                            None => field,
                        }
                    }
                    None => f.as_ref().clone(),
                },
            )
            .collect();
        if matches!(self, Self::Class) {
            for name in ["reloptions", "relacl"] {
                if schema.field_with_name(name).is_err() {
                    fields.push(Field::new(name, list(DataType::Utf8), true));
                }
            }
        }
        Arc::new(Schema::new(fields))
    }

    /// The schema of a table the library lacks.
    fn added_schema(self) -> Option<SchemaRef> {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let fields = match self {
            Self::Indexes => vec![
                text("schemaname"),
                text("tablename"),
                text("indexname"),
                text("tablespace"),
                text("indexdef"),
            ],
            Self::Sequences => vec![
                text("schemaname"),
                text("sequencename"),
                text("sequenceowner"),
                text("data_type"),
                Field::new("start_value", DataType::Int64, true),
                Field::new("min_value", DataType::Int64, true),
                Field::new("max_value", DataType::Int64, true),
                Field::new("increment_by", DataType::Int64, true),
                Field::new("cycle", DataType::Boolean, true),
                Field::new("cache_size", DataType::Int64, true),
                Field::new("last_value", DataType::Int64, true),
            ],
            Self::User => vec![
                text("usename"),
                Field::new("usesysid", DataType::Int32, true),
                Field::new("usecreatedb", DataType::Boolean, true),
                Field::new("usesuper", DataType::Boolean, true),
                Field::new("userepl", DataType::Boolean, true),
                Field::new("usebypassrls", DataType::Boolean, true),
                text("passwd"),
                Field::new(
                    "valuntil",
                    DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                    true,
                ),
                Field::new(
                    "useconfig",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                    true,
                ),
            ],
            _ => return None,
        };
        Some(Arc::new(Schema::new(fields)))
    }
}

use runnel_planner::catalog_names::ADDED_PG_CATALOG_RELATIONS as ADDED;

#[async_trait]
impl SchemaProvider for PgCatalogOverrides {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(ADDED.iter().map(|n| n.to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        let inner = self.inner.table(name).await?;
        let Some(fix) = Fix::of(&lower) else {
            return Ok(inner);
        };
        let schema = match (&inner, fix.added_schema()) {
            (Some(table), _) => fix.corrected_schema(table.schema()),
            (None, Some(schema)) => schema,
            (None, None) => return Ok(None),
        };
        Ok(Some(Arc::new(CorrectedTable {
            fix,
            schema,
            inner,
            pg_catalog: Arc::clone(&self.inner),
            catalog: Arc::clone(&self.catalog),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || ADDED.contains(&name.to_ascii_lowercase().as_str())
    }
}

/// A `pg_catalog` table whose rows are corrected (or made) when scanned.
#[derive(Debug)]
pub(super) struct CorrectedTable {
    pub fix: Fix,
    pub schema: SchemaRef,
    /// The library's table, if it has one.
    pub inner: Option<Arc<dyn TableProvider>>,
    pub pg_catalog: Arc<dyn SchemaProvider>,
    pub catalog: Arc<Catalog>,
}

/// Every row of `table`.
pub(super) async fn scan_all(
    table: &Arc<dyn TableProvider>,
    state: &dyn Session,
) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

/// Column `name` of `batch`.
pub(super) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} missing")))
}

impl CorrectedTable {
    /// No rows yet, of this table's columns.
    pub(super) fn new_rows(&self) -> super::pg_rows::PgRows {
        super::pg_rows::PgRows::new(Arc::clone(&self.schema))
    }

    /// The library's rows of this table.
    pub(super) async fn inner_rows(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        match &self.inner {
            Some(table) => scan_all(table, state).await,
            None => Ok(vec![]),
        }
    }

    /// The library's rows, its text vectors (`columns`) turned into the
    /// arrays of [`Fix::corrected_schema`].
    pub(super) async fn inner_rows_with_arrays(
        &self,
        state: &dyn Session,
        columns: &[&'static str],
    ) -> Result<super::pg_rows::PgRows> {
        use super::pg_rows::{int2_list, null, oid_list, parse_numbers};
        let mut rows = self.new_rows();
        for batch in self.inner_rows(state).await? {
            for row in 0..batch.num_rows() {
                let mut changes = vec![];
                for &name in columns {
                    let texts = column(&batch, name)?.as_string::<i32>();
                    let value = if texts.is_null(row) {
                        null()
                    } else {
                        let numbers = parse_numbers(texts.value(row));
                        match self.schema.field_with_name(name)?.data_type() {
                            DataType::List(item) if item.data_type() == &DataType::Int32 => {
                                oid_list(numbers)
                            }
                            _ => int2_list(numbers),
                        }
                    };
                    changes.push((name, value));
                }
                rows.push_existing(&batch, row, changes)?;
            }
        }
        Ok(rows)
    }

    /// The library's rows of another `pg_catalog` table.
    pub(super) async fn rows_of(
        &self,
        name: &str,
        state: &dyn Session,
    ) -> Result<Vec<RecordBatch>> {
        let table = self
            .pg_catalog
            .table(name)
            .await?
            .ok_or_else(|| DataFusionError::Internal(format!("{name} missing")))?;
        scan_all(&table, state).await
    }

    /// Schema name to the oid `pg_namespace` gives it.
    pub(super) async fn schema_oids(&self, state: &dyn Session) -> Result<HashMap<String, i32>> {
        let mut out = HashMap::new();
        for batch in self.rows_of("pg_namespace", state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "nspname")?.as_string::<i32>();
            for row in 0..batch.num_rows() {
                out.insert(names.value(row).to_string(), oids.value(row));
            }
        }
        Ok(out)
    }

    /// Every relation of the library's `pg_class` (system ones and ours)
    /// by the oid the library gave it.
    pub(super) async fn relations_by_library_oid(
        &self,
        state: &dyn Session,
    ) -> Result<HashMap<i32, RelationName>> {
        let schemas: HashMap<i32, String> = self
            .schema_oids(state)
            .await?
            .into_iter()
            .map(|(name, oid)| (oid, name))
            .collect();
        let mut out = HashMap::new();
        for batch in self.rows_of("pg_class", state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "relname")?.as_string::<i32>();
            let spaces = column(&batch, "relnamespace")?.as_primitive::<Int32Type>();
            for row in 0..batch.num_rows() {
                if let Some(schema) = schemas.get(&spaces.value(row)) {
                    out.insert(
                        oids.value(row),
                        RelationName::new(schema.clone(), names.value(row)),
                    );
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for CorrectedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        match &self.inner {
            Some(table) => table.table_type(),
            None => TableType::View,
        }
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = match self.fix {
            Fix::Attribute => self.attributes(state).await?,
            Fix::AttrDef => self.attribute_defaults(state).await?,
            Fix::Class => self.classes(state).await?,
            Fix::Index => self.index_rows(state).await?,
            Fix::Constraint => self.constraint_rows(state).await?,
            Fix::Sequence => self.sequence_rows(state).await?,
            Fix::Depend => self.depend_rows(state).await?,
            Fix::Views => self.view_rows(false)?,
            Fix::MatViews => self.view_rows(true)?,
            Fix::Roles => self.role_rows()?,
            Fix::Settings => self.setting_rows(state)?,
            Fix::Indexes => self.pg_indexes_rows()?,
            Fix::Sequences => self.pg_sequences_rows()?,
            Fix::User => self.user_rows()?,
        };
        MemTable::try_new(self.schema(), vec![batches])?
            .scan(state, projection, filters, limit)
            .await
    }
}
