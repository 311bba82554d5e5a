//! `connector = 'kafka'`: the messages of one topic, every partition, read
//! with librdkafka (`rdkafka`); a source read by several parallel readers
//! gives each the partitions its `SourceShare` owns (partition modulo the
//! parallelism), each reader keeping its own position. A reader assigns
//! its partitions itself and
//! keeps the next offset of each in its position, which the engine commits
//! with every epoch: a restart resumes exactly after the last committed
//! epoch (exactly once), whatever the consumer group has committed. New
//! partitions are found every `scan.topic-partition-discovery.interval-ms`
//! and read from their start, as Flink does. With `scan.bounded.mode =
//! 'latest-offset'` the source reads each partition up to the end it had
//! when the source first started (kept in the position) and then ends, so
//! windows close and a view over it equals the batch query. Partitions are
//! the reader's splits: the engine keeps a watermark per partition (see
//! `SourceReader::pending_splits`). Under `FORMAT UPSERT` or `FORMAT
//! DEBEZIUM` the rows are upserts and deletes by the primary key (see
//! `changelog`), which the engine's Upsert operator turns into
//! retractions. Values are JSON, CSV, bytes or Avro (`format`, `avro`).

mod avro;
mod changelog;
mod client;
mod debezium_envelope;
mod format;
mod logs;
mod offsets;
mod partitions;
mod registry;
mod sink;
mod sink_encoding;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use runnel_engine::runtime::connector::{SourceReader, SourceShare};
use runnel_engine::{EngineError, EngineResult, Op, StreamChunk};
use tracing::warn;

use crate::options::{ConnectorError, ErrorPolicy, Options};
use changelog::{Change, Format};
use client::{CHECK_TIMEOUT, client_config, refused};
use format::{BadMessage, ValueDecoder};
use offsets::PartitionOffsets;
pub(crate) use offsets::row_key;
pub(crate) use sink::{KafkaWriter, SINK_OPTIONS};

/// How long a running source waits for metadata before it tries later.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between tries while the broker cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one log line per this long for skipped messages, and for
/// errors while the broker cannot be reached.
const SKIP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where partitions without a committed offset start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Startup {
    Earliest,
    Latest,
    /// The first message at or after this time (milliseconds since 1970).
    Timestamp(i64),
}

/// Message metadata a column can hold (`INCLUDE … AS column`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metadata {
    Key,
    Partition,
    Offset,
    Timestamp,
}

impl Metadata {
    const ALL: [(Metadata, &'static str); 4] = [
        (Metadata::Key, "key"),
        (Metadata::Partition, "partition"),
        (Metadata::Offset, "offset"),
        (Metadata::Timestamp, "timestamp"),
    ];
}

/// Where a declared column's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Column `i` of the decoded value.
    Value(usize),
    Metadata(Metadata),
}

/// A Kafka topic read as a source.
pub(crate) struct KafkaReader {
    topic: String,
    servers: String,
    consumer: BaseConsumer<logs::SourceContext>,
    /// The declared columns then the row key.
    schema: SchemaRef,
    /// Where each declared column comes from.
    columns: Vec<Column>,
    values: ValueDecoder,
    policy: ErrorPolicy,
    format: Format,
    /// Whether the message key is a declared column (`INCLUDE key`).
    key_column: bool,
    startup: Startup,
    /// `scan.bounded.mode = 'latest-offset'`: stop at each partition's end
    /// as of the first start.
    bounded: bool,
    /// Which of the source's parallel readers this is: it reads the
    /// partitions that are its share.
    share: SourceShare,
    /// Whether it said it has no partition of its own.
    warned_no_partition: bool,
    /// The next offset of every partition the source reads; a partition
    /// without one starts at its beginning.
    offsets: PartitionOffsets,
    /// Partitions assigned to the consumer.
    assigned: Vec<i32>,
    /// Assigned partitions read to their end (for now): librdkafka said
    /// so and no message came since.
    caught_up: std::collections::BTreeSet<i32>,
    discovery_every: Duration,
    /// When partitions were last looked up, and when to look next.
    next_discovery: Option<Instant>,
    backoff: Duration,
    skipped: u64,
    last_skip_log: Option<Instant>,
    last_error_log: Option<Instant>,
    /// Why the broker cannot be read now, until it answers again.
    unavailable: Option<String>,
    /// Messages taken but not yet decodable because what decoding needs
    /// does not answer (a schema registry); the offsets do not include
    /// them until they decode, so a checkpoint meanwhile does not skip
    /// them. Tried again at `retry_at`.
    held: Vec<Taken>,
    retry_at: Option<Instant>,
}

