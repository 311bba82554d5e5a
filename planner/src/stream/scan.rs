//! Scans: a table, materialized view or source as the start of a
//! fragment (its changes, a changelog source's upserts, its watermark and
//! the filters pushed into the scan).

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::TableScan;
use runnel_engine::graph::{FragmentInput, OperatorSpec, SourceSpec};

use super::{Node, Planner, df, not_supported};
use crate::PlanResult;

impl Planner<'_> {
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
                insert_only: (input.connector.is_some() && !input.upsert)
                    || (input.is_table && input.watermark.is_some()),
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
