//! Kafka sinks against a real Kafka-protocol broker (tansu), read back by
//! an outside client (confluent-kafka):
//! - Kafka → view → Kafka: bids from a topic, an aggregation, an UPSERT
//!   sink, while the server is killed with SIGKILL twice; the sink topic
//!   compacted by key equals the aggregation computed here over what was
//!   produced; a DEBEZIUM sink of the same query replays to the same rows;
//!   a PLAIN sink of an append-only query holds every row (at least once);
//!   a file sink on the S3-compatible server (moto) holds every row of an
//!   append-only query exactly once, partitioned by a column;
//! - bad definitions are errors that say what to change.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{
    Consumed, JobRow, KafkaBroker, Produced, S3Server, TestServer, connect, error_of, job_state,
    runnel_binary,
};
use serde_json::Value;

/// item → (count, total price).
type Totals = BTreeMap<String, (i64, i64)>;

/// Bid `i`: (partition, JSON, item, price).
fn bid(i: usize) -> (i32, String, String, i64) {
    let item = format!("item{}", i % 7);
    let price = (i * 13 % 101) as i64;
    (
        (i % 3) as i32,
        format!(r#"{{"id": {i}, "item": "{item}", "price": {price}}}"#),
        item,
        price,
    )
}

fn produce_bids(broker: &KafkaBroker, range: std::ops::Range<usize>) -> Result<()> {
    let bids: Vec<_> = range.map(bid).collect();
    let messages: Vec<Produced<'_>> = bids
        .iter()
        .map(|(partition, json, ..)| (*partition, None, Some(json.as_str())))
        .collect();
    broker.produce("bids", &messages)
}

/// item → (count, sum of price) over bids 0..n: the batch answer.
fn oracle(n: usize) -> Totals {
    let mut totals = Totals::new();
    for i in 0..n {
        let (_, _, item, price) = bid(i);
        let entry: &mut (i64, i64) = totals.entry(item).or_default();
        entry.0 += 1;
        entry.1 += price;
    }
    totals
}

fn row_of(value: &Value) -> Result<(String, (i64, i64))> {
    let field = |name: &str| {
        value
            .get(name)
            .with_context(|| format!("no {name} in {value}"))
    };
    Ok((
        field("item")?.as_str().context("item")?.to_string(),
        (
            field("n")?.as_i64().context("n")?,
            field("total")?.as_i64().context("total")?,
        ),
    ))
}

/// The upsert topic compacted by key: the last value per key, tombstones
/// removing theirs.
fn compacted(messages: &[Consumed]) -> Result<Totals> {
    let mut by_key: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (_, key, value) in messages {
        let key = key.clone().context("an upsert message without a key")?;
        by_key.insert(key, value.clone());
    }
    let mut rows = BTreeMap::new();
    for (key, value) in by_key {
        let Some(value) = value else { continue };
        let (item, totals) = row_of(&serde_json::from_str(&value)?)?;
        let key: Value = serde_json::from_str(&key)?;
        if key.get("item").and_then(Value::as_str) != Some(item.as_str()) {
            bail!("key {key} for the row of {item}");
        }
        rows.insert(item, totals);
    }
    Ok(rows)
}

/// The Debezium topic replayed in order: c and u set the row of `after`,
/// u and d remove the row of `before`.
fn replayed(messages: &[Consumed]) -> Result<Totals> {
    let mut rows = BTreeMap::new();
    for (_, _, value) in messages {
        let Some(value) = value else { continue };
        let event: Value = serde_json::from_str(value)?;
        let op = event["op"].as_str().context("op")?;
        if matches!(op, "u" | "d") {
            rows.remove(&row_of(&event["before"])?.0);
        }
        if matches!(op, "c" | "u") {
            let (item, totals) = row_of(&event["after"])?;
            rows.insert(item, totals);
        }
    }
    Ok(rows)
}

/// Waits until `read(topic)` equals `expected`.
fn wait_for_topic(
    broker: &KafkaBroker,
    topic: &str,
    read: fn(&[Consumed]) -> Result<Totals>,
    expected: &Totals,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = read(&broker.consume(topic)?)?;
        if &got == expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("topic {topic} holds {got:?}, expected {expected:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test]
async fn kafka_to_view_to_kafka_across_kills() -> Result<()> {
    let broker = KafkaBroker::start()?;
    for (topic, partitions) in [("bids", 3), ("totals", 2), ("changes", 1), ("rich", 2)] {
        broker.create_topic(topic, partitions)?;
    }
    produce_bids(&broker, 0..300)?;
    let s3 = S3Server::start("sinks")?;
    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let bootstrap = broker.bootstrap();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{bootstrap}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item;
             CREATE SINK totals_out FROM totals
               WITH (connector = 'kafka', topic = 'totals', properties.bootstrap.server = '{bootstrap}')
               FORMAT UPSERT ENCODE JSON;
             CREATE SINK totals_changes AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item
               WITH (connector = 'kafka', topic = 'changes', properties.bootstrap.server = '{bootstrap}')
               FORMAT DEBEZIUM ENCODE JSON;
             CREATE SINK rich_bids AS SELECT id, item FROM bids WHERE price > 80
               WITH (connector = 'kafka', topic = 'rich', properties.bootstrap.server = '{bootstrap}')
               FORMAT PLAIN ENCODE JSON;
             CREATE SINK rich_files AS SELECT id, item, price FROM bids WHERE price > 80
               WITH (connector = 'filesystem', path = 's3://sinks/rich', partition_by = 'item',
                     {})
               FORMAT PLAIN ENCODE JSON",
            s3.connector_options()
        ))
        .await?;
    wait_for_topic(&broker, "totals", compacted, &oracle(300))?;

    let mut produced = 300;
    for round in 0..2u64 {
        let from = produced;
        server.kill_during(Duration::from_millis(200 + 300 * round), || {
            produce_bids(&broker, from..from + 400)
        })?;
        produced += 400;
        wait_for_topic(&broker, "totals", compacted, &oracle(produced))
            .with_context(|| format!("upsert sink after kill {round}"))?;
    }
    wait_for_topic(&broker, "changes", replayed, &oracle(produced)).context("debezium sink")?;

    // At least once: every rich bid is there, none that is not.
    let expected: BTreeSet<i64> = (0..produced)
        .filter(|&i| bid(i).3 > 80)
        .map(|i| i as i64)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ids = BTreeSet::new();
        for (_, key, value) in broker.consume("rich")? {
            if key.is_some() {
                bail!("a PLAIN sink wrote a key");
            }
            let row: Value = serde_json::from_str(&value.context("a tombstone in a PLAIN sink")?)?;
            ids.insert(row["id"].as_i64().context("id")?);
        }
        if ids == expected {
            break;
        }
        if Instant::now() > deadline || !ids.is_subset(&expected) {
            bail!(
                "plain sink holds {} ids, expected {}",
                ids.len(),
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    // Exactly once: the files hold every rich bid once, each in the folder
    // of its item.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ids = vec![];
        for (path, bytes) in s3.objects("rich").await? {
            for line in String::from_utf8(bytes)?.lines() {
                let row: Value = serde_json::from_str(line)?;
                let item = row["item"].as_str().context("item")?;
                if !path.contains(&format!("/item={item}/part-")) {
                    bail!("{path} holds a row of {item}");
                }
                ids.push(row["id"].as_i64().context("id")?);
            }
        }
        ids.sort_unstable();
        let want: Vec<i64> = expected.iter().copied().collect();
        if ids == want {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the file sink holds {} rows ({} distinct), expected {}",
                ids.len(),
                ids.iter().collect::<BTreeSet<_>>().len(),
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let client = connect(&server).await?;
    let jobs = client.simple_query("SHOW JOBS").await?;
    let text = format!("{jobs:?}");
    assert!(
        text.contains("public.totals_out"),
        "SHOW JOBS lists sinks: {text}"
    );
    client.batch_execute("DROP SINK rich_bids").await?;
    Ok(())
}

#[tokio::test]
async fn bad_sink_definitions_say_what_to_change() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 3)?;
    broker.create_topic("out", 1)?;
    let server = TestServer::start(&runnel_binary()?)?;
    let client = connect(&server).await?;
    let bootstrap = broker.bootstrap();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{bootstrap}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW totals AS SELECT item, count(*) AS n FROM bids GROUP BY item"
        ))
        .await?;
    let with = |extra: &str| {
        format!(
            "WITH (connector = 'kafka', topic = 'out', properties.bootstrap.server = '{bootstrap}'{extra})"
        )
    };
    for (sql, code, needle) in [
        (
            format!(
                "CREATE SINK s FROM totals {} FORMAT PLAIN ENCODE JSON",
                with("")
            ),
            "0A000",
            "FORMAT UPSERT",
        ),
        (
            format!(
                "CREATE SINK s FROM totals {} FORMAT DEBEZIUM ENCODE PROTOBUF",
                with("")
            ),
            "0A000",
            "ENCODE PROTOBUF",
        ),
        (
            format!(
                "CREATE SINK s FROM totals {} FORMAT UPSERT ENCODE JSON",
                with(", tpoic = 'x'")
            ),
            "22023",
            "tpoic",
        ),
        (
            format!(
                "CREATE SINK s FROM totals {} FORMAT UPSERT ENCODE JSON",
                with(", primary_key = 'nope'")
            ),
            "42P16",
            "nope",
        ),
        (
            format!(
                "CREATE SINK s FROM totals {} FORMAT UPSERT ENCODE JSON",
                with(", sink.delivery-guarantee = 'twice'")
            ),
            "22023",
            "exactly-once",
        ),
        (
            "CREATE SINK s FROM totals WITH (connector = 'kafka', topic = 'out', \
             properties.bootstrap.server = '127.0.0.1:1') FORMAT UPSERT ENCODE JSON"
                .to_string(),
            "22023",
            "127.0.0.1:1",
        ),
        ("DROP SINK nothing".to_string(), "42704", "nothing"),
    ] {
        let (got, message) = error_of(&client, &sql).await?;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(needle), "{sql}: {message}");
    }
    client
        .batch_execute(&format!(
            "CREATE SINK s FROM totals {} FORMAT UPSERT ENCODE JSON",
            with("")
        ))
        .await?;
    let (code, message) = error_of(&client, "DROP MATERIALIZED VIEW totals CASCADE").await?;
    assert_eq!(code, "2BP01", "{message}");
    assert!(message.contains("DROP SINK"), "{message}");
    client
        .batch_execute("DROP SINK s; DROP MATERIALIZED VIEW totals")
        .await?;
    Ok(())
}

/// tansu does not implement EndTxn, so an exactly-once sink cannot commit
/// a transaction against it: the broker says the request is not
/// supported, and the job fails with that error in SHOW JOBS rather than
/// pretending. (Against a broker with transactions the same path commits
/// each epoch; see bench/README.md for what was verified where.)
#[tokio::test]
async fn exactly_once_sink_fails_clearly_on_a_broker_without_transactions() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 3)?;
    broker.create_topic("once", 1)?;
    produce_bids(&broker, 0..50)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let bootstrap = broker.bootstrap();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{bootstrap}')
               FORMAT PLAIN ENCODE JSON;
             CREATE SINK once AS SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item
               WITH (connector = 'kafka', topic = 'once', properties.bootstrap.server = '{bootstrap}',
                     sink.delivery-guarantee = 'exactly-once')
               FORMAT UPSERT ENCODE JSON"
        ))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let JobRow { status, error, .. } = job_state(&client, "public.once").await?;
        if status == "failed" {
            assert!(error.contains("EndTxn"), "{error}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the sink is {status} ({error}), expected failed");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
