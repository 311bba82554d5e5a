//! Planning a sink's job: the query's rows, then the Sink operator, keyed
//! by the sink's primary key unless the query only appends rows and the
//! format writes rows as they come (PLAIN).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;
use runnel_engine::graph::{OperatorSpec, StreamGraph};

use super::{StreamCatalog, plan_to_node, plan_to_single};
use crate::{PlanError, PlanResult};

/// How a sink's job is planned.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The sink's id (and its job's).
    pub job_id: u64,
    pub sink_name: String,
    pub parallelism: usize,
    pub emit_on_window_close: bool,
    /// `primary_key = 'a, b'`: the written columns that identify a row.
    pub primary_key: Option<Vec<String>>,
    /// Whether the format needs a key (UPSERT, DEBEZIUM) rather than rows
    /// to append (PLAIN).
    pub keyed_format: bool,
    /// The `WITH (…)` options, for the connector.
    pub connector: std::collections::BTreeMap<String, String>,
    /// `connector = 'blackhole'`: the job ends in an operator that drops
    /// every change, in every subtask of the query's last fragment (no
    /// staging, no key, any column type).
    pub discard: bool,
}

/// The planned job of a sink.
#[derive(Debug, Clone)]
pub struct PlannedSink {
    pub graph: StreamGraph,
    /// The written columns.
    pub written: SchemaRef,
    /// The sink's key among the written columns; None: append-only.
    pub key: Option<Vec<usize>>,
}

/// Plans a sink writing the rows of `plan`.
pub fn plan_sink(
    plan: &LogicalPlan,
    catalog: &dyn StreamCatalog,
    options: &SinkOptions,
) -> PlanResult<PlannedSink> {
    let visible = plan.schema().fields().len();
    let plan_with = if options.discard {
        plan_to_node
    } else {
        plan_to_single
    };
    let (mut planner, mut node) = plan_with(
        plan,
        catalog,
        options.job_id,
        options.parallelism,
        options.emit_on_window_close,
    )?;
    let written = Arc::new(
        node.schema
            .project(&(0..visible).collect::<Vec<_>>())
            .map_err(|e| PlanError::InvalidDefinition(e.to_string()))?,
    );
    if options.discard {
        node.operators.push(OperatorSpec::Blackhole {
            sink_name: options.sink_name.clone(),
        });
        let graph = planner.finish(node, options.emit_on_window_close)?;
        return Ok(PlannedSink {
            graph,
            written,
            key: None,
        });
    }
    let append_only = planner.node_append_only(&node);
    let named_key = match &options.primary_key {
        Some(names) => Some(
            names
                .iter()
                .map(|name| {
                    written.index_of(name).map_err(|_| {
                        PlanError::InvalidDefinition(format!(
                            "primary_key names \"{name}\", which the sink does not write (its columns: {})",
                            written.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                        ))
                    })
                })
                .collect::<PlanResult<Vec<usize>>>()?,
        ),
        None => None,
    };
    let key = match (options.keyed_format, append_only, named_key) {
        (false, true, _) => None,
        (false, false, _) => {
            return Err(PlanError::NotSupported(format!(
                "FORMAT PLAIN for sink {}: its query updates and deletes rows, which PLAIN \
                 cannot say; use FORMAT UPSERT (or DEBEZIUM) ENCODE JSON with primary_key, \
                 or, for windowed results, EMIT ON WINDOW CLOSE after the query",
                options.sink_name
            )));
        }
        (true, _, Some(key)) => Some(key),
        (true, _, None) if !node.key.is_empty() && node.key.iter().all(|&k| k < visible) => {
            Some(node.key.clone())
        }
        (true, _, None) => {
            return Err(PlanError::InvalidDefinition(format!(
                "sink {} needs primary_key = 'column, …': the columns that identify a row \
                 in the topic's keys (the query's own key is not among its columns)",
                options.sink_name
            )));
        }
    };
    let state_id = planner.state_ids(2);
    node.operators.push(OperatorSpec::Sink {
        sink_id: options.job_id,
        sink_name: options.sink_name.clone(),
        key: key.clone(),
        schema: Arc::clone(&node.schema),
        visible,
        options: options.connector.clone(),
        state_id,
    });
    let graph = planner.finish(node, options.emit_on_window_close)?;
    Ok(PlannedSink {
        graph,
        written,
        key,
    })
}
