//! `CREATE SINK … WITH (connector = 'kafka', …)`: a sink's changes as
//! messages of one topic, each epoch written at once when the engine says
//! the epoch may be published.
//!
//! `FORMAT PLAIN ENCODE JSON`: each inserted row is a message (append-only
//! sinks only). `FORMAT UPSERT ENCODE JSON`: the key is a JSON object of
//! the sink's primary key columns, the value the row, a delete a tombstone
//! (null value); a topic compacted by key holds the sink's rows.
//! `FORMAT DEBEZIUM ENCODE JSON`: change events with `before`, `after` and
//! `op` (c, u, d), keyed like UPSERT, a delete followed by a tombstone
//! (see `debezium_envelope`). Each format also takes `ENCODE AVRO` (see
//! `sink_encoding`).
//!
//! `sink.delivery-guarantee = 'at-least-once'` (the default) waits until
//! the broker acknowledged every message of an epoch; an epoch written
//! again after a crash may repeat messages (harmless for a compacted upsert
//! topic). `'exactly-once'` writes each epoch in one Kafka transaction
//! (`transactional.id` from `properties.transactional.id`, by default
//! `runnel-<topic>`) and stamps every message with the epoch in header
//! `runnel.epoch`; after a restart the newest committed epoch is read back
//! from the topic's tail and not written again, so `read_committed`
//! consumers see every change once.

use std::sync::Mutex;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use runnel_engine::runtime::{SinkWriteError, SinkWriter};
use runnel_engine::{Epoch, Op, StreamChunk};

use super::client::{CHECK_TIMEOUT, client_config, refused, topic_partitions};
use super::debezium_envelope;
use super::logs::QuietLogs;
use super::sink_encoding::{Part, RowEncoding};
use crate::options::{ConnectorError, Options};

/// The header carrying the epoch of an exactly-once sink's message.
const EPOCH_HEADER: &str = "runnel.epoch";
/// How long one epoch may take to be acknowledged or committed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many messages at the end of each partition are read back to find
/// the last committed epoch (transaction markers take offsets too).
const TAIL_MESSAGES: i64 = 64;

/// The options a Kafka sink takes, listed when one is unknown.
pub(crate) const SINK_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "properties.bootstrap.server",
    "properties.<librdkafka setting>",
    "primary_key",
    "sink.delivery-guarantee",
    "schema.registry",
];

/// The shape of the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkFormat {
    Plain,
    Upsert,
    Debezium,
}

/// Counts failed deliveries; librdkafka reports them on its poll thread.
/// Its log lines go out quietly.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
    logs: QuietLogs,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.logs.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| error.to_string());
        }
    }
}

/// Writes a sink's epochs to a Kafka topic.
pub(crate) struct KafkaWriter {
    topic: String,
    servers: String,
    format: SinkFormat,
    /// Key columns (UPSERT, DEBEZIUM).
    key: Vec<usize>,
    schema: SchemaRef,
    /// How keys and values are encoded.
    encoding: RowEncoding,
    producer: BaseProducer<Deliveries>,
    /// To make the producer anew after a transaction it cannot abort.
    producer_config: ClientConfig,
    /// Set for exactly-once: the consumer settings to read the tail with.
    transactional: Option<ClientConfig>,
    transactions_ready: bool,
}

