//! `INSERT … ON CONFLICT [target] DO NOTHING | DO UPDATE SET … [WHERE …]`:
//! the proposed rows that conflict on the arbiter (the primary key or a
//! unique index) are skipped or turn into updates of the rows they
//! conflict with, the rest are inserted — all in one write.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, ConflictTarget, OnConflict, OnConflictAction,
};
use runnel_planner::catalog::TableDef;
use runnel_planner::ddl::normalize_ident;
use runnel_storage::row_codec::RowDecoder;

use super::Session;
use super::dml::quote;
use crate::error::{ServerError, ServerResult};
use crate::tables::{Arbiter, Conflict, find_conflicts, upsert_rows};

/// An INSERT's ON CONFLICT clause, resolved against its table.
#[derive(Debug, Clone)]
pub struct OnConflictPlan {
    arbiter: Arbiter,
    action: UpsertAction,
    /// The name the statement gives the table (`INSERT INTO t AS x`).
    alias: String,
}

#[derive(Debug, Clone)]
enum UpsertAction {
    Nothing,
    Update {
        /// Column index and SQL of each `SET column = expr`.
        assignments: Vec<(usize, String)>,
        selection: Option<String>,
    },
}

fn no_matching_constraint() -> ServerError {
    ServerError::InvalidColumnReference(
        "there is no unique or exclusion constraint matching the ON CONFLICT specification".into(),
    )
}

/// Resolves `on` for `table` (called `alias` in the statement).
pub fn plan_on_conflict(
    table: &TableDef,
    alias: &str,
    on: &OnConflict,
) -> ServerResult<OnConflictPlan> {
    let arbiter = match &on.conflict_target {
        None => {
            match on.action {
                OnConflictAction::DoNothing => Arbiter::Any,
                OnConflictAction::DoUpdate(_) => {
                    return Err(ServerError::Plan(runnel_planner::PlanError::Syntax {
                    message: "ON CONFLICT DO UPDATE requires inference specification or constraint name".into(),
                    position: None,
                }));
                }
            }
        }
        Some(ConflictTarget::Columns(columns)) => {
            let mut wanted = vec![];
            for column in columns {
                let name = normalize_ident(column);
                let index = table
                    .column_index(&name)
                    .ok_or(ServerError::UndefinedColumn(name))?;
                wanted.push(index);
            }
            wanted.sort_unstable();
            wanted.dedup();
            let same = |columns: &[usize]| {
                let mut columns = columns.to_vec();
                columns.sort_unstable();
                columns == wanted
            };
            if !table.primary_key.is_empty() && same(&table.primary_key) {
                Arbiter::PrimaryKey
            } else {
                table
                    .indexes
                    .iter()
                    .find(|i| i.unique && same(&i.columns))
                    .map(|i| Arbiter::Index(i.id))
                    .ok_or_else(no_matching_constraint)?
            }
        }
        Some(ConflictTarget::OnConstraint(name)) => {
            let parts = runnel_planner::ddl::name_parts(name)?;
            let name = parts.last().cloned().unwrap_or_default();
            if !table.primary_key.is_empty() && name == format!("{}_pkey", table.name.name) {
                Arbiter::PrimaryKey
            } else {
                table
                    .indexes
                    .iter()
                    .find(|i| i.unique && i.name == name)
                    .map(|i| Arbiter::Index(i.id))
                    .ok_or_else(|| {
                        ServerError::UndefinedObject(format!(
                            "constraint \"{name}\" for table \"{}\" does not exist",
                            table.name.name
                        ))
                    })?
            }
        }
    };
    let action = match &on.action {
        OnConflictAction::DoNothing => UpsertAction::Nothing,
        OnConflictAction::DoUpdate(update) => {
            let mut assignments = vec![];
            for assignment in &update.assignments {
                let AssignmentTarget::ColumnName(column) = &assignment.target else {
                    return Err(ServerError::NotSupported(
                        "ON CONFLICT DO UPDATE SET (a, b) = …".into(),
                    ));
                };
                let parts = runnel_planner::ddl::name_parts(column)?;
                let name = parts.last().cloned().unwrap_or_default();
                let index = table
                    .column_index(&name)
                    .ok_or(ServerError::UndefinedColumn(name))?;
                assignments.push((index, assignment.value.to_string()));
            }
            UpsertAction::Update {
                assignments,
                selection: update.selection.as_ref().map(ToString::to_string),
            }
        }
    };
    Ok(OnConflictPlan {
        arbiter,
        action,
        alias: alias.to_string(),
    })
}

