//! Kafka sources against a real Kafka-protocol broker (tansu), with the
//! messages produced by an outside client (confluent-kafka):
//! - every partition is read, each message exactly once, also when the
//!   server is killed with SIGKILL while messages keep coming; messages
//!   that do not decode are skipped; the view equals the same aggregation
//!   computed here over what was produced;
//! - `scan.startup.mode = 'latest'` and `'timestamp'`;
//! - bad definitions (unreachable broker, unknown option, missing topic)
//!   are errors at CREATE SOURCE that say what to change;
//! - `format.error-policy = 'fail'` fails the job on a bad message;
//! - a broker that goes away shows as `retrying` in SHOW JOBS, and reading
//!   resumes without loss when it is back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{
    JobRow, KafkaBroker, Produced, TestServer, connect, count_and_sum, error_of, job_state,
    runnel_binary, text_rows, wait_for_rows as wait_for,
};

/// A bid as produced: its JSON and what the view counts of it.
struct Bid {
    partition: i32,
    item: String,
    price: i64,
}

fn bids(from: usize, count: usize, partitions: i32) -> Vec<Bid> {
    (from..from + count)
        .map(|i| Bid {
            partition: (i % partitions as usize) as i32,
            item: format!("item{}", i % 7),
            price: (i * 13 % 101) as i64,
        })
        .collect()
}

fn json_of(bid: &Bid, id: usize) -> String {
    format!(
        r#"{{"id": {id}, "item": "{}", "price": {}}}"#,
        bid.item, bid.price
    )
}

/// Produces `bids` (numbered from `first_id`) plus one message that is
/// not JSON in every partition.
fn produce(broker: &KafkaBroker, topic: &str, first_id: usize, bids: &[Bid]) -> Result<()> {
    let values: Vec<String> = bids
        .iter()
        .enumerate()
        .map(|(i, b)| json_of(b, first_id + i))
        .collect();
    let mut messages: Vec<Produced<'_>> = bids
        .iter()
        .zip(&values)
        .map(|(b, v)| (b.partition, None, Some(v.as_str())))
        .collect();
    let partitions = bids.iter().map(|b| b.partition).max().unwrap_or(0);
    for partition in 0..=partitions {
        messages.push((partition, None, Some("this is not json")));
    }
    broker.produce(topic, &messages)
}

/// item → (count, sum of price) over `bids`: the batch answer.
fn expected(bids: &[Bid]) -> Vec<Vec<String>> {
    count_and_sum(bids.iter().map(|b| (b.item.as_str(), b.price)))
}

fn source_sql(name: &str, broker: &KafkaBroker, topic: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} (id bigint, item varchar, price bigint)
           WITH (connector = 'kafka', topic = '{topic}',
                 properties.bootstrap.server = '{}'{extra})
           FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    )
}

const TOTALS: &str = "SELECT item, n, total FROM totals ORDER BY item";

#[tokio::test]
async fn every_partition_is_read_exactly_once_across_kills() -> Result<()> {
    read_exactly_once_across_kills(1).await
}

/// With parallelism 2 the source has two readers, one of partitions 0 and
/// 2 and one of partition 1, each with its own offsets in the checkpoint.
#[tokio::test]
async fn parallel_readers_split_the_partitions_exactly_once_across_kills() -> Result<()> {
    read_exactly_once_across_kills(2).await
}

