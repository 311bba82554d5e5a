//! `information_schema` as Postgres has it, in front of DataFusion's:
//! `columns` with Postgres type names (`data_type`, `udt_name`), lengths,
//! precisions and defaults; `views` with `view_definition`; and the
//! constraint views DataFusion lacks — `table_constraints`,
//! `key_column_usage`, `check_constraints` — over primary keys, UNIQUE
//! and CHECK constraints. Tools ask these (node-pg-migrate's primary key
//! check, Grafana's column lists, JDBC metadata).
//!
//! NOT NULL columns are not listed as CHECK constraints (Postgres lists
//! them under names made of oids). Views are not updatable in Runnel, so
//! `views.is_updatable` says NO where Postgres says YES for simple views.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use runnel_planner::catalog::{DATABASE, DEFAULT_SCHEMA, RelationName};
use runnel_planner::types::ColumnType;

use super::definitions::shown_default;
use super::pg_objects::{ConstraintKind, constraints};
use super::pg_overrides::{column, scan_all};
use super::pg_rows::{PgRows, int4, null, text};
use super::{Catalog, Relation};

/// The tables added to DataFusion's.
const ADDED: &[&str] = &["table_constraints", "key_column_usage", "check_constraints"];

/// `information_schema` with our corrections and additions.
#[derive(Debug)]
pub struct InformationSchemaOverrides {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
}

impl InformationSchemaOverrides {
    /// Wraps DataFusion's `information_schema` provider `inner`.
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<Catalog>) -> Self {
        Self { inner, catalog }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Columns,
    Views,
    TableConstraints,
    KeyColumnUsage,
    CheckConstraints,
}

fn text_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

impl Kind {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "columns" => Self::Columns,
            "views" => Self::Views,
            "table_constraints" => Self::TableConstraints,
            "key_column_usage" => Self::KeyColumnUsage,
            "check_constraints" => Self::CheckConstraints,
            _ => return None,
        })
    }

    fn schema(self) -> SchemaRef {
        let int = |name: &str| Field::new(name, DataType::Int32, true);
        let fields: Vec<Field> = match self {
            Self::Columns => ["table_catalog", "table_schema", "table_name", "column_name"]
                .into_iter()
                .map(text_field)
                .chain([int("ordinal_position")])
                .chain(["column_default", "is_nullable", "data_type"].map(text_field))
                .chain([
                    int("character_maximum_length"),
                    int("character_octet_length"),
                    int("numeric_precision"),
                    int("numeric_precision_radix"),
                    int("numeric_scale"),
                    int("datetime_precision"),
                ])
                .chain(
                    [
                        "interval_type",
                        "collation_name",
                        "domain_name",
                        "udt_catalog",
                        "udt_schema",
                        "udt_name",
                        "dtd_identifier",
                        "is_identity",
                        "identity_generation",
                        "is_generated",
                        "generation_expression",
                        "is_updatable",
                    ]
                    .map(text_field),
                )
                .collect(),
            Self::Views => [
                "table_catalog",
                "table_schema",
                "table_name",
                "view_definition",
                "check_option",
                "is_updatable",
                "is_insertable_into",
                "is_trigger_updatable",
                "is_trigger_deletable",
                "is_trigger_insertable_into",
            ]
            .map(text_field)
            .to_vec(),
            Self::TableConstraints => [
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "constraint_type",
                "is_deferrable",
                "initially_deferred",
                "enforced",
                "nulls_distinct",
            ]
            .map(text_field)
            .to_vec(),
            Self::KeyColumnUsage => [
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "table_catalog",
                "table_schema",
                "table_name",
                "column_name",
            ]
            .map(text_field)
            .into_iter()
            .chain([
                int("ordinal_position"),
                int("position_in_unique_constraint"),
            ])
            .collect(),
            Self::CheckConstraints => [
                "constraint_catalog",
                "constraint_schema",
                "constraint_name",
                "check_clause",
            ]
            .map(text_field)
            .to_vec(),
        };
        Arc::new(Schema::new(fields))
    }
}