impl Session {
    /// Writes the proposed `rows` of an INSERT with ON CONFLICT `plan`;
    /// returns the count and the rows written (for RETURNING). Callers hold
    /// the database's write lock.
    pub(super) async fn upsert(
        &self,
        def: &Arc<TableDef>,
        rows: Vec<RecordBatch>,
        plan: &OnConflictPlan,
        params: &ParamValues,
    ) -> ServerResult<(u64, Vec<RecordBatch>)> {
        let schema = def.arrow_schema();
        let proposed = {
            let rows = rows.clone();
            let arbiter = plan.arbiter.clone();
            self.write_table(Arc::clone(def), move |def, db, target| {
                find_conflicts(def, &db.store, &target, &rows, &arbiter)
            })
            .await?
        };
        let all = concat_batches(&conformed_schema(&rows, &schema), &rows)?;
        let (mut inserts, mut updates, mut keys, mut existing) = (vec![], vec![], vec![], vec![]);
        for (i, conflict) in proposed.into_iter().enumerate() {
            match (conflict, &plan.action) {
                (Conflict::None, _) => inserts.push(i as u32),
                (Conflict::Repeat | Conflict::Existing(..), UpsertAction::Nothing) => {}
                (Conflict::Repeat, UpsertAction::Update { .. }) => {
                    return Err(ServerError::CardinalityViolation(
                        "ON CONFLICT DO UPDATE command cannot affect row a second time".into(),
                    ));
                }
                (Conflict::Existing(key, value), UpsertAction::Update { .. }) => {
                    updates.push(i as u32);
                    keys.push(key);
                    existing.push(value);
                }
            }
        }
        let mut positions = inserts.clone();
        let inserts = take_record_batch(&all, &UInt32Array::from(inserts))?;
        let (keys, updates) = match &plan.action {
            UpsertAction::Update {
                assignments,
                selection,
            } if !keys.is_empty() => {
                let excluded = take_record_batch(&all, &UInt32Array::from(updates.clone()))?;
                let mut decoder = RowDecoder::new(&crate::tables::all_nullable(&schema), None)?;
                for value in &existing {
                    decoder.push(value)?;
                }
                let existing = decoder.finish()?;
                let (chosen, batches) = updated_rows(
                    def,
                    &plan.alias,
                    existing,
                    excluded,
                    assignments,
                    selection.as_deref(),
                    params,
                )
                .await?;
                positions.extend(chosen.iter().map(|&n| updates[n]));
                (
                    chosen.into_iter().map(|n| keys[n].clone()).collect(),
                    batches,
                )
            }
            _ => (vec![], vec![]),
        };
        let inserts = vec![inserts];
        self.check_rows(def, &inserts)?;
        self.check_rows(def, &updates)?;
        let (count, inserts, updates) = self
            .write_table(Arc::clone(def), move |def, db, target| {
                let count = upsert_rows(
                    def,
                    &db.store,
                    &db.row_ids,
                    &inserts,
                    &keys,
                    &updates,
                    target,
                )?;
                Ok((count, inserts, updates))
            })
            .await?;
        // RETURNING answers in the order the rows were proposed.
        let written: Vec<RecordBatch> = inserts.into_iter().chain(updates).collect();
        let Some(first) = written.first() else {
            return Ok((count, written));
        };
        let written = concat_batches(&first.schema(), &written)?;
        let mut order: Vec<u32> = (0..positions.len() as u32).collect();
        order.sort_by_key(|&i| positions[i as usize]);
        Ok((
            count,
            vec![take_record_batch(&written, &UInt32Array::from(order))?],
        ))
    }
}

/// The schema of the proposed rows (their types may not be the table's
/// yet; the write brings them there).
fn conformed_schema(rows: &[RecordBatch], table: &SchemaRef) -> SchemaRef {
    rows.first()
        .map_or_else(|| Arc::clone(table), |b| b.schema())
}

/// The new versions of the conflicting rows: `existing` (under the
/// statement's name for the table) and `excluded` (the proposed rows) row
/// by row, the assignments applied, filtered by `selection`. Returns which
/// rows (positions) are updated, and their new versions.
async fn updated_rows(
    def: &TableDef,
    alias: &str,
    existing: RecordBatch,
    excluded: RecordBatch,
    assignments: &[(usize, String)],
    selection: Option<&str>,
    params: &ParamValues,
) -> ServerResult<(Vec<usize>, Vec<RecordBatch>)> {
    const ROW: &str = "__runnel_row";
    let numbered = |batch: RecordBatch| -> ServerResult<RecordBatch> {
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(ROW, DataType::UInt64, false));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(UInt64Array::from_iter_values(
            0..batch.num_rows() as u64,
        )));
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    };
    let (existing, excluded) = (numbered(existing)?, numbered(excluded)?);
    let ctx = SessionContext::new();
    let table = quote(alias);
    ctx.register_table(
        table.as_str(),
        Arc::new(MemTable::try_new(existing.schema(), vec![vec![existing]])?),
    )?;
    ctx.register_table(
        "excluded",
        Arc::new(MemTable::try_new(excluded.schema(), vec![vec![excluded]])?),
    )?;
    let items: Vec<String> = def
        .columns
        .iter()
        .enumerate()
        .map(
            |(i, c)| match assignments.iter().rev().find(|(a, _)| *a == i) {
                Some((_, sql)) => format!("({sql}) AS {}", quote(&c.name)),
                None => format!("{table}.{}", quote(&c.name)),
            },
        )
        .collect();
    let sql = format!(
        "SELECT {}, {table}.{ROW} FROM {table} JOIN excluded ON {table}.{ROW} = excluded.{ROW}{}",
        items.join(", "),
        selection.map(|s| format!(" WHERE {s}")).unwrap_or_default()
    );
    let batches = ctx
        .sql(&sql)
        .await?
        .with_param_values(params.clone())?
        .collect()
        .await?;
    let mut chosen = vec![];
    let mut rows = vec![];
    for batch in batches {
        let numbers = batch.column(def.columns.len());
        let numbers = numbers
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| ServerError::Internal("row numbers of an upsert".into()))?;
        chosen.extend(numbers.values().iter().map(|n| *n as usize));
        // The table's types, as the rows are written (and RETURNING reads
        // them).
        let mut columns = Vec::with_capacity(def.columns.len());
        for (column, array) in def.columns.iter().zip(batch.columns()) {
            let wanted = column.column_type.arrow_type();
            columns.push(
                cast(array, &wanted).map_err(|e| ServerError::DatatypeMismatch {
                    column: column.name.clone(),
                    expected: column.column_type.pg_name(),
                    found: format!("{} ({e})", array.data_type()),
                })?,
            );
        }
        rows.push(RecordBatch::try_new(
            crate::tables::all_nullable(&def.arrow_schema()),
            columns,
        )?);
    }
    Ok((chosen, rows))
}
