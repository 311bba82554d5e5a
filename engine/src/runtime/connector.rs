//! Sources that read from outside (datagen, Nexmark, files, sockets,
//! Kafka) behind the traits the connectors crate implements, and the task
//! that runs one: rows at the configured rate, the reader's position
//! committed with each epoch, and a restart resuming at that position.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{EpochBuffer, StateTable};
use tokio::sync::mpsc;

use super::exchange::InputSender;
use super::manager::{JobStates, Report, set_retrying};
use super::split_watermarks::{SPLIT_WATERMARKS, SplitWatermarks};
use crate::{Barrier, EngineError, EngineResult, Message, StreamChunk, Watermark};

/// A source read by a connector. Its rows carry, after the declared
/// columns, a hidden `bigint` row key unique within the source and the
/// same for the same row after a restart (a row number, or a Kafka
/// partition and offset), so views over the source can key its rows.
pub trait SourceReader: Send + Sync + 'static {
    /// Continues after `position` (bytes [`SourceReader::position`]
    /// returned when an epoch ended), or from the start when None.
    fn seek(&mut self, position: Option<&[u8]>) -> EngineResult<()>;

    /// At most `max_rows` rows in the source's schema (declared columns
    /// then the row key); None at the end of input (the source has no more
    /// rows and never will); an empty chunk when none is there yet. Inserts
    /// for an append-only source; a changelog source (upserts and deletes
    /// by primary key) sends Insert for an upsert and Delete, of which only
    /// the key columns count, for a delete.
    fn read(&mut self, max_rows: usize) -> EngineResult<Option<StreamChunk>>;

    /// Where reading continues after the rows returned so far.
    fn position(&self) -> EngineResult<Vec<u8>>;

    /// Rows read before this process opened the reader, when known (the
    /// row number a generator resumes at), for progress reports.
    fn rows_before(&self) -> u64 {
        0
    }

    /// Whether the source ends by itself (a bounded number of rows, files
    /// without monitoring, a Kafka topic read up to fixed offsets):
    /// `FLUSH` then waits for its end, and a job whose sources all ended
    /// shows as finished. False (the default) for a source that may
    /// always have more.
    fn bounded(&self) -> bool {
        false
    }

    /// The configured rate, None for as fast as downstream takes them.
    fn rows_per_second(&self) -> Option<f64> {
        None
    }

    /// Why the outside system cannot be read now (a broker that does not
    /// answer), while the reader retries; None when reading works.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Messages skipped so far because they did not decode.
    fn skipped(&self) -> u64 {
        0
    }

    /// For a reader of several splits whose event times advance on their
    /// own (Kafka partitions): the splits that hold rows it has not read
    /// yet. The source's watermark is then the least over these splits of
    /// each one's largest event time (as Flink's per-split watermarks), so
    /// a split read later does not find its windows closed by another's
    /// rows; a split read to its end (for now) holds nothing back. A row's
    /// split is its row key's top bits ([`split_of_row_key`]). None (the
    /// default, and what a reader with splits never says, not even before
    /// it found them): one watermark over all rows.
    fn pending_splits(&self) -> Option<Vec<u32>> {
        None
    }
}

/// Bits of a split reader's row key below the split: its row keys are
/// `split << SPLIT_SHIFT | position within the split`.
pub const SPLIT_SHIFT: u32 = 48;

/// The split of a row of a reader with splits, from its row key.
pub fn split_of_row_key(row_key: i64) -> u32 {
    (row_key >> SPLIT_SHIFT) as u32
}

/// Rows of a generating source, addressed by position (0, 1, 2, …), so a
/// restart can continue exactly where the last committed epoch ended.
pub trait RowGenerator: Send + Sync + 'static {
    /// Rows `from..from + max_rows` (fewer at the end), in the source's
    /// declared columns; None when the source has no row at `from` and
    /// never will (end of input); an empty batch when none is there yet.
    fn generate(&mut self, from: u64, max_rows: usize) -> EngineResult<Option<RecordBatch>>;

    /// The configured rate, None for as fast as downstream takes them.
    fn rows_per_second(&self) -> Option<f64>;

    /// Whether the rows end by themselves ([`SourceReader::bounded`]).
    fn bounded(&self) -> bool {
        false
    }
}

/// A [`RowGenerator`] read as a [`SourceReader`]: the position is the next
/// row number, which is also the row key.
pub struct NumberedRows {
    generator: Box<dyn RowGenerator>,
    /// The declared columns plus the row key.
    schema: SchemaRef,
    next: u64,
    opened_at: u64,
}

impl NumberedRows {
    /// Reads `generator`'s rows into `schema` (its columns and the key).
    pub fn new(generator: Box<dyn RowGenerator>, schema: SchemaRef) -> Self {
        Self {
            generator,
            schema,
            next: 0,
            opened_at: 0,
        }
    }
}

