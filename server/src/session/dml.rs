//! INSERT, UPDATE and DELETE.
//!
//! Each is planned as a query producing the rows to write: DataFusion's own
//! INSERT planning supplies the rows with defaults and casts; UPDATE and
//! DELETE read the table through its row-key alias (`__runnel_dml__t`), so
//! the query also says which stored rows to replace or remove. The rows are
//! then checked and written in one atomic write under the database's write
//! lock. RETURNING is evaluated over the written (or removed) rows.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, Delete, Expr, FromTable, Insert, SelectItem, TableFactor, TableObject,
    TableWithJoins, Update, UpdateTableFromKind,
};
use runnel_planner::catalog::TableDef;
use runnel_planner::ddl::normalize_ident;
use runnel_planner::parser::parse_sql;
use runnel_planner::types::ColumnType;

use super::{Outcome, Session, StatementResult};
use crate::catalog::{DML_PREFIX, ROW_KEY_COLUMN, Relation};
use crate::database::Database;
use crate::error::{ServerError, ServerResult};
use crate::tables::{WriteTarget, delete_rows, insert_rows, update_rows};

/// Which change a DML statement makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    Insert,
    Update,
    Delete,
}

/// RETURNING: the select list and the schema it produces.
#[derive(Debug, Clone)]
pub struct Returning {
    items: String,
    /// The name the rows go by: the statement's alias or the table's name.
    relation: String,
    pub schema: SchemaRef,
}

/// A planned INSERT, UPDATE or DELETE.
#[derive(Debug)]
pub struct DmlPlan {
    kind: DmlKind,
    table: Arc<TableDef>,
    /// The rows to write; for UPDATE and DELETE the last column is the
    /// stored row key.
    pub source: LogicalPlan,
    pub returning: Option<Returning>,
    /// INSERT's ON CONFLICT clause.
    on_conflict: Option<super::upsert::OnConflictPlan>,
}

