//! `runnel-bench kafka`: Nexmark bids in a Kafka topic on a real broker
//! (tansu, started here), then, in one run against that topic:
//! - librdkafka's own consumer through `rdkafka` (a `BaseConsumer` that
//!   counts messages) and confluent-kafka's (Python) consumer, the
//!   baselines: messages per second per core of their process;
//! - Runnel's Kafka source under a `count(*)` view: messages per second
//!   per core of the whole embedded database (decoding JSON, state,
//!   commits);
//! - Nexmark queries (q1 and q5 by default) as views over the Kafka
//!   source, beside DataFusion's batch over the same bids in memory.
//!
//! The source is bounded (`scan.bounded.mode = 'latest-offset'`), so each
//! run ends when the topic is read and every window closes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use runnel_connectors::{NexmarkGenerator, NexmarkTable};
use runnel_engine::runtime::connector::RowGenerator;
use runnel_sql_tests::KafkaBroker;

use crate::files::QueryFiles;
use crate::report::{check_rows, print_header, print_row};
use crate::{Args, batch, measure, queries, streaming};

const TOPIC: &str = "bid";

/// Runs the Kafka benchmark.
pub(crate) async fn run(args: &Args) -> Result<()> {
    let broker = tokio::task::block_in_place(KafkaBroker::start)?;
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, args.partitions).await?;
    let bids = encode_bids(args)?;
    let messages = bids.len() as u64;
    let produce_started = Instant::now();
    let bytes = tokio::task::block_in_place(|| produce(&bootstrap, args.partitions, &bids))?;
    drop(bids);
    println!(
        "Kafka: {messages} Nexmark bids as JSON ({:.1} MiB) in topic '{TOPIC}', {} partitions, \
         tansu on {bootstrap} (produced in {:.1} s); seed {}, {} cores available",
        bytes as f64 / (1 << 20) as f64,
        args.partitions,
        produce_started.elapsed().as_secs_f64(),
        args.seed,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    println!(
        "{:<34} {:>14} {:>10} {:>10}",
        "reader", "msgs/s/core", "wall s", "peak MiB"
    );
    measure::reset_peak_memory();
    let start = measure::Usage::now();
    tokio::task::block_in_place(|| read_with_librdkafka(&bootstrap, args.partitions, messages))?;
    let usage = start.elapsed();
    let librdkafka = messages as f64 / usage.cpu.as_secs_f64().max(1e-3);
    println!(
        "{:<34} {:>14.0} {:>10.2} {:>10.1}",
        "librdkafka (rdkafka BaseConsumer)",
        librdkafka,
        usage.wall.as_secs_f64(),
        measure::peak_memory() as f64 / (1 << 20) as f64
    );
    match tokio::task::block_in_place(|| broker.time_reading(TOPIC)) {
        Ok(run) if run.messages == messages => println!(
            "{:<34} {:>14.0} {:>10.2} {:>10}",
            "confluent-kafka (Python)",
            run.messages as f64 / run.cpu_s.max(1e-3),
            run.wall_s,
            "-"
        ),
        Ok(run) => bail!(
            "confluent-kafka read {} of {messages} messages",
            run.messages
        ),
        Err(error) => println!("confluent-kafka (Python)           not run: {error:#}"),
    }

    let source = source_sql(&bootstrap);
    let mut counting = args.clone();
    counting.check = true;
    let (run, rows) = streaming(
        "kafka_count",
        "SELECT count(*) AS n FROM bid",
        std::slice::from_ref(&source),
        &QueryFiles::for_query("kafka_count")?,
        &counting,
    )
    .await?;
    let counted = measure::first_count(&rows)?;
    if counted != messages {
        bail!("the count view over the Kafka source has {counted} of {messages} messages");
    }
    let runnel = run.events_per_core_second(messages);
    println!(
        "{:<34} {:>14.0} {:>10.2} {:>10.1}",
        "Runnel Kafka source, count(*) view",
        runnel,
        run.usage.wall.as_secs_f64(),
        run.peak_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "Runnel over librdkafka: {:.3} (Runnel decodes JSON into columns and commits epochs; \
         the baselines only count messages)",
        runnel / librdkafka
    );

    println!("Nexmark over Kafka (rates are bids per second per core):");
    print_header();
    for name in &args.queries {
        let (sql, tables) = queries::find(name)?;
        if tables != [NexmarkTable::Bid] {
            bail!("{name} reads more than bids; over Kafka only bid queries run");
        }
        let files = QueryFiles::for_query(name)?;
        let sources: Vec<String> = std::iter::once(source.clone())
            .chain(files.source_sql())
            .collect();
        let (stream, view_rows) = streaming(name, sql, &sources, &files, args).await?;
        let (batch, batch_rows) = batch(sql, tables, &files, args).await?;
        check_rows(name, args, &stream, &view_rows, &batch, &batch_rows)?;
        print_row(name, messages, &stream, &batch);
    }
    Ok(())
}

/// The bid source over the topic, read to its end as of the view's start.
fn source_sql(bootstrap: &str) -> String {
    format!(
        "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
         url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
         WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
         WITH (connector = 'kafka', topic = '{TOPIC}', properties.bootstrap.server = '{bootstrap}', \
         scan.startup.mode = 'earliest', scan.bounded.mode = 'latest-offset') \
         FORMAT PLAIN ENCODE JSON"
    )
}

async fn create_topic(bootstrap: &str, partitions: u32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let partitions = i32::try_from(partitions).context("--partitions")?;
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating topic {topic}: {code}"))?;
    }
    Ok(())
}

/// The bids of the run's Nexmark stream, one JSON object each (as
/// arrow's JSON writer puts them: timestamps as ISO 8601 text).
fn encode_bids(args: &Args) -> Result<Vec<Vec<u8>>> {
    let mut generator =
        NexmarkGenerator::new(NexmarkTable::Bid, args.seed, Some(args.events), args.rate);
    let mut position = 0;
    let mut messages = vec![];
    while let Some(batch) = generator.generate(position, 8192)? {
        position += batch.num_rows() as u64;
        messages.extend(json_lines(&batch)?);
    }
    Ok(messages)
}

fn json_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(vec![]);
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer
        .into_inner()
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Counts failed deliveries.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces `bids` round robin over the partitions (so each partition is
/// in event-time order, one request in flight at a time) and waits until
/// the broker has them all. Returns the bytes produced.
fn produce(bootstrap: &str, partitions: u32, bids: &[Vec<u8>]) -> Result<u64> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("max.in.flight.requests.per.connection", "1")
        .create_with_context(Deliveries::default())?;
    let mut bytes = 0;
    for (i, bid) in bids.iter().enumerate() {
        let partition = (i as u64 % u64::from(partitions)) as i32;
        let mut record = BaseRecord::<(), [u8]>::to(TOPIC)
            .partition(partition)
            .payload(bid.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((error, _)) => bail!("producing bid {i}: {error}"),
            }
        }
        bytes += bid.len() as u64;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(300))?;
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} bids were not delivered");
    }
    Ok(bytes)
}

/// Reads every partition from its start until `messages` arrived, with
/// librdkafka's consumer and nothing else.
fn read_with_librdkafka(bootstrap: &str, partitions: u32, messages: u64) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "runnel-bench-librdkafka")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(TOPIC, partition as i32, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    let mut read = 0u64;
    let mut bytes = 0u64;
    while read < messages {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => {
                read += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(error)) => bail!("librdkafka consumer: {error}"),
            None => bail!("librdkafka consumer: nothing for 10 s after {read} of {messages}"),
        }
    }
    std::hint::black_box(bytes);
    Ok(())
}