impl KafkaReader {
    /// Reads the options and makes a consumer (which does not connect
    /// yet). `schema` is the declared columns then the row key.
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
        share: SourceShare,
    ) -> Result<Self, ConnectorError> {
        let topic = options.required("topic")?.to_string();
        let (mut config, servers) = client_config(options)?;
        let startup = match options
            .get("scan.startup.mode")
            .map(str::to_ascii_lowercase)
        {
            None => Startup::Earliest,
            Some(m) if m == "earliest" || m == "earliest-offset" => Startup::Earliest,
            Some(m) if m == "latest" || m == "latest-offset" => Startup::Latest,
            Some(m) if m == "timestamp" => {
                let millis = options
                    .parse::<i64>("scan.startup.timestamp.millis")?
                    .ok_or_else(|| {
                        ConnectorError::Missing("scan.startup.timestamp.millis".into())
                    })?;
                Startup::Timestamp(millis)
            }
            Some(other) => {
                return Err(ConnectorError::BadValue {
                    key: "scan.startup.mode".into(),
                    value: other,
                    reason: "must be 'earliest', 'latest' or 'timestamp'".into(),
                });
            }
        };
        let bounded = match options
            .get("scan.bounded.mode")
            .map(str::to_ascii_lowercase)
        {
            None => false,
            Some(m) if m == "unbounded" => false,
            Some(m) if m == "latest-offset" => true,
            Some(other) => {
                return Err(ConnectorError::BadValue {
                    key: "scan.bounded.mode".into(),
                    value: other,
                    reason: "must be 'unbounded' or 'latest-offset'".into(),
                });
            }
        };
        let discovery_ms: u64 = options
            .parse("scan.topic-partition-discovery.interval-ms")?
            .unwrap_or(10_000);
        let declared = schema.fields().len().saturating_sub(1);
        let mut columns: Vec<Option<Column>> = vec![None; declared];
        for (metadata, name) in Metadata::ALL {
            let Some(column) = options.get(&format!("include.{name}")) else {
                continue;
            };
            let index = schema
                .fields()
                .iter()
                .take(declared)
                .position(|f| f.name() == column)
                .ok_or_else(|| ConnectorError::Column {
                    column: column.into(),
                    reason: format!("INCLUDE {name} names no column"),
                })?;
            columns[index] = Some(Column::Metadata(metadata));
        }
        let value_fields: Vec<usize> = (0..declared).filter(|&i| columns[i].is_none()).collect();
        for (value_index, &i) in value_fields.iter().enumerate() {
            columns[i] = Some(Column::Value(value_index));
        }
        let columns: Vec<Column> = columns.into_iter().flatten().collect();
        let value_schema = Arc::new(
            schema
                .project(&value_fields)
                .map_err(|e| ConnectorError::Unsupported(e.to_string()))?,
        );
        let (values, policy, format) = ValueDecoder::from_options(options, &value_schema)?;
        let key_column = columns.contains(&Column::Metadata(Metadata::Key));

        for (key, value) in [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            // Tells when a partition is read to its end, so an idle
            // partition does not hold the watermark back.
            ("enable.partition.eof", "true"),
        ] {
            config.set(key, value);
        }
        if config.get("group.id").is_none() {
            config.set("group.id", format!("runnel-{topic}"));
        }
        let consumer: BaseConsumer<logs::SourceContext> = config
            .create_with_context(logs::SourceContext::default())
            .map_err(|e| refused(&servers, e))?;
        let reader = Self {
            topic,
            servers,
            consumer,
            schema: Arc::clone(schema),
            columns,
            values,
            policy,
            format,
            key_column,
            startup,
            bounded,
            share,
            warned_no_partition: false,
            offsets: PartitionOffsets::default(),
            assigned: vec![],
            caught_up: Default::default(),
            discovery_every: Duration::from_millis(discovery_ms.max(100)),
            next_discovery: None,
            backoff: Duration::from_millis(200),
            skipped: 0,
            last_skip_log: None,
            last_error_log: None,
            unavailable: None,
            held: vec![],
            retry_at: None,
        };
        Ok(reader)
    }

    /// Whether the broker answers and lists the topic (CREATE SOURCE).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        self.partitions(CHECK_TIMEOUT)
            .map_err(|reason| ConnectorError::BadValue {
                key: "properties.bootstrap.server".into(),
                value: self.servers.clone(),
                reason,
            })?;
        self.values.check()
    }

    /// The changes `taken` holds, in the source's schema. Of a message
    /// with a part that does not decode, nothing is kept. Ok(Err): why
    /// they cannot be decoded now (a schema registry that does not answer).
    fn rows_of(&mut self, taken: &[Taken]) -> EngineResult<Result<StreamChunk, String>> {
        let messages: Vec<changelog::Message<'_>> = taken
            .iter()
            .map(|t| changelog::Message {
                key: t.key.as_deref(),
                value: t.value.as_deref(),
            })
            .collect();
        let (changes, mut bad) = changelog::changes(self.format, &messages, self.key_column);
        let encoded: Vec<&[u8]> = changes.iter().map(|c| c.row.as_ref()).collect();
        let (rows, undecoded) = match self.values.decode(&encoded) {
            Ok(decoded) => decoded,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut decoded = vec![true; changes.len()];
        for b in undecoded {
            decoded[b.index] = false;
            bad.push(BadMessage {
                index: changes[b.index].message,
                reason: b.reason,
            });
        }
        bad.sort_by_key(|b| b.index);
        bad.dedup_by_key(|b| b.index);
        if let Some(first) = bad.first() {
            let at = &taken[first.index];
            if self.policy == ErrorPolicy::Fail {
                return Err(EngineError::Internal(format!(
                    "kafka source, topic '{}' partition {} offset {}: the message does not decode ({}); \
                     set format.error-policy = 'skip' to skip such messages",
                    self.topic, at.partition, at.offset, first.reason
                )));
            }
            for b in &bad {
                let (partition, offset) = (taken[b.index].partition, taken[b.index].offset);
                self.log_skipped(partition, offset, &b.reason);
            }
        }
        // The decoded rows, less those of a message with a bad part.
        let mut keep = Vec::with_capacity(rows.num_rows());
        let mut kept: Vec<&Change<'_>> = Vec::with_capacity(rows.num_rows());
        for (change, _) in changes.iter().zip(&decoded).filter(|(_, d)| **d) {
            let good = bad
                .binary_search_by_key(&change.message, |b| b.index)
                .is_err();
            keep.push(good);
            if good {
                kept.push(change);
            }
        }
        let rows = datafusion::arrow::compute::filter_record_batch(
            &rows,
            &datafusion::arrow::array::BooleanArray::from(keep),
        )?;
        let of_kept: Vec<&Taken> = kept.iter().map(|c| &taken[c.message]).collect();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, column) in self.columns.iter().enumerate() {
            columns.push(match column {
                Column::Value(v) => Arc::clone(rows.column(*v)),
                Column::Metadata(what) => metadata_column(*what, &of_kept, self.schema.field(i))?,
            });
        }
        let keys = of_kept
            .iter()
            .map(|t| row_key(t.partition, t.offset))
            .collect::<EngineResult<Vec<i64>>>()?;
        columns.push(Arc::new(Int64Array::from(keys)));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        if self.format.is_changelog() {
            let ops: Vec<Op> = kept.iter().map(|c| c.op).collect();
            StreamChunk::new(batch, &ops).map(Ok)
        } else {
            Ok(Ok(StreamChunk::inserts(batch)))
        }
    }

    /// The rows of `taken`, whose offsets are not in the position yet; if
    /// they cannot be decoded now, they are held and tried again later.
    fn decode_taken(&mut self, taken: Vec<Taken>) -> EngineResult<Option<StreamChunk>> {
        match self.rows_of(&taken)? {
            Ok(chunk) => {
                for t in &taken {
                    self.offsets.set_next(t.partition, t.offset + 1);
                }
                self.unavailable = None;
                self.retry_at = None;
                self.backoff = Duration::from_millis(200);
                Ok(Some(chunk))
            }
            Err(reason) => {
                warn!(topic = %self.topic, retry_in = ?self.backoff, "kafka source cannot decode now: {reason}");
                self.unavailable = Some(format!("kafka source, topic '{}': {reason}", self.topic));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.held = taken;
                Ok(Some(self.no_rows()))
            }
        }
    }

    fn no_rows(&self) -> StreamChunk {
        StreamChunk::inserts(RecordBatch::new_empty(Arc::clone(&self.schema)))
    }

    fn log_skipped(&mut self, partition: i32, offset: i64, reason: &str) {
        self.skipped += 1;
        let now = Instant::now();
        if self
            .last_skip_log
            .is_none_or(|at| now.duration_since(at) >= SKIP_LOG_EVERY)
        {
            self.last_skip_log = Some(now);
            warn!(
                topic = %self.topic, partition, offset, skipped_so_far = self.skipped,
                "kafka source skips a message that does not decode: {reason}"
            );
        }
    }
}