impl SourceReader for NumberedRows {
    fn seek(&mut self, position: Option<&[u8]>) -> EngineResult<()> {
        self.next = match position {
            None => 0,
            Some(bytes) => match decode_scalars(bytes)?.first() {
                Some(ScalarValue::UInt64(Some(next))) => *next,
                other => {
                    return Err(EngineError::Internal(format!(
                        "stored source position is {other:?}"
                    )));
                }
            },
        };
        self.opened_at = self.next;
        Ok(())
    }

    fn read(&mut self, max_rows: usize) -> EngineResult<Option<StreamChunk>> {
        let from = self.next;
        let Some(batch) = self.generator.generate(from, max_rows)? else {
            return Ok(None);
        };
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(Int64Array::from_iter_values(
            (from..from + rows as u64).map(|p| p as i64),
        )));
        self.next += rows as u64;
        Ok(Some(StreamChunk::inserts(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?)))
    }

    fn position(&self) -> EngineResult<Vec<u8>> {
        let mut bytes = vec![];
        encode_scalars(&[ScalarValue::UInt64(Some(self.next))], &mut bytes)?;
        Ok(bytes)
    }

    fn rows_before(&self) -> u64 {
        self.opened_at
    }

    fn rows_per_second(&self) -> Option<f64> {
        self.generator.rows_per_second()
    }

    fn bounded(&self) -> bool {
        self.generator.bounded()
    }
}

/// Which of a source's parallel readers one is: reader `subtask` of
/// `parallelism` reads the splits [`SourceShare::owns`] says are its own
/// (Kafka partitions split across subtasks, as Flink assigns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceShare {
    pub subtask: usize,
    pub parallelism: usize,
}

impl SourceShare {
    /// The one reader of a source that is not read in parallel.
    pub const WHOLE: SourceShare = SourceShare {
        subtask: 0,
        parallelism: 1,
    };

    /// Whether split `split` is this reader's: splits go round the
    /// readers in turn.
    pub fn owns(&self, split: u32) -> bool {
        split as usize % self.parallelism.max(1) == self.subtask
    }
}

/// Opens readers from a source's `WITH (…)` options.
pub trait ConnectorFactory: Send + Sync + 'static {
    /// Checks `options` against the source's `schema` (declared columns
    /// then the row key) and opens a reader of `share` of the source's
    /// splits, not yet positioned. A connector that cannot be read in
    /// parallel refuses a share other than [`SourceShare::WHOLE`].
    fn open(
        &self,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        share: SourceShare,
    ) -> EngineResult<Box<dyn SourceReader>>;

    /// Opens a writer for a sink with `options` writing rows of `schema`,
    /// identified by the `key` columns (None: an append-only sink). Does
    /// not need the outside system to answer yet.
    fn open_sink(
        &self,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        key: Option<&[usize]>,
    ) -> EngineResult<Box<dyn super::SinkWriter>> {
        let _ = (schema, key);
        Err(EngineError::Internal(format!(
            "no sink connector {:?} in this build",
            options.get("connector")
        )))
    }
}

/// A factory that knows no connector (tests of tables only).
#[derive(Debug, Default)]
pub struct NoConnectors;

impl ConnectorFactory for NoConnectors {
    fn open(
        &self,
        options: &BTreeMap<String, String>,
        _schema: &SchemaRef,
        _share: SourceShare,
    ) -> EngineResult<Box<dyn SourceReader>> {
        Err(EngineError::Internal(format!(
            "no connector available for {options:?}"
        )))
    }
}

const POSITION: &[u8] = b"position";
const BATCH_ROWS: usize = 1024;

/// The state group a parallel reader keeps its position and split
/// watermarks under: its subtask, so the readers of one source never
/// write the same key.
pub(crate) fn reader_group(share: SourceShare) -> u16 {
    share.subtask as u16
}

/// The position reader `share` of a connector source committed last, if
/// it ever did.
pub(crate) fn stored_reader_position(
    state: &StateTable,
    share: SourceShare,
) -> EngineResult<Option<Vec<u8>>> {
    Ok(state.get(reader_group(share), POSITION)?)
}

/// One running connector source.
pub(crate) struct ConnectorSource {
    pub job: u64,
    pub reader: Box<dyn SourceReader>,
    /// The declared columns plus the hidden row key.
    pub schema: SchemaRef,
    pub barriers: mpsc::UnboundedReceiver<Barrier>,
    pub state: StateTable,
    /// Which of the source's parallel readers this is.
    pub share: SourceShare,
    pub output: (InputSender, usize),
    pub reports: mpsc::UnboundedSender<Report>,
    /// Rows emitted and the epoch the end was sealed in, for reports.
    pub progress: super::build::SourceCounters,
    /// The process's budget for uncommitted writes: when it is full the
    /// source asks for an early barrier and waits for it.
    pub buffer: Arc<EpochBuffer>,
    /// Whether a chunk went out since the last barrier: every epoch gets at
    /// least one, so a full buffer slows sources down but never stops them.
    pub emitted_in_epoch: bool,
    /// Where the source says it is retrying (SHOW JOBS).
    pub states: JobStates,
    /// The job's count of skipped messages, and this reader's share so far.
    pub skipped: (Arc<std::sync::atomic::AtomicU64>, u64),
    /// A reader with splits: the per-split watermarks, sent in line with
    /// the rows.
    pub watermark: Option<SplitWatermarks>,
}

