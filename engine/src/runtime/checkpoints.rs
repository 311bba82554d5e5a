//! When the barrier manager takes checkpoints: after committing an epoch,
//! once `execution.checkpointing.interval` has passed since the last one
//! started and `min-pause` since it ended, with at most one upload running.
//! The local snapshot is taken before the next barrier is injected, so the
//! checkpoint holds exactly the committed epoch (and whatever DML committed
//! meanwhile, which a restore replays like a crash at that moment); the
//! upload runs beside the next epochs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_storage::Store;
use runnel_storage::checkpoint::Checkpointer;
use tokio::sync::mpsc;
use tracing::warn;

use super::manager::Command;
use crate::Epoch;

/// How often checkpoints are taken and where they go.
#[derive(Debug, Clone)]
pub struct CheckpointSchedule {
    pub checkpointer: Arc<Checkpointer>,
    /// `execution.checkpointing.interval`.
    pub interval: Duration,
    /// `execution.checkpointing.timeout`: an upload taking longer fails.
    pub timeout: Duration,
    /// `execution.checkpointing.min-pause`: least time between the end of
    /// one checkpoint and the start of the next.
    pub min_pause: Duration,
}

/// The schedule plus what the manager knows of the checkpoints under way.
#[derive(Debug)]
pub(crate) struct CheckpointTimer {
    schedule: CheckpointSchedule,
    running: bool,
    last_started: Instant,
    last_finished: Option<Instant>,
    /// RocksDB's sequence number at the last snapshot: an unchanged store
    /// needs no new checkpoint.
    last_sequence: Option<u64>,
}

impl CheckpointTimer {
    pub(crate) fn new(schedule: CheckpointSchedule) -> Self {
        Self {
            schedule,
            running: false,
            // The first checkpoint comes one interval after the start.
            last_started: Instant::now(),
            last_finished: None,
            last_sequence: None,
        }
    }

    /// The interval, for the manager's idle ticker.
    pub(crate) fn interval(&self) -> Duration {
        self.schedule.interval
    }

    fn due(&self, now: Instant) -> bool {
        !self.running
            && now.duration_since(self.last_started) >= self.schedule.interval
            && self
                .last_finished
                .is_none_or(|t| now.duration_since(t) >= self.schedule.min_pause)
    }

    /// Takes a checkpoint of `store` at committed epoch `epoch` if one is
    /// due: the snapshot now, the upload in the background, reporting
    /// [`Command::CheckpointDone`] on `commands` when it ends.
    pub(crate) async fn maybe_start(
        &mut self,
        store: &Store,
        epoch: Epoch,
        commands: &mpsc::WeakUnboundedSender<Command>,
    ) {
        let now = Instant::now();
        if !self.due(now) {
            return;
        }
        let sequence = store.latest_sequence_number();
        if self.last_sequence == Some(sequence) {
            return;
        }
        self.last_started = now;
        let checkpointer = Arc::clone(&self.schedule.checkpointer);
        let snapshot = {
            let checkpointer = Arc::clone(&checkpointer);
            let store = store.clone();
            tokio::task::spawn_blocking(move || checkpointer.snapshot(&store, epoch.0)).await
        };
        let snapshot = match snapshot {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(e)) => {
                warn!(epoch = epoch.0, error = %e, "could not take a checkpoint's snapshot");
                checkpointer.record_failure(epoch.0, &e);
                self.last_finished = Some(Instant::now());
                return;
            }
            Err(e) => {
                warn!(epoch = epoch.0, error = %e, "checkpoint snapshot task failed");
                self.last_finished = Some(Instant::now());
                return;
            }
        };
        self.running = true;
        self.last_sequence = Some(sequence);
        let timeout = self.schedule.timeout;
        let commands = commands.clone();
        tokio::spawn(async move {
            let result = checkpointer.upload(snapshot, timeout).await;
            if let Err(e) = &result {
                warn!(
                    epoch = epoch.0,
                    location = %checkpointer.location(),
                    error = %e,
                    "checkpoint failed; the next one retries"
                );
            }
            if let Some(commands) = commands.upgrade() {
                let _ = commands.send(Command::CheckpointDone {
                    epoch,
                    completed: result.is_ok(),
                });
            }
        });
    }

    /// An upload ended. A failed one leaves the store's changes to the
    /// next checkpoint.
    pub(crate) fn finished(&mut self, completed: bool) {
        self.running = false;
        self.last_finished = Some(Instant::now());
        if !completed {
            self.last_sequence = None;
        }
    }
}
