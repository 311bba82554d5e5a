//! Materialized views as jobs: planning a view's query into a stream
//! graph against the catalog, and restarting every view's job when the
//! server starts.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use runnel_engine::runtime::JobSpec;
use runnel_planner::catalog::{RelationName, TableDef, ViewDef, WatermarkDef};
use runnel_planner::stream::{
    PlannedView, SourceWatermark, StreamCatalog, StreamInput, ViewOptions, plan_view,
};
use runnel_planner::{PlanError, PlanResult};
use tracing::{info, warn};

use crate::catalog::{Catalog, Relation};
use crate::database::Database;
use crate::error::{ServerError, ServerResult};

/// The hidden column carrying a table's row key in its change stream.
pub const STREAM_ROW_KEY: &str = "_runnel_row_key";

/// The hidden column numbering a generating source's rows.
pub const SOURCE_POSITION: &str = "_runnel_position";

/// The columns of a table's change stream: its own, then the row key.
pub fn table_stream_schema(def: &TableDef) -> SchemaRef {
    let mut fields: Vec<Field> = def
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(STREAM_ROW_KEY, DataType::Binary, false));
    Arc::new(Schema::new(fields))
}

/// The catalog as the stream planner sees it.
struct CatalogInputs<'a> {
    catalog: &'a Catalog,
    default_schema: &'a str,
    /// Plans declared watermark expressions.
    state: &'a SessionState,
}

/// Plans a source's `WATERMARK FOR column AS expr` over its columns: the
/// column's index and the expression, cast to the column's type. Errors
/// name what to change.
pub fn plan_watermark(
    state: &SessionState,
    def: &TableDef,
    watermark: &WatermarkDef,
) -> ServerResult<SourceWatermark> {
    use datafusion::common::DFSchema;
    let column = def.column_index(&watermark.column).ok_or_else(|| {
        ServerError::UndefinedColumn(format!(
            "{} (named in WATERMARK FOR) of {}",
            watermark.column, def.name
        ))
    })?;
    let schema = def.arrow_schema();
    let column_type = schema.field(column).data_type().clone();
    if !matches!(column_type, DataType::Timestamp(..)) {
        return Err(ServerError::Plan(PlanError::InvalidParameter(format!(
            "WATERMARK FOR {}: the column is {}, but a watermark needs a timestamp or timestamptz column",
            watermark.column,
            def.columns[column].column_type.pg_name()
        ))));
    }
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let logical = state.create_logical_expr(&watermark.expr, &df_schema)?;
    let physical = state.create_physical_expr(logical, &df_schema)?;
    let expr_type = physical.data_type(&schema)?;
    let expr = match &expr_type {
        DataType::Timestamp(..) if expr_type == column_type => physical,
        DataType::Timestamp(..) => Arc::new(datafusion::physical_expr::expressions::CastExpr::new(
            physical,
            column_type,
            None,
        )),
        other => {
            return Err(ServerError::Plan(PlanError::InvalidParameter(format!(
                "WATERMARK FOR {} AS {}: the expression is of type {other}; it must be a timestamp, such as {} - INTERVAL '5' SECOND",
                watermark.column, watermark.expr, watermark.column
            ))));
        }
    };
    Ok(SourceWatermark { column, expr })
}

