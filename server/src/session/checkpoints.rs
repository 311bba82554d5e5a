//! `SHOW CHECKPOINTS`: the checkpoints this process took or tried, newest
//! first, as `/jobs/<id>/checkpoints` shows them in JSON.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use runnel_storage::checkpoint::CheckpointInfo;

use super::utility::rows_result_tagged;
use super::{Session, StatementResult};
use crate::error::ServerResult;

const COLUMNS: [&str; 8] = [
    "id",
    "epoch",
    "status",
    "started_at",
    "duration_ms",
    "size_bytes",
    "incremental_bytes",
    "error",
];

/// Columns of `SHOW CHECKPOINTS`.
pub(super) fn checkpoints_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ))
}

/// When a checkpoint started, as Postgres prints a `timestamptz` in UTC.
pub fn started_at(info: &CheckpointInfo) -> String {
    chrono::DateTime::from_timestamp_millis(info.started_ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string())
        .unwrap_or_default()
}

impl Session {
    pub(super) fn show_checkpoints(&self) -> ServerResult<StatementResult> {
        let history = self
            .db
            .checkpointer
            .as_ref()
            .map(|c| c.history())
            .unwrap_or_default();
        let mut columns: Vec<Vec<String>> = vec![vec![]; COLUMNS.len()];
        for info in history.iter().rev() {
            let row = [
                info.id.map(|id| id.to_string()).unwrap_or_default(),
                info.epoch.to_string(),
                info.status.as_str().to_string(),
                started_at(info),
                info.duration_ms.to_string(),
                info.total_bytes.to_string(),
                info.uploaded_bytes.to_string(),
                info.error.clone().unwrap_or_default(),
            ];
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
        }
        rows_result_tagged(checkpoints_schema(), columns, "SHOW")
    }
}
