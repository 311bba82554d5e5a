//! Taking checkpoints: a RocksDB checkpoint of the store (hard links, so
//! taking it is quick and it stays valid while RocksDB compacts), uploaded
//! file by file, SST files only when no earlier checkpoint holds them, the
//! manifest last; then old checkpoints and unreferenced files are deleted.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::CheckpointLocation;
use super::manifest::{
    MANIFEST_FORMAT, Manifest, ManifestFile, checkpoint_dir, delete_checkpoint, list,
    read_manifest, write_manifest,
};
use crate::export::EXPORT_FILE;
use crate::{StorageError, StorageResult, Store};

/// Checkpoints kept in the history `SHOW CHECKPOINTS` reads.
const HISTORY: usize = 100;
/// Bytes read and sent at a time while uploading a file.
const CHUNK: usize = 8 << 20;

/// Where a checkpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
}

impl CheckpointStatus {
    /// The status as `SHOW CHECKPOINTS` and the REST API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::InProgress => "in_progress",
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::Failed => "failed",
        }
    }
}

/// One checkpoint as the history tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// None until the upload has started and been given an id.
    pub id: Option<u64>,
    pub epoch: u64,
    pub status: CheckpointStatus,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Bytes of every file the checkpoint references.
    pub total_bytes: u64,
    /// Bytes it uploaded itself.
    pub uploaded_bytes: u64,
    pub error: Option<String>,
}

/// A RocksDB checkpoint of the store in the staging directory, waiting to
/// be uploaded.
#[derive(Debug)]
pub struct LocalSnapshot {
    dir: PathBuf,
    epoch: u64,
    started_ms: u64,
    started: Instant,
}

