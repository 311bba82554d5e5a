//! The HTTP server on `web.port`: `/healthz`, and JSON at `/overview`
//! (with the allocator's and the state cache's memory), `/checkpoints` and
//! `/jobs/<id>/checkpoints`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use runnel_storage::checkpoint::{CheckpointInfo, CheckpointStatus};

use crate::database::Database;
use crate::session::checkpoint_started_at;

/// The routes of the HTTP server.
pub fn router(db: Arc<Database>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/overview", get(overview))
        .route("/checkpoints", get(checkpoints))
        .route("/jobs/{id}/checkpoints", get(job_checkpoints))
        .with_state(db)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn overview(State(db): State<Arc<Database>>) -> Json<Value> {
    let (tables, views) = db.catalog.relation_counts();
    let heap = crate::allocator::memory_stats().unwrap_or_default();
    let cache = db.store.cache_budget();
    let (hits, misses) = cache.hits_and_misses();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "mode": "standalone",
        "uptime_ms": db.started_at.elapsed().as_millis() as u64,
        "connections": db.connections.load(Ordering::Relaxed),
        "schemas": db.catalog.schema_names().len(),
        "tables": tables,
        "views": views,
        "jobs_running": 0,
        "workers": 1,
        "slots_total": db.config.worker_slots,
        "slots_available": db.config.worker_slots,
        "data_dir": db.config.data_dir.display().to_string(),
        "memory": {
            "allocated_bytes": heap.allocated,
            "resident_bytes": heap.resident,
            "state_cache_bytes": cache.used(),
            "state_cache_limit_bytes": cache.limit(),
            "state_cache_hits": hits,
            "state_cache_misses": misses,
        },
    }))
}

/// Every job shares the process's checkpoints: one checkpoint holds all of
/// their state.
async fn job_checkpoints(
    State(db): State<Arc<Database>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let known = id.parse::<u64>().ok().is_some_and(|id| {
        db.catalog
            .views()
            .iter()
            .any(|v| v.id == id && v.is_materialized())
    });
    if !known {
        return Err((
            StatusCode::NOT_FOUND,
            Json(json!({ "errors": [format!("no job with id {id}")] })),
        ));
    }
    Ok(checkpoints(State(db)).await)
}

/// Counts, the latest completed and failed checkpoint, and the history
/// (newest first), shaped like Flink's `/jobs/:id/checkpoints`.
async fn checkpoints(State(db): State<Arc<Database>>) -> Json<Value> {
    let history = db
        .checkpointer
        .as_ref()
        .map(|c| c.history())
        .unwrap_or_default();
    let entry = |info: &CheckpointInfo| {
        json!({
            "id": info.id,
            "epoch": info.epoch,
            "status": info.status.as_str(),
            "started_at": checkpoint_started_at(info),
            "trigger_timestamp": info.started_ms,
            "duration_ms": info.duration_ms,
            "size_bytes": info.total_bytes,
            "incremental_bytes": info.uploaded_bytes,
            "error": info.error,
        })
    };
    let counts = db
        .checkpointer
        .as_ref()
        .map(|c| c.counts())
        .unwrap_or_default();
    let in_progress = history
        .iter()
        .filter(|i| i.status == CheckpointStatus::InProgress)
        .count() as u64;
    let latest =
        |status: CheckpointStatus| history.iter().rev().find(|i| i.status == status).map(entry);
    Json(json!({
        "enabled": db.checkpointer.is_some(),
        "location": db.checkpointer.as_ref().map(|c| c.location().to_string()),
        "counts": {
            "completed": counts.completed,
            "failed": counts.failed,
            "in_progress": in_progress,
            "total": counts.completed + counts.failed + in_progress,
        },
        "latest": {
            "completed": latest(CheckpointStatus::Completed),
            "failed": latest(CheckpointStatus::Failed),
        },
        "history": history.iter().rev().map(entry).collect::<Vec<_>>(),
    }))
}