/// `ident` as a quoted identifier.
pub(super) fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn select_list(items: &[SelectItem]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQL type a value is cast to before it is stored in a column of
/// `column_type` (varchar lengths are checked at write time instead).
fn cast_type(column_type: &ColumnType) -> String {
    match column_type {
        ColumnType::Varchar { .. } => "text".into(),
        other => other.pg_name(),
    }
}

impl Session {
    fn target_table(
        &self,
        name: &datafusion::sql::sqlparser::ast::ObjectName,
    ) -> ServerResult<Arc<TableDef>> {
        let relation = self.resolve(name)?;
        match self.catalog().relation(&relation) {
            Some(Relation::Table(def)) if def.connector.is_some() => {
                Err(ServerError::WrongObjectType(format!(
                    "cannot change rows of source \"{}\": its connector makes them",
                    relation.name
                )))
            }
            Some(Relation::Table(def)) => Ok(def),
            Some(Relation::View(_)) => Err(ServerError::WrongObjectType(format!(
                "cannot change rows of view \"{}\"",
                relation.name
            ))),
            None => Err(ServerError::UndefinedTable(relation.name)),
        }
    }

    async fn returning(
        &self,
        table: &TableDef,
        alias: Option<&str>,
        items: Option<Vec<SelectItem>>,
    ) -> ServerResult<Option<Returning>> {
        let Some(items) = items else { return Ok(None) };
        let returning = Returning {
            items: select_list(&items),
            relation: alias.unwrap_or(&table.name.name).to_string(),
            schema: table.arrow_schema(),
        };
        let frame = returning_frame(table, &returning, vec![]).await?;
        Ok(Some(Returning {
            schema: Arc::clone(frame.schema().inner()),
            ..returning
        }))
    }

    pub(super) async fn prepare_insert(&mut self, mut insert: Insert) -> ServerResult<DmlPlan> {
        let TableObject::TableName(name) = &insert.table else {
            return Err(ServerError::NotSupported(
                "INSERT INTO TABLE FUNCTION".into(),
            ));
        };
        let table = self.target_table(name)?;
        let alias = insert
            .table_alias
            .as_ref()
            .map(|a| normalize_ident(&a.alias))
            .unwrap_or_else(|| table.name.name.clone());
        let on_conflict = match insert.on.take() {
            None => None,
            Some(datafusion::sql::sqlparser::ast::OnInsert::OnConflict(on)) => {
                Some(super::upsert::plan_on_conflict(&table, &alias, &on)?)
            }
            Some(other) => return Err(ServerError::NotSupported(format!("INSERT … {other}"))),
        };
        insert.table_alias = None;
        fill_omitted_columns(&mut insert, &table);
        let returning = insert.returning.take();
        let input = match insert.source.take() {
            Some(source)
                if !matches!(
                    source.body.as_ref(),
                    datafusion::sql::sqlparser::ast::SetExpr::Values(_)
                ) =>
            {
                self.insert_source(&table, &insert.columns, *source).await?
            }
            source => {
                insert.source = source;
                let plan = self
                    .plan(datafusion::sql::sqlparser::ast::Statement::Insert(insert))
                    .await?;
                let LogicalPlan::Dml(DmlStatement {
                    op: WriteOp::Insert(_),
                    input,
                    ..
                }) = plan
                else {
                    return Err(ServerError::Internal(
                        "INSERT did not plan as an insert".into(),
                    ));
                };
                Arc::unwrap_or_clone(input)
            }
        };
        let returning = self.returning(&table, Some(&alias), returning).await?;
        Ok(DmlPlan {
            kind: DmlKind::Insert,
            table,
            source: self.with_session_sequences(input)?,
            returning,
            on_conflict,
        })
    }

    /// A column's `DEFAULT nextval(…)` was planned with the catalog's
    /// functions; this session's own make `currval` see what it got.
    fn with_session_sequences(&self, plan: LogicalPlan) -> ServerResult<LogicalPlan> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::Expr;
        use datafusion::logical_expr::expr::ScalarFunction;
        let plan = plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|expr| match expr {
                    Expr::ScalarFunction(f)
                        if matches!(f.name(), "nextval" | "currval" | "setval") =>
                    {
                        let own =
                            datafusion::execution::FunctionRegistry::udf(&self.ctx, f.name())?;
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            ScalarFunction::new_udf(own, f.args),
                        )))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?;
        Ok(plan.data)
    }

    /// `FROM "schema"."__runnel_dml__t" AS alias`.
    fn keyed_from(&self, table: &TableDef, alias: Option<String>) -> String {
        format!(
            "{}.{} AS {}",
            quote(&table.name.schema),
            quote(&format!("{DML_PREFIX}{}", table.name.name)),
            quote(&alias.unwrap_or_else(|| table.name.name.clone()))
        )
    }

    async fn plan_select_text(&mut self, sql: &str) -> ServerResult<LogicalPlan> {
        let mut statements = parse_sql(sql)?;
        let statement = statements
            .pop()
            .ok_or_else(|| ServerError::Internal("empty rewritten statement".into()))?;
        self.plan(statement).await
    }

    pub(super) async fn prepare_update(&mut self, mut update: Update) -> ServerResult<DmlPlan> {
        if !update.table.joins.is_empty() {
            return Err(ServerError::NotSupported("UPDATE of a join".into()));
        }
        let TableFactor::Table { name, alias, .. } = &update.table.relation else {
            return Err(ServerError::NotSupported(
                "UPDATE of this kind of relation".into(),
            ));
        };
        let table = self.target_table(name)?;
        refuse_changes_behind_watermark(&table, "UPDATE")?;
        let alias_name = alias.as_ref().map(|a| normalize_ident(&a.name));
        let qualifier = quote(alias_name.as_deref().unwrap_or(&table.name.name));
        let mut new_values: Vec<Option<String>> = vec![None; table.columns.len()];
        for assignment in &update.assignments {
            let AssignmentTarget::ColumnName(column) = &assignment.target else {
                return Err(ServerError::NotSupported("UPDATE … SET (a, b) = …".into()));
            };
            let parts = runnel_planner::ddl::name_parts(column)?;
            let column_name = parts.last().cloned().unwrap_or_default();
            let index = table
                .column_index(&column_name)
                .ok_or_else(|| ServerError::UndefinedColumn(column_name.clone()))?;
            if new_values[index].is_some() {
                return Err(ServerError::Plan(
                    runnel_planner::PlanError::DuplicateColumn(column_name),
                ));
            }
            new_values[index] = Some(format!(
                "CAST(({}) AS {})",
                assignment.value,
                cast_type(&table.columns[index].column_type)
            ));
        }
        let mut select: Vec<String> = table
            .columns
            .iter()
            .zip(&new_values)
            .map(|(column, value)| {
                let value = value
                    .clone()
                    .unwrap_or_else(|| format!("{qualifier}.{}", quote(&column.name)));
                format!("{value} AS {}", quote(&column.name))
            })
            .collect();
        select.push(format!("{qualifier}.{}", quote(ROW_KEY_COLUMN)));
        let extra_from = match &update.from {
            Some(UpdateTableFromKind::BeforeSet(t) | UpdateTableFromKind::AfterSet(t)) => {
                t.as_slice()
            }
            None => &[],
        };
        let selection = update.selection.take();
        let returning = update.returning.take();
        self.keyed_dml(
            DmlKind::Update,
            table,
            alias_name,
            select,
            extra_from,
            selection,
            returning,
        )
        .await
    }

    pub(super) async fn prepare_delete(&mut self, mut delete: Delete) -> ServerResult<DmlPlan> {
        let from = match &delete.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
        };
        let [target] = from.as_slice() else {
            return Err(ServerError::NotSupported(
                "DELETE from several tables".into(),
            ));
        };
        let TableFactor::Table { name, alias, .. } = &target.relation else {
            return Err(ServerError::NotSupported(
                "DELETE from this kind of relation".into(),
            ));
        };
        if !target.joins.is_empty() {
            return Err(ServerError::NotSupported("DELETE from a join".into()));
        }
        let table = self.target_table(name)?;
        refuse_changes_behind_watermark(&table, "DELETE")?;
        let alias_name = alias.as_ref().map(|a| normalize_ident(&a.name));
        let qualifier = quote(alias_name.as_deref().unwrap_or(&table.name.name));
        let mut select: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("{qualifier}.{}", quote(&c.name)))
            .collect();
        select.push(format!("{qualifier}.{}", quote(ROW_KEY_COLUMN)));
        let extra_from = delete.using.clone().unwrap_or_default();
        let selection = delete.selection.take();
        let returning = delete.returning.take();
        self.keyed_dml(
            DmlKind::Delete,
            table,
            alias_name,
            select,
            &extra_from,
            selection,
            returning,
        )
        .await
    }

    /// Plans `SELECT <select> FROM <table with row keys> [, extra] [WHERE
    /// selection]` as the source of an UPDATE or DELETE.
    #[allow(clippy::too_many_arguments)]
    async fn keyed_dml(
        &mut self,
        kind: DmlKind,
        table: Arc<TableDef>,
        alias: Option<String>,
        select: Vec<String>,
        extra_from: &[TableWithJoins],
        selection: Option<Expr>,
        returning: Option<Vec<SelectItem>>,
    ) -> ServerResult<DmlPlan> {
        let mut sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            self.keyed_from(&table, alias.clone())
        );
        for t in extra_from {
            sql.push_str(&format!(", {t}"));
        }
        if let Some(selection) = selection {
            sql.push_str(&format!(" WHERE {selection}"));
        }
        let source = self.plan_select_text(&sql).await?;
        let returning = self.returning(&table, alias.as_deref(), returning).await?;
        Ok(DmlPlan {
            kind,
            table,
            source,
            returning,
            on_conflict: None,
        })
    }

    pub(super) async fn execute_dml(
        &mut self,
        dml: &DmlPlan,
        params: &ParamValues,
    ) -> ServerResult<StatementResult> {
        let tag = match dml.kind {
            DmlKind::Insert => "INSERT 0",
            DmlKind::Update => "UPDATE",
            DmlKind::Delete => "DELETE",
        };
        self.check_writable(tag.split(' ').next().unwrap_or(tag))?;
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        // The table may have been dropped or altered since the statement
        // was prepared.
        let current = self.catalog().table(&dml.table.name);
        if current.as_deref() != Some(dml.table.as_ref()) {
            return Err(ServerError::StalePlan(format!("table {}", dml.table.name)));
        }
        let plan = dml.source.clone().replace_params_with_values(params)?;
        let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
        let def = dml.table.as_ref();
        let columns = def.columns.len();
        let (rows, keys) = match dml.kind {
            DmlKind::Insert => (batches, vec![]),
            DmlKind::Update | DmlKind::Delete => split_keys(&batches, columns)?,
        };
        if let Some(on_conflict) = &dml.on_conflict {
            let (count, rows) = self.upsert(&dml.table, rows, on_conflict, params).await?;
            return self.dml_result(dml, tag, count, rows).await;
        }
        if dml.kind != DmlKind::Delete {
            self.check_rows(def, &rows)?;
        }
        // Key lookups and the (fsynced) write block: keep them off the
        // async workers.
        let kind = dml.kind;
        let (count, rows) = self
            .write_table(Arc::clone(&dml.table), move |def, db, target| {
                let (store, row_ids) = (&db.store, &db.row_ids);
                let count = match kind {
                    DmlKind::Insert => insert_rows(def, store, row_ids, &rows, target)?,
                    DmlKind::Update => update_rows(def, store, &keys, &rows, target)?,
                    DmlKind::Delete => delete_rows(def, store, &keys, target)?,
                };
                Ok((count, rows))
            })
            .await?;
        self.dml_result(dml, tag, count, rows).await
    }

    /// The answer of a DML statement that wrote `count` rows (`rows`, for
    /// RETURNING).
    async fn dml_result(
        &self,
        dml: &DmlPlan,
        tag: &str,
        count: u64,
        rows: Vec<RecordBatch>,
    ) -> ServerResult<StatementResult> {
        let def = dml.table.as_ref();
        match &dml.returning {
            None => Ok(StatementResult::command(tag, Some(count))),
            Some(returning) => {
                let frame = returning_frame(def, returning, rows).await?;
                let batches = frame.collect().await?;
                let schema = Arc::clone(&returning.schema);
                let stream = futures::stream::iter(batches.into_iter().map(Ok));
                Ok(Outcome::Rows {
                    schema: Arc::clone(&schema),
                    stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
                    tag: tag.to_string(),
                }
                .into())
            }
        }
    }
}

