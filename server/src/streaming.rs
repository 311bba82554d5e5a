//! Materialized views as jobs: planning a view's query into a stream
//! graph against the catalog, and restarting every view's job when the
//! server starts.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use runnel_engine::runtime::JobSpec;
use runnel_planner::catalog::{RelationName, TableDef, ViewDef};
use runnel_planner::stream::{PlannedView, StreamCatalog, StreamInput, plan_view};
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
}

impl StreamCatalog for CatalogInputs<'_> {
    fn stream_input(&self, name: &TableReference) -> Option<StreamInput> {
        let schema = name.schema().unwrap_or(self.default_schema);
        let relation = RelationName::new(schema, name.table());
        match self.catalog.relation(&relation)? {
            Relation::Table(def) if def.connector.is_some() => {
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
                    key: vec![def.columns.len()],
                    connector: def.connector.clone(),
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
            }),
            Relation::View(view) => {
                let m = view.materialized.as_ref()?;
                Some(StreamInput {
                    id: view.id,
                    name: relation.to_string(),
                    is_table: false,
                    schema: m.stored_schema(),
                    visible: m.visible,
                    key: m.key.clone(),
                    connector: None,
                })
            }
        }
    }
}

/// Plans `plan` (not yet optimized) as the job of view `id`.
pub fn plan_materialized(
    db: &Database,
    state: &SessionState,
    plan: &LogicalPlan,
    id: u64,
    name: &RelationName,
    search_schema: &str,
    parallelism: usize,
) -> ServerResult<PlannedView> {
    runnel_planner::stream::check_deterministic(plan)?;
    let optimized = state.optimize(plan)?;
    let inputs = CatalogInputs {
        catalog: &db.catalog,
        default_schema: search_schema,
    };
    Ok(plan_view(
        &optimized,
        &inputs,
        id,
        &name.to_string(),
        parallelism,
    )?)
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
        &m.search_schema,
        m.parallelism,
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