impl KafkaWriter {
    /// Reads the options; `key` is the sink's primary key in `schema`
    /// (None: append-only).
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
        key: Option<&[usize]>,
    ) -> Result<Self, ConnectorError> {
        let topic = options.required("topic")?.to_string();
        let (mut config, servers) = client_config(options)?;
        let format = match options.get("format").unwrap_or("plain") {
            f if f.eq_ignore_ascii_case("plain") => SinkFormat::Plain,
            f if f.eq_ignore_ascii_case("upsert") => SinkFormat::Upsert,
            f if f.eq_ignore_ascii_case("debezium") => SinkFormat::Debezium,
            other => {
                return Err(ConnectorError::Unsupported(format!(
                    "FORMAT {} for a Kafka sink (known: PLAIN, UPSERT, DEBEZIUM)",
                    other.to_ascii_uppercase()
                )));
            }
        };
        let encoding = RowEncoding::from_options(options, &topic)?;
        // Read (and so accepted) by the server, which plans the key.
        let _ = options.get("primary_key");
        let key = match (format, key) {
            (SinkFormat::Plain, _) => vec![],
            (_, Some(key)) => key.to_vec(),
            (_, None) => {
                return Err(ConnectorError::Missing(
                    "primary_key (the columns that identify a row in the topic's keys)".into(),
                ));
            }
        };
        let exactly_once = match options.get("sink.delivery-guarantee") {
            None => false,
            Some(g) if g.eq_ignore_ascii_case("at-least-once") => false,
            Some(g) if g.eq_ignore_ascii_case("exactly-once") => true,
            Some(other) => {
                return Err(ConnectorError::BadValue {
                    key: "sink.delivery-guarantee".into(),
                    value: other.into(),
                    reason: "must be 'at-least-once' or 'exactly-once'".into(),
                });
            }
        };
        let transactional = exactly_once.then(|| {
            if config.get("transactional.id").is_none() {
                config.set("transactional.id", format!("runnel-{topic}"));
            }
            let mut consumer = ClientConfig::new();
            consumer
                .set("bootstrap.servers", &servers)
                .set("group.id", format!("runnel-sink-{topic}"))
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false");
            for (name, value) in options.with_prefix("properties.") {
                if name.starts_with("security.")
                    || name.starts_with("sasl.")
                    || name.starts_with("ssl.")
                {
                    consumer.set(name, value);
                }
            }
            consumer
        });
        if config.get("acks").is_none() {
            config.set("acks", "all");
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .map_err(|e| refused(&servers, e))?;
        Ok(Self {
            topic,
            servers,
            format,
            key,
            schema: std::sync::Arc::clone(schema),
            encoding,
            producer,
            producer_config: config,
            transactional,
            transactions_ready: false,
        })
    }

    /// Whether the broker answers and lists the topic (CREATE SINK).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        topic_partitions(self.producer.client(), &self.topic, CHECK_TIMEOUT).map_err(|reason| {
            ConnectorError::BadValue {
                key: "properties.bootstrap.server".into(),
                value: self.servers.clone(),
                reason,
            }
        })?;
        self.encoding.check()
    }

    /// The messages of one epoch: (key, value) pairs.
    fn messages(&mut self, changes: &StreamChunk) -> Result<Vec<OutMessage>, SinkWriteError> {
        let keys = if self.key.is_empty() {
            vec![]
        } else {
            let keyed = changes
                .data()
                .project(&self.key)
                .map_err(|e| SinkWriteError::Failed(e.to_string()))?;
            self.encoding.rows(&keyed, Part::Key)?
        };
        let ops = changes
            .ops()
            .map_err(|e| SinkWriteError::Failed(e.to_string()))?;
        if self.format == SinkFormat::Debezium {
            return self.debezium_messages(changes, &ops, keys);
        }
        let rows = self.encoding.rows(changes.data(), Part::Value)?;
        let mut messages = Vec::with_capacity(rows.len());
        for (row, value) in rows.into_iter().enumerate() {
            let key = keys.get(row).cloned();
            match (self.format, ops[row]) {
                (SinkFormat::Plain, Op::Insert) => messages.push((None, Some(value))),
                (SinkFormat::Plain, _) => {
                    return Err(SinkWriteError::Failed(
                        "a FORMAT PLAIN sink received a retraction".into(),
                    ));
                }
                (_, Op::Insert | Op::UpdateInsert) => messages.push((key, Some(value))),
                (_, Op::Delete) => messages.push((key, None)),
                // The update's new version follows under the same key.
                (_, Op::UpdateDelete) => {}
            }
        }
        Ok(messages)
    }

    /// A Debezium change event per change, keyed by the changed row; a
    /// delete is followed by a tombstone, so compaction can drop the key.
    fn debezium_messages(
        &mut self,
        changes: &StreamChunk,
        ops: &[Op],
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<OutMessage>, SinkWriteError> {
        let events = debezium_envelope::events(ops);
        let envelopes = debezium_envelope::envelopes(changes.data(), &events, now_millis())?;
        let values = self.encoding.rows(&envelopes, Part::Value)?;
        let mut messages = Vec::with_capacity(values.len());
        for (event, value) in events.iter().zip(values) {
            let key = keys.get(event.key_row() as usize).cloned();
            messages.push((key.clone(), Some(value)));
            if event.op == "d" {
                messages.push((key, None));
            }
        }
        Ok(messages)
    }

    /// Hands every message to librdkafka and waits until each is
    /// acknowledged (at-least-once) or the transaction commits.
    fn produce(&self, epoch: Epoch, messages: &[OutMessage]) -> Result<(), KafkaError> {
        let epoch_text = epoch.0.to_string();
        for (key, value) in messages {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = value {
                record = record.payload(value.as_slice());
            }
            if self.transactional.is_some() {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: EPOCH_HEADER,
                    value: Some(epoch_text.as_str()),
                }));
            }
            let mut record = record;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((error, _)) => return Err(error),
                }
            }
            self.producer.poll(Duration::ZERO);
        }
        self.producer.flush(WRITE_TIMEOUT)
    }

    fn take_delivery_failure(&self) -> Option<String> {
        self.producer
            .context()
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn ensure_transactions(&mut self) -> Result<(), SinkWriteError> {
        if self.transactional.is_some() && !self.transactions_ready {
            self.producer
                .init_transactions(WRITE_TIMEOUT)
                .map_err(|e| classify(&e, "starting Kafka transactions"))?;
            self.transactions_ready = true;
        }
        Ok(())
    }

    /// The newest epoch in the committed messages at the end of every
    /// partition.
    fn committed_epoch(
        &self,
        consumer_config: &ClientConfig,
    ) -> Result<Option<Epoch>, SinkWriteError> {
        let consumer: BaseConsumer = consumer_config
            .create()
            .map_err(|e| SinkWriteError::Failed(e.to_string()))?;
        let partitions = topic_partitions(consumer.client(), &self.topic, WRITE_TIMEOUT)
            .map_err(SinkWriteError::Unavailable)?;
        let mut newest: Option<Epoch> = None;
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, partition, WRITE_TIMEOUT)
                .map_err(|e| classify(&e, "reading the topic's offsets"))?;
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset((high - TAIL_MESSAGES).max(low)),
                )
                .map_err(|e| SinkWriteError::Failed(e.to_string()))?;
            consumer
                .assign(&assignment)
                .map_err(|e| classify(&e, "reading the topic's tail"))?;
            let deadline = std::time::Instant::now() + WRITE_TIMEOUT;
            loop {
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(message)) => {
                        let epoch = message.headers().and_then(|headers| {
                            headers
                                .iter()
                                .find(|h| h.key == EPOCH_HEADER)
                                .and_then(|h| h.value)
                                .and_then(|v| std::str::from_utf8(v).ok())
                                .and_then(|v| v.parse::<u64>().ok())
                        });
                        if let Some(epoch) = epoch {
                            newest = newest.max(Some(Epoch(epoch)));
                        }
                        if message.offset() + 1 >= high {
                            break;
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => return Err(classify(&e, "reading the topic's tail")),
                    None => {}
                }
                // Only transaction markers are left before `high`.
                let position = consumer.position().ok().and_then(|p| {
                    p.find_partition(&self.topic, partition)
                        .and_then(|p| p.offset().to_raw())
                });
                if position.is_some_and(|p| p >= high) || std::time::Instant::now() > deadline {
                    break;
                }
            }
        }
        Ok(newest)
    }
}