impl LocalSnapshot {
    /// The committed epoch the snapshot holds.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// What the uploader knows between checkpoints.
#[derive(Debug, Default)]
struct UploadState {
    initialized: bool,
    next_id: u64,
    /// Files of the last complete checkpoint, by name: what need not be
    /// uploaded again.
    uploaded: HashMap<String, ManifestFile>,
}

/// Takes checkpoints of one store to one location.
#[derive(Debug)]
pub struct Checkpointer {
    location: CheckpointLocation,
    staging: PathBuf,
    lineage: String,
    retained: usize,
    state: tokio::sync::Mutex<UploadState>,
    /// Recent attempts, each under a number of its own.
    history: Mutex<VecDeque<(u64, CheckpointInfo)>>,
    attempts: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// How many checkpoints completed and failed since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointCounts {
    pub completed: u64,
    pub failed: u64,
}

impl Checkpointer {
    /// Checkpoints to `location`, staged under `staging` (on the store's
    /// file system, for hard links), keeping `retained` complete ones.
    /// `restored` is the manifest the store was restored from, if it was:
    /// its files need not be uploaded again.
    pub fn new(
        location: CheckpointLocation,
        staging: PathBuf,
        lineage: String,
        retained: usize,
        restored: Option<Manifest>,
    ) -> StorageResult<Self> {
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| StorageError::io(&staging, e))?;
        }
        std::fs::create_dir_all(&staging).map_err(|e| StorageError::io(&staging, e))?;
        let mut state = UploadState::default();
        if let Some(manifest) = restored {
            state.uploaded = sst_files(&manifest);
        }
        Ok(Self {
            location,
            staging,
            lineage,
            retained: retained.max(1),
            state: tokio::sync::Mutex::new(state),
            history: Mutex::new(VecDeque::new()),
            attempts: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The location checkpoints go to.
    pub fn location(&self) -> &CheckpointLocation {
        &self.location
    }

    /// Checkpoints completed and failed since the process started.
    pub fn counts(&self) -> CheckpointCounts {
        CheckpointCounts {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Recent checkpoints, newest last.
    pub fn history(&self) -> Vec<CheckpointInfo> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, info)| info.clone())
            .collect()
    }

    /// Takes a RocksDB checkpoint of `store`, which is at committed epoch
    /// `epoch` (an export, for a store in memory). Blocking: flushes the
    /// memtables and links the files.
    pub fn snapshot(&self, store: &Store, epoch: u64) -> StorageResult<LocalSnapshot> {
        let started_ms = now_ms();
        let dir = self.staging.join(format!("epoch-{epoch}-{started_ms}"));
        if store.is_in_memory() {
            std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
            store.export_to(&dir.join(EXPORT_FILE))?;
        } else {
            store.create_checkpoint(&dir)?;
        }
        Ok(LocalSnapshot {
            dir,
            epoch,
            started_ms,
            started: Instant::now(),
        })
    }

    /// Uploads `snapshot` as the next checkpoint, within `timeout`; records
    /// the outcome in the history either way and returns the manifest.
    pub async fn upload(
        &self,
        snapshot: LocalSnapshot,
        timeout: Duration,
    ) -> StorageResult<Manifest> {
        let mut state = self.state.lock().await;
        let entry = self.record(CheckpointInfo {
            id: None,
            epoch: snapshot.epoch,
            status: CheckpointStatus::InProgress,
            started_ms: snapshot.started_ms,
            duration_ms: 0,
            total_bytes: 0,
            uploaded_bytes: 0,
            error: None,
        });
        let result =
            match tokio::time::timeout(timeout, self.upload_inner(&mut state, &snapshot)).await {
                Ok(result) => result,
                Err(_) => Err(self.location.error(format!(
                    "checkpoint timed out after {} ms (execution.checkpointing.timeout)",
                    timeout.as_millis()
                ))),
            };
        if let Err(e) = std::fs::remove_dir_all(&snapshot.dir) {
            warn!(dir = %snapshot.dir.display(), error = %e, "could not remove a staged checkpoint");
        }
        let duration_ms = snapshot.started.elapsed().as_millis() as u64;
        self.update(entry, |info| {
            info.duration_ms = duration_ms;
            match &result {
                Ok(manifest) => {
                    info.id = Some(manifest.id);
                    info.status = CheckpointStatus::Completed;
                    info.total_bytes = manifest.total_bytes();
                    info.uploaded_bytes = manifest.uploaded_bytes;
                }
                Err(e) => {
                    info.status = CheckpointStatus::Failed;
                    info.error = Some(e.to_string());
                }
            }
        });
        let counter = if result.is_ok() {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let manifest = result?;
        info!(
            id = manifest.id,
            epoch = manifest.epoch,
            duration_ms,
            total_bytes = manifest.total_bytes(),
            uploaded_bytes = manifest.uploaded_bytes,
            "checkpoint completed"
        );
        state.uploaded = sst_files(&manifest);
        if let Err(e) = self.expire(manifest.id).await {
            warn!(location = %self.location, error = %e, "could not delete old checkpoints");
        }
        Ok(manifest)
    }

    async fn upload_inner(
        &self,
        state: &mut UploadState,
        snapshot: &LocalSnapshot,
    ) -> StorageResult<Manifest> {
        if !state.initialized {
            self.initialize(state).await?;
        }
        let id = state.next_id;
        state.next_id += 1;
        // Leftovers of an earlier, failed attempt at this id.
        delete_checkpoint(&self.location, id).await?;
        let mut files = vec![];
        let mut uploaded_bytes = 0;
        let mut names: Vec<String> = std::fs::read_dir(&snapshot.dir)
            .map_err(|e| StorageError::io(&snapshot.dir, e))?
            .map(|entry| {
                entry
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .map_err(|e| StorageError::io(&snapshot.dir, e))
            })
            .collect::<StorageResult<_>>()?;
        names.sort();
        for name in names {
            let local = snapshot.dir.join(&name);
            let size = std::fs::metadata(&local)
                .map_err(|e| StorageError::io(&local, e))?
                .len();
            let is_sst = name.ends_with(".sst");
            if is_sst
                && let Some(known) = state.uploaded.get(&name)
                && known.size == size
            {
                files.push(known.clone());
                continue;
            }
            let object = if is_sst {
                format!("shared/{}/{name}", self.lineage)
            } else {
                format!("{}/{name}", checkpoint_dir(id))
            };
            let crc32 = self.put_file(&local, &object).await?;
            uploaded_bytes += size;
            files.push(ManifestFile {
                name,
                object,
                size,
                crc32,
            });
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id,
            epoch: snapshot.epoch,
            lineage: self.lineage.clone(),
            started_ms: snapshot.started_ms,
            duration_ms: snapshot.started.elapsed().as_millis() as u64,
            uploaded_bytes,
            files,
        };
        write_manifest(&self.location, &manifest).await?;
        Ok(manifest)
    }

    /// Learns the next free id and, for a store that checkpointed here
    /// before, which of its files are there already.
    async fn initialize(&self, state: &mut UploadState) -> StorageResult<()> {
        let listing = list(&self.location).await?;
        state.next_id = listing
            .checkpoints
            .keys()
            .next_back()
            .map_or(1, |id| id + 1);
        if state.uploaded.is_empty() {
            for id in listing.complete_newest_first() {
                match read_manifest(&self.location, id).await {
                    Ok(manifest) if manifest.lineage == self.lineage => {
                        state.uploaded = sst_files(&manifest);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => warn!(id, error = %e, "skipping an unreadable checkpoint manifest"),
                }
            }
        }
        state.initialized = true;
        Ok(())
    }

    /// Uploads one file, returning its CRC-32.
    async fn put_file(&self, local: &Path, object: &str) -> StorageResult<u32> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| StorageError::io(local, e))?;
        let mut writer = BufWriter::with_capacity(
            std::sync::Arc::clone(&self.location.store),
            self.location.path(object),
            CHUNK,
        );
        let mut crc = crc32fast::Hasher::new();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = file
                .read(&mut buffer)
                .await
                .map_err(|e| StorageError::io(local, e))?;
            if read == 0 {
                break;
            }
            crc.update(&buffer[..read]);
            if let Err(e) = writer.put(Bytes::copy_from_slice(&buffer[..read])).await {
                let _ = writer.abort().await;
                return Err(self.location.error(e));
            }
        }
        writer
            .shutdown()
            .await
            .map_err(|e| self.location.error(e))?;
        Ok(crc.finalize())
    }

