//! `pg_index`, `pg_constraint`, `pg_sequence`, and the views `pg_indexes`
//! and `pg_sequences`, with Runnel's keys, indexes, CHECKs and sequences
//! after the library's rows for system relations (see
//! [`super::pg_overrides`]).

use std::collections::HashMap;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::catalog::Session;
use datafusion::error::Result;
use runnel_planner::catalog::TableDef;

use super::pg_objects::{
    ConstraintKind, OWNER_NAME, constraint_definition, constraints, index_definition, indexes,
    relation_oid,
};
use super::pg_overrides::{CorrectedTable, column};
use super::pg_relations::{oid_of, pg_type_of};
use super::pg_rows::{boolean, int2, int2_list, int4, int8, null, oid_list, text};

/// `pg_am.oid` of btree, the access method every index reports.
const BTREE: i32 = 403;
/// The default collation's oid, which text columns carry.
const DEFAULT_COLLATION: i32 = 100;

/// 1-based attribute numbers of `columns`.
fn attnums(columns: &[usize]) -> impl Iterator<Item = i32> + '_ {
    columns.iter().map(|&c| c as i32 + 1)
}

impl CorrectedTable {
    /// Type oid to its default btree operator class, from `pg_opclass`.
    async fn default_btree_classes(&self, state: &dyn Session) -> Result<HashMap<i32, i32>> {
        let mut out = HashMap::new();
        for batch in self.rows_of("pg_opclass", state).await? {
            let oids = column(&batch, "oid")?.as_primitive::<Int32Type>();
            let methods = column(&batch, "opcmethod")?.as_primitive::<Int32Type>();
            let types = column(&batch, "opcintype")?.as_primitive::<Int32Type>();
            let defaults = column(&batch, "opcdefault")?.as_boolean();
            for row in 0..batch.num_rows() {
                if methods.value(row) == BTREE && defaults.value(row) {
                    out.insert(types.value(row), oids.value(row));
                }
            }
        }
        Ok(out)
    }

    /// `pg_index`: the library's rows, then our primary keys and indexes.
    pub(super) async fn index_rows(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let classes = self.default_btree_classes(state).await?;
        let mut rows = self
            .inner_rows_with_arrays(state, &["indkey", "indoption", "indcollation", "indclass"])
            .await?;
        for def in self.catalog.tables() {
            for index in indexes(&def) {
                let types: Vec<i32> = index
                    .columns
                    .iter()
                    .map(|&c| pg_type_of(&def.columns[c].column_type).0)
                    .collect();
                let text_like = |t: &i32| *t == 25 || *t == 1043;
                rows.push(vec![
                    ("indexrelid", int4(index.oid)),
                    ("indrelid", int4(oid_of(&def.name))),
                    ("indnatts", int2(index.columns.len())),
                    ("indnkeyatts", int2(index.columns.len())),
                    ("indisunique", boolean(index.unique)),
                    ("indisprimary", boolean(index.primary)),
                    ("indimmediate", boolean(true)),
                    ("indisvalid", boolean(true)),
                    ("indisready", boolean(true)),
                    ("indislive", boolean(true)),
                    ("indkey", int2_list(attnums(&index.columns))),
                    (
                        "indcollation",
                        oid_list(
                            types
                                .iter()
                                .map(|t| if text_like(t) { DEFAULT_COLLATION } else { 0 }),
                        ),
                    ),
                    (
                        "indclass",
                        oid_list(types.iter().map(|t| {
                            // varchar sorts with text's operators.
                            let t = if *t == 1043 { 25 } else { *t };
                            classes.get(&t).copied().unwrap_or(0)
                        })),
                    ),
                    ("indoption", int2_list(types.iter().map(|_| 0))),
                    ("indexprs", null()),
                    ("indpred", null()),
                ])?;
            }
        }
        Ok(vec![rows.finish()?])
    }

    /// `pg_constraint`: the library's rows, then our keys and CHECKs.
    pub(super) async fn constraint_rows(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let schemas = self.schema_oids(state).await?;
        let mut rows = self
            .inner_rows_with_arrays(state, &["conkey", "confkey"])
            .await?;
        for def in self.catalog.tables() {
            let namespace = schemas.get(&def.name.schema).copied().unwrap_or(0);
            for constraint in constraints(&def) {
                let conbin = match &constraint.kind {
                    ConstraintKind::Check(sql) => text(sql.clone()),
                    _ => null(),
                };
                rows.push(vec![
                    ("oid", int4(constraint.oid)),
                    ("conname", text(constraint.name.clone())),
                    ("connamespace", int4(namespace)),
                    ("contype", text(constraint.contype())),
                    ("condeferrable", boolean(false)),
                    ("condeferred", boolean(false)),
                    ("convalidated", boolean(true)),
                    ("conrelid", int4(oid_of(&def.name))),
                    ("contypid", int4(0)),
                    ("conindid", int4(constraint.index_oid)),
                    ("conparentid", int4(0)),
                    ("confrelid", int4(0)),
                    ("confupdtype", text(" ")),
                    ("confdeltype", text(" ")),
                    ("confmatchtype", text(" ")),
                    ("conislocal", boolean(true)),
                    ("coninhcount", int2(0)),
                    ("connoinherit", boolean(false)),
                    ("conkey", int2_list(attnums(&constraint.columns))),
                    ("conbin", conbin),
                ])?;
            }
        }
        Ok(vec![rows.finish()?])
    }

