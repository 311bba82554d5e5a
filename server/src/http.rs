//! The HTTP server: `/healthz` and `/overview` (JSON), the start of the
//! REST API on `web.port`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::database::Database;

/// The routes of the HTTP server.
pub fn router(db: Arc<Database>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/overview", get(overview))
        .with_state(db)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn overview(State(db): State<Arc<Database>>) -> Json<Value> {
    let (tables, views) = db.catalog.relation_counts();
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
    }))
}
