//! `ENCODE AVRO` Kafka sources against a real broker (tansu), the values
//! encoded by an outside Avro implementation (Python's fastavro):
//! - with the schema inline, bare Avro bodies; a value that is not Avro is
//!   skipped and counted; a SIGKILL loses and repeats nothing;
//! - with a schema registry (a stand-in serving the registry's REST API),
//!   values in the registry's wire format under two schema versions, the
//!   newer with a field the older lacks (null for its rows), and an id the
//!   registry does not know (skipped);
//! - a registry that goes away shows the job `retrying`; nothing is lost
//!   or skipped when it is back;
//! - an UPSERT sink with ENCODE AVRO registers its key and value schemas
//!   and writes the registry's wire format, which fastavro reads back:
//!   the topic compacted by key equals the view; a DEBEZIUM sink's Avro
//!   change events replay to the view;
//! - a PLAIN sink with ENCODE AVRO and no registry writes bare bodies that
//!   a source with the matching inline schema reads back;
//! - bad definitions are errors that say what to change.
//!
//! Each view equals the same aggregation computed here over what was
//! produced.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{
    JobRow, KafkaBroker, SchemaRegistry, TestServer, connect, count_and_sum, job_state,
    wait_for_rows as wait_for,
};
use serde_json::{Value, json};

/// Bid `i`: (partition, item, price, time in milliseconds).
fn bid(i: i64) -> (i32, String, i64, i64) {
    (
        (i % 2) as i32,
        format!("item{}", i % 5),
        i * 7 % 97,
        1_767_225_600_000 + i * 250,
    )
}

fn bid_schema() -> Value {
    json!({
        "type": "record", "name": "Bid", "fields": [
            {"name": "id", "type": "long"},
            {"name": "item", "type": "string"},
            {"name": "price", "type": "long"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}
        ]
    })
}

/// The second version: a note, which the first lacks.
fn noted_schema() -> Value {
    let mut schema = bid_schema();
    if let Some(fields) = schema["fields"].as_array_mut() {
        fields.push(json!({"name": "note", "type": ["null", "string"], "default": null}));
    }
    schema
}

fn record(i: i64, note: Option<&str>) -> (i32, Value) {
    let (partition, item, price, ts) = bid(i);
    let mut value = json!({"id": i, "item": item, "price": price, "ts": ts});
    if let Some(note) = note {
        value["note"] = json!(note);
    }
    (partition, value)
}

/// Source `bids` of topic `bids` through `registry`, and view `totals`.
fn registry_source(broker: &KafkaBroker, registry: &SchemaRegistry) -> String {
    format!(
        "CREATE SOURCE bids (id bigint, item varchar, price bigint, note varchar)
           WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{}')
           FORMAT PLAIN ENCODE AVRO (schema.registry = '{}');
         CREATE MATERIALIZED VIEW totals AS
           SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item",
        broker.bootstrap(),
        registry.url()
    )
}

const TOTALS: &str = "SELECT item, n, total FROM totals ORDER BY item";

fn expected(ids: impl Iterator<Item = i64>) -> Vec<Vec<String>> {
    let bids: Vec<_> = ids.map(bid).collect();
    count_and_sum(
        bids.iter()
            .map(|(_, item, price, _)| (item.as_str(), *price)),
    )
}

