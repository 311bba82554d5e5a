//! Event time over Kafka partitions against a real broker (tansu):
//! - a bounded source (`scan.bounded.mode = 'latest-offset'`) reads each
//!   partition up to where it ended when the source started and then ends,
//!   so every window closes; the partitions are read one after the other,
//!   and per-partition watermarks keep the later one's rows from being
//!   late, so the view equals the batch answer; messages produced later
//!   are not read, also after the server is killed and started again;
//! - two parallel readers, each of its share of the partitions, close
//!   windows as one would, also when a reader has no partition;
//! - on an unbounded source, a partition without messages does not hold
//!   windows open.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use runnel_sql_tests::{
    KafkaBroker, Produced, TestServer, connect, text_rows, wait_for_rows as wait_for,
};

/// Message `i`: (partition, JSON value, window start, id). Events are
/// 137 ms apart from 2026-01-01 00:00:00, alternating between partitions.
fn click(i: i64, partitions: i64) -> (i32, String, String, i64) {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid date");
    let ts = start + chrono::Duration::milliseconds(i * 137);
    let window = start + chrono::Duration::seconds((i * 137 / 1000) / 10 * 10);
    let value = format!(
        r#"{{"id": {i}, "ts": "{}"}}"#,
        ts.format("%Y-%m-%dT%H:%M:%S%.3f")
    );
    (
        (i % partitions) as i32,
        value,
        window.format("%Y-%m-%d %H:%M:%S").to_string(),
        i,
    )
}

fn produce(broker: &KafkaBroker, topic: &str, clicks: &[(i32, String, String, i64)]) -> Result<()> {
    let mut messages: Vec<Produced<'_>> = clicks
        .iter()
        .map(|(p, v, _, _)| (*p, None, Some(v.as_str())))
        .collect();
    messages.push((0, None, Some("not json")));
    broker.produce(topic, &messages)
}

/// window start → (count, sum of id): the batch answer.
fn expected(clicks: &[(i32, String, String, i64)]) -> Vec<Vec<String>> {
    let mut windows: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (_, _, window, id) in clicks {
        let entry = windows.entry(window.as_str()).or_default();
        entry.0 += 1;
        entry.1 += id;
    }
    windows
        .into_iter()
        .map(|(w, (n, sum))| vec![w.to_string(), n.to_string(), sum.to_string()])
        .collect()
}

fn source_sql(broker: &KafkaBroker, name: &str, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} (id bigint, ts timestamp,
                               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
           WITH (connector = 'kafka', topic = '{name}',
                 properties.bootstrap.server = '{}'{extra})
           FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    )
}

fn windows_sql(source: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW windows AS
           SELECT window_start, count(*) AS n, sum(id) AS ids
           FROM TUMBLE({source}, ts, INTERVAL '10' SECOND) GROUP BY window_start"
    )
}

const WINDOWS: &str = "SELECT window_start, n, ids FROM windows ORDER BY window_start";

#[tokio::test]
async fn a_bounded_source_ends_at_the_offsets_it_started_with() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("clicks", 2)?;
    let first: Vec<_> = (0..300).map(|i| click(i, 2)).collect();
    produce(&broker, "clicks", &first)?;

    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let source = source_sql(&broker, "clicks", ", scan.bounded.mode = 'latest-offset'");
    client.batch_execute(&source).await?;
    client.batch_execute(&windows_sql("clicks")).await?;
    // The last window closes only because the source ends.
    let want = expected(&first);
    wait_for(&client, WINDOWS, &want, Duration::from_secs(60)).await?;

    // Later messages, in old and new windows, are past the source's end.
    let later: Vec<_> = (0..400).step_by(3).map(|i| click(i, 2)).collect();
    produce(&broker, "clicks", &later)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.kill_and_restart()?;
    let client = connect(&server).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = text_rows(&client, WINDOWS).await?;
    if rows != want {
        bail!("after more messages and a restart the view changed:\n{rows:?}\nwant\n{want:?}");
    }

    let error = client
        .batch_execute(
            &source
                .replace("latest-offset", "forever")
                .replace("SOURCE clicks", "SOURCE other_clicks"),
        )
        .await
        .err()
        .and_then(|e| e.as_db_error().map(|d| d.message().to_string()))
        .unwrap_or_default();
    assert!(
        error.contains("scan.bounded.mode") && error.contains("latest-offset"),
        "{error}"
    );
    Ok(())
}

/// Two parallel readers, of partitions {0, 2} and {1}, each with its own
/// per-partition watermarks: the windows equal the batch answer. A
/// bounded source with fewer partitions than readers ends too: the reader
/// without a partition has nothing to read.
#[tokio::test]
async fn parallel_readers_close_windows_as_one_reader_would() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("clicks", 3)?;
    broker.create_topic("few", 1)?;
    let clicks: Vec<_> = (0..400).map(|i| click(i, 3)).collect();
    produce(&broker, "clicks", &clicks)?;
    let few: Vec<_> = (0..150).map(|i| click(i, 1)).collect();
    produce(&broker, "few", &few)?;

    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client.batch_execute("SET parallelism = 2").await?;
    let bounded = ", scan.bounded.mode = 'latest-offset'";
    client
        .batch_execute(&source_sql(&broker, "clicks", bounded))
        .await?;
    client
        .batch_execute(&source_sql(&broker, "few", bounded))
        .await?;
    client.batch_execute(&windows_sql("clicks")).await?;
    client
        .batch_execute(&windows_sql("few").replace("VIEW windows", "VIEW few_windows"))
        .await?;
    wait_for(
        &client,
        WINDOWS,
        &expected(&clicks),
        Duration::from_secs(60),
    )
    .await?;
    wait_for(
        &client,
        &WINDOWS.replace("FROM windows", "FROM few_windows"),
        &expected(&few),
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test]
async fn an_empty_partition_does_not_hold_windows_open() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("live", 3)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql(&broker, "live", ""))
        .await?;
    client.batch_execute(&windows_sql("live")).await?;
    // Partitions 0 and 1 only, up to 27.3 s: the watermark (22.3 s)
    // closes the windows of 0 s and 10 s although partition 2 is empty.
    let mut clicks: Vec<_> = (0..200).map(|i| click(i, 2)).collect();
    produce(&broker, "live", &clicks)?;
    wait_for(
        &client,
        WINDOWS,
        &expected(&clicks),
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A row for the closed window of 0 s is late and dropped; one for the
    // open window of 20 s counts.
    let late = click(3, 2);
    let on_time = click(201, 2);
    produce(&broker, "live", &[late, on_time.clone()])?;
    clicks.push(on_time);
    wait_for(
        &client,
        WINDOWS,
        &expected(&clicks),
        Duration::from_secs(60),
    )
    .await
}