impl ConnectorSource {
    /// Whether the reader returned its last row (set once the end-of-input
    /// watermarks went out).
    fn ended(&self) -> bool {
        self.progress
            .reached_end
            .load(std::sync::atomic::Ordering::Relaxed)
    }

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

    /// The per-split watermark, when it rose.
    async fn send_split_watermark(&mut self) -> EngineResult<()> {
        let pending = self.reader.pending_splits();
        match self.watermark.as_mut().and_then(|w| w.rise(pending)) {
            Some(watermark) => self.send(Message::Watermark(watermark)).await,
            None => Ok(()),
        }
    }

    async fn barrier(&mut self, barrier: Barrier) -> EngineResult<()> {
        self.emitted_in_epoch = false;
        // Splits may have gone idle.
        self.send_split_watermark().await?;
        let group = reader_group(self.share);
        self.state.put(group, POSITION, self.reader.position()?);
        if let Some(watermark) = &self.watermark {
            self.state.put(group, SPLIT_WATERMARKS, watermark.encode()?);
        }
        let mut writes = runnel_storage::WriteSet::new();
        self.state.seal_epoch(barrier.epoch.0, &mut writes);
        if self.ended() {
            // The end-of-input watermarks went out before this barrier:
            // once its epoch commits, every row is in every view.
            let _ = self.progress.ended_at.compare_exchange(
                0,
                barrier.epoch.0,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.reports
            .send(Report::Sealed {
                job: self.job,
                epoch: barrier.epoch,
                writes,
            })
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?;
        self.send(Message::Barrier(barrier)).await
    }

    /// No row follows: an end-of-input watermark on every column that can
    /// carry one, so every window downstream closes (as Flink does at the
    /// end of a bounded source).
    async fn end_of_input(&self) -> EngineResult<()> {
        for (column, field) in self.schema.fields().iter().enumerate() {
            if let Some(value) = Watermark::end_of_input(field.data_type()) {
                self.send(Message::Watermark(Watermark { column, value }))
                    .await?;
            }
        }
        Ok(())
    }

    async fn run_inner(&mut self) -> EngineResult<()> {
        let started = Instant::now();
        let first = self.reader.rows_before();
        let mut rows_read = first;
        self.progress
            .rows
            .store(rows_read, std::sync::atomic::Ordering::Relaxed);
        loop {
            // Barriers first: a busy source must not delay checkpoints.
            while let Ok(barrier) = self.barriers.try_recv() {
                self.barrier(barrier).await?;
            }
            if self.emitted_in_epoch && self.buffer.is_full() {
                // The epoch holds as much as memory allows: end it now
                // rather than at the next tick.
                self.reports
                    .send(Report::BufferFull)
                    .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?;
                match self.barriers.recv().await {
                    Some(barrier) => self.barrier(barrier).await?,
                    None => return Ok(()),
                }
                continue;
            }
            let allowed = match self.reader.rows_per_second() {
                Some(rate) => {
                    let due = first + (started.elapsed().as_secs_f64() * rate) as u64;
                    due.saturating_sub(rows_read) as usize
                }
                None => BATCH_ROWS,
            };
            if self.ended() || allowed == 0 {
                let wait = if self.ended() {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_millis(10)
                };
                tokio::select! {
                    barrier = self.barriers.recv() => match barrier {
                        Some(barrier) => self.barrier(barrier).await?,
                        None => return Ok(()),
                    },
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let chunk = self.reader.read(allowed.min(BATCH_ROWS))?;
            set_retrying(&self.states, self.job, self.reader.unavailable());
            let skipped = self.reader.skipped();
            if skipped > self.skipped.1 {
                self.skipped.0.fetch_add(
                    skipped - self.skipped.1,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.skipped.1 = skipped;
            }
            match chunk {
                // Nothing yet (a socket): look again shortly.
                Some(chunk) if chunk.num_rows() == 0 => {
                    // Splits may have been read to their end.
                    self.send_split_watermark().await?;
                    tokio::select! {
                        barrier = self.barriers.recv() => match barrier {
                            Some(barrier) => self.barrier(barrier).await?,
                            None => return Ok(()),
                        },
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
                Some(chunk) => {
                    rows_read += chunk.num_rows() as u64;
                    self.progress
                        .rows
                        .store(rows_read, std::sync::atomic::Ordering::Relaxed);
                    if let Some(watermark) = &mut self.watermark {
                        watermark.observe(&chunk)?;
                    }
                    self.send(Message::Chunk(chunk)).await?;
                    self.send_split_watermark().await?;
                    self.emitted_in_epoch = true;
                }
                _ => {
                    self.end_of_input().await?;
                    self.progress
                        .reached_end
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}
