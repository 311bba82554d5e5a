//! ALTER TABLE: the statement's operations applied to a copy of the
//! table's definition, the rows rewritten once when a column was added
//! with a value, dropped or retyped — in one write with the new definition,
//! or inside a block as the block's pending rows.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::sql::sqlparser::ast::{
    AlterTable, AlterTableOperation, ColumnOption, RenameTableNameKind, Statement, TableConstraint,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use runnel_planner::catalog::{RelationName, TableDef};
use runnel_planner::ddl::{column_def, name_parts};
use runnel_storage::ScanSpec;

use super::alter_columns::{ColumnSources, Source};
use super::{Session, StatementResult};
use crate::catalog::plan_defaults;
use crate::error::{ServerError, ServerResult};
use crate::tables::rewrite_rows;

impl Session {
    /// Runs `steps` (one ALTER TABLE taken apart) as one transaction: in
    /// the session's block, or in a block of their own.
    async fn alter_in_steps(&mut self, steps: Vec<AlterTable>) -> ServerResult<StatementResult> {
        let implicit = !self.in_block();
        if implicit {
            self.begin(&[])?;
        }
        let mut outcome = self.before_ddl("ALTER TABLE");
        for step in &steps {
            if outcome.is_err() {
                break;
            }
            outcome = Box::pin(self.alter_table(step)).await.map(|_| ());
        }
        match outcome {
            Ok(()) if implicit => {
                self.commit().await?;
            }
            Ok(()) => {}
            Err(e) => {
                if implicit {
                    self.rollback()?;
                }
                return Err(e);
            }
        }
        Ok(StatementResult::command("ALTER TABLE", None))
    }