async fn skipped(client: &tokio_postgres::Client, view: &str, want: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let JobRow {
            skipped_messages, ..
        } = job_state(client, view).await?;
        if skipped_messages == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{view} skipped {skipped_messages} messages, want {want}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_with_an_inline_schema_across_a_kill() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    let mut records: Vec<_> = (0..150).map(|i| record(i, None)).collect();
    records.push((1, json!("this is not avro")));
    broker.produce_avro("bids", &bid_schema(), None, &records)?;

    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let schema = bid_schema().to_string().replace('\'', "''");
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint, ts timestamp)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE AVRO (avro.schema = '{schema}');
             CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item;
             CREATE MATERIALIZED VIEW times AS
               SELECT min(ts) AS first, max(ts) AS last FROM bids",
            broker.bootstrap()
        ))
        .await?;
    wait_for(&client, TOTALS, &expected(0..150), Duration::from_secs(60)).await?;
    // timestamp-millis as timestamps: 2026-01-01 00:00:00 + 250 ms a bid.
    wait_for(
        &client,
        "SELECT first, last FROM times",
        &[vec![
            "2026-01-01 00:00:00".into(),
            "2026-01-01 00:00:37.25".into(),
        ]],
        Duration::from_secs(30),
    )
    .await?;
    skipped(&client, "public.totals", "1").await?;

    let more: Vec<_> = (150..400).map(|i| record(i, None)).collect();
    server
        .kill_during(Duration::from_millis(300), || {
            broker.produce_avro("bids", &bid_schema(), None, &more)
        })
        .context("producing while killing")?;
    let client = connect(&server).await?;
    wait_for(&client, TOTALS, &expected(0..400), Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_from_a_schema_registry_with_two_schema_versions() -> Result<()> {
    let registry =
        SchemaRegistry::start(&BTreeMap::from([(1, bid_schema()), (2, noted_schema())]))?;
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    let old: Vec<_> = (0..100).map(|i| record(i, None)).collect();
    broker.produce_avro("bids", &bid_schema(), Some(1), &old)?;
    let new: Vec<_> = (100..160).map(|i| record(i, Some("late"))).collect();
    broker.produce_avro("bids", &noted_schema(), Some(2), &new)?;
    // Schema id 7 is not in the registry; a value without the header.
    broker.produce_avro("bids", &bid_schema(), Some(7), &[record(1000, None)])?;
    broker.produce_avro("bids", &bid_schema(), None, &[record(1001, None)])?;

    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&registry_source(&broker, &registry))
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW notes AS
               SELECT count(note) AS noted, count(*) - count(note) AS plain FROM bids",
        )
        .await?;
    wait_for(&client, TOTALS, &expected(0..160), Duration::from_secs(60)).await?;
    wait_for(
        &client,
        "SELECT noted, plain FROM notes",
        &[vec!["60".into(), "100".into()]],
        Duration::from_secs(30),
    )
    .await?;
    skipped(&client, "public.totals", "2").await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_avro_definitions_say_what_to_change() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 1)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let source = |encode: &str| {
        format!(
            "CREATE SOURCE bids (id bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE AVRO {encode}",
            broker.bootstrap()
        )
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for (encode, says) in [
        ("", "schema.registry"),
        ("(avro.schema = '{\"type\": \"nope\"}')", "avro.schema"),
        (
            &format!("(schema.registry = 'http://127.0.0.1:{closed}')") as &str,
            &format!("127.0.0.1:{closed}") as &str,
        ),
    ] {
        let error = match client.batch_execute(&source(encode)).await {
            Ok(()) => bail!("ENCODE AVRO {encode}: accepted"),
            Err(e) => e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default(),
        };
        assert!(error.contains(says), "ENCODE AVRO {encode}: {error}");
    }
    // The session is still there.
    client.batch_execute("SELECT 1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upsert_sink_writes_avro_with_registered_schemas() -> Result<()> {
    let registry = SchemaRegistry::start(&BTreeMap::new())?;
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    broker.create_topic("totals", 1)?;
    broker.create_topic("changes", 1)?;
    broker.produce_avro(
        "bids",
        &bid_schema(),
        None,
        &(0..120).map(|i| record(i, None)).collect::<Vec<_>>(),
    )?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let schema = bid_schema().to_string().replace('\'', "''");
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{0}')
               FORMAT PLAIN ENCODE AVRO (avro.schema = '{schema}');
             CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM bids GROUP BY item;
             CREATE SINK totals_out FROM totals
               WITH (connector = 'kafka', topic = 'totals', properties.bootstrap.server = '{0}')
               FORMAT UPSERT ENCODE AVRO (schema.registry = '{1}');
             CREATE SINK totals_changes FROM totals
               WITH (connector = 'kafka', topic = 'changes', properties.bootstrap.server = '{0}')
               FORMAT DEBEZIUM ENCODE AVRO (schema.registry = '{1}')",
            broker.bootstrap(),
            registry.url()
        ))
        .await?;
    wait_for(&client, TOTALS, &expected(0..120), Duration::from_secs(60)).await?;
    // More bids update every total: the topic holds old and new versions.
    broker.produce_avro(
        "bids",
        &bid_schema(),
        None,
        &(120..300).map(|i| record(i, None)).collect::<Vec<_>>(),
    )?;
    let want = expected(0..300);
    wait_for(&client, TOTALS, &want, Duration::from_secs(60)).await?;

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut compacted: BTreeMap<String, Option<Value>> = BTreeMap::new();
        for (_, key, value) in broker.consume_avro("totals", &registry.url())? {
            let key = key.context("an upsert message without a key")?;
            compacted.insert(key.to_string(), value);
        }
        let rows = total_rows(compacted.values().flatten());
        let replayed = replay_debezium(&broker.consume_avro("changes", &registry.url())?)?;
        let replayed = total_rows(replayed.values());
        if rows == want && replayed == want {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the compacted Avro topic holds\n{rows:?}\nthe Debezium events replay to\n\
                 {replayed:?}\nwant\n{want:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rows (item, n, total) of decoded Avro records, sorted.
fn total_rows<'a>(records: impl Iterator<Item = &'a Value>) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = records
        .map(|v| {
            ["item", "n", "total"]
                .iter()
                .map(|c| match &v[c] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

/// The rows Debezium change events leave, by item: c and u put the row
/// of `after`, u and d remove the row of `before`; tombstones are skipped.
fn replay_debezium(events: &[runnel_sql_tests::ConsumedAvro]) -> Result<BTreeMap<String, Value>> {
    let mut rows = BTreeMap::new();
    for (_, _, event) in events {
        let Some(event) = event else { continue };
        let item = |side: &str| -> Result<String> {
            Ok(event[side]["item"]
                .as_str()
                .with_context(|| format!("no {side}.item in {event}"))?
                .to_string())
        };
        match event["op"].as_str() {
            Some("c") => {}
            Some("u" | "d") => {
                rows.remove(&item("before")?);
            }
            _ => bail!("a Debezium event without a known op: {event}"),
        }
        if event["op"] != "d" {
            rows.insert(item("after")?, event["after"].clone());
        }
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_goes_away_is_waited_for() -> Result<()> {
    let mut registry =
        SchemaRegistry::start(&BTreeMap::from([(1, bid_schema()), (2, noted_schema())]))?;
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    broker.produce_avro(
        "bids",
        &bid_schema(),
        Some(1),
        &(0..50).map(|i| record(i, None)).collect::<Vec<_>>(),
    )?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&registry_source(&broker, &registry))
        .await?;
    wait_for(&client, TOTALS, &expected(0..50), Duration::from_secs(60)).await?;

    // Schema 2 is new to the source, and the registry is gone.
    registry.stop();
    broker.produce_avro(
        "bids",
        &noted_schema(),
        Some(2),
        &(50..120).map(|i| record(i, Some("n"))).collect::<Vec<_>>(),
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let JobRow { status, error, .. } = job_state(&client, "public.totals").await?;
        if status == "retrying" {
            assert!(error.contains(&registry.url()), "{error}");
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("with the registry down the job is {status} ({error}), expected retrying");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    registry.restart()?;
    wait_for(&client, TOTALS, &expected(0..120), Duration::from_secs(90)).await?;
    skipped(&client, "public.totals", "0").await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_sink_writes_bare_avro_bodies() -> Result<()> {
    let broker = KafkaBroker::start()?;
    broker.create_topic("bids", 2)?;
    broker.create_topic("rich", 1)?;
    let records: Vec<_> = (0..200).map(|i| record(i, None)).collect();
    broker.produce_avro("bids", &bid_schema(), None, &records)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let schema = bid_schema().to_string().replace('\'', "''");
    // What the sink's columns make: nullable fields, null first.
    let rich_schema = json!({
        "type": "record", "name": "Rich", "fields": [
            {"name": "id", "type": ["null", "long"]},
            {"name": "item", "type": ["null", "string"]},
            {"name": "price", "type": ["null", "long"]}
        ]
    })
    .to_string();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{0}')
               FORMAT PLAIN ENCODE AVRO (avro.schema = '{schema}');
             CREATE SINK rich_out AS SELECT id, item, price FROM bids WHERE price > 40
               WITH (connector = 'kafka', topic = 'rich', properties.bootstrap.server = '{0}')
               FORMAT PLAIN ENCODE AVRO;
             CREATE SOURCE rich (id bigint, item varchar, price bigint)
               WITH (connector = 'kafka', topic = 'rich', properties.bootstrap.server = '{0}')
               FORMAT PLAIN ENCODE AVRO (avro.schema = '{rich_schema}');
             CREATE MATERIALIZED VIEW totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM rich GROUP BY item",
            broker.bootstrap()
        ))
        .await?;
    let rich: Vec<_> = (0..200).map(bid).filter(|b| b.2 > 40).collect();
    let want = count_and_sum(
        rich.iter()
            .map(|(_, item, price, _)| (item.as_str(), *price)),
    );
    wait_for(&client, TOTALS, &want, Duration::from_secs(60)).await?;
    skipped(&client, "public.totals", "0").await
}