impl StreamCatalog for CatalogInputs<'_> {
    fn stream_input(&self, name: &TableReference) -> PlanResult<Option<StreamInput>> {
        let schema = name.schema().unwrap_or(self.default_schema);
        let relation = RelationName::new(schema, name.table());
        let watermark = |def: &TableDef| -> PlanResult<Option<SourceWatermark>> {
            def.watermark
                .as_ref()
                .map(|w| plan_watermark(self.state, def, w))
                .transpose()
                .map_err(|e| PlanError::InvalidDefinition(e.to_string()))
        };
        let Some(found) = self.catalog.relation(&relation) else {
            return Ok(None);
        };
        Ok(match found {
            Relation::Table(def) if def.connector.is_some() => {
                let upsert = def.connector.as_ref().is_some_and(is_changelog_source);
                let mut fields: Vec<Field> = def
                    .arrow_schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields.push(Field::new(SOURCE_POSITION, DataType::Int64, false));
                Some(StreamInput {
                    id: def.id,
                    name: relation.to_string(),
                    is_table: false,
                    schema: Arc::new(Schema::new(fields)),
                    visible: def.columns.len(),
                    key: if upsert {
                        def.primary_key.clone()
                    } else {
                        vec![def.columns.len()]
                    },
                    parallel: def
                        .connector
                        .as_ref()
                        .is_some_and(runnel_connectors::Connectors::reads_in_parallel),
                    connector: def.connector.clone(),
                    watermark: watermark(&def)?,
                    upsert,
                })
            }
            Relation::Table(def) => Some(StreamInput {
                id: def.id,
                name: relation.to_string(),
                is_table: true,
                schema: table_stream_schema(&def),
                visible: def.columns.len(),
                key: vec![def.columns.len()],
                connector: None,
                watermark: watermark(&def)?,
                upsert: false,
                parallel: false,
            }),
            Relation::View(view) => view.materialized.as_ref().map(|m| StreamInput {
                id: view.id,
                name: relation.to_string(),
                is_table: false,
                schema: m.stored_schema(),
                visible: m.visible,
                key: m.key.clone(),
                connector: None,
                watermark: None,
                upsert: false,
                parallel: false,
            }),
        })
    }
}

/// Whether a source's options declare a changelog (`FORMAT UPSERT` or
/// `FORMAT DEBEZIUM`): upserts and deletes by its primary key.
pub(crate) fn is_changelog_source(options: &std::collections::BTreeMap<String, String>) -> bool {
    options
        .get("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("upsert") || f.eq_ignore_ascii_case("debezium"))
}

/// How a view's query is planned into a job.
#[derive(Debug, Clone)]
pub struct MaterializeOptions<'a> {
    /// The schema unqualified names resolve in.
    pub search_schema: &'a str,
    pub parallelism: usize,
    pub emit_on_window_close: bool,
}

/// Plans `plan` (not yet optimized) as the job of view `id`.
pub fn plan_materialized(
    db: &Database,
    state: &SessionState,
    plan: &LogicalPlan,
    id: u64,
    name: &RelationName,
    options: &MaterializeOptions<'_>,
) -> ServerResult<PlannedView> {
    runnel_planner::stream::check_deterministic(plan)?;
    let optimized = state.optimize(plan)?;
    let inputs = CatalogInputs {
        catalog: &db.catalog,
        default_schema: options.search_schema,
        state,
    };
    Ok(plan_view(
        &optimized,
        &inputs,
        &ViewOptions {
            job_id: id,
            view_name: name.to_string(),
            parallelism: options.parallelism,
            emit_on_window_close: options.emit_on_window_close,
        },
    )?)
}

/// Plans `plan` (not yet optimized) as the job of `sink` (its query).
pub fn plan_sink_job(
    db: &Database,
    state: &SessionState,
    plan: &LogicalPlan,
    sink: &runnel_planner::catalog::SinkDef,
) -> ServerResult<runnel_planner::stream::PlannedSink> {
    let (id, name, options, search_schema, parallelism) = (
        sink.id,
        &sink.name,
        &sink.options,
        sink.search_schema.as_str(),
        sink.parallelism,
    );
    runnel_planner::stream::check_deterministic(plan)?;
    let optimized = state.optimize(plan)?;
    let inputs = CatalogInputs {
        catalog: &db.catalog,
        default_schema: search_schema,
        state,
    };
    let format = options.get("format").map_or("plain", String::as_str);
    let primary_key = options.get("primary_key").map(|names| {
        names
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    });
    Ok(runnel_planner::stream::plan_sink(
        &optimized,
        &inputs,
        &runnel_planner::stream::SinkOptions {
            job_id: id,
            sink_name: name.to_string(),
            parallelism,
            emit_on_window_close: sink.emit_on_window_close,
            primary_key,
            keyed_format: !format.eq_ignore_ascii_case("plain"),
            connector: options.clone(),
            discard: options
                .get("connector")
                .is_some_and(|c| c.eq_ignore_ascii_case("blackhole")),
        },
    )?)
}