    /// `pg_sequence`: one row per sequence.
    pub(super) async fn sequence_rows(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let mut out = self.inner_rows(state).await?;
        let mut rows = self.new_rows();
        for sequence in self.catalog.sequences() {
            let def = sequence.def();
            rows.push(vec![
                ("seqrelid", int4(oid_of(&def.name))),
                ("seqtypid", int4(def.data_type.oid())),
                ("seqstart", int8(def.start)),
                ("seqincrement", int8(def.increment)),
                ("seqmax", int8(def.max)),
                ("seqmin", int8(def.min)),
                ("seqcache", int8(1)),
                ("seqcycle", boolean(def.cycle)),
            ])?;
        }
        out.push(rows.finish()?);
        Ok(out)
    }

    /// `pg_depend`: the library's rows, then each sequence's dependency on
    /// the column that owns it (`deptype` 'a', as SERIAL makes).
    pub(super) async fn depend_rows(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let pg_class = relation_oid("pg_catalog", "pg_class");
        let mut out = self.inner_rows(state).await?;
        let mut rows = self.new_rows();
        for sequence in self.catalog.sequences() {
            let def = sequence.def();
            let Some((table, column)) = &def.owned_by else {
                continue;
            };
            let Some(attnum) = self
                .catalog
                .table(table)
                .and_then(|t| t.columns.iter().position(|c| &c.name == column))
            else {
                continue;
            };
            rows.push(vec![
                ("classid", int4(pg_class)),
                ("objid", int4(oid_of(&def.name))),
                ("objsubid", int4(0)),
                ("refclassid", int4(pg_class)),
                ("refobjid", int4(oid_of(table))),
                ("refobjsubid", int4(attnum as i32 + 1)),
                ("deptype", text("a")),
            ])?;
        }
        out.push(rows.finish()?);
        Ok(out)
    }

    /// `pg_indexes`: every index with its CREATE INDEX statement.
    pub(super) fn pg_indexes_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        let mut tables: Vec<std::sync::Arc<TableDef>> = self.catalog.tables();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        for def in tables {
            for index in indexes(&def) {
                rows.push(vec![
                    ("schemaname", text(def.name.schema.clone())),
                    ("tablename", text(def.name.name.clone())),
                    ("indexname", text(index.name.clone())),
                    ("tablespace", null()),
                    ("indexdef", text(index_definition(&def, &index, false))),
                ])?;
            }
        }
        Ok(vec![rows.finish()?])
    }

    /// `pg_sequences`: every sequence with its options and last value.
    pub(super) fn pg_sequences_rows(&self) -> Result<Vec<RecordBatch>> {
        let mut rows = self.new_rows();
        for sequence in self.catalog.sequences() {
            let def = sequence.def();
            rows.push(vec![
                ("schemaname", text(def.name.schema.clone())),
                ("sequencename", text(def.name.name.clone())),
                ("sequenceowner", text(OWNER_NAME)),
                ("data_type", text(def.data_type.name())),
                ("start_value", int8(def.start)),
                ("min_value", int8(def.min)),
                ("max_value", int8(def.max)),
                ("increment_by", int8(def.increment)),
                ("cycle", boolean(def.cycle)),
                ("cache_size", int8(1)),
                (
                    "last_value",
                    sequence.last_value().map(int8).unwrap_or_else(null),
                ),
            ])?;
        }
        Ok(vec![rows.finish()?])
    }
}

/// The definition `pg_get_constraintdef` gives for constraint `oid`.
pub fn constraint_definition_by_oid(
    tables: &[std::sync::Arc<TableDef>],
    oid: i32,
    pretty: bool,
) -> Option<String> {
    tables.iter().find_map(|def| {
        constraints(def)
            .into_iter()
            .find(|c| c.oid == oid)
            .map(|c| constraint_definition(def, &c, pretty))
    })
}

/// The definition `pg_get_indexdef` gives for index `oid`: the statement
/// (column 0) or the name of column `column`; the table unqualified when
/// `unqualified`.
pub fn index_definition_by_oid(
    tables: &[std::sync::Arc<TableDef>],
    oid: i32,
    column: usize,
    unqualified: impl Fn(&str) -> bool,
) -> Option<String> {
    tables.iter().find_map(|def| {
        let index = indexes(def).into_iter().find(|i| i.oid == oid)?;
        Some(if column == 0 {
            index_definition(def, &index, unqualified(&def.name.schema))
        } else {
            let c = index.columns.get(column - 1)?;
            super::pg_objects::quote_ident(&def.columns.get(*c)?.name)
        })
    })
}