/// A message: key and value (None: a tombstone).
type OutMessage = (Option<Vec<u8>>, Option<Vec<u8>>);

impl SinkWriter for KafkaWriter {
    fn delivered(&mut self) -> Result<Option<Epoch>, SinkWriteError> {
        let Some(consumer) = self.transactional.clone() else {
            return Ok(None);
        };
        // Completes or aborts what an earlier run of this transactional id
        // left open, so the tail holds only committed messages.
        self.ensure_transactions()?;
        self.committed_epoch(&consumer)
    }

    fn write_epoch(&mut self, epoch: Epoch, changes: &StreamChunk) -> Result<(), SinkWriteError> {
        if changes.data().schema().fields().len() != self.schema.fields().len() {
            return Err(SinkWriteError::Failed("sink rows of another shape".into()));
        }
        let messages = self.messages(changes)?;
        if self.transactional.is_none() {
            let result = self.produce(epoch, &messages);
            if let Some(failure) = self.take_delivery_failure() {
                return Err(SinkWriteError::Unavailable(format!(
                    "a message was not delivered: {failure}"
                )));
            }
            return result.map_err(|e| classify(&e, "delivering an epoch"));
        }
        self.ensure_transactions()?;
        self.producer
            .begin_transaction()
            .map_err(|e| classify(&e, "beginning a transaction"))?;
        let result = self
            .produce(epoch, &messages)
            .and_then(|()| self.producer.commit_transaction(WRITE_TIMEOUT));
        let failure = self.take_delivery_failure();
        let reason = match (result, failure) {
            (Ok(()), None) => return Ok(()),
            (Err(e), _) => classify(&e, "committing the epoch's transaction"),
            (Ok(()), Some(f)) => {
                SinkWriteError::Unavailable(format!("a message was not delivered: {f}"))
            }
        };
        if let Err(e) = self.producer.abort_transaction(WRITE_TIMEOUT) {
            // A producer that cannot abort starts over (init_transactions
            // of a new one fences what the old one left open).
            tracing::warn!(topic = %self.topic, error = %e, "aborting a Kafka transaction failed");
            match self
                .producer_config
                .create_with_context(Deliveries::default())
            {
                Ok(producer) => {
                    self.producer = producer;
                    self.transactions_ready = false;
                }
                Err(e) => return Err(SinkWriteError::Failed(format!("{reason}; then: {e}"))),
            }
        }
        Err(reason)
    }
}

/// Whether a Kafka error is worth retrying.
fn classify(error: &KafkaError, doing: &str) -> SinkWriteError {
    let unsupported = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
    );
    let fatal = unsupported
        || match error {
            KafkaError::Transaction(e) => e.is_fatal(),
            KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => true,
            _ => matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::UnsupportedVersion
                        | RDKafkaErrorCode::UnsupportedFeature
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                        | RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize
                )
            ),
        };
    let message = format!("{doing}: {error}");
    if fatal {
        SinkWriteError::Failed(message)
    } else {
        SinkWriteError::Unavailable(message)
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