#[async_trait]
impl SchemaProvider for InformationSchemaOverrides {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(ADDED.iter().map(|n| n.to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        let Some(kind) = Kind::of(&lower) else {
            return self.inner.table(name).await;
        };
        Ok(Some(Arc::new(InformationTable {
            kind,
            schema: kind.schema(),
            inner: self.inner.table(name).await?,
            catalog: Arc::clone(&self.catalog),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || ADDED.contains(&name.to_ascii_lowercase().as_str())
    }
}

#[derive(Debug)]
struct InformationTable {
    kind: Kind,
    schema: SchemaRef,
    inner: Option<Arc<dyn TableProvider>>,
    catalog: Arc<Catalog>,
}

/// Postgres's `data_type` and `udt_name` of a type it names `pg_name`
/// (modifiers dropped): `character varying` is `varchar`, `integer`
/// `int4`, an array `ARRAY` of `_int4`.
fn type_names(pg_name: &str) -> (String, String) {
    let base = pg_name.split('(').next().unwrap_or(pg_name).trim();
    if let Some(element) = base.strip_suffix("[]") {
        return ("ARRAY".into(), format!("_{}", type_names(element).1));
    }
    let udt = match base {
        "boolean" => "bool",
        "smallint" => "int2",
        "integer" => "int4",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" => "float8",
        "character varying" => "varchar",
        "time without time zone" => "time",
        "timestamp without time zone" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        other => other,
    };
    (base.to_string(), udt.to_string())
}

/// Length, precision, radix, scale and datetime precision of a column.
fn measures(column_type: &ColumnType) -> [Option<i32>; 6] {
    match column_type {
        ColumnType::Varchar { max_length } => {
            let n = max_length.map(|n| n as i32);
            [n, n.map(|n| n * 4), None, None, None, None]
        }
        ColumnType::Text => [None, Some(1_073_741_824), None, None, None, None],
        ColumnType::Int2 => [None, None, Some(16), Some(2), Some(0), None],
        ColumnType::Int4 => [None, None, Some(32), Some(2), Some(0), None],
        ColumnType::Int8 => [None, None, Some(64), Some(2), Some(0), None],
        ColumnType::Float4 => [None, None, Some(24), Some(2), None, None],
        ColumnType::Float8 => [None, None, Some(53), Some(2), None, None],
        ColumnType::Numeric { precision, scale } => [
            None,
            None,
            Some(i32::from(*precision)),
            Some(10),
            Some(i32::from(*scale)),
            None,
        ],
        ColumnType::Date => [None, None, None, None, None, Some(0)],
        ColumnType::Time
        | ColumnType::Timestamp
        | ColumnType::Timestamptz
        | ColumnType::Interval => [None, None, None, None, None, Some(6)],
        _ => [None; 6],
    }
}

impl InformationTable {
    /// `columns`: our tables' columns from their definitions; every other
    /// relation's (views, system tables) from DataFusion's rows with the
    /// Arrow type named as Postgres would.
    async fn columns(&self, state: &dyn Session) -> Result<RecordBatch> {
        let mut rows = PgRows::new(Arc::clone(&self.schema));
        let Some(inner) = &self.inner else {
            return rows.finish();
        };
        for batch in scan_all(inner, state).await? {
            let get = |name: &str| -> Result<_> { Ok(column(&batch, name)?.as_string::<i32>()) };
            let (schemas, tables, names, types) = (
                get("table_schema")?,
                get("table_name")?,
                get("column_name")?,
                get("data_type")?,
            );
            let positions = column(&batch, "ordinal_position")?;
            let positions = datafusion::arrow::compute::cast(positions, &DataType::Int32)?;
            let positions = positions.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let nullables = get("is_nullable")?;
            for row in 0..batch.num_rows() {
                let relation = RelationName::new(schemas.value(row), tables.value(row));
                let name = names.value(row);
                let relation_kind = self.catalog.relation(&relation);
                let def = match &relation_kind {
                    Some(Relation::Table(def)) => def.columns.iter().find(|c| c.name == name),
                    _ => None,
                };
                let pg_name = match def {
                    Some(c) => c.column_type.pg_name(),
                    None => types
                        .value(row)
                        .parse::<DataType>()
                        .map(|t| super::pg_type_name(&t))
                        .unwrap_or_else(|_| types.value(row).to_ascii_lowercase()),
                };
                let (data_type, udt) = type_names(&pg_name);
                let [length, octets, precision, radix, scale, datetime] =
                    def.map(|c| measures(&c.column_type)).unwrap_or([None; 6]);
                let int = |v: Option<i32>| v.map(int4).unwrap_or_else(null);
                let is_view = matches!(relation_kind, Some(Relation::View(_)));
                let nullable = match def {
                    Some(c) => !c.not_null,
                    None => is_view || nullables.value(row) == "YES",
                };
                rows.push(vec![
                    ("table_catalog", text(DATABASE)),
                    ("table_schema", text(relation.schema.clone())),
                    ("table_name", text(relation.name.clone())),
                    ("column_name", text(name)),
                    // DataFusion counts from 0, Postgres from 1.
                    ("ordinal_position", int4(positions.value(row) + 1)),
                    (
                        "column_default",
                        def.and_then(|c| c.default.as_ref())
                            .zip(def)
                            .map(|(sql, c)| {
                                // Printed for the default search path.
                                text(shown_default(sql, &c.column_type, &|s| s == DEFAULT_SCHEMA))
                            })
                            .unwrap_or_else(null),
                    ),
                    ("is_nullable", text(if nullable { "YES" } else { "NO" })),
                    ("data_type", text(data_type)),
                    ("character_maximum_length", int(length)),
                    ("character_octet_length", int(octets)),
                    ("numeric_precision", int(precision)),
                    ("numeric_precision_radix", int(radix)),
                    ("numeric_scale", int(scale)),
                    ("datetime_precision", int(datetime)),
                    ("udt_catalog", text(DATABASE)),
                    ("udt_schema", text("pg_catalog")),
                    ("udt_name", text(udt)),
                    (
                        "dtd_identifier",
                        text((positions.value(row) + 1).to_string()),
                    ),
                    ("is_identity", text("NO")),
                    ("is_generated", text("NEVER")),
                    ("is_updatable", text(if is_view { "NO" } else { "YES" })),
                ])?;
            }
        }
        rows.finish()
    }

    fn views(&self) -> Result<RecordBatch> {
        let mut rows = PgRows::new(Arc::clone(&self.schema));
        let mut views = self.catalog.views();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        for view in views.iter().filter(|v| !v.is_materialized()) {
            rows.push(vec![
                ("table_catalog", text(DATABASE)),
                ("table_schema", text(view.name.schema.clone())),
                ("table_name", text(view.name.name.clone())),
                ("view_definition", text(view.sql.clone())),
                ("check_option", text("NONE")),
                ("is_updatable", text("NO")),
                ("is_insertable_into", text("NO")),
                ("is_trigger_updatable", text("NO")),
                ("is_trigger_deletable", text("NO")),
                ("is_trigger_insertable_into", text("NO")),
            ])?;
        }
        rows.finish()
    }

    /// `table_constraints`, `key_column_usage` or `check_constraints`.
    fn constraint_rows(&self) -> Result<RecordBatch> {
        let mut rows = PgRows::new(Arc::clone(&self.schema));
        let mut tables = self.catalog.tables();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        for def in tables.iter().filter(|t| t.connector.is_none()) {
            let (schema, table) = (def.name.schema.clone(), def.name.name.clone());
            for constraint in constraints(def) {
                let head = vec![
                    ("constraint_catalog", text(DATABASE)),
                    ("constraint_schema", text(schema.clone())),
                    ("constraint_name", text(constraint.name.clone())),
                ];
                let on_table = [
                    ("table_catalog", text(DATABASE)),
                    ("table_schema", text(schema.clone())),
                    ("table_name", text(table.clone())),
                ];
                match (self.kind, &constraint.kind) {
                    (Kind::TableConstraints, kind) => {
                        let (kind, nulls) = match kind {
                            ConstraintKind::PrimaryKey => ("PRIMARY KEY", null()),
                            ConstraintKind::Unique => ("UNIQUE", text("YES")),
                            ConstraintKind::Check(_) => ("CHECK", null()),
                        };
                        let mut row = head;
                        row.extend(on_table);
                        row.extend([
                            ("constraint_type", text(kind)),
                            ("is_deferrable", text("NO")),
                            ("initially_deferred", text("NO")),
                            ("enforced", text("YES")),
                            ("nulls_distinct", nulls),
                        ]);
                        rows.push(row)?;
                    }
                    (Kind::KeyColumnUsage, ConstraintKind::PrimaryKey | ConstraintKind::Unique) => {
                        for (position, &c) in constraint.columns.iter().enumerate() {
                            let mut row = head.clone();
                            row.extend(on_table.clone());
                            row.extend([
                                ("column_name", text(def.columns[c].name.clone())),
                                ("ordinal_position", int4(position as i32 + 1)),
                            ]);
                            rows.push(row)?;
                        }
                    }
                    (Kind::CheckConstraints, ConstraintKind::Check(sql)) => {
                        let mut row = head;
                        row.push(("check_clause", text(format!("(({sql}))"))));
                        rows.push(row)?;
                    }
                    _ => {}
                }
            }
        }
        rows.finish()
    }
}

#[async_trait]
impl TableProvider for InformationTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = match self.kind {
            Kind::Columns => self.columns(state).await?,
            Kind::Views => self.views()?,
            _ => self.constraint_rows()?,
        };
        MemTable::try_new(self.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
