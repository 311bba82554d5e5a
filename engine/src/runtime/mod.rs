//! Running jobs in this process: the [`Runtime`] owns the barrier manager,
//! the change-log registry and the tasks of every job.

mod build;
mod checkpoints;
pub mod connector;
mod exchange;
mod logs;
mod manager;
mod metrics;
mod sink;
mod source;
mod split_watermarks;
mod task;

use std::sync::Arc;
use std::time::Duration;

use runnel_storage::Store;
use tokio::sync::{mpsc, oneshot};

pub use checkpoints::CheckpointSchedule;
pub use logs::{LogRegistry, table_log_seq_key};
pub use manager::{JobState, failed_key as failed_job_key};
pub use sink::{SinkWriteError, SinkWriter};

use crate::graph::StreamGraph;
use crate::{EngineError, EngineResult, Epoch};
use manager::{Command, JobStates, Manager, Report};

/// Everything needed to start a job.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job's id: the id of the view it maintains.
    pub id: u64,
    pub graph: StreamGraph,
}

/// How the runtime runs jobs.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Time between barriers while jobs run.
    pub barrier_interval: Duration,
    /// After how long an input whose watermark stands still stops holding
    /// back the watermark of an operator with several inputs.
    pub source_idle_timeout: Option<Duration>,
    /// Checkpoints to object storage, if taken at all.
    pub checkpoints: Option<CheckpointSchedule>,
}

/// The streaming runtime of one process.
pub struct Runtime {
    store: Store,
    connectors: Arc<dyn connector::ConnectorFactory>,
    progress: Arc<build::SourceProgress>,
    metrics: Arc<metrics::MetricsRegistry>,
    options: RuntimeOptions,
    logs: Arc<LogRegistry>,
    states: JobStates,
    commands: mpsc::UnboundedSender<Command>,
    /// The last committed epoch, as the barrier manager last set it.
    committed: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the barrier manager, which injects a barrier every
    /// `options.barrier_interval` while jobs run, once [`Runtime::resume`]d. Must be
    /// called inside a tokio runtime.
    pub fn start(
        store: Store,
        options: RuntimeOptions,
        connectors: Arc<dyn connector::ConnectorFactory>,
    ) -> EngineResult<Arc<Self>> {
        let logs = Arc::new(LogRegistry::default());
        let states = JobStates::default();
        let (commands, receiver) = mpsc::unbounded_channel();
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let manager = Manager::new(
            store.clone(),
            Arc::clone(&logs),
            Arc::clone(&states),
            options.barrier_interval,
            (commands.downgrade(), receiver),
            options.checkpoints.clone(),
            Arc::clone(&committed),
        )?;
        tokio::spawn(manager.run());
        Ok(Arc::new(Self {
            store,
            connectors,
            progress: Arc::default(),
            metrics: Arc::default(),
            options,
            logs,
            states,
            commands,
            committed,
        }))
    }

    /// The change logs (DML appends to tables' logs).
    pub fn logs(&self) -> &LogRegistry {
        &self.logs
    }

    /// The error a job failed with before the last restart, if it did.
    pub fn recorded_failure(&self, job: u64) -> EngineResult<Option<String>> {
        Ok(self
            .store
            .meta_scan(&manager::failed_key(job))?
            .into_iter()
            .next()
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Marks a job as failed without running it (it failed before a
    /// restart).
    pub fn mark_failed(&self, job: u64, error: String) {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job, JobState::Failed(error));
    }

    /// Starts a job between two epochs. A job that never committed first
    /// reads its inputs' current rows (backfill); one that did continues
    /// where it committed. Returns once the job's sources hold their
    /// starting positions: callers that keep DML out (the table write lock)
    /// may let it in again. The job's first results are visible after the
    /// next [`Runtime::flush`].
    pub async fn create_job(&self, spec: JobSpec) -> EngineResult<()> {
        let (done, wait) = oneshot::channel();
        let context = build::BuildContext {
            store: self.store.clone(),
            logs: Arc::clone(&self.logs),
            connectors: Arc::clone(&self.connectors),
            progress: Arc::clone(&self.progress),
            metrics: self.metrics.job(spec.id),
            idle_timeout: self.options.source_idle_timeout,
            reports: self.report_sender(),
            states: Arc::clone(&self.states),
        };
        let build: manager::JobBuilder = Box::new(move |committed: Epoch, publishable: Epoch| {
            Box::pin(build::build_job(spec, context, committed, publishable))
        });
        self.send(Command::Create { build, done })?;
        wait.await
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?
    }

    /// Stops a job; its state stays until the caller deletes it.
    pub async fn drop_job(&self, job: u64) -> EngineResult<()> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Drop { job, done })?;
        wait.await
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?;
        self.progress.remove(job);
        self.metrics.remove(job);
        Ok(())
    }

    /// Returns once a barrier injected after this call is committed: every
    /// change committed to a table before the call is then reflected in
    /// every view.
    pub async fn flush(&self) -> EngineResult<()> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush { done })?;
        wait.await
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?
    }

    /// Returns once every bounded source of a running job has read its last
    /// row and a barrier injected after that (and after this call) is
    /// committed: every
    /// change committed to a table before the call, and every row of the
    /// bounded sources, is then reflected in every view. Sources that may
    /// always have more (Kafka without `scan.bounded.mode`, monitored
    /// folders, sockets) are not waited for.
    pub async fn flush_bounded(&self) -> EngineResult<()> {
        loop {
            let waiting = self
                .progress
                .unended_bounded()
                .into_iter()
                .filter(|job| {
                    matches!(
                        self.job_state(*job),
                        Some(JobState::Running | JobState::Retrying(_))
                    )
                })
                .count();
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.flush().await
    }

    /// Rows the connector sources of job `id` emitted so far, and whether
    /// all of them ended (bounded sources that ran out, their ends sealed
    /// in an epoch).
    pub fn source_progress(&self, id: u64) -> (u64, bool) {
        self.progress.get(id)
    }

    /// Rows job `id`'s windowed operators dropped as late since the job
    /// started in this process.
    pub fn late_rows(&self, id: u64) -> u64 {
        self.metrics.late_rows(id)
    }

    /// Messages the sources of job `id` skipped (they did not decode)
    /// since it started in this process.
    pub fn skipped_messages(&self, id: u64) -> u64 {
        self.metrics.skipped_messages(id)
    }

    /// Starts injecting barriers. Until then jobs can be created but none
    /// runs an epoch: a restart creates every job first, then resumes.
    pub fn resume(&self) -> EngineResult<()> {
        self.send(Command::Resume)
    }

    /// The state of job `id`, if it runs, finished or failed.
    pub fn job_state(&self, id: u64) -> Option<JobState> {
        let state = self
            .states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match state {
            Some(JobState::Running | JobState::Retrying(_))
                if self.progress.finished(
                    id,
                    self.committed.load(std::sync::atomic::Ordering::Relaxed),
                ) =>
            {
                Some(JobState::Finished)
            }
            other => other,
        }
    }

    fn send(&self, command: Command) -> EngineResult<()> {
        self.commands
            .send(command)
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))
    }

    fn report_sender(&self) -> mpsc::UnboundedSender<Report> {
        // Reports go through the command channel, in order with commands.
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                if commands.send(Command::Report(report)).is_err() {
                    return;
                }
            }
        });
        tx
    }
}
