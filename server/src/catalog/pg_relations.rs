//! `pg_class`, `pg_attribute` and `pg_attrdef` as Postgres would have
//! them for Runnel's relations (see [`super::pg_overrides`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::catalog::Session;
use datafusion::error::Result;
use runnel_planner::catalog::{RelationName, TableDef};
use runnel_planner::types::ColumnType;

use super::Relation;
use super::definitions::coerced_default;
use super::pg_objects::{OWNER_OID, default_oid, indexes, relation_oid};
use super::pg_overrides::{CorrectedTable, column};
use super::pg_rows::{boolean, int2, int4, null, text};

/// `pg_am` oids.
const HEAP: i32 = 2;
const BTREE: i32 = 403;

impl CorrectedTable {
    /// `pg_class`: our relations under their derived oids, with their
    /// kinds, owner and key facts, then our indexes and sequences.
    pub(super) async fn classes(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let relations = self.relations_by_library_oid(state).await?;
        let mut rows = self.new_rows();
        for batch in self.inner_rows(state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let kinds = column(&batch, "relkind")?.as_string::<i32>();
            for row in 0..batch.num_rows() {
                let mut kind = kinds.value(row).to_string();
                let mut changes = vec![("relowner", int4(OWNER_OID))];
                if let Some(name) = relations.get(&oids.value(row)) {
                    changes.push(("oid", int4(oid_of(name))));
                    changes.push(("relfilenode", int4(oid_of(name))));
                    match self.catalog.relation(name) {
                        Some(Relation::View(view)) if view.is_materialized() => kind = "m".into(),
                        Some(Relation::Table(def)) => {
                            changes.push(("relhasindex", boolean(!indexes(&def).is_empty())));
                            changes.push(("relchecks", int2(def.checks.len())));
                        }
                        _ => {}
                    }
                }
                if kind == "r" || kind == "m" {
                    changes.push(("relam", int4(HEAP)));
                }
                changes.push(("relkind", text(kind)));
                rows.push_existing(&batch, row, changes)?;
            }
        }
        let schemas = self.schema_oids(state).await?;
        for def in self.catalog.tables() {
            let Some(&namespace) = schemas.get(&def.name.schema) else {
                continue;
            };
            for index in indexes(&def) {
                rows.push(vec![
                    ("oid", int4(index.oid)),
                    ("relname", text(index.name)),
                    ("relnamespace", int4(namespace)),
                    ("relowner", int4(OWNER_OID)),
                    ("relam", int4(BTREE)),
                    ("relfilenode", int4(index.oid)),
                    ("relpages", int4(1)),
                    ("relpersistence", text("p")),
                    ("relkind", text("i")),
                    ("relnatts", int2(index.columns.len())),
                    ("relispopulated", boolean(true)),
                    ("relreplident", text("n")),
                    ("relpartbound", null()),
                ])?;
            }
        }
        for sequence in self.catalog.sequences() {
            let name = &sequence.def().name;
            let Some(&namespace) = schemas.get(&name.schema) else {
                continue;
            };
            let oid = relation_oid(&name.schema, &name.name);
            rows.push(vec![
                ("oid", int4(oid)),
                ("relname", text(name.name.clone())),
                ("relnamespace", int4(namespace)),
                ("relowner", int4(OWNER_OID)),
                ("relfilenode", int4(oid)),
                ("relpages", int4(1)),
                ("relpersistence", text("p")),
                ("relkind", text("S")),
                ("relnatts", int2(3)),
                ("relispopulated", boolean(true)),
                ("relreplident", text("n")),
                ("relpartbound", null()),
            ])?;
        }
        Ok(vec![rows.finish()?])
    }

    /// Our tables by the oid `pg_class` shows for them.
    async fn tables_by_library_oid(
        &self,
        state: &dyn Session,
    ) -> Result<HashMap<i32, (i32, Arc<TableDef>)>> {
        Ok(self
            .relations_by_library_oid(state)
            .await?
            .into_iter()
            .filter_map(|(library, name)| {
                let def = self.catalog.table(&name)?;
                Some((library, (relation_oid(&name.schema, &name.name), def)))
            })
            .collect())
    }