impl Session {
    /// Runs `write` on a blocking thread with where table `def`'s rows go:
    /// the block's pending rows inside BEGIN … COMMIT, else the store and
    /// the table's change log. Callers hold the database's write lock: a
    /// job starting to read the table takes it too, so no change slips
    /// past its snapshot.
    pub(super) async fn write_table<R: Send + 'static>(
        &self,
        def: Arc<TableDef>,
        write: impl FnOnce(&TableDef, &Database, WriteTarget<'_>) -> ServerResult<R> + Send + 'static,
    ) -> ServerResult<R> {
        let block = self.in_block().then(|| Arc::clone(&self.block_writes));
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let log = db.runtime.logs().table_log(def.id);
            let mut pending = block.as_ref().map(|b| b.lock());
            let target = match pending.as_mut().and_then(|p| p.as_mut()) {
                Some(pending) => WriteTarget::Block(pending.table_mut(&def)),
                None => WriteTarget::Store(log.as_deref()),
            };
            write(&def, &db, target)
        })
        .await
        .map_err(|e| ServerError::Internal(format!("write task failed: {e}")))?
    }
}

/// `INSERT INTO t VALUES (1, 'a')` into a wider table names the leading
/// columns, so the rest take their defaults, as in Postgres.
fn fill_omitted_columns(insert: &mut Insert, table: &TableDef) {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName, SetExpr};
    if !insert.columns.is_empty() {
        return;
    }
    let Some(source) = &insert.source else { return };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return;
    };
    let widest = values
        .rows
        .iter()
        .map(|r| r.content.len())
        .max()
        .unwrap_or(0);
    if widest == 0 || widest >= table.columns.len() {
        return;
    }
    insert.columns = table.columns[..widest]
        .iter()
        .map(|c| ObjectName::from(vec![Ident::with_quote('"', c.name.clone())]))
        .collect();
}

