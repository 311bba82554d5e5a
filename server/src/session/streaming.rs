//! Statements about materialized views and their jobs: CREATE (and
//! EXPLAIN CREATE) MATERIALIZED VIEW, FLUSH, SHOW MATERIALIZED VIEWS and
//! SHOW JOBS.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{CreateView, Statement};
use runnel_engine::runtime::{JobSpec, JobState};
use runnel_planner::PlanError;
use runnel_planner::catalog::{ColumnDef, MaterializedDef, RelationName, ViewDef, WatermarkDef};
use runnel_planner::parser::WatermarkClause;
use runnel_planner::stream::PlannedView;
use runnel_planner::types::ColumnType;

use super::utility::rows_result_tagged;
use super::{Session, StatementResult};
use crate::catalog::RelationKind;
use crate::error::{ServerError, ServerResult};
use crate::streaming::{MaterializeOptions, plan_materialized};

/// Columns of `SHOW JOBS`.
pub(super) fn jobs_schema() -> SchemaRef {
    Arc::new(Schema::new(
        [
            "id",
            "name",
            "status",
            "parallelism",
            "definition",
            "error",
            "late_rows",
            "skipped_messages",
        ]
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect::<Vec<_>>(),
    ))
}

/// Columns of `SHOW MATERIALIZED VIEWS`.
pub(super) fn views_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("schema", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// Columns of `EXPLAIN CREATE MATERIALIZED VIEW`.
pub(super) fn explain_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "QUERY PLAN",
        DataType::Utf8,
        false,
    )]))
}