    /// `pg_attribute`: attributes of our relations under their derived
    /// oids, with Postgres types, modifiers and `atthasdef`.
    pub(super) async fn attributes(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let relations = self.relations_by_library_oid(state).await?;
        let mut out = vec![];
        for batch in self.inner_rows(state).await? {
            let relids = column(&batch, "attrelid")?.as_primitive::<Int32Type>();
            let names = column(&batch, "attname")?.as_string::<i32>();
            let mut oids: Vec<i32> = relids.values().to_vec();
            let mut types: Vec<i32> = column(&batch, "atttypid")?
                .as_primitive::<Int32Type>()
                .values()
                .to_vec();
            let mut mods: Vec<i32> = column(&batch, "atttypmod")?
                .as_primitive::<Int32Type>()
                .values()
                .to_vec();
            let mut has_default: Vec<bool> = column(&batch, "atthasdef")?
                .as_boolean()
                .iter()
                .map(|b| b.unwrap_or(false))
                .collect();
            let mut not_null: Vec<bool> = column(&batch, "attnotnull")?
                .as_boolean()
                .iter()
                .map(|b| b.unwrap_or(false))
                .collect();
            for row in 0..batch.num_rows() {
                let Some(name) = relations.get(&relids.value(row)) else {
                    continue;
                };
                oids[row] = relation_oid(&name.schema, &name.name);
                let def = match self.catalog.relation(name) {
                    Some(Relation::Table(def)) => def,
                    // Postgres declares no view column NOT NULL.
                    Some(Relation::View(_)) => {
                        not_null[row] = false;
                        continue;
                    }
                    None => continue,
                };
                let Some(column) = def.columns.iter().find(|c| c.name == names.value(row)) else {
                    continue;
                };
                let (oid, typmod) = pg_type_of(&column.column_type);
                types[row] = oid;
                mods[row] = typmod;
                has_default[row] = column.default.is_some();
            }
            let schema = batch.schema();
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            for (name, array) in [
                ("attrelid", Arc::new(Int32Array::from(oids)) as ArrayRef),
                ("atttypid", Arc::new(Int32Array::from(types))),
                ("atttypmod", Arc::new(Int32Array::from(mods))),
                ("atthasdef", Arc::new(BooleanArray::from(has_default))),
                ("attnotnull", Arc::new(BooleanArray::from(not_null))),
            ] {
                let index = schema.index_of(name)?;
                columns[index] = array;
            }
            out.push(RecordBatch::try_new(schema, columns)?);
        }
        out.push(self.index_attributes()?);
        Ok(out)
    }

    /// The attributes of our indexes: their columns, as Postgres lists
    /// them under the index's oid.
    fn index_attributes(&self) -> Result<RecordBatch> {
        let mut rows = self.new_rows();
        for def in self.catalog.tables() {
            for index in indexes(&def) {
                for (position, &c) in index.columns.iter().enumerate() {
                    let column = &def.columns[c];
                    let (type_oid, typmod) = pg_type_of(&column.column_type);
                    rows.push(vec![
                        ("attrelid", int4(index.oid)),
                        ("attname", text(column.name.clone())),
                        ("atttypid", int4(type_oid)),
                        ("atttypmod", int4(typmod)),
                        ("attnum", int2(position + 1)),
                        ("attnotnull", boolean(false)),
                        ("atthasdef", boolean(false)),
                        ("attisdropped", boolean(false)),
                        ("attislocal", boolean(true)),
                    ])?;
                }
            }
        }
        rows.finish()
    }

    /// `pg_attrdef`: the DEFAULT expression of every column that has one.
    pub(super) async fn attribute_defaults(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let mut tables: Vec<(i32, Arc<TableDef>)> = self
            .tables_by_library_oid(state)
            .await?
            .into_values()
            .collect();
        tables.sort_by_key(|(oid, _)| *oid);
        let mut rows = self.new_rows();
        for (relid, def) in tables {
            for (index, column) in def.columns.iter().enumerate() {
                if let Some(sql) = &column.default {
                    rows.push(vec![
                        ("oid", int4(default_oid(relid, index + 1))),
                        ("adrelid", int4(relid)),
                        ("adnum", int2(index + 1)),
                        ("adbin", text(coerced_default(sql, &column.column_type))),
                    ])?;
                }
            }
        }
        Ok(vec![rows.finish()?])
    }
}

/// The oid `pg_class` gives relation `name`.
pub fn oid_of(name: &RelationName) -> i32 {
    relation_oid(&name.schema, &name.name)
}

/// The type oid and modifier Postgres would store for a column type.
pub fn pg_type_of(column_type: &ColumnType) -> (i32, i32) {
    match column_type {
        ColumnType::Boolean => (16, -1),
        ColumnType::Int2 => (21, -1),
        ColumnType::Int4 => (23, -1),
        ColumnType::Int8 => (20, -1),
        ColumnType::Float4 => (700, -1),
        ColumnType::Float8 => (701, -1),
        ColumnType::Numeric { precision, scale } => (
            1700,
            ((i32::from(*precision) << 16) | i32::from(*scale as u8)) + 4,
        ),
        ColumnType::Text => (25, -1),
        ColumnType::Varchar { max_length } => {
            (1043, max_length.map(|n| n as i32 + 4).unwrap_or(-1))
        }
        ColumnType::Bytea => (17, -1),
        ColumnType::Date => (1082, -1),
        ColumnType::Time => (1083, -1),
        ColumnType::Timestamp => (1114, -1),
        ColumnType::Timestamptz => (1184, -1),
        ColumnType::Interval => (1186, -1),
        ColumnType::Json => (114, -1),
        ColumnType::Jsonb => (3802, -1),
    }
}
