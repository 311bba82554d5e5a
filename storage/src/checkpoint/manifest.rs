//! A checkpoint's manifest, `chk-<id>/_metadata`: which objects make up the
//! store at one committed epoch. It is written last, so a checkpoint without
//! one is partial and never restored.

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::CheckpointLocation;
use crate::StorageResult;

/// The manifest's format; a reader refuses others.
pub const MANIFEST_FORMAT: u32 = 1;
const METADATA: &str = "_metadata";

/// One file of a checkpointed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its name in the store's directory.
    pub name: String,
    /// The object holding it, relative to the location's root. SST files of
    /// earlier checkpoints are referenced, not copied again.
    pub object: String,
    pub size: u64,
    pub crc32: u32,
}

/// What a complete checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: u64,
    /// The committed epoch the store was at.
    pub epoch: u64,
    /// The store's lineage (a new one after every restore), which names
    /// the folder its SST files are uploaded to.
    pub lineage: String,
    /// Milliseconds since the Unix epoch when the checkpoint started.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Bytes this checkpoint uploaded (the rest it references).
    pub uploaded_bytes: u64,
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Bytes of every file of the checkpoint, uploaded now or earlier.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The folder of checkpoint `id`.
pub(crate) fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id}")
}

/// The id of a `chk-<id>` folder name.
pub(crate) fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

pub(crate) async fn write_manifest(
    location: &CheckpointLocation,
    manifest: &Manifest,
) -> StorageResult<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| location.error(e))?;
    location
        .store
        .put(
            &location.path(&format!("{}/{METADATA}", checkpoint_dir(manifest.id))),
            PutPayload::from(json),
        )
        .await
        .map_err(|e| location.error(e))?;
    Ok(())
}

/// What the location holds: every checkpoint id that has a folder, and
/// whether it is complete.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// (id, has a manifest), by id.
    pub checkpoints: std::collections::BTreeMap<u64, bool>,
    /// Every object under `shared/`, relative to the root.
    pub shared: Vec<String>,
}

impl Listing {
    /// Ids of the complete checkpoints, newest first.
    pub fn complete_newest_first(&self) -> Vec<u64> {
        self.checkpoints
            .iter()
            .rev()
            .filter(|(_, complete)| **complete)
            .map(|(id, _)| *id)
            .collect()
    }
}

pub(crate) async fn list(location: &CheckpointLocation) -> StorageResult<Listing> {
    let mut listing = Listing::default();
    let mut objects = location.store.list(Some(&location.root));
    while let Some(meta) = objects.try_next().await.map_err(|e| location.error(e))? {
        let relative = location.relative(&meta.location);
        let mut parts = relative.split('/');
        let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
            continue;
        };
        if first == "shared" {
            listing.shared.push(relative);
        } else if let Some(id) = parse_checkpoint_dir(first) {
            let complete = listing.checkpoints.entry(id).or_default();
            *complete |= second == METADATA;
        }
    }
    Ok(listing)
}

/// The manifest of checkpoint `id`.
pub(crate) async fn read_manifest(
    location: &CheckpointLocation,
    id: u64,
) -> StorageResult<Manifest> {
    let path = location.path(&format!("{}/{METADATA}", checkpoint_dir(id)));
    let bytes = location
        .store
        .get(&path)
        .await
        .map_err(|e| location.error(e))?
        .bytes()
        .await
        .map_err(|e| location.error(e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| location.error(format!("manifest of checkpoint {id}: {e}")))?;
    if manifest.format != MANIFEST_FORMAT || manifest.id != id {
        return Err(location.error(format!(
            "manifest of checkpoint {id} has format {} and id {}",
            manifest.format, manifest.id
        )));
    }
    Ok(manifest)
}

/// Deletes every object of checkpoint `id`'s folder.
pub(crate) async fn delete_checkpoint(location: &CheckpointLocation, id: u64) -> StorageResult<()> {
    let prefix = location.path(&checkpoint_dir(id));
    let objects: Vec<_> = location
        .store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .map_err(|e| location.error(e))?;
    // The manifest first: a half-deleted checkpoint must not look complete.
    let (manifest, rest): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|p| p.filename() == Some(METADATA));
    for path in manifest.into_iter().chain(rest) {
        location
            .store
            .delete(&path)
            .await
            .map_err(|e| location.error(e))?;
    }
    Ok(())
}
