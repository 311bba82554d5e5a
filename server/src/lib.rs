//! The `runnel` server: configuration, the process-wide [`Database`]
//! (store, catalog, template DataFusion state), client sessions, the pgwire
//! frontend and the HTTP server.
//!
//! Entry point: [`run`], which binds the ports and serves until shutdown.
//! `main.rs` only parses flags and sets up logging.

pub mod advisory_locks;
pub mod allocator;
pub mod catalog;
mod checkpointing;
pub mod config;
pub mod database;
pub mod error;
mod http;
mod pg;
pub mod sequences;
pub mod session;
pub mod streaming;
pub mod tables;

use std::sync::Arc;

pub use config::Config;
pub use database::Database;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port is taken; names the option that moves it.
    #[error("cannot listen on {address}: {reason} (set another port with {option})")]
    Bind {
        address: String,
        reason: String,
        option: &'static str,
    },
    #[error("cannot open the database: {0}")]
    Database(#[from] error::ServerError),
}

async fn bind(host: &str, port: u16, option: &'static str) -> Result<TcpListener, StartError> {
    let address = format!("{host}:{port}");
    TcpListener::bind(&address)
        .await
        .map_err(|e| StartError::Bind {
            address,
            reason: e.to_string(),
            option,
        })
}

/// Opens the database, binds pgwire and HTTP, and serves until `shutdown`
/// resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let pg_listener = bind(&config.pgwire_host, config.pgwire_port, "--pgwire-port").await?;
    let web_listener = bind(&config.web_host, config.web_port, "--web-port").await?;
    let max_connections = config.max_connections;
    let db = Database::open(config)?;
    streaming::restart_jobs(&db).await?;
    tracing::info!(
        pgwire = %pg_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        web = %web_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        data_dir = %db.config.data_dir.display(),
        "runnel started"
    );
    let router = http::router(Arc::clone(&db));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(web_listener, router).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let manager = Arc::new(pgwire::api::ConnectionManager::new());
    let mut next_conn_id: u64 = 0;
    let accept = async {
        loop {
            let (socket, peer) = match pg_listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break;
            };
            let db = Arc::clone(&db);
            let manager = Arc::clone(&manager);
            next_conn_id += 1;
            let span = tracing::info_span!("conn", conn_id = next_conn_id, peer = %peer);
            tokio::spawn(
                async move {
                    tracing::debug!("connection accepted");
                    pg::serve_connection(db, manager, socket).await;
                    tracing::debug!("connection closed");
                    drop(permit);
                }
                .instrument(span),
            );
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => tracing::info!("shutting down"),
    }
    Ok(())
}