impl Session {
    /// `CREATE SOURCE`: a table definition with connector options, checked
    /// by opening the connector once.
    pub(super) fn create_source(
        &mut self,
        create: &Statement,
        options: &std::collections::BTreeMap<String, String>,
        watermark: Option<&WatermarkClause>,
    ) -> ServerResult<StatementResult> {
        let Statement::CreateTable(create) = create else {
            return Err(ServerError::Internal(
                "CREATE SOURCE without columns".into(),
            ));
        };
        let name = self.resolve(&create.name)?;
        self.before_ddl("CREATE SOURCE")?;
        if self.catalog().relation(&name).is_some() {
            if create.if_not_exists {
                let mut result = StatementResult::command("CREATE SOURCE", None);
                result.notices.push((
                    "NOTICE",
                    format!("relation \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        let def = runnel_planner::ddl::table_def_from_create(create, 0, name.clone())?;
        if !def.indexes.is_empty() {
            return Err(ServerError::NotSupported(format!(
                "UNIQUE on source {name} (a source stores no rows)"
            )));
        }
        let changelog = crate::streaming::is_changelog_source(options);
        if changelog && def.primary_key.is_empty() {
            return Err(ServerError::Plan(PlanError::InvalidDefinition(format!(
                "source {name}: FORMAT {} needs a PRIMARY KEY: the columns that identify a row \
                 (for Debezium, the key of the captured table)",
                options
                    .get("format")
                    .map(|f| f.to_ascii_uppercase())
                    .unwrap_or_default()
            ))));
        }
        // Other formats are for the connector to accept or refuse.
        let plain = options
            .get("format")
            .is_none_or(|f| f.eq_ignore_ascii_case("plain"));
        if plain && !def.primary_key.is_empty() {
            return Err(ServerError::NotSupported(
                "a PRIMARY KEY on a FORMAT PLAIN source (it only appends rows; \
                 use FORMAT UPSERT or FORMAT DEBEZIUM for a changelog keyed by it)"
                    .into(),
            ));
        }
        if def.columns.iter().any(|c| c.default.is_some()) {
            return Err(ServerError::NotSupported(
                "DEFAULT on a source column".into(),
            ));
        }
        let watermark = watermark.map(|w| WatermarkDef {
            column: w.column.clone(),
            expr: w.expr.clone(),
        });
        if let Some(w) = &watermark {
            crate::streaming::plan_watermark(&self.ctx.state(), &def, w)?;
        }
        // Validating may ask a broker (Kafka): up to a few seconds on this
        // session's thread when the broker does not answer.
        runnel_connectors::Connectors::validate(options, &def.arrow_schema())
            .map_err(|e| ServerError::from_connector(&format!("source {name}"), e))?;
        self.catalog().create_table(&name, vec![], |id| {
            Ok(runnel_planner::catalog::TableDef {
                id,
                connector: Some(options.clone()),
                watermark,
                ..def
            })
        })?;
        Ok(StatementResult::command("CREATE SOURCE", None))
    }

    pub(super) fn parallelism(&self) -> usize {
        self.settings
            .value("parallelism")
            .parse::<usize>()
            .unwrap_or(1)
            .max(1)
    }

    /// Plans a view's query for view id `id`.
    async fn plan_view_query(
        &self,
        create: &CreateView,
        id: u64,
        name: &RelationName,
        emit_on_window_close: bool,
    ) -> ServerResult<PlannedView> {
        if !create.columns.is_empty() {
            return Err(ServerError::NotSupported(
                "column names in CREATE MATERIALIZED VIEW (name them with AS in the query)".into(),
            ));
        }
        let plan = self.plan(Statement::Query(create.query.clone())).await?;
        plan_materialized(
            &self.db,
            &self.ctx.state(),
            &plan,
            id,
            name,
            &MaterializeOptions {
                search_schema: &self.current_schema(),
                parallelism: self.parallelism(),
                emit_on_window_close,
            },
        )
    }

    pub(super) async fn create_materialized_view(
        &mut self,
        create: &CreateView,
        emit_on_window_close: bool,
    ) -> ServerResult<StatementResult> {
        const TAG: &str = "CREATE MATERIALIZED VIEW";
        self.refuse_in_block(TAG)?;
        if create.or_replace || create.or_alter {
            return Err(ServerError::NotSupported(
                "CREATE OR REPLACE MATERIALIZED VIEW".into(),
            ));
        }
        let name = self.resolve(&create.name)?;
        if self.catalog().relation(&name).is_some() {
            if create.if_not_exists {
                let mut result = StatementResult::command(TAG, None);
                result.notices.push((
                    "NOTICE",
                    format!("relation \"{}\" already exists, skipping", name.name),
                ));
                return Ok(result);
            }
            return Err(ServerError::DuplicateTable(name.name));
        }
        // Plan once with a placeholder id to refuse bad queries before
        // anything is written; the real plan needs the view's id.
        self.plan_view_query(create, 0, &name, emit_on_window_close)
            .await?;
        let plan = self.plan(Statement::Query(create.query.clone())).await?;
        let depends_on = self.referenced_relations(&plan)?;
        let sql = Statement::Query(create.query.clone()).to_string();
        let search_schema = self.current_schema();
        let parallelism = self.parallelism();
        let state = self.ctx.state();
        let mut planned = None;
        let view = self.catalog().create_view(&name, |id| {
            let view = plan_materialized(
                &self.db,
                &state,
                &plan,
                id,
                &name,
                &MaterializeOptions {
                    search_schema: &search_schema,
                    parallelism,
                    emit_on_window_close,
                },
            )?;
            let columns = view
                .schema
                .fields()
                .iter()
                .map(|f| {
                    let column_type = ColumnType::from_arrow(f).ok_or_else(|| {
                        ServerError::NotSupported(format!(
                            "column \"{}\" of type {}",
                            f.name(),
                            f.data_type()
                        ))
                    })?;
                    Ok(ColumnDef {
                        name: f.name().clone(),
                        column_type,
                        not_null: false,
                        default: None,
                    })
                })
                .collect::<ServerResult<Vec<_>>>()?;
            let def = ViewDef {
                id,
                name: name.clone(),
                sql,
                column_names: vec![],
                depends_on,
                materialized: Some(MaterializedDef {
                    columns,
                    visible: view.visible_columns,
                    key: view.key.clone(),
                    parallelism,
                    search_schema,
                    emit_on_window_close,
                }),
            };
            planned = Some(view);
            Ok(def)
        })?;
        let planned =
            planned.ok_or_else(|| ServerError::Internal("view planned without a plan".into()))?;
        if let Err(e) = self.start_job(view.id, planned).await {
            self.forget_view(&name).await;
            return Err(e);
        }
        if let Some(JobState::Failed(error)) = self.db.runtime.job_state(view.id) {
            self.forget_view(&name).await;
            return Err(ServerError::JobFailed {
                job: format!("materialized view {name}"),
                error,
            });
        }
        Ok(StatementResult::command(TAG, None))
    }

    /// Starts a new view's job and waits for its first results.
    async fn start_job(&self, id: u64, planned: PlannedView) -> ServerResult<()> {
        {
            // Keep DML out while the job's sources take their snapshots.
            let _write = self.db.write_lock.lock().await;
            self.db
                .runtime
                .create_job(JobSpec {
                    id,
                    graph: planned.graph,
                })
                .await?;
        }
        self.db.runtime.flush().await?;
        Ok(())
    }

    /// Removes a view whose job could not start.
    async fn forget_view(&self, name: &RelationName) {
        if let Some(crate::catalog::Relation::View(view)) = self.catalog().relation(name) {
            let _ = self.db.runtime.drop_job(view.id).await;
        }
        if let Err(e) = self
            .catalog()
            .drop_relation(name, RelationKind::MaterializedView, true)
        {
            tracing::warn!(view = %name, error = %e, "could not remove a failed view");
        }
    }

    pub(super) async fn explain_materialized_view(
        &mut self,
        create: &CreateView,
        emit_on_window_close: bool,
    ) -> ServerResult<StatementResult> {
        let name = self.resolve(&create.name)?;
        let planned = self
            .plan_view_query(create, 0, &name, emit_on_window_close)
            .await?;
        let lines: Vec<String> = planned
            .graph
            .to_string()
            .lines()
            .map(String::from)
            .collect();
        rows_result_tagged(explain_schema(), vec![lines], "EXPLAIN")
    }

    pub(super) async fn flush(&mut self) -> ServerResult<StatementResult> {
        self.db.runtime.flush_bounded().await?;
        Ok(StatementResult::command("FLUSH", None))
    }

    /// `REFRESH MATERIALIZED VIEW`: a view is always fresh; this waits, as
    /// `FLUSH` does, until every change committed before it is in.
    pub(super) async fn refresh(&mut self, name: &RelationName) -> ServerResult<StatementResult> {
        match self.catalog().relation(name) {
            Some(crate::catalog::Relation::View(view)) if view.is_materialized() => {}
            Some(_) => {
                return Err(ServerError::WrongObjectType(format!(
                    "\"{}\" is not a materialized view",
                    name.name
                )));
            }
            None => return Err(ServerError::UndefinedTable(name.name.clone())),
        }
        self.db.runtime.flush_bounded().await?;
        Ok(StatementResult::command("REFRESH MATERIALIZED VIEW", None))
    }

    pub(super) fn show_materialized_views(&self) -> ServerResult<StatementResult> {
        let mut views: Vec<_> = self
            .catalog()
            .views()
            .into_iter()
            .filter(|v| v.is_materialized())
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let schemas = views.iter().map(|v| v.name.schema.clone()).collect();
        let names = views.iter().map(|v| v.name.name.clone()).collect();
        rows_result_tagged(views_schema(), vec![schemas, names], "SHOW")
    }

    /// One row per job: every materialized view's and every sink's.
    pub(super) fn show_jobs(&self) -> ServerResult<StatementResult> {
        let mut jobs: Vec<(u64, String, usize, String)> = self
            .catalog()
            .views()
            .into_iter()
            .filter_map(|v| {
                let m = v.materialized.as_ref()?;
                let sql = format!("{}{}", v.sql, emit_clause(m.emit_on_window_close));
                Some((v.id, v.name.to_string(), m.parallelism, sql))
            })
            .collect();
        jobs.extend(self.catalog().sinks().into_iter().map(|s| {
            (
                s.id,
                s.name.to_string(),
                s.parallelism,
                format!("SINK {}{}", s.sql, emit_clause(s.emit_on_window_close)),
            )
        }));
        jobs.sort_by_key(|(id, ..)| *id);
        let mut columns: Vec<Vec<String>> = vec![vec![]; 8];
        for (id, name, parallelism, definition) in jobs {
            let (status, error) = match self.db.runtime.job_state(id) {
                Some(JobState::Running) => ("running".to_string(), String::new()),
                Some(JobState::Retrying(e)) => ("retrying".to_string(), e),
                Some(JobState::Failed(e)) => ("failed".to_string(), e),
                Some(JobState::Finished) => ("finished".to_string(), String::new()),
                None => ("stopped".to_string(), String::new()),
            };
            columns[0].push(id.to_string());
            columns[1].push(name);
            columns[2].push(status);
            columns[3].push(parallelism.to_string());
            columns[4].push(definition);
            columns[5].push(error);
            columns[6].push(self.db.runtime.late_rows(id).to_string());
            columns[7].push(self.db.runtime.skipped_messages(id).to_string());
        }
        rows_result_tagged(jobs_schema(), columns, "SHOW")
    }
}

/// Columns of `CHECK MATERIALIZED VIEW`.
pub(super) fn check_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("missing", DataType::Int64, false),
        Field::new("extra", DataType::Int64, false),
        Field::new("sample", DataType::Utf8, false),
    ]))
}

/// How many differing rows `CHECK` shows.
const CHECK_SAMPLE: usize = 5;

/// Rows as text lines, each column cast to `types` first (the view stores
/// some types widened, e.g. unsigned integers as numeric).
fn row_lines(
    batches: &[datafusion::arrow::array::RecordBatch],
    types: &[DataType],
) -> ServerResult<Vec<String>> {
    use datafusion::arrow::util::display::array_value_to_string;
    let mut lines = vec![];
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .zip(types)
            .map(|(c, t)| datafusion::arrow::compute::cast(c, t))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .map(|c| {
                    if c.is_null(row) {
                        Ok("NULL".to_string())
                    } else {
                        array_value_to_string(c, row)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            lines.push(format!("({})", cells.join(", ")));
        }
    }
    Ok(lines)
}

/// What is in `a` and not in `b`, as multisets.
fn multiset_minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for line in b {
        *counts.entry(line).or_default() += 1;
    }
    let mut out = vec![];
    for line in a {
        let count = counts.entry(line).or_default();
        if *count > 0 {
            *count -= 1;
        } else {
            out.push(line.clone());
        }
    }
    out
}

impl Session {
    /// Recomputes a view's query as a batch with writes held off and every
    /// committed change flushed into the view, and compares the two.
    pub(super) async fn check_materialized_view(
        &mut self,
        name: &RelationName,
    ) -> ServerResult<StatementResult> {
        use datafusion::arrow::array::{Int64Array, StringArray};
        let view = match self.catalog().relation(name) {
            Some(crate::catalog::Relation::View(v)) if v.is_materialized() => v,
            Some(_) => {
                return Err(ServerError::WrongObjectType(format!(
                    "\"{}\" is not a materialized view",
                    name.name
                )));
            }
            None => return Err(ServerError::UndefinedTable(name.name.clone())),
        };
        for input in &view.depends_on {
            let keeps_history = match self.catalog().relation(input) {
                Some(crate::catalog::Relation::Table(t)) => t.connector.is_none(),
                Some(crate::catalog::Relation::View(v)) => v.is_materialized(),
                None => false,
            };
            if !keeps_history {
                return Err(ServerError::NotSupported(format!(
                    "CHECK of {name}: its input {input} keeps no history to recompute the view from"
                )));
            }
        }
        let m = view
            .materialized
            .as_ref()
            .ok_or_else(|| ServerError::Internal("not materialized".into()))?;
        let types: Vec<DataType> = m.columns[..m.visible]
            .iter()
            .map(|c| c.column_type.arrow_type())
            .collect();
        // No write may land between the flush and the two reads.
        let _write = self.db.write_lock.lock().await;
        self.db.runtime.flush().await?;
        let stored = self
            .ctx
            .sql(&format!(
                "SELECT * FROM \"{}\".\"{}\"",
                name.schema.replace('"', "\"\""),
                name.name.replace('"', "\"\"")
            ))
            .await?
            .collect()
            .await?;
        let state = self.db.state_in_schema(&m.search_schema);
        let plan = state.create_logical_plan(&view.sql).await?;
        let ctx = datafusion::prelude::SessionContext::new_with_state(state);
        let recomputed = ctx.execute_logical_plan(plan).await?.collect().await?;
        let stored = row_lines(&stored, &types)?;
        let recomputed = row_lines(&recomputed, &types)?;
        let missing = multiset_minus(&recomputed, &stored);
        let extra = multiset_minus(&stored, &recomputed);
        let sample: Vec<String> = missing
            .iter()
            .take(CHECK_SAMPLE)
            .map(|r| format!("missing {r}"))
            .chain(
                extra
                    .iter()
                    .take(CHECK_SAMPLE)
                    .map(|r| format!("extra {r}")),
            )
            .collect();
        let schema = check_schema();
        let batch = datafusion::arrow::array::RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec![name.to_string()])),
                Arc::new(Int64Array::from(vec![stored.len() as i64])),
                Arc::new(Int64Array::from(vec![missing.len() as i64])),
                Arc::new(Int64Array::from(vec![extra.len() as i64])),
                Arc::new(StringArray::from(vec![sample.join("; ")])),
            ],
        )?;
        let stream = futures::stream::iter(vec![Ok(batch)]);
        let mut result = StatementResult::from(super::Outcome::Rows {
            schema: Arc::clone(&schema),
            stream: Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream),
            ),
            tag: "CHECK".into(),
        });
        if !missing.is_empty() || !extra.is_empty() {
            result.notices.push((
                "WARNING",
                format!(
                    "materialized view {name} differs from its query: {} rows missing, {} extra",
                    missing.len(),
                    extra.len()
                ),
            ));
        }
        Ok(result)
    }
}

/// What a job's definition ends with in SHOW JOBS.
fn emit_clause(emit_on_window_close: bool) -> &'static str {
    if emit_on_window_close {
        " EMIT ON WINDOW CLOSE"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_counted_as_multisets() {
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let view = lines(&["(1)", "(1)", "(2)", "(4)"]);
        let query = lines(&["(1)", "(2)", "(2)", "(3)"]);
        assert_eq!(multiset_minus(&query, &view), lines(&["(2)", "(3)"]));
        assert_eq!(multiset_minus(&view, &query), lines(&["(1)", "(4)"]));
        assert!(multiset_minus(&view, &view).is_empty());
    }
}