async fn read_exactly_once_across_kills(parallelism: usize) -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 3)?;
    let mut all = bids(0, 300, 3);
    produce(&broker, "bids", 0, &all)?;

    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql("bids", &broker, "bids", ""))
        .await?;
    client
        .batch_execute(&format!("SET parallelism = {parallelism}"))
        .await?;
    let view = "CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item";
    let plan = text_rows(&client, &format!("EXPLAIN {view}"))
        .await?
        .concat()
        .join("\n");
    let readers = format!("Fragment 0 (parallelism {parallelism}");
    if !plan.contains(&readers) {
        bail!("the source fragment should have {parallelism} readers:\n{plan}");
    }
    client.batch_execute(view).await?;
    wait_for(&client, TOTALS, &expected(&all), Duration::from_secs(60)).await?;

    // More messages while the server is killed and started again, twice.
    for round in 0..2 {
        let more = bids(all.len(), 500, 3);
        let first_id = all.len();
        let producing = server.kill_during(Duration::from_millis(300 + 400 * round), || {
            produce(&broker, "bids", first_id, &more)
        });
        producing.context("producing while killing")?;
        all.extend(more);
        let client = connect(&server).await?;
        wait_for(&client, TOTALS, &expected(&all), Duration::from_secs(60))
            .await
            .with_context(|| format!("after kill {round}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn startup_modes_latest_and_timestamp() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("events", 2)?;
    let old = bids(0, 40, 2);
    produce(&broker, "events", 0, &old)?;
    // Messages carry their produce time; a moment between the two batches.
    std::thread::sleep(Duration::from_millis(1500));
    let between = chrono::Utc::now().timestamp_millis();
    std::thread::sleep(Duration::from_millis(1500));

    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql(
            "latest_events",
            &broker,
            "events",
            ", scan.startup.mode = 'latest'",
        ))
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW latest_count AS SELECT count(*) AS n FROM latest_events",
        )
        .await?;
    // Let the source find its partitions' ends before the new messages.
    wait_for(
        &client,
        "SELECT n FROM latest_count",
        &[vec!["0".into()]],
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new = bids(40, 25, 2);
    produce(&broker, "events", 40, &new)?;
    wait_for(
        &client,
        "SELECT n FROM latest_count",
        &[vec!["25".into()]],
        Duration::from_secs(30),
    )
    .await?;

    client
        .batch_execute(&source_sql(
            "recent_events",
            &broker,
            "events",
            &format!(
                ", scan.startup.mode = 'timestamp', scan.startup.timestamp.millis = '{between}'"
            ),
        ))
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW recent_count AS SELECT count(*) AS n, min(id) AS first FROM recent_events",
        )
        .await?;
    wait_for(
        &client,
        "SELECT n, first FROM recent_count",
        &[vec!["25".into(), "40".into()]],
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn bad_definitions_are_errors_that_say_what_to_change() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("present", 1)?;
    let server = TestServer::start(&runnel_binary()?)?;
    let client = connect(&server).await?;

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (code, message) = error_of(
        &client,
        &format!(
            "CREATE SOURCE s (id bigint) WITH (connector = 'kafka', topic = 'present',
               properties.bootstrap.server = '127.0.0.1:{closed}') FORMAT PLAIN ENCODE JSON"
        ),
    )
    .await?;
    assert_eq!(code, "22023", "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );

    let (code, message) = error_of(
        &client,
        &source_sql("s", &broker, "present", ", scan.startup.mood = 'earliest'"),
    )
    .await?;
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("scan.startup.mood"), "{message}");
    assert!(message.contains("scan.startup.mode"), "{message}");

    let (code, message) = error_of(&client, &source_sql("s", &broker, "absent", "")).await?;
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("absent"), "{message}");

    let (code, message) = error_of(
        &client,
        &format!(
            "CREATE SOURCE s (id bigint) WITH (connector = 'kafka', topic = 'present',
               properties.bootstrap.server = '{}') FORMAT UPSERT ENCODE JSON",
            broker.bootstrap()
        ),
    )
    .await?;
    assert_eq!(code, "42P16", "{message}");
    assert!(message.contains("PRIMARY KEY"), "{message}");
    for (definition, what) in [
        ("FORMAT UPSERT ENCODE CSV", "ENCODE CSV"),
        ("FORMAT AVRO ENCODE JSON", "FORMAT AVRO"),
    ] {
        let (code, message) = error_of(
            &client,
            &format!(
                "CREATE SOURCE s (id bigint PRIMARY KEY) WITH (connector = 'kafka', topic = 'present',
                   properties.bootstrap.server = '{}') {definition}",
                broker.bootstrap()
            ),
        )
        .await?;
        assert_eq!(code, "0A000", "{message}");
        assert!(message.contains(what), "{message}");
    }
    let (code, message) = error_of(
        &client,
        &format!(
            "CREATE SOURCE s (id bigint PRIMARY KEY) WITH (connector = 'kafka', topic = 'present',
               properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ),
    )
    .await?;
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("FORMAT UPSERT"), "{message}");

    // The session and server are still fine.
    assert_eq!(text_rows(&client, "SELECT 1").await?, [["1"]]);
    Ok(())
}