    pub(super) async fn alter_table(
        &mut self,
        alter: &AlterTable,
    ) -> ServerResult<StatementResult> {
        if let Some(steps) = column_constraints_apart(alter)? {
            return self.alter_in_steps(steps).await;
        }
        let name = self.resolve(&alter.name)?;
        let Some(mut def) = self.catalog().table(&name).map(|d| d.as_ref().clone()) else {
            if alter.if_exists {
                return Ok(StatementResult::command("ALTER TABLE", None));
            }
            return Err(ServerError::UndefinedTable(name.name));
        };
        match alter.operations.as_slice() {
            [
                AlterTableOperation::AddConstraint {
                    constraint: TableConstraint::Check(check),
                    ..
                },
            ] => {
                return self.add_check_constraint(&name, check).await;
            }
            [AlterTableOperation::AddConstraint { constraint, .. }] => {
                return self.add_unique_constraint(&name, constraint).await;
            }
            [
                AlterTableOperation::DropConstraint {
                    if_exists, name: c, ..
                },
            ] => {
                let constraint = runnel_planner::ddl::normalize_ident(c);
                if self.drop_check_constraint(&name, &constraint)? {
                    return Ok(StatementResult::command("ALTER TABLE", None));
                }
                return self
                    .drop_unique_constraint(&name, &constraint, *if_exists)
                    .await;
            }
            _ => {}
        }
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let mut sources = ColumnSources::new(&def);
        for operation in &alter.operations {
            match operation {
                AlterTableOperation::AddColumn {
                    if_not_exists,
                    column_def: column,
                    ..
                } => {
                    let (column, primary) = column_def(column)?;
                    if def.column_index(&column.name).is_some() {
                        if *if_not_exists {
                            continue;
                        }
                        return Err(ServerError::DuplicateColumn(column.name, name.name.clone()));
                    }
                    if primary {
                        return Err(ServerError::NotSupported(
                            "adding a PRIMARY KEY column".into(),
                        ));
                    }
                    def.columns.push(column);
                    sources.sources.push(Source::New);
                }
                AlterTableOperation::DropColumn {
                    column_names,
                    if_exists,
                    ..
                } => sources.drop_columns(&mut def, column_names, *if_exists)?,
                AlterTableOperation::AlterColumn { column_name, op } => {
                    sources.alter_column(&mut def, &name, column_name, op)?
                }
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let old = runnel_planner::ddl::normalize_ident(old_column_name);
                    let new = runnel_planner::ddl::normalize_ident(new_column_name);
                    if def.column_index(&new).is_some() {
                        return Err(ServerError::DuplicateColumn(new, name.name.clone()));
                    }
                    let index = def
                        .column_index(&old)
                        .ok_or(ServerError::UndefinedColumn(old))?;
                    def.columns[index].name = new;
                }
                AlterTableOperation::RenameTable { table_name } => {
                    let (RenameTableNameKind::As(new) | RenameTableNameKind::To(new)) = table_name;
                    let parts = name_parts(new)?;
                    let new_name = parts.last().cloned().unwrap_or_default();
                    def.name = RelationName::new(name.schema.clone(), new_name);
                }
                other => {
                    return Err(ServerError::NotSupported(format!("ALTER TABLE … {other}")));
                }
            }
        }
        plan_defaults(&def, &self.ctx.state())?;
        if !sources.touched.is_empty() {
            let views: Vec<String> = self
                .catalog()
                .dependent_views(&name)
                .into_iter()
                .filter(|v| super::alter_columns::view_reads(&v.sql, &sources.touched))
                .map(|v| v.name.to_string())
                .collect();
            if !views.is_empty() {
                return Err(ServerError::DependentObjects {
                    what: format!("a column of {name}"),
                    dependants: views.join(", "),
                });
            }
        }
        let old = self.catalog().table(&name);
        let rewrite = self.rows_to_rewrite(old.as_deref(), &def, &sources).await?;
        let mut writes = runnel_storage::WriteSet::new();
        for index in &sources.dropped_indexes {
            writes.delete_all_rows(*index);
        }
        if self.in_block() {
            // The rows stay the block's pending rows, under the new
            // definition, and are written at COMMIT.
            let id = def.id;
            self.catalog().replace_table(&name, def, writes)?;
            return self.retarget_pending(id, &sources.dropped_indexes, rewrite);
        }
        if let Some((_, batches)) = rewrite {
            // The new definition and the rewritten rows land in one write.
            rewrite_rows(
                &def,
                &self.db.store,
                &self.db.row_ids,
                &batches,
                &mut writes,
            )?;
        }
        self.catalog().replace_table(&name, def, writes)?;
        Ok(StatementResult::command("ALTER TABLE", None))
    }

    /// After ALTER TABLE in a block: the block's pending rows of table
    /// `id` take its new definition, forget the entries of the `dropped`
    /// indexes, and `rewrite` (old keys, new rows) replaces every row.
    pub(super) fn retarget_pending(
        &self,
        id: u64,
        dropped: &[u64],
        rewrite: Option<(Vec<Vec<u8>>, Vec<RecordBatch>)>,
    ) -> ServerResult<StatementResult> {
        let def = self
            .catalog()
            .table_by_id(id)
            .ok_or_else(|| ServerError::Internal(format!("altered table {id} vanished")))?;
        let mut guard = self.block_writes.lock();
        let pending = guard.get_or_insert_with(Default::default);
        let table = pending.table_mut(&def);
        table.def = Arc::clone(&def);
        for index in dropped {
            table.indexes.forget(*index);
        }
        if let Some((old_keys, batches)) = rewrite {
            crate::tables::rewrite_into_block(
                &def,
                &self.db.store,
                &self.db.row_ids,
                &old_keys,
                &batches,
                table,
            )?;
        }
        Ok(StatementResult::command("ALTER TABLE", None))
    }

    /// The table's rows as this session sees them (with its block's
    /// pending rows), their keys and the rows as the altered table holds
    /// them; None when existing rows need no change (a new nullable column
    /// without a default reads as null).
    async fn rows_to_rewrite(
        &self,
        old: Option<&TableDef>,
        new: &TableDef,
        sources: &ColumnSources,
    ) -> ServerResult<Option<(Vec<Vec<u8>>, Vec<RecordBatch>)>> {
        let Some(old) = old else { return Ok(None) };
        let added = |i: usize| sources.sources[i] == Source::New;
        let fills = new
            .columns
            .iter()
            .enumerate()
            .any(|(i, c)| added(i) && (c.not_null || c.default.is_some()));
        if !sources.rewrite && !fills {
            return Ok(None);
        }
        let (keys, old_batches) = self.rows_as_seen(old).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let mut values: Vec<Option<datafusion::scalar::ScalarValue>> =
            vec![None; new.columns.len()];
        for (index, column) in new.columns.iter().enumerate() {
            let (true, Some(sql)) = (added(index), &column.default) else {
                continue;
            };
            let frame = self.ctx.sql(&format!("SELECT {sql}")).await?;
            let batches = frame.collect().await?;
            let array = batches
                .first()
                .map(|b| Arc::clone(b.column(0)))
                .ok_or_else(|| ServerError::Internal("default produced no value".into()))?;
            let array = cast(&array, &column.column_type.arrow_type())?;
            values[index] = Some(datafusion::scalar::ScalarValue::try_from_array(&array, 0)?);
        }
        let schema = crate::tables::all_nullable(&new.arrow_schema());
        let strict = datafusion::arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut out = vec![];
        for batch in old_batches {
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(new.columns.len());
            for (index, column) in new.columns.iter().enumerate() {
                let wanted = column.column_type.arrow_type();
                columns.push(match (sources.sources[index], &values[index]) {
                    (Source::Old(from), _) => datafusion::arrow::compute::cast_with_options(
                        batch.column(from),
                        &wanted,
                        &strict,
                    )
                    .map_err(|e| {
                        ServerError::InvalidParameter(format!(
                            "column \"{}\" cannot become {}: {e}",
                            column.name,
                            column.column_type.pg_name()
                        ))
                    })?,
                    (Source::New, Some(v)) => v.to_array_of_size(batch.num_rows())?,
                    (Source::New, None) => new_null_array(&wanted, batch.num_rows()),
                });
            }
            out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        }
        Ok(Some((keys, out)))
    }

    /// Every row of `table` (keys and rows) as this session sees it: the
    /// committed rows, with its block's pending rows over them.
    pub(super) async fn rows_as_seen(
        &self,
        table: &TableDef,
    ) -> ServerResult<(Vec<Vec<u8>>, Vec<RecordBatch>)> {
        let schema = table.arrow_schema();
        let spec = ScanSpec {
            table_schema: Arc::clone(&schema),
            projection: None,
            batch_size: 4096,
            limit: None,
        };
        let store = self.db.store.table(table.id);
        let catalog = Arc::clone(self.catalog());
        let table_id = table.id;
        let pending = self.block_writes.table(table.id);
        tokio::task::spawn_blocking(move || {
            // Inside a block the rows are written at COMMIT: it checks they
            // did not change meanwhile.
            catalog.note_rewrite(table_id)?;
            let replaced = |key: &[u8]| pending.as_ref().is_some_and(|p| p.rows.contains_key(key));
            let (mut keys, mut batches) = (vec![], vec![]);
            store.scan_skipping(
                &spec,
                || {},
                replaced,
                |batch_keys, batch| {
                    keys.extend(batch_keys);
                    batches.push(batch);
                    true
                },
            )?;
            if let Some(pending) = &pending {
                let mut decoder = runnel_storage::row_codec::RowDecoder::new(&schema, None)?;
                for (key, value) in &pending.rows {
                    if let Some(value) = value {
                        decoder.push(value)?;
                        keys.push(key.clone());
                    }
                }
                if !decoder.is_empty() {
                    batches.push(decoder.finish()?);
                }
            }
            Ok::<_, ServerError>((keys, batches))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
    }
}

/// `ALTER TABLE t ADD COLUMN c … UNIQUE | CHECK (…)` taken apart into the
/// column without them and one `ADD CONSTRAINT` each, as Postgres adds
/// them (named `t_c_key` / `t_c_check` unless named); None when no added
/// column declares such a constraint.
fn column_constraints_apart(alter: &AlterTable) -> ServerResult<Option<Vec<AlterTable>>> {
    let mut first = alter.clone();
    let mut constraints = vec![];
    for operation in &mut first.operations {
        let AlterTableOperation::AddColumn { column_def, .. } = operation else {
            continue;
        };
        let column = &column_def.name;
        column_def.options.retain(|option| {
            let name = option
                .name
                .as_ref()
                .map(|n| format!("CONSTRAINT {n} "))
                .unwrap_or_default();
            match &option.option {
                ColumnOption::Unique(unique) if unique.columns.is_empty() => {
                    constraints.push(format!("{name}UNIQUE ({column})"));
                    false
                }
                ColumnOption::Check(check) => {
                    let name = match (&option.name, &check.name) {
                        (None, Some(n)) => format!("CONSTRAINT {n} "),
                        _ => name,
                    };
                    constraints.push(format!("{name}CHECK ({})", check.expr));
                    false
                }
                _ => true,
            }
        });
    }
    if constraints.is_empty() {
        return Ok(None);
    }
    let mut steps = vec![first];
    for constraint in constraints {
        let sql = format!("ALTER TABLE {} ADD {constraint}", alter.name);
        match Parser::parse_sql(&PostgreSqlDialect {}, &sql)
            .map_err(|e| ServerError::Internal(format!("{sql}: {e}")))?
            .pop()
        {
            Some(Statement::AlterTable(step)) => steps.push(step),
            _ => {
                return Err(ServerError::Internal(format!(
                    "{sql} is not an ALTER TABLE"
                )));
            }
        }
    }
    Ok(Some(steps))
}
