//! Opening the store with its checkpoints: a data directory that holds a
//! store is opened as it is (its committed epochs are newer than any
//! checkpoint); one that holds none, or a store in memory
//! (`state.backend: memory`, empty at every start), is first restored from
//! the newest usable checkpoint in `state.checkpoints.dir`, if there is
//! one. Then the checkpointer that the barrier manager drives is set up.

use std::path::Path;
use std::sync::Arc;

use runnel_engine::runtime::CheckpointSchedule;
use runnel_storage::checkpoint::{
    CheckpointLocation, Checkpointer, is_export, lineage, load_into, renew_lineage, restore_latest,
};
use runnel_storage::{Store, StoreOptions};
use tracing::{error, info, warn};

use crate::config::{Config, StateBackend};
use crate::error::{ServerError, ServerResult};

/// The opened store and, when checkpoints are on, how to take them.
pub struct OpenedStore {
    pub store: Store,
    pub checkpoints: Option<CheckpointSchedule>,
}

/// Opens (restoring first, if need be) the store under the data directory.
pub fn open_store(config: &Config) -> ServerResult<OpenedStore> {
    let store_dir = config.data_dir.join("store");
    let restore_dir = config.data_dir.join("restore");
    let settings = &config.checkpoints;
    let in_memory = config.state_backend == StateBackend::Memory;
    let options = StoreOptions {
        sync_writes: config.sync_writes,
        block_cache_bytes: config.block_cache_mb << 20,
        write_buffer_bytes: config.write_buffer_mb << 20,
        epoch_buffer_bytes: config.epoch_buffer_mb << 20,
        state_cache_bytes: config.state_cache_mb << 20,
        in_memory,
    };
    let location = match settings.interval {
        Some(_) => Some(CheckpointLocation::open(&settings.dir, &settings.s3)?),
        None => None,
    };
    if in_memory && location.is_none() {
        warn!(
            "state.backend is memory and checkpoints are off \
             (execution.checkpointing.interval: 0): nothing survives a restart"
        );
    }
    // A store in memory is always empty at start; one on disk only when
    // the data directory lost it.
    let needs_restore = in_memory || !store_dir.join("CURRENT").exists();
    let restored = match &location {
        Some(location) if needs_restore => {
            if !in_memory {
                set_aside(&store_dir)?;
            }
            if restore_dir.exists() {
                std::fs::remove_dir_all(&restore_dir).map_err(|e| io_error(&restore_dir, e))?;
            }
            let restored = run_async(restore_latest(location, &restore_dir))??;
            if restored.is_none() {
                info!(location = %location, "no checkpoint to restore; starting empty");
            }
            restored
        }
        _ => None,
    };
    // A RocksDB checkpoint becomes the store directory as it is; anything
    // else is loaded into a fresh store.
    if restored.is_some() && !in_memory && !is_export(&restore_dir) {
        std::fs::rename(&restore_dir, &store_dir).map_err(|e| io_error(&store_dir, e))?;
    }
    let store = Store::open(&store_dir, &options)?;
    if restored.is_some() && restore_dir.exists() {
        load_into(&restore_dir, &store)?;
        std::fs::remove_dir_all(&restore_dir).map_err(|e| io_error(&restore_dir, e))?;
    }
    let checkpoints = match (location, settings.interval) {
        (Some(location), Some(interval)) => {
            let lineage = match &restored {
                Some(_) => renew_lineage(&store)?,
                None => lineage(&store)?,
            };
            let checkpointer = Checkpointer::new(
                location,
                config.data_dir.join("checkpoint-staging"),
                lineage,
                settings.retained,
                restored,
            )?;
            Some(CheckpointSchedule {
                checkpointer: Arc::new(checkpointer),
                interval,
                timeout: settings.timeout,
                min_pause: settings.min_pause,
            })
        }
        _ => None,
    };
    Ok(OpenedStore { store, checkpoints })
}

fn io_error(path: &Path, e: std::io::Error) -> ServerError {
    ServerError::Internal(format!("data directory {}: {e}", path.display()))
}

/// Moves a store directory that RocksDB cannot open (no CURRENT file) out
/// of the way, so the restore starts clean; an empty one is removed.
fn set_aside(store_dir: &Path) -> ServerResult<()> {
    let io = |e: std::io::Error| io_error(store_dir, e);
    let Ok(mut entries) = std::fs::read_dir(store_dir) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return std::fs::remove_dir(store_dir).map_err(io);
    }
    let aside = store_dir.with_file_name(format!(
        "store.unusable-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    ));
    error!(
        store = %store_dir.display(),
        moved_to = %aside.display(),
        "THE STORE DIRECTORY HAS NO CURRENT FILE; moving it aside and restoring from the latest checkpoint"
    );
    std::fs::rename(store_dir, &aside).map_err(io)
}

/// Runs a startup step that needs async I/O on a thread of its own, so it
/// works whether or not the caller is inside a tokio runtime.
fn run_async<T: Send>(future: impl Future<Output = T> + Send) -> ServerResult<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
    })
    .map_err(|_| ServerError::Internal("the restore thread panicked".into()))?
    .map_err(|e| ServerError::Internal(format!("restore runtime: {e}")))
}