#[tokio::test]
async fn error_policy_fail_stops_the_job_at_a_bad_message() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("strict", 1)?;
    let good = bids(0, 5, 1);
    produce(&broker, "strict", 0, &good)?;
    let server = TestServer::start(&runnel_binary()?)?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql(
            "strict_bids",
            &broker,
            "strict",
            ", format.error-policy = 'fail'",
        ))
        .await?;
    client
        .batch_execute("CREATE MATERIALIZED VIEW strict_count AS SELECT count(*) FROM strict_bids")
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = text_rows(&client, "SHOW JOBS").await?;
        let line = jobs
            .iter()
            .find(|row| row.iter().any(|v| v == "public.strict_count"))
            .context("the job is listed")?
            .join(" | ");
        if line.contains("offset 5") {
            assert!(line.contains("format.error-policy"), "{line}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the job did not fail at the bad message: {line}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn message_metadata_as_columns() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("meta", 2)?;
    broker.produce(
        "meta",
        &[
            (0, Some("a"), Some(r#"{"id": 1}"#)),
            (1, Some("b"), Some(r#"{"id": 2}"#)),
            (0, Some("c"), Some(r#"{"id": 3}"#)),
            // A tombstone holds no row.
            (1, Some("d"), None),
        ],
    )?;
    let server = TestServer::start(&runnel_binary()?)?;
    let client = connect(&server).await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE meta_src (id bigint)
               INCLUDE key AS k INCLUDE partition AS p INCLUDE offset INCLUDE timestamp AS ts
               WITH (connector = 'kafka', topic = 'meta', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW meta_rows AS
               SELECT id, p, _offset, k, ts > TIMESTAMPTZ '2020-01-01 00:00:00+00' AS recent
               FROM meta_src",
            broker.bootstrap()
        ))
        .await?;
    let want: Vec<Vec<String>> = [
        ["1", "0", "0", "\\x61", "t"],
        ["2", "1", "0", "\\x62", "t"],
        ["3", "0", "1", "\\x63", "t"],
    ]
    .iter()
    .map(|row| row.iter().map(|v| v.to_string()).collect())
    .collect();
    wait_for(
        &client,
        "SELECT * FROM meta_rows ORDER BY id",
        &want,
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test]
async fn a_broker_that_goes_away_is_retried_and_reading_resumes_without_loss() -> Result<()> {
    let mut broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    let mut all = bids(0, 100, 2);
    produce(&broker, "bids", 0, &all)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql(
            "bids",
            &broker,
            "bids",
            ", scan.topic-partition-discovery.interval-ms = '500'",
        ))
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item",
        )
        .await?;
    wait_for(&client, TOTALS, &expected(&all), Duration::from_secs(60)).await?;

    broker.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let JobRow { status, error, .. } = job_state(&client, "public.totals").await?;
        if status == "retrying" {
            assert!(error.contains(&broker.bootstrap()), "{error}");
            break;
        }
        if Instant::now() > deadline {
            bail!("with the broker down the job is {status} ({error}), expected retrying");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    broker.restart()?;
    let more = bids(all.len(), 100, 2);
    produce(&broker, "bids", all.len(), &more)?;
    all.extend(more);
    wait_for(&client, TOTALS, &expected(&all), Duration::from_secs(60))
        .await
        .context("after the broker came back")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let JobRow {
            status,
            error,
            skipped_messages: skipped,
        } = job_state(&client, "public.totals").await?;
        if status == "running" {
            // One message that is not JSON per partition per produce.
            assert_eq!(skipped, "4", "skipped messages are counted");
            break;
        }
        if Instant::now() > deadline {
            bail!("after the broker came back the job is {status} ({error})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
