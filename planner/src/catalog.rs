//! Definitions of catalog objects, as stored (serde) and as planned.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::types::ColumnType;

/// The database every session connects to; Runnel serves one.
pub const DATABASE: &str = "runnel";
/// The schema objects go to when none is named.
pub const DEFAULT_SCHEMA: &str = "public";
/// Schemas that exist by themselves and cannot be created or dropped.
pub const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// A schema-qualified name of a relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelationName {
    pub schema: String,
    pub name: String,
}

impl RelationName {
    /// A name from its parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RelationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A schema (namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDef {
    pub name: String,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    /// NOT NULL, declared or implied by the primary key.
    pub not_null: bool,
    /// The DEFAULT expression as SQL text, planned when a row omits it.
    pub default: Option<String>,
}

/// A table: rows stored in `storage` under `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    pub id: u64,
    pub name: RelationName,
    pub columns: Vec<ColumnDef>,
    /// Indices of the primary key columns, in key order; empty when the
    /// table has none (rows are then keyed by a hidden row id).
    pub primary_key: Vec<usize>,
    /// Set for a source (`CREATE SOURCE`): its connector options. A source
    /// stores no rows; only materialized views read it.
    #[serde(default)]
    pub connector: Option<std::collections::BTreeMap<String, String>>,
    /// `WATERMARK FOR column AS expr`, for a source that declares one.
    #[serde(default)]
    pub watermark: Option<WatermarkDef>,
    /// Secondary indexes: `UNIQUE` constraints and `CREATE INDEX`.
    #[serde(default)]
    pub indexes: Vec<IndexDef>,
    /// `CHECK` constraints, every row must satisfy (or make NULL).
    #[serde(default)]
    pub checks: Vec<CheckDef>,
}

/// A `CHECK` constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub name: String,
    /// The condition, as SQL text over the table's columns.
    pub expr: String,
}

/// A secondary index of a table, kept in the store under its own id: one
/// entry per row, the indexed values (memcomparable) then the row key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Storage id of the entries (0 until the catalog assigns one).
    pub id: u64,
    /// The index's name, in the table's schema (shared with relations).
    pub name: String,
    /// Indices of the indexed columns, in index order.
    pub columns: Vec<usize>,
    /// No two rows may hold the same non-null values.
    pub unique: bool,
    /// Made by a `UNIQUE` constraint (of the same name) rather than by
    /// `CREATE INDEX`.
    pub constraint: bool,
}

/// The name Postgres gives an index or constraint nobody named:
/// `table_col1_col2_suffix`, cut to 63 bytes.
pub fn default_index_name(table: &str, columns: &[&str], suffix: &str) -> String {
    let mut name = format!("{table}_{}", columns.join("_"));
    let limit = 63 - suffix.len() - 1;
    if name.len() > limit {
        let mut cut = limit;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    format!("{name}_{suffix}")
}

/// A declared watermark: rows of `column` below `expr`'s largest value so
/// far are late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    pub column: String,
    /// SQL text over the relation's columns.
    pub expr: String,
}

impl TableDef {
    /// The Arrow schema of the table's rows.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| c.column_type.field(&c.name, !c.not_null))
                .collect::<Vec<_>>(),
        ))
    }

    /// The index of column `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A view: a named query, planned again whenever it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    pub id: u64,
    pub name: RelationName,
    /// The query, as normalised SQL text.
    pub sql: String,
    /// Column names given in `CREATE VIEW v (a, b)`, if any.
    pub column_names: Vec<String>,
    /// The relations the query reads.
    pub depends_on: Vec<RelationName>,
    /// Set for a materialized view: its rows are stored and kept up to date
    /// by a job.
    #[serde(default)]
    pub materialized: Option<MaterializedDef>,
}

/// How a materialized view stores its rows (under the view's id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializedDef {
    /// Every stored column: the visible ones, then hidden key columns.
    pub columns: Vec<ColumnDef>,
    /// How many leading columns are visible.
    pub visible: usize,
    /// The stream key: the columns that identify a row.
    pub key: Vec<usize>,
    /// Parallelism of the job's stateful fragments.
    pub parallelism: usize,
    /// The schema unqualified names in the query resolve in.
    pub search_schema: String,
    /// `EMIT ON WINDOW CLOSE`: windowed results appear once, final.
    #[serde(default)]
    pub emit_on_window_close: bool,
}

impl MaterializedDef {
    /// The Arrow schema of the stored rows.
    pub fn stored_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| c.column_type.field(&c.name, !c.not_null))
                .collect::<Vec<_>>(),
        ))
    }
}

/// A sink: a query whose changes a job writes to an outside system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkDef {
    pub id: u64,
    pub name: RelationName,
    /// The query, as normalised SQL text.
    pub sql: String,
    /// The `WITH (…)` options (with `format` and `encode`).
    pub options: std::collections::BTreeMap<String, String>,
    /// The relations the query reads.
    pub depends_on: Vec<RelationName>,
    /// The schema unqualified names in the query resolve in.
    pub search_schema: String,
    /// Parallelism of the job's stateful fragments.
    pub parallelism: usize,
    /// `EMIT ON WINDOW CLOSE`: windowed results go out once, final.
    #[serde(default)]
    pub emit_on_window_close: bool,
}

impl ViewDef {
    /// True for a materialized view.
    pub fn is_materialized(&self) -> bool {
        self.materialized.is_some()
    }
}
