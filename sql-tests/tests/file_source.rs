//! File sources and sinks on the S3-compatible server (moto):
//! - CSV files matching a glob are read once each, in name order, and new
//!   files are picked up while monitoring, also across a SIGKILL; the view
//!   equals the aggregation computed here over every file;
//! - a Parquet file sink of a table's rows, partitioned, read back by a
//!   Parquet file source, gives the table's totals.

use std::time::Duration;

use anyhow::Result;
use runnel_sql_tests::{
    S3Server, TestServer, connect, count_and_sum, runnel_binary, wait_for_rows,
};

/// File `n`: 50 CSV rows (id, item, price) with a header.
fn csv_file(n: usize) -> (String, Vec<(usize, String, i64)>) {
    let rows: Vec<(usize, String, i64)> = (0..50)
        .map(|i| {
            let id = n * 1000 + i;
            (id, format!("item{}", id % 5), (id * 7 % 97) as i64)
        })
        .collect();
    let mut text = "id,item,price\n".to_string();
    for (id, item, price) in &rows {
        text.push_str(&format!("{id},{item},{price}\n"));
    }
    (text, rows)
}

fn totals(rows: &[(usize, String, i64)]) -> Vec<Vec<String>> {
    count_and_sum(rows.iter().map(|(_, item, price)| (item.as_str(), *price)))
}

const TOTALS: &str = "SELECT item, n, total FROM file_totals ORDER BY item";

// Multi-threaded: the files put during the kill go through this runtime
// from another thread while the test's own thread waits.
#[tokio::test(flavor = "multi_thread")]
async fn csv_files_are_read_once_each_and_new_ones_are_picked_up_across_a_kill() -> Result<()> {
    let s3 = S3Server::start("files")?;
    let mut all = vec![];
    for n in 0..3 {
        let (text, rows) = csv_file(n);
        s3.put_object(&format!("in/part-{n}.csv"), text.as_bytes())
            .await?;
        all.extend(rows);
    }
    s3.put_object("in/notes.txt", b"not,a,csv\n").await?;
    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE file_bids (id bigint, item varchar, price bigint)
               WITH (connector = 'filesystem', path = 's3://files/in/*.csv',
                     source.monitor-interval-ms = '200', {})
               FORMAT PLAIN ENCODE CSV;
             CREATE MATERIALIZED VIEW file_totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM file_bids GROUP BY item",
            s3.connector_options()
        ))
        .await?;
    let wait = Duration::from_secs(60);
    wait_for_rows(&client, TOTALS, &totals(&all), wait).await?;

    let runtime = tokio::runtime::Handle::current();
    let more: Vec<_> = (3..6).map(csv_file).collect();
    server.kill_during(Duration::from_millis(300), || {
        for (n, (text, _)) in more.iter().enumerate() {
            runtime.block_on(s3.put_object(&format!("in/part-{}.csv", n + 3), text.as_bytes()))?;
            std::thread::sleep(Duration::from_millis(150));
        }
        Ok(())
    })?;
    for (_, rows) in more {
        all.extend(rows);
    }
    let client = connect(&server).await?;
    wait_for_rows(&client, TOTALS, &totals(&all), wait).await?;
    Ok(())
}

#[tokio::test]
async fn a_parquet_file_sink_reads_back_through_a_parquet_file_source() -> Result<()> {
    let s3 = S3Server::start("lake")?;
    let mut all = vec![];
    for n in 0..4 {
        let (text, rows) = csv_file(n);
        s3.put_object(&format!("raw/{n}.csv"), text.as_bytes())
            .await?;
        all.extend(rows);
    }
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    let opts = s3.connector_options();
    client
        .batch_execute(&format!(
            "CREATE SOURCE raw (id bigint, item varchar, price bigint)
               WITH (connector = 'filesystem', path = 's3://lake/raw/', {opts})
               FORMAT PLAIN ENCODE CSV;
             CREATE SINK lake_out AS SELECT id, item, price FROM raw
               WITH (connector = 'filesystem', path = 's3://lake/out', partition_by = 'item',
                     sink.rolling-policy.file-size = '1500', {opts})
               FORMAT PLAIN ENCODE PARQUET;
             CREATE SOURCE lake (id bigint, item varchar, price bigint)
               WITH (connector = 'filesystem', path = 's3://lake/out', source.monitor-interval-ms = '200',
                     {opts})
               FORMAT PLAIN ENCODE PARQUET;
             CREATE MATERIALIZED VIEW file_totals AS
               SELECT item, count(*) AS n, sum(price) AS total FROM lake GROUP BY item"
        ))
        .await?;
    wait_for_rows(&client, TOTALS, &totals(&all), Duration::from_secs(60)).await?;
    let files = s3.objects("out").await?;
    assert!(
        files
            .iter()
            .all(|(path, _)| path.contains("/item=") && path.ends_with(".parquet")),
        "{:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(files.len() > 5, "rolled by size: {} files", files.len());
    Ok(())
}

/// With checkpoints to object storage a sink writes an epoch only once a
/// checkpoint holds it (the second phase of the two-phase commit): the
/// files still end up with every row exactly once.
#[tokio::test]
async fn with_checkpoints_a_file_sink_writes_what_checkpoints_hold() -> Result<()> {
    let s3 = S3Server::start("staged")?;
    let mut ids = vec![];
    for n in 0..2 {
        let (text, rows) = csv_file(n);
        s3.put_object(&format!("raw/{n}.csv"), text.as_bytes())
            .await?;
        ids.extend(rows.iter().map(|(id, ..)| *id as i64));
    }
    let local = tempfile::tempdir()?;
    let checkpoints = format!("file://{}", local.path().join("chk").display());
    let server = TestServer::start_with(
        &runnel_binary()?,
        &[
            "--streaming-barrier-interval-ms",
            "100",
            "--state-checkpoints-dir",
            &checkpoints,
            "--execution-checkpointing-interval",
            "300ms",
        ],
    )?;
    let client = connect(&server).await?;
    let out = local.path().join("out");
    client
        .batch_execute(&format!(
            "CREATE SOURCE raw (id bigint, item varchar, price bigint)
               WITH (connector = 'filesystem', path = 's3://staged/raw/', {})
               FORMAT PLAIN ENCODE CSV;
             CREATE SINK copied AS SELECT id, item FROM raw
               WITH (connector = 'filesystem', path = 'file://{}')
               FORMAT PLAIN ENCODE JSON",
            s3.connector_options(),
            out.display()
        ))
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut found = vec![];
        if out.exists() {
            for entry in std::fs::read_dir(&out)? {
                let text = std::fs::read_to_string(entry?.path())?;
                for line in text.lines() {
                    let row: serde_json::Value = serde_json::from_str(line)?;
                    found.push(row["id"].as_i64().unwrap_or(-1));
                }
            }
        }
        found.sort_unstable();
        if found == ids {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "the sink wrote {} rows, expected {}",
                found.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