/// One message taken from the consumer: where it was, its key, time and
/// value.
struct Taken {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    /// Milliseconds since 1970, if the message has a time.
    timestamp: Option<i64>,
    /// None for a tombstone.
    value: Option<Vec<u8>>,
}

/// The column of metadata `what` for `messages`, in the type of `field`.
fn metadata_column(
    what: Metadata,
    messages: &[&Taken],
    field: &datafusion::arrow::datatypes::Field,
) -> EngineResult<ArrayRef> {
    use datafusion::arrow::array::{BinaryArray, Int32Array, TimestampMillisecondArray};
    let column: ArrayRef = match what {
        Metadata::Key => Arc::new(BinaryArray::from_iter(
            messages.iter().map(|m| m.key.as_deref()),
        )),
        Metadata::Partition => Arc::new(Int32Array::from_iter_values(
            messages.iter().map(|m| m.partition),
        )),
        Metadata::Offset => Arc::new(Int64Array::from_iter_values(
            messages.iter().map(|m| m.offset),
        )),
        Metadata::Timestamp => Arc::new(
            TimestampMillisecondArray::from_iter(messages.iter().map(|m| m.timestamp))
                .with_timezone("+00:00"),
        ),
    };
    Ok(datafusion::arrow::compute::cast(
        &column,
        field.data_type(),
    )?)
}

