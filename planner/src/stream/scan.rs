//! Scans: a table, materialized view or source as the start of a
//! fragment (its changes, a changelog source's upserts, its watermark and
//! the filters pushed into the scan).

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use runnel_engine::graph::{FragmentInput, OperatorSpec, SourceSpec};

use super::{Node, Planner, StreamInput, df, not_supported};
use crate::PlanResult;

impl StreamInput {
    /// Whether reading it gives inserts only: a source that is no
    /// changelog, or a table with a watermark (which takes only INSERT).
    pub fn insert_only(&self) -> bool {
        (self.connector.is_some() && !self.upsert) || (self.is_table && self.watermark.is_some())
    }
}

impl Planner<'_> {
    /// Whether `plan` only ever inserts rows, as far as can be told
    /// without planning it: filters and projections over relations that
    /// do.
    pub(super) fn inserts_only(&self, plan: &LogicalPlan) -> PlanResult<bool> {
        match plan {
            LogicalPlan::TableScan(scan) => Ok(self
                .catalog
                .stream_input(&scan.table_name)?
                .is_some_and(|input| input.insert_only())),
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
                plan.inputs()
                    .into_iter()
                    .try_fold(true, |all, input| Ok(all && self.inserts_only(input)?))
            }
            _ => Ok(false),
        }
    }

    pub(super) fn scan(&mut self, scan: &TableScan) -> PlanResult<Node> {
        let input = self.catalog.stream_input(&scan.table_name)?.ok_or_else(|| {
            not_supported(format!(
                "reading {} in a materialized view (only tables and materialized views can be read)",
                scan.table_name
            ))
        })?;
        if scan.fetch.is_some() {
            return Err(not_supported("LIMIT in a materialized view"));
        }
        if !self.reads.contains(&input.id) {
            self.reads.push(input.id);
        }
        let state_id = self.state_ids(1);
        let stored = Arc::clone(&input.schema);
        let mut node = Node {
            id: self.reserve(),
            inputs: vec![FragmentInput::Source(SourceSpec {
                relation_id: input.id,
                relation_name: input.name.clone(),
                schema: Arc::clone(&stored),
                state_id,
                is_table: input.is_table,
                connector: input.connector.clone(),
                insert_only: input.insert_only(),
            })],
            operators: vec![],
            parallelism: if input.parallel { self.parallelism } else { 1 },
            schema: Arc::clone(&stored),
            key: input.key.clone(),
            watermarks: vec![],
        };
        if input.upsert {
            let state_id = self.state_ids(1);
            node.operators.push(OperatorSpec::Upsert {
                key: input.key.clone(),
                schema: Arc::clone(&stored),
                state_id,
            });
        }
        // The watermark sees every row the source emits, before filters.
        if let Some(watermark) = &input.watermark {
            let state_id = self.state_ids(1);
            node.operators.push(OperatorSpec::Watermark {
                column: watermark.column,
                expr: Arc::clone(&watermark.expr),
                state_id,
            });
            node.watermarks = vec![watermark.column];
        }
        // Filters pushed into the scan are over the visible columns.
        if !scan.filters.is_empty() {
            let visible = input.visible;
            let visible_schema = stored
                .project(&(0..visible).collect::<Vec<_>>())
                .map_err(|e| df(e.into()))?;
            let dfschema =
                DFSchema::try_from_qualified_schema(scan.table_name.clone(), &visible_schema)
                    .map_err(df)?;
            for filter in &scan.filters {
                let predicate = self.physical(filter, &dfschema)?;
                node.operators.push(OperatorSpec::Filter { predicate });
            }
        }
        // The scan's columns, then the key.
        let projection: Vec<usize> = match &scan.projection {
            Some(p) => p.clone(),
            None => (0..scan.projected_schema.fields().len()).collect(),
        };
        Ok(self.project_columns(node, &projection))
    }
}
