//! Delivery of a sink's staged changes to the outside system, behind the
//! [`SinkWriter`] trait the connectors crate implements.
//!
//! The sink operator stages each epoch's changes in the store as part of
//! the epoch's commit. A delivery task per sink writes them out once their
//! epoch may be published — when it is committed, or with checkpoints to
//! object storage, when a checkpoint holding it is complete (the second
//! phase of the two-phase commit) — then deletes what it wrote. A crash
//! between writing and deleting writes that epoch again after the restart:
//! at least once, unless the writer can tell which epochs the outside
//! system already holds ([`SinkWriter::delivered`]: a transactional Kafka
//! sink, files named by epoch), which makes delivery exactly once.
//!
//! A write the outside system cannot take now (a broker that is down) is
//! retried with backoff, the job's state saying so in SHOW JOBS; any other
//! error fails the job.

use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::{Store, WriteSet};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::manager::{JobStates, Report, set_retrying};
use crate::operators::StagedEpoch;
use crate::{EngineError, EngineResult, Epoch, StreamChunk};

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SinkWriteError {
    /// The outside system did not take it now (unreachable, timed out):
    /// the same epoch is written again after a backoff.
    #[error("{0}")]
    Unavailable(String),
    /// It never will (a row it cannot encode, a refused configuration):
    /// the job fails.
    #[error("{0}")]
    Failed(String),
}

/// Writes a sink's changes out. Called from a blocking thread, one call
/// at a time.
pub trait SinkWriter: Send + 'static {
    /// The newest epoch the outside system holds in full, when the writer
    /// can tell (it records the epoch with what it writes); staged epochs
    /// up to it are not written again. Called once, before any write.
    fn delivered(&mut self) -> Result<Option<Epoch>, SinkWriteError> {
        Ok(None)
    }

    /// Writes the changes of `epoch` — rows of the sink's written columns
    /// with their ops — and returns once the outside system holds them
    /// durably (for a transactional writer: committed). After an error the
    /// same epoch may be written again.
    fn write_epoch(&mut self, epoch: Epoch, changes: &StreamChunk) -> Result<(), SinkWriteError>;
}

/// The delivery task of one sink.
pub(crate) struct Delivery {
    pub job: u64,
    pub sink_id: u64,
    /// The sink's input columns, as staged; the first `visible` are
    /// written.
    pub schema: SchemaRef,
    pub visible: usize,
    pub store: Store,
    pub writer: Box<dyn SinkWriter>,
    /// The newest epoch that may be written out.
    pub publishable: watch::Receiver<Epoch>,
    pub states: JobStates,
    pub reports: mpsc::UnboundedSender<Report>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Delivery {
    pub(crate) async fn run(mut self) {
        if let Err(error) = self.deliver_all().await {
            let _ = self.reports.send(Report::Failed {
                job: self.job,
                error: error.to_string(),
            });
        }
    }

    async fn deliver_all(&mut self) -> EngineResult<()> {
        let done = self.retrying(|writer| writer.delivered()).await?;
        let mut skip_through = done.unwrap_or(Epoch(0));
        if done.is_some() {
            debug!(
                sink = self.sink_id,
                epoch = skip_through.0,
                "sink already holds"
            );
        }
        loop {
            let publishable = *self.publishable.borrow_and_update();
            self.deliver_through(publishable, &mut skip_through).await?;
            if self.publishable.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Writes every staged epoch up to `publishable`, oldest first, and
    /// forgets each once written.
    async fn deliver_through(
        &mut self,
        publishable: Epoch,
        skip_through: &mut Epoch,
    ) -> EngineResult<()> {
        let store = self.store.clone();
        let sink = self.sink_id;
        let staged = tokio::task::spawn_blocking(move || store.scan_changes(sink, 0))
            .await
            .map_err(|e| EngineError::Internal(format!("reading staged sink rows: {e}")))??;
        for (seq, bytes) in staged {
            let staged = StagedEpoch::decode(&bytes)?;
            if staged.epoch > publishable {
                break;
            }
            if staged.epoch > *skip_through {
                let chunk = staged
                    .to_chunk(&self.schema)?
                    .project(&(0..self.visible).collect::<Vec<_>>())?;
                let epoch = staged.epoch;
                let chunk = std::sync::Arc::new(chunk);
                self.retrying(move |writer| writer.write_epoch(epoch, &chunk))
                    .await?;
                *skip_through = epoch;
                debug!(
                    sink = sink,
                    epoch = epoch.0,
                    rows = staged.changes.ops.len(),
                    "sink epoch written"
                );
            }
            let mut writes = WriteSet::new();
            writes.delete_changes_before(sink, seq + 1);
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.write(writes))
                .await
                .map_err(|e| EngineError::Internal(format!("forgetting sink rows: {e}")))??;
        }
        Ok(())
    }

    /// Runs `call` on the writer on a blocking thread until it does not
    /// report the outside system unavailable, backing off between tries.
    async fn retrying<T: Send + 'static>(
        &mut self,
        call: impl Fn(&mut dyn SinkWriter) -> Result<T, SinkWriteError> + Send + Sync + 'static,
    ) -> EngineResult<T> {
        let call = std::sync::Arc::new(call);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut writer = std::mem::replace(&mut self.writer, Box::new(Unplugged));
            let attempt = std::sync::Arc::clone(&call);
            let (writer, result) = tokio::task::spawn_blocking(move || {
                let result = attempt(writer.as_mut());
                (writer, result)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("sink writer task: {e}")))?;
            self.writer = writer;
            match result {
                Ok(value) => {
                    self.set_retrying(None);
                    return Ok(value);
                }
                Err(SinkWriteError::Failed(reason)) => {
                    return Err(EngineError::Internal(format!(
                        "sink write failed: {reason}"
                    )));
                }
                Err(SinkWriteError::Unavailable(reason)) => {
                    warn!(sink = self.sink_id, %reason, retry_in_ms = backoff.as_millis() as u64, "sink write failed; retrying");
                    self.set_retrying(Some(reason));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Shows in SHOW JOBS that writes are being retried, or no longer.
    fn set_retrying(&self, reason: Option<String>) {
        set_retrying(&self.states, self.job, reason);
    }
}

/// Stands in for the writer while a blocking call holds it.
struct Unplugged;

impl SinkWriter for Unplugged {
    fn write_epoch(&mut self, _: Epoch, _: &StreamChunk) -> Result<(), SinkWriteError> {
        Err(SinkWriteError::Failed("the sink writer is busy".into()))
    }
}
