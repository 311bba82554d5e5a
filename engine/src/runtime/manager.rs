//! The barrier manager: injects a barrier of a rising epoch into every
//! source, collects every task's sealed state writes for that epoch and
//! commits them — with the sources' read positions and the trimming of the
//! change logs — as one atomic write. A read of the store therefore sees
//! every view at the same committed epoch.
//!
//! One epoch is in flight at a time: epoch E+1 is injected only after E is
//! committed, which is what lets state tables forget their sealed writes at
//! the next seal.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use runnel_storage::{Store, WriteSet};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::LogRegistry;
use super::checkpoints::{CheckpointSchedule, CheckpointTimer};
use crate::{Barrier, BarrierKind, EngineError, EngineResult, Epoch};

const EPOCH_KEY: &[u8] = b"epoch";

/// What tasks and sources tell the manager.
#[derive(Debug)]
pub(crate) enum Report {
    /// A task or source passed the barrier of `epoch`.
    Sealed {
        job: u64,
        epoch: Epoch,
        writes: WriteSet,
    },
    /// A task or source stopped with an error.
    Failed { job: u64, error: String },
    /// A source found the epoch buffer full and waits for the next barrier.
    BufferFull,
}

/// A job as the manager runs it.
pub(crate) struct RunningJob {
    pub id: u64,
    /// Tasks plus sources: how many reports each epoch waits for.
    pub reporters: usize,
    pub barriers: Vec<mpsc::UnboundedSender<Barrier>>,
    pub handles: Vec<JoinHandle<()>>,
    /// Relations whose change logs the job reads, and its own view's log.
    pub reads: Vec<u64>,
    pub writes_log: Option<u64>,
    /// A sink's job: where the manager says which epochs it may write out.
    pub publish: Option<watch::Sender<Epoch>>,
}

/// Builds a job between two epochs, given the last committed epoch and the
/// newest its sinks may write out.
pub(crate) type JobBuilder =
    Box<dyn FnOnce(Epoch, Epoch) -> BoxFuture<'static, EngineResult<RunningJob>> + Send>;

pub(crate) enum Command {
    Create {
        build: JobBuilder,
        done: oneshot::Sender<EngineResult<()>>,
    },
    Drop {
        job: u64,
        done: oneshot::Sender<()>,
    },
    Flush {
        done: oneshot::Sender<EngineResult<()>>,
    },
    Report(Report),
    /// Start injecting barriers (after the jobs of a restart all exist).
    Resume,
    /// A checkpoint's upload ended.
    CheckpointDone {
        epoch: Epoch,
        completed: bool,
    },
}

/// What SHOW JOBS tells of a job's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    /// Running, but its sink cannot write out now and retries.
    Retrying(String),
    Failed(String),
    /// Every source it reads ended and its last rows are committed: its
    /// results are final.
    Finished,
}

/// Shared job states, read by SHOW JOBS.
pub(crate) type JobStates = Arc<Mutex<BTreeMap<u64, JobState>>>;

/// Shows in SHOW JOBS that a running job's source or sink cannot reach
/// its outside system and retries (`Some(reason)`), or no longer (`None`).
/// A job that failed or stopped keeps its state.
pub(crate) fn set_retrying(states: &JobStates, job: u64, reason: Option<String>) {
    let mut states = states.lock().unwrap_or_else(|p| p.into_inner());
    match (states.get(&job), reason) {
        (Some(JobState::Retrying(old)), Some(reason)) if *old == reason => {}
        (Some(JobState::Running | JobState::Retrying(_)), Some(reason)) => {
            states.insert(job, JobState::Retrying(reason));
        }
        (Some(JobState::Retrying(_)), None) => {
            states.insert(job, JobState::Running);
        }
        _ => {}
    }
}

struct InFlight {
    epoch: Epoch,
    waiting: HashMap<u64, usize>,
    writes: WriteSet,
    flushes: Vec<oneshot::Sender<EngineResult<()>>>,
}

pub(crate) struct Manager {
    pub store: Store,
    pub logs: Arc<LogRegistry>,
    pub states: JobStates,
    pub committed: Epoch,
    /// `committed`, for readers outside the manager's task.
    committed_shared: Arc<std::sync::atomic::AtomicU64>,
    pub jobs: BTreeMap<u64, RunningJob>,
    pub interval: Duration,
    pub commands: mpsc::UnboundedReceiver<Command>,
    in_flight: Option<InFlight>,
    /// No barrier is injected until resumed: restarted jobs must all be in
    /// place before the first epoch, or a view's log would move on before
    /// the views reading it rejoin.
    paused: bool,
    pending_flushes: Vec<oneshot::Sender<EngineResult<()>>>,
    pending_creates: Vec<(JobBuilder, oneshot::Sender<EngineResult<()>>)>,
    /// A source asked for a barrier while one was in flight: inject the
    /// next as soon as that one commits.
    early: bool,
    checkpoints: Option<CheckpointTimer>,
    /// The manager's own command channel, for uploads to report back on
    /// (weak: the manager ends when the runtime drops its sender).
    commands_tx: mpsc::WeakUnboundedSender<Command>,
}

