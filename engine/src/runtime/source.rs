//! Sources that read a change log: a table's (written by DML) or a
//! materialized view's (written by its job). A new job first emits the
//! relation's rows at one consistent moment (backfill), then every change
//! logged after that moment, epoch by epoch.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, RecordBatch};
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{ScanSpec, StateTable, Store};
use tokio::sync::{mpsc, oneshot};

use super::exchange::InputSender;
use super::manager::Report;
use crate::graph::SourceSpec;
use crate::log::ChangeLog;
use crate::{Barrier, EngineError, EngineResult, Message, StreamChunk};

const POSITION: &[u8] = b"position";
const BACKFILL_BATCH: usize = 4096;

/// One running log source.
pub(crate) struct LogSource {
    pub job: u64,
    pub log: Arc<ChangeLog>,
    /// The next log entry to read.
    pub position: u64,
    /// Rows of the initial snapshot, still to emit.
    pub backfill: Option<mpsc::Receiver<EngineResult<StreamChunk>>>,
    pub barriers: mpsc::UnboundedReceiver<Barrier>,
    pub state: StateTable,
    pub output: (InputSender, usize),
    pub reports: mpsc::UnboundedSender<Report>,
}

/// The read position a source committed last, if it ever did.
pub(crate) fn stored_position(store: &Store, spec: &SourceSpec) -> EngineResult<Option<u64>> {
    let state = StateTable::new(store.clone(), spec.state_id);
    match state.get(0, POSITION)? {
        None => Ok(None),
        Some(bytes) => match decode_scalars(&bytes)?.first() {
            Some(ScalarValue::UInt64(Some(seq))) => Ok(Some(*seq)),
            other => Err(EngineError::Internal(format!(
                "stored source position is {other:?}"
            ))),
        },
    }
}

impl LogSource {
    pub(crate) async fn run(mut self) {
        if let Err(error) = self.run_inner().await {
            let _ = self.reports.send(Report::Failed {
                job: self.job,
                error: error.to_string(),
            });
        }
    }

    async fn send(&self, message: Message) -> EngineResult<()> {
        self.output
            .0
            .send((self.output.1, message))
            .await
            .map_err(|_| EngineError::Stopped("source's task ended".into()))
    }

    async fn run_inner(&mut self) -> EngineResult<()> {
        while let Some(barrier) = self.barriers.recv().await {
            if let Some(mut rows) = self.backfill.take() {
                while let Some(chunk) = rows.recv().await {
                    self.send(Message::Chunk(chunk?)).await?;
                }
            }
            let (chunks, end) = self.log.read_epoch(self.position, barrier.epoch).await?;
            for chunk in chunks {
                self.send(Message::Chunk(chunk)).await?;
            }
            self.position = end;
            let mut bytes = vec![];
            encode_scalars(&[ScalarValue::UInt64(Some(end))], &mut bytes)?;
            self.state.put(0, POSITION, bytes);
            let mut writes = runnel_storage::WriteSet::new();
            self.state.seal_epoch(barrier.epoch.0, &mut writes);
            self.reports
                .send(Report::Sealed {
                    job: self.job,
                    epoch: barrier.epoch,
                    writes,
                })
                .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?;
            self.send(Message::Barrier(barrier)).await?;
        }
        Ok(())
    }
}

/// Starts reading the rows of `spec`'s relation on a blocking thread. With
/// `log` (a table's), appends to the log are held off until the snapshot
/// exists, and the returned receiver resolves to the log position the
/// snapshot corresponds to; without, to None once the snapshot exists.
pub(crate) fn start_backfill(
    store: &Store,
    spec: &SourceSpec,
    log: Option<Arc<ChangeLog>>,
) -> (
    mpsc::Receiver<EngineResult<StreamChunk>>,
    oneshot::Receiver<Option<u64>>,
) {
    let (tx, rx) = mpsc::channel(4);
    let (snapshot_tx, snapshot_rx) = oneshot::channel();
    let store = store.clone();
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || {
        let fields = spec.schema.fields().len();
        // A table's row key is the store's key, not part of its value.
        let stored = if spec.is_table { fields - 1 } else { fields };
        let table_schema = match spec.schema.project(&(0..stored).collect::<Vec<_>>()) {
            Ok(schema) => Arc::new(schema),
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let scan = ScanSpec {
            table_schema,
            projection: None,
            batch_size: BACKFILL_BATCH,
            limit: None,
        };
        let appender = log.as_ref().map(|log| log.appender());
        let position = appender.as_ref().map(|a| a.next_seq());
        let on_snapshot = move || {
            drop(appender);
            let _ = snapshot_tx.send(position);
        };
        let result =
            store
                .table(spec.relation_id)
                .scan_after_snapshot(&scan, on_snapshot, |keys, batch| {
                    let chunk = with_keys(&spec, keys, batch).map(StreamChunk::inserts);
                    tx.blocking_send(chunk).is_ok()
                });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e.into()));
        }
    });
    (rx, snapshot_rx)
}

fn with_keys(
    spec: &SourceSpec,
    keys: Vec<Vec<u8>>,
    batch: RecordBatch,
) -> EngineResult<RecordBatch> {
    if !spec.is_table {
        return Ok(batch);
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(BinaryArray::from_iter_values(
        keys.iter().map(Vec::as_slice),
    )));
    Ok(RecordBatch::try_new(Arc::clone(&spec.schema), columns)?)
}
