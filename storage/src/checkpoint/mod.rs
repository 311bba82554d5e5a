//! Checkpoints of the store on object storage (DESIGN.md, "Checkpoints"):
//! every committed epoch is already durable in the local RocksDB; a
//! checkpoint copies the store at one committed epoch to
//! `state.checkpoints.dir` (`file://`, `s3://`, `hdfs://`), so a server
//! whose data directory is gone can start again from it.
//!
//! Layout under the location's root:
//! - `shared/<lineage>/<n>.sst`: RocksDB's table files, uploaded once and
//!   referenced by every later checkpoint that still uses them;
//! - `chk-<id>/`: a checkpoint's own small files (RocksDB's MANIFEST,
//!   CURRENT, OPTIONS) and, written last, `_metadata` ([`Manifest`]).
//!
//! A store in memory (`state.backend: memory`) is checkpointed as one
//! exported file (`chk-<id>/store.export`, [`crate::export`]), in full each
//! time.
//!
//! A lineage is a store's history since it was created or restored: a
//! restored store gets a new one, so its new table files never collide
//! with files a checkpoint of the old history may hold under the same name.

mod hdfs;
mod location;
mod manifest;
mod restore;
mod upload;

pub use location::{CheckpointLocation, S3Options};
pub use manifest::{Manifest, ManifestFile};
pub use restore::{is_export, load_into, restore_latest};
pub use upload::{CheckpointCounts, CheckpointInfo, CheckpointStatus, Checkpointer, LocalSnapshot};

use crate::{StorageResult, Store, WriteSet};

const LINEAGE_KEY: &[u8] = b"checkpoint_lineage";

/// The store's lineage, created on first use.
pub fn lineage(store: &Store) -> StorageResult<String> {
    if let Some((_, value)) = store
        .meta_scan(LINEAGE_KEY)?
        .into_iter()
        .find(|(key, _)| key == LINEAGE_KEY)
    {
        return Ok(String::from_utf8_lossy(&value).into_owned());
    }
    renew_lineage(store)
}

/// Starts a new lineage (after a restore) and returns it.
pub fn renew_lineage(store: &Store) -> StorageResult<String> {
    let lineage = format!("{:x}-{:x}", upload::now_ms(), std::process::id());
    let mut writes = WriteSet::new();
    writes.put_meta(LINEAGE_KEY, lineage.as_bytes());
    store.write(writes)?;
    Ok(lineage)
}

#[cfg(test)]
mod tests;