/// The last committed epoch recorded in `store`.
pub(crate) fn committed_epoch(store: &Store) -> EngineResult<Epoch> {
    Ok(match store.meta_scan(EPOCH_KEY)?.into_iter().next() {
        Some((_, bytes)) => {
            Epoch(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| EngineError::Internal("stored epoch is not 8 bytes".into()),
            )?))
        }
        None => Epoch(0),
    })
}

impl Manager {
    pub(crate) fn new(
        store: Store,
        logs: Arc<LogRegistry>,
        states: JobStates,
        interval: Duration,
        commands: (
            mpsc::WeakUnboundedSender<Command>,
            mpsc::UnboundedReceiver<Command>,
        ),
        checkpoints: Option<CheckpointSchedule>,
        committed_shared: Arc<std::sync::atomic::AtomicU64>,
    ) -> EngineResult<Self> {
        let (commands_tx, commands) = commands;
        let committed = committed_epoch(&store)?;
        committed_shared.store(committed.0, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            store,
            logs,
            states,
            committed,
            committed_shared,
            jobs: BTreeMap::new(),
            interval,
            commands,
            in_flight: None,
            paused: true,
            pending_flushes: vec![],
            pending_creates: vec![],
            early: false,
            checkpoints: checkpoints.map(CheckpointTimer::new),
            commands_tx,
        })
    }

    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Without jobs no epoch commits, but DML and DDL still change the
        // store: checkpoints then come from this ticker.
        let idle_period = self
            .checkpoints
            .as_ref()
            .map_or(Duration::from_secs(3600), CheckpointTimer::interval);
        let mut idle_checkpoints =
            tokio::time::interval(idle_period.max(Duration::from_millis(10)));
        idle_checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => return,
                },
                _ = ticker.tick(), if !self.paused && self.in_flight.is_none() && !self.jobs.is_empty() => {
                    self.inject();
                }
                _ = idle_checkpoints.tick(), if !self.paused && self.in_flight.is_none() && self.jobs.is_empty() => {
                    self.maybe_checkpoint().await;
                }
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Create { build, done } => {
                if self.in_flight.is_none() {
                    let result = self.create(build).await;
                    let _ = done.send(result);
                } else {
                    self.pending_creates.push((build, done));
                }
            }
            Command::Drop { job, done } => {
                self.remove(job);
                self.states
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&job);
                self.check_complete().await;
                let _ = done.send(());
            }
            Command::Resume => {
                self.paused = false;
                if !self.pending_flushes.is_empty() && self.in_flight.is_none() {
                    self.inject();
                    self.check_complete().await;
                }
            }
            Command::Flush { done } => {
                self.pending_flushes.push(done);
                if !self.paused && self.in_flight.is_none() {
                    self.inject();
                    self.check_complete().await;
                }
            }
            Command::Report(Report::Sealed { job, epoch, writes }) => {
                if let Some(flight) = self.in_flight.as_mut()
                    && flight.epoch == epoch
                    && let Some(left) = flight.waiting.get_mut(&job)
                {
                    *left -= 1;
                    flight.writes.extend(writes);
                    if *left == 0 {
                        flight.waiting.remove(&job);
                    }
                    self.check_complete().await;
                }
            }
            Command::CheckpointDone { epoch, completed } => {
                debug!(epoch = epoch.0, completed, "checkpoint ended");
                if let Some(timer) = self.checkpoints.as_mut() {
                    timer.finished(completed);
                }
                if completed {
                    self.publish(epoch);
                }
            }
            Command::Report(Report::BufferFull) => {
                if self.in_flight.is_some() {
                    self.early = true;
                } else if !self.paused && !self.jobs.is_empty() {
                    debug!("epoch buffer full: barrier before the tick");
                    self.inject();
                    self.check_complete().await;
                }
            }
            Command::Report(Report::Failed { job, error }) => {
                if self.jobs.contains_key(&job) {
                    warn!(job, %error, "streaming job failed");
                    self.remove(job);
                    self.states
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(job, JobState::Failed(error.clone()));
                    let mut writes = WriteSet::new();
                    writes.put_meta(&failed_key(job), error.as_bytes());
                    if let Err(e) = self.store.write(writes) {
                        warn!(job, error = %e, "could not record a job's failure");
                    }
                    self.check_complete().await;
                }
            }
        }
    }

    async fn create(&mut self, build: JobBuilder) -> EngineResult<()> {
        let job = build(self.committed, self.publishable()).await?;
        for relation in &job.reads {
            self.logs.add_reader(*relation);
        }
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id, JobState::Running);
        self.jobs.insert(job.id, job);
        Ok(())
    }

    fn remove(&mut self, id: u64) {
        if let Some(job) = self.jobs.remove(&id) {
            for handle in &job.handles {
                handle.abort();
            }
            for relation in &job.reads {
                self.logs.remove_reader(*relation);
            }
            if let Some(log) = job.writes_log {
                self.logs.close(log, "its materialized view stopped");
            }
            if let Some(flight) = self.in_flight.as_mut() {
                flight.waiting.remove(&id);
            }
        }
    }

    fn inject(&mut self) {
        let epoch = self.committed.next();
        self.logs.seal_tables(epoch);
        let barrier = Barrier {
            epoch,
            kind: BarrierKind::Checkpoint,
        };
        let mut waiting = HashMap::new();
        for job in self.jobs.values() {
            waiting.insert(job.id, job.reporters);
            for source in &job.barriers {
                let _ = source.send(barrier);
            }
        }
        debug!(epoch = epoch.0, jobs = waiting.len(), "barrier injected");
        self.in_flight = Some(InFlight {
            epoch,
            waiting,
            writes: WriteSet::new(),
            flushes: std::mem::take(&mut self.pending_flushes),
        });
    }

    async fn check_complete(&mut self) {
        if !self
            .in_flight
            .as_ref()
            .is_some_and(|flight| flight.waiting.is_empty())
        {
            return;
        }
        let flight = self.in_flight.take().expect("checked above");
        let result = self.commit(flight.epoch, flight.writes).await;
        for done in flight.flushes {
            let _ = done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(EngineError::Internal(e.to_string())),
            });
        }
        match result {
            Ok(()) => self.maybe_checkpoint().await,
            Err(e) => self.fail_all(flight.epoch, &e),
        }
        for (build, done) in std::mem::take(&mut self.pending_creates) {
            let result = self.create(build).await;
            let _ = done.send(result);
        }
        let early = std::mem::take(&mut self.early) && !self.jobs.is_empty();
        if !self.pending_flushes.is_empty() || early {
            if early {
                debug!("epoch buffer full: barrier before the tick");
            }
            self.inject();
            Box::pin(self.check_complete()).await;
        }
    }

    /// An epoch could not be committed (disk full, I/O error): the state
    /// tables already forgot what it held, so no job may go on from here.
    /// Every job stops, failed with the error; nothing is recorded, so a
    /// restart resumes each from the last committed epoch.
    fn fail_all(&mut self, epoch: Epoch, error: &EngineError) {
        warn!(epoch = epoch.0, %error, "committing an epoch failed; stopping every job");
        let message = format!(
            "committing epoch {} failed: {error}; the job resumes from its last committed epoch when the server restarts",
            epoch.0
        );
        let ids: Vec<u64> = self.jobs.keys().copied().collect();
        for id in ids {
            self.remove(id);
            self.states
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, JobState::Failed(message.clone()));
        }
    }

    /// Starts a checkpoint of the committed epoch if one is due.
    async fn maybe_checkpoint(&mut self) {
        if let Some(timer) = self.checkpoints.as_mut() {
            timer
                .maybe_start(&self.store, self.committed, &self.commands_tx)
                .await;
        }
    }

    async fn commit(&mut self, epoch: Epoch, mut writes: WriteSet) -> EngineResult<()> {
        writes.put_meta(EPOCH_KEY, &epoch.0.to_be_bytes());
        // Every reader read its logs up to this epoch's seal: older entries
        // are needed by nobody.
        let trims = self.logs.trim_points(epoch);
        for (relation, seq, durable) in &trims {
            if *durable {
                writes.delete_changes_before(*relation, *seq);
            }
        }
        let ops = writes.len();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write(writes))
            .await
            .map_err(|e| EngineError::Internal(format!("commit task failed: {e}")))??;
        for (relation, seq, _) in trims {
            self.logs.trim(relation, seq, epoch);
        }
        self.committed = epoch;
        self.committed_shared
            .store(epoch.0, std::sync::atomic::Ordering::Relaxed);
        debug!(epoch = epoch.0, ops, "epoch committed");
        if self.checkpoints.is_none() {
            self.publish(epoch);
        }
        Ok(())
    }

    /// Lets sinks write out what they staged up to `epoch`: committed, and
    /// with checkpoints to object storage, held by a complete checkpoint.
    fn publish(&self, epoch: Epoch) {
        for job in self.jobs.values() {
            if let Some(publish) = &job.publish {
                publish.send_if_modified(|published| {
                    let rises = epoch > *published;
                    if rises {
                        *published = epoch;
                    }
                    rises
                });
            }
        }
    }

    /// The epoch sinks of a new job may write out up to.
    pub(crate) fn publishable(&self) -> Epoch {
        if self.checkpoints.is_none() {
            self.committed
        } else {
            Epoch(0)
        }
    }
}

/// The catalog record naming a failed job's error.
pub fn failed_key(job: u64) -> Vec<u8> {
    format!("job_failed/{job:020}").into_bytes()
}
