//! `storage.epoch-buffer-mb` over pgwire: with barriers an hour apart, a
//! source that fills the epoch buffer asks for early barriers, so its rows
//! are committed (and visible) epoch after epoch, each epoch no larger than
//! the buffer allows. Without a limit nothing past the first epoch is
//! committed until the next tick.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runnel_sql_tests::{TestServer, connect, runnel_binary};
use tokio_postgres::{Client, SimpleQueryMessage};

const ROWS: i64 = 200_000;

async fn counted(client: &Client) -> Result<i64> {
    for message in client
        .simple_query("SELECT coalesce(sum(n), 0) FROM per_key")
        .await?
    {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).context("a sum")?.parse()?);
        }
    }
    anyhow::bail!("no sum returned")
}

/// Streams `ROWS` rows into a grouped count with barriers an hour apart and
/// the given epoch buffer; returns how many rows the view counted within
/// `wait` (waiting for half of them at most), then once all of them are
/// committed (FLUSH after FLUSH).
async fn committed_within(epoch_buffer_mb: &str, wait: Duration) -> Result<(i64, i64)> {
    let server = TestServer::start_with(
        &runnel_binary()?,
        &[
            "--streaming-barrier-interval-ms",
            "3600000",
            "--storage-epoch-buffer-mb",
            epoch_buffer_mb,
        ],
    )?;
    let client = connect(&server).await?;
    client
        .batch_execute(&format!(
            "CREATE SOURCE numbers (id bigint) WITH (connector = 'datagen',
               rows.per.second = '1000000', number-of-rows = '{ROWS}',
               fields.id.kind = 'sequence');
             CREATE MATERIALIZED VIEW per_key AS
               SELECT id % 50000 AS k, count(*) AS n FROM numbers GROUP BY id % 50000;"
        ))
        .await?;
    let deadline = Instant::now() + wait;
    let mut seen = counted(&client).await?;
    while seen < ROWS / 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = counted(&client).await?;
    }
    // The rows after the last early barrier wait for a barrier; FLUSH is
    // one. Every row arrives, none twice.
    let mut flushed = 0;
    while flushed < ROWS && Instant::now() < deadline + Duration::from_secs(60) {
        client.batch_execute("FLUSH").await?;
        flushed = counted(&client).await?;
    }
    Ok((seen, flushed))
}

#[tokio::test]
async fn a_full_epoch_buffer_ends_the_epoch_early() -> Result<()> {
    // 50 000 groups: several MiB of state writes, far more than 1 MiB.
    let (seen, flushed) = committed_within("1", Duration::from_secs(120)).await?;
    assert!(
        seen >= ROWS / 2,
        "with a 1 MiB buffer only {seen} rows were committed"
    );
    // No limit: the rows wait for a barrier an hour away.
    let (held, _) = committed_within("0", Duration::from_secs(5)).await?;
    assert!(
        held < ROWS / 2,
        "without a limit {held} rows were committed"
    );
    assert_eq!(flushed, ROWS);
    Ok(())
}
