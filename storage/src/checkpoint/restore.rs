//! Restoring a store from the newest usable checkpoint: every file of its
//! manifest downloaded and checked (size and CRC-32) into a fresh
//! directory, which becomes the store's only when all of it arrived. A
//! checkpoint that cannot be restored is reported loudly and the one before
//! it is tried.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;
use tracing::{error, info};

use super::CheckpointLocation;
use super::manifest::{Manifest, ManifestFile, list, read_manifest};
use crate::export::EXPORT_FILE;
use crate::{StorageError, StorageResult, Store, StoreOptions};

/// Restores the newest complete checkpoint at `location` into `dest` (which
/// must not exist yet). None when the location holds no usable checkpoint.
pub async fn restore_latest(
    location: &CheckpointLocation,
    dest: &Path,
) -> StorageResult<Option<Manifest>> {
    let complete = list(location).await?.complete_newest_first();
    for (tried, id) in complete.iter().enumerate() {
        match restore_one(location, *id, dest).await {
            Ok(manifest) => {
                info!(
                    id,
                    epoch = manifest.epoch,
                    location = %location,
                    "restored the store from a checkpoint"
                );
                return Ok(Some(manifest));
            }
            Err(e) => {
                let next = complete.get(tried + 1);
                error!(
                    id,
                    location = %location,
                    error = %e,
                    falling_back_to = ?next,
                    "CHECKPOINT CANNOT BE RESTORED; trying the one before it"
                );
            }
        }
    }
    Ok(None)
}

async fn restore_one(
    location: &CheckpointLocation,
    id: u64,
    dest: &Path,
) -> StorageResult<Manifest> {
    let manifest = read_manifest(location, id).await?;
    let staging = staging_dir(dest);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| StorageError::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| StorageError::io(&staging, e))?;
    for file in &manifest.files {
        if let Err(e) = download(location, file, &staging).await {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    }
    std::fs::rename(&staging, dest).map_err(|e| StorageError::io(dest, e))?;
    Ok(manifest)
}

/// Loads a restored checkpoint in `dir` into `store`, whichever backend
/// took it: an exported store is imported; a RocksDB checkpoint is opened
/// where it lies, exported and imported (a checkpoint of the on-disk
/// backend restored into the in-memory one).
pub fn load_into(dir: &Path, store: &Store) -> StorageResult<u64> {
    let export = dir.join(EXPORT_FILE);
    if !export.exists() {
        let restored = Store::open(dir, &StoreOptions::default())?;
        restored.export_to(&export)?;
    }
    store.import_from(&export)
}

/// Whether the restored checkpoint in `dir` is an exported store (taken
/// with `state.backend: memory`) rather than a RocksDB directory.
pub fn is_export(dir: &Path) -> bool {
    dir.join(EXPORT_FILE).exists()
}

fn staging_dir(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".restoring");
    dest.with_file_name(name)
}

async fn download(
    location: &CheckpointLocation,
    file: &ManifestFile,
    dir: &Path,
) -> StorageResult<()> {
    if file.name.contains('/') || file.name.starts_with('.') {
        return Err(location.error(format!("manifest names a bad file '{}'", file.name)));
    }
    let local = dir.join(&file.name);
    let mut out = tokio::fs::File::create(&local)
        .await
        .map_err(|e| StorageError::io(&local, e))?;
    let mut stream = location
        .store
        .get(&location.path(&file.object))
        .await
        .map_err(|e| location.error(format!("{}: {e}", file.object)))?
        .into_stream();
    let mut crc = crc32fast::Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| location.error(format!("{}: {e}", file.object)))?
    {
        crc.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|e| StorageError::io(&local, e))?;
    }
    out.sync_all()
        .await
        .map_err(|e| StorageError::io(&local, e))?;
    let crc32 = crc.finalize();
    if size != file.size || crc32 != file.crc32 {
        return Err(location.error(format!(
            "{} is damaged: {size} bytes with CRC {crc32:08x}, the manifest says {} bytes with CRC {:08x}",
            file.object, file.size, file.crc32
        )));
    }
    Ok(())
}
