//! `CREATE [UNIQUE] INDEX`, `DROP INDEX`, and `ALTER TABLE … ADD
//! CONSTRAINT … UNIQUE` / `DROP CONSTRAINT`: secondary indexes whose
//! entries the store keeps with the rows (see `tables::indexes`). They
//! enforce uniqueness; queries do not use them for lookups yet.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{CreateIndex, ObjectName, TableConstraint};
use runnel_planner::catalog::{IndexDef, RelationName, TableDef, default_index_name};
use runnel_planner::ddl::{index_columns, name_parts, normalize_ident};
use runnel_storage::WriteSet;

use super::{Session, StatementResult};
use crate::error::{ServerError, ServerResult};

impl Session {
    /// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] [name] ON table (columns)`.
    pub(super) async fn create_index(
        &mut self,
        create: &CreateIndex,
    ) -> ServerResult<StatementResult> {
        let mut result = StatementResult::command("CREATE INDEX", None);
        if let Some(using) = &create.using
            && !using.to_string().eq_ignore_ascii_case("btree")
        {
            return Err(ServerError::NotSupported(format!("indexes USING {using}")));
        }
        if !create.include.is_empty() || create.predicate.is_some() || !create.with.is_empty() {
            return Err(ServerError::NotSupported(
                "INCLUDE, WITH (…) and partial (WHERE) indexes".into(),
            ));
        }
        if create.nulls_distinct == Some(false) {
            return Err(ServerError::NotSupported("NULLS NOT DISTINCT".into()));
        }
        let table = self.resolve(&create.table_name)?;
        let def = self.indexable_table(&table)?;
        let columns = index_columns(&def.columns, &create.columns)?;
        let name = match &create.name {
            Some(name) => self.index_name_in(name, &table)?,
            None => self.free_index_name(&def, &columns, "idx"),
        };
        if self.catalog().relation(&name).is_some()
            || self.catalog().sequence(&name).is_some()
            || self.catalog().index(&name).is_some()
        {
            if create.if_not_exists {
                result.notices.push((
                    "NOTICE",
                    format!("relation \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        let index = IndexDef {
            id: self.catalog().new_index_id()?,
            name: name.name,
            columns,
            unique: create.unique,
            constraint: false,
        };
        self.add_index(&table, index).await?;
        Ok(result)
    }

    /// `ALTER TABLE t ADD [CONSTRAINT name] UNIQUE (columns)`.
    pub(super) async fn add_unique_constraint(
        &mut self,
        table: &RelationName,
        constraint: &TableConstraint,
    ) -> ServerResult<StatementResult> {
        let TableConstraint::Unique(unique) = constraint else {
            return Err(ServerError::NotSupported(format!(
                "ALTER TABLE … ADD {constraint} (UNIQUE constraints can be added)"
            )));
        };
        let def = self.indexable_table(table)?;
        let columns = index_columns(&def.columns, &unique.columns)?;
        let name = match &unique.name {
            Some(name) => RelationName::new(&table.schema, normalize_ident(name)),
            None => self.free_index_name(&def, &columns, "key"),
        };
        self.catalog().check_name_free(&name)?;
        let index = IndexDef {
            id: self.catalog().new_index_id()?,
            name: name.name,
            columns,
            unique: true,
            constraint: true,
        };
        self.add_index(table, index).await?;
        Ok(StatementResult::command("ALTER TABLE", None))
    }

    /// The stored table `name`, which indexes can be made on.
    fn indexable_table(&self, name: &RelationName) -> ServerResult<Arc<TableDef>> {
        let def = self
            .catalog()
            .table(name)
            .ok_or_else(|| ServerError::UndefinedTable(name.name.clone()))?;
        if def.connector.is_some() {
            return Err(ServerError::NotSupported(format!(
                "an index on source {name} (a source stores no rows)"
            )));
        }
        Ok(def)
    }

    /// An index name given as `name` or `schema.name`: the table's schema.
    fn index_name_in(&self, name: &ObjectName, table: &RelationName) -> ServerResult<RelationName> {
        let parts = name_parts(name)?;
        match parts.as_slice() {
            [name] => Ok(RelationName::new(&table.schema, name)),
            [schema, name] if *schema == table.schema => Ok(RelationName::new(schema, name)),
            _ => Err(ServerError::InvalidObjectDefinition(format!(
                "index {name} must be in the schema of its table, {}",
                table.schema
            ))),
        }
    }

    /// Postgres's name for an unnamed index: `table_columns_suffix`, with a
    /// number appended until it is free.
    fn free_index_name(&self, def: &TableDef, columns: &[usize], suffix: &str) -> RelationName {
        let names: Vec<&str> = columns
            .iter()
            .map(|&c| def.columns[c].name.as_str())
            .collect();
        let base = default_index_name(&def.name.name, &names, suffix);
        let taken = |n: &RelationName| {
            self.catalog().relation(n).is_some()
                || self.catalog().index(n).is_some()
                || self.catalog().sequence(n).is_some()
        };
        let mut name = RelationName::new(&def.name.schema, &base);
        let mut n = 1;
        while taken(&name) {
            name.name = format!("{base}{n}");
            n += 1;
        }
        name
    }

    /// Adds `index` to table `table`, its entries built from the rows.
    async fn add_index(&mut self, table: &RelationName, index: IndexDef) -> ServerResult<()> {
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let def = self.indexable_table(table)?;
        if self
            .block_writes
            .table(def.id)
            .is_some_and(|p| !p.rows.is_empty())
        {
            // The block changed the rows: the entries come from its view
            // of them, rebuilt with the block's pending rows.
            let (keys, batches) = self.rows_as_seen(&def).await?;
            self.catalog().note_rewrite(def.id)?;
            let mut new = def.as_ref().clone();
            new.indexes.push(index);
            self.catalog()
                .replace_table(&def.name, new, WriteSet::new())?;
            self.retarget_pending(def.id, &[], Some((keys, batches)))?;
            return Ok(());
        }
        let store = db.store.clone();
        let catalog = Arc::clone(self.catalog());
        let table_id = def.id;
        tokio::task::spawn_blocking(move || {
            // Inside a block the entries are written at COMMIT: it checks
            // the rows did not change meanwhile.
            catalog.note_rewrite(table_id)?;
            let rows = store.table(table_id).raw_rows()?;
            let rows: Vec<(&[u8], &[u8])> = rows
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            let mut writes = WriteSet::new();
            crate::tables::build_index(&def, &index, &rows, &mut writes)?;
            let mut new = def.as_ref().clone();
            new.indexes.push(index);
            catalog.replace_table(&def.name, new, writes)
        })
        .await
        .map_err(|e| ServerError::Internal(format!("index build failed: {e}")))??;
        self.retarget_pending_def(table_id, None);
        Ok(())
    }

    /// After an index of table `table_id` came or went: the block's
    /// pending rows of it take the table's new definition (and forget the
    /// entries of `dropped`).
    pub(super) fn retarget_pending_def(&self, table_id: u64, dropped: Option<u64>) {
        let new_def = self.catalog().table_by_id(table_id);
        if let Some(pending) = self.block_writes.lock().as_mut()
            && let Some(new_def) = new_def
            && pending.table(table_id).is_some()
        {
            let pending = pending.table_mut(&new_def);
            pending.def = new_def;
            if let Some(index) = dropped {
                pending.indexes.forget(index);
            }
        }
    }

    /// `DROP INDEX [IF EXISTS] names`.
    pub(super) async fn drop_indexes(
        &mut self,
        names: &[ObjectName],
        if_exists: bool,
    ) -> ServerResult<StatementResult> {
        let mut result = StatementResult::command("DROP INDEX", None);
        for name in names {
            let name = self.resolve(name)?;
            let Some((table, index)) = self.catalog().index(&name) else {
                if !if_exists {
                    return Err(ServerError::UndefinedObject(format!(
                        "index \"{}\" does not exist",
                        name.name
                    )));
                }
                result.notices.push((
                    "NOTICE",
                    format!("index \"{}\" does not exist, skipping", name.name),
                ));
                continue;
            };
            if index.constraint {
                return Err(ServerError::DependentObjects {
                    what: format!("index {}", index.name),
                    dependants: format!(
                        "constraint {} on table {} (drop the constraint: ALTER TABLE {} DROP CONSTRAINT {})",
                        index.name, table.name.name, table.name.name, index.name
                    ),
                });
            }
            self.remove_index(&table, &index).await?;
        }
        Ok(result)
    }

    /// `ALTER TABLE t DROP CONSTRAINT [IF EXISTS] name` of a UNIQUE
    /// constraint.
    pub(super) async fn drop_unique_constraint(
        &mut self,
        table: &RelationName,
        name: &str,
        if_exists: bool,
    ) -> ServerResult<StatementResult> {
        let mut result = StatementResult::command("ALTER TABLE", None);
        let def = self.indexable_table(table)?;
        let Some(index) = def
            .indexes
            .iter()
            .find(|i| i.constraint && i.name == name)
            .cloned()
        else {
            if !if_exists {
                return Err(ServerError::UndefinedObject(format!(
                    "constraint \"{name}\" of relation \"{}\" does not exist",
                    table.name
                )));
            }
            result.notices.push((
                "NOTICE",
                format!(
                    "constraint \"{name}\" of relation \"{}\" does not exist, skipping",
                    table.name
                ),
            ));
            return Ok(result);
        };
        self.remove_index(&def, &index).await?;
        Ok(result)
    }

    async fn remove_index(&mut self, table: &TableDef, index: &IndexDef) -> ServerResult<()> {
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let mut def = table.clone();
        def.indexes.retain(|i| i.id != index.id);
        let mut writes = WriteSet::new();
        writes.delete_all_rows(index.id);
        self.catalog().replace_table(&table.name, def, writes)?;
        self.retarget_pending_def(table.id, Some(index.id));
        Ok(())
    }
}