impl SourceReader for KafkaReader {
    fn bounded(&self) -> bool {
        self.bounded
    }

    fn seek(&mut self, position: Option<&[u8]>) -> EngineResult<()> {
        self.offsets = match position {
            None => PartitionOffsets::default(),
            Some(bytes) => PartitionOffsets::decode(bytes)?,
        };
        Ok(())
    }

    fn read(&mut self, max_rows: usize) -> EngineResult<Option<StreamChunk>> {
        if !self.held.is_empty() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return Ok(Some(self.no_rows()));
            }
            let held = std::mem::take(&mut self.held);
            return self.decode_taken(held);
        }
        self.discover();
        // Offsets advance over what is taken (so a repeat is skipped) and
        // are set back should the batch be held.
        let before = self.offsets.clone();
        let mut taken: Vec<Taken> = vec![];
        while taken.len() < max_rows {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    self.caught_up.insert(partition);
                }
                Some(Err(error)) => {
                    self.unavailable = Some(format!("kafka source at {}: {error}", self.servers));
                    let now = Instant::now();
                    if self
                        .last_error_log
                        .is_none_or(|at| now.duration_since(at) >= SKIP_LOG_EVERY)
                    {
                        self.last_error_log = Some(now);
                        warn!(topic = %self.topic, servers = %self.servers, "kafka source: {error}");
                    }
                    break;
                }
                Some(Ok(message)) => {
                    self.unavailable = None;
                    let (partition, offset) = (message.partition(), message.offset());
                    self.caught_up.remove(&partition);
                    // A message before the committed offset was read
                    // already (a reassignment can deliver it again).
                    if self
                        .offsets
                        .next(partition)
                        .is_some_and(|next| offset < next)
                    {
                        continue;
                    }
                    // A bounded source ignores what came after its stop.
                    if self.bounded
                        && self
                            .offsets
                            .stops()
                            .and_then(|stops| stops.get(&partition))
                            .is_none_or(|&stop| offset >= stop)
                    {
                        self.pause(partition);
                        continue;
                    }
                    self.offsets.set_next(partition, offset + 1);
                    taken.push(Taken {
                        partition,
                        offset,
                        key: message.key().map(<[u8]>::to_vec),
                        timestamp: message.timestamp().to_millis(),
                        value: message.payload().map(<[u8]>::to_vec),
                    });
                }
            }
        }
        if taken.is_empty() {
            if self.reached_stops() {
                return Ok(None);
            }
            return Ok(Some(self.no_rows()));
        }
        self.offsets = before;
        self.decode_taken(taken)
    }

    fn position(&self) -> EngineResult<Vec<u8>> {
        self.offsets.encode()
    }

    fn unavailable(&self) -> Option<String> {
        self.unavailable.clone()
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Assigned partitions not read to their end: a bounded source's
    /// finished partitions and partitions librdkafka read to their end
    /// (until their next message) are not pending.
    fn pending_splits(&self) -> Option<Vec<u32>> {
        let stops = self.offsets.stops();
        Some(
            self.assigned
                .iter()
                // Held messages are rows not read yet.
                .filter(|p| {
                    !self.caught_up.contains(p) || self.held.iter().any(|t| t.partition == **p)
                })
                .filter(|p| {
                    !self.bounded
                        || stops
                            .and_then(|stops| stops.get(p))
                            .is_some_and(|&stop| self.offsets.next(**p).unwrap_or(0) < stop)
                })
                .map(|p| *p as u32)
                .collect(),
        )
    }
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topic", &self.topic)
            .field("servers", &self.servers)
            .field("offsets", &self.offsets)
            .finish_non_exhaustive()
    }
}

/// The options a Kafka source takes, listed when one is unknown.
pub(crate) const OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "properties.bootstrap.server",
    "properties.<librdkafka setting>",
    "scan.startup.mode",
    "scan.startup.timestamp.millis",
    "scan.topic-partition-discovery.interval-ms",
    "scan.bounded.mode",
    "format.error-policy",
    "csv.delimiter",
    "avro.schema",
    "schema.registry",
    "include.key|partition|offset|timestamp (INCLUDE … AS column)",
];