/// Restarts every sink's job (after the views they read).
async fn restart_sinks(db: &Database) {
    for sink in db.catalog.sinks() {
        match db.runtime.recorded_failure(sink.id) {
            Ok(Some(error)) => {
                db.runtime.mark_failed(sink.id, error);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                db.runtime.mark_failed(sink.id, e.to_string());
                continue;
            }
        }
        let started = async {
            let state = db.state_in_schema(&sink.search_schema);
            let plan = state.create_logical_plan(&sink.sql).await?;
            let planned = plan_sink_job(db, &state, &plan, &sink)?;
            db.runtime
                .create_job(JobSpec {
                    id: sink.id,
                    graph: planned.graph,
                })
                .await?;
            ServerResult::Ok(())
        };
        match started.await {
            Ok(()) => info!(sink = %sink.name, "sink restarted"),
            Err(e) => {
                warn!(sink = %sink.name, error = %e, "sink could not restart");
                db.runtime.mark_failed(sink.id, e.to_string());
            }
        }
    }
}

/// Restarts the job of every materialized view, inputs before the views
/// that read them; a view whose job failed before stays failed.
pub async fn restart_jobs(db: &Database) -> ServerResult<()> {
    let mut pending: Vec<Arc<ViewDef>> = db
        .catalog
        .views()
        .into_iter()
        .filter(|v| v.is_materialized())
        .collect();
    let mut started: Vec<RelationName> = vec![];
    while !pending.is_empty() {
        let ready = pending.iter().position(|v| {
            v.depends_on
                .iter()
                .all(|d| started.contains(d) || !pending.iter().any(|p| &p.name == d))
        });
        let Some(index) = ready else {
            return Err(ServerError::Internal(
                "materialized views depend on each other in a cycle".into(),
            ));
        };
        let view = pending.remove(index);
        started.push(view.name.clone());
        if let Some(error) = db.runtime.recorded_failure(view.id)? {
            db.runtime.mark_failed(view.id, error);
            continue;
        }
        if let Err(e) = restart_job(db, &view).await {
            warn!(view = %view.name, error = %e, "materialized view could not restart");
            db.runtime.mark_failed(view.id, e.to_string());
        }
    }
    restart_sinks(db).await;
    db.runtime.resume()?;
    Ok(())
}

async fn restart_job(db: &Database, view: &ViewDef) -> ServerResult<()> {
    let m = view
        .materialized
        .as_ref()
        .ok_or_else(|| ServerError::Internal("not a materialized view".into()))?;
    let state = db.state_in_schema(&m.search_schema);
    let plan = state.create_logical_plan(&view.sql).await?;
    let planned = plan_materialized(
        db,
        &state,
        &plan,
        view.id,
        &view.name,
        &MaterializeOptions {
            search_schema: &m.search_schema,
            parallelism: m.parallelism,
            emit_on_window_close: m.emit_on_window_close,
        },
    )?;
    let stored = m.stored_schema();
    let same = planned.schema.fields().len() == stored.fields().len()
        && planned
            .schema
            .fields()
            .iter()
            .zip(stored.fields())
            .all(|(a, b)| a.data_type() == b.data_type());
    if !same {
        return Err(ServerError::Internal(format!(
            "the query of {} now plans to different columns; drop and re-create the view",
            view.name
        )));
    }
    db.runtime
        .create_job(JobSpec {
            id: view.id,
            graph: planned.graph,
        })
        .await?;
    info!(view = %view.name, "materialized view restarted");
    Ok(())
}