/// Splits the row key column off the end of each batch.
fn split_keys(
    batches: &[RecordBatch],
    columns: usize,
) -> ServerResult<(Vec<RecordBatch>, Vec<Vec<u8>>)> {
    let mut rows = Vec::with_capacity(batches.len());
    let mut keys = Vec::new();
    for batch in batches {
        let key_column = batch
            .columns()
            .get(columns)
            .ok_or_else(|| ServerError::Internal("row key column missing".into()))?;
        let key_array = key_column.as_binary::<i32>();
        keys.extend((0..key_array.len()).map(|i| key_array.value(i).to_vec()));
        rows.push(batch.project(&(0..columns).collect::<Vec<_>>())?);
    }
    Ok((rows, keys))
}

/// `SELECT items FROM <rows>`, with the rows under the statement's name for
/// the table.
async fn returning_frame(
    table: &TableDef,
    returning: &Returning,
    rows: Vec<RecordBatch>,
) -> ServerResult<datafusion::dataframe::DataFrame> {
    let schema = table.arrow_schema();
    let rows = rows
        .into_iter()
        .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = SessionContext::new();
    let relation = quote(&returning.relation);
    ctx.register_table(
        relation.as_str(),
        Arc::new(MemTable::try_new(schema, vec![rows])?),
    )?;
    Ok(ctx
        .sql(&format!("SELECT {} FROM {relation}", returning.items))
        .await?)
}

/// A table with a watermark only takes inserts: windows close as its event
/// time moves on, and a change to a closed window could not be applied.
fn refuse_changes_behind_watermark(table: &TableDef, statement: &str) -> ServerResult<()> {
    match &table.watermark {
        Some(w) => Err(ServerError::NotSupported(format!(
            "{statement} of {}, which declares WATERMARK FOR {} and so only takes INSERT",
            table.name, w.column
        ))),
        None => Ok(()),
    }
}