    /// Keeps the newest `retained` complete checkpoints, deletes the rest
    /// and every shared file none of the kept ones references.
    async fn expire(&self, newest: u64) -> StorageResult<()> {
        let listing = list(&self.location).await?;
        let kept: BTreeSet<u64> = listing
            .complete_newest_first()
            .into_iter()
            .take(self.retained)
            .collect();
        let mut referenced = BTreeSet::new();
        for &id in &kept {
            for file in read_manifest(&self.location, id).await?.files {
                referenced.insert(file.object);
            }
        }
        for &id in listing.checkpoints.keys() {
            if !kept.contains(&id) && id < newest {
                delete_checkpoint(&self.location, id).await?;
            }
        }
        for object in listing.shared {
            if !referenced.contains(&object) {
                self.location
                    .store
                    .delete(&self.location.path(&object))
                    .await
                    .map_err(|e| self.location.error(e))?;
            }
        }
        Ok(())
    }

    fn record(&self, info: CheckpointInfo) -> u64 {
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back((attempt, info));
        attempt
    }

    fn update(&self, attempt: u64, change: impl FnOnce(&mut CheckpointInfo)) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, info)) = history.iter_mut().rev().find(|(a, _)| *a == attempt) {
            change(info);
        }
    }

    /// Records a checkpoint that failed before its upload could start
    /// (the local snapshot could not be taken).
    pub fn record_failure(&self, epoch: u64, error: &StorageError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.record(CheckpointInfo {
            id: None,
            epoch,
            status: CheckpointStatus::Failed,
            started_ms: now_ms(),
            duration_ms: 0,
            total_bytes: 0,
            uploaded_bytes: 0,
            error: Some(error.to_string()),
        });
    }
}

fn sst_files(manifest: &Manifest) -> HashMap<String, ManifestFile> {
    manifest
        .files
        .iter()
        .filter(|f| f.name.ends_with(".sst"))
        .map(|f| (f.name.clone(), f.clone()))
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
