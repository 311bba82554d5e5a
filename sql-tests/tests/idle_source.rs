//! `source.idle-timeout-ms` over pgwire: a union of a source that runs out
//! and a table with a watermark that never gets a row. Without the timeout
//! the quiet input holds the union's watermark back and no window of an
//! EMIT ON WINDOW CLOSE view closes; with it, the quiet input stops
//! counting and every window closes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runnel_sql_tests::{TestServer, connect, runnel_binary};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn closed_windows(client: &Client) -> Result<i64> {
    for message in client
        .simple_query("SELECT count(*) FROM per_window")
        .await?
    {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).context("a count")?.parse()?);
        }
    }
    anyhow::bail!("no count returned")
}

/// Creates the view over a union with one quiet input; returns how many
/// windows closed within `wait`.
async fn windows_closed_within(extra_args: &[&str], wait: Duration) -> Result<i64> {
    let server = TestServer::start_with(&runnel_binary()?, extra_args)?;
    let client = connect(&server).await?;
    client
        .batch_execute(
            "CREATE TABLE quiet (id bigint, ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
             CREATE SOURCE busy (id bigint, ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               WITH (connector = 'datagen', rows.per.second = '10000', number-of-rows = '100',
                     fields.id.kind = 'sequence', fields.ts.kind = 'sequence');
             CREATE VIEW both_inputs AS SELECT id, ts FROM busy UNION ALL SELECT id, ts FROM quiet;
             CREATE MATERIALIZED VIEW per_window AS
               SELECT window_start, count(*) AS n FROM TUMBLE(both_inputs, ts, INTERVAL '10' SECOND)
               GROUP BY window_start EMIT ON WINDOW CLOSE;",
        )
        .await?;
    let deadline = Instant::now() + wait;
    let mut closed = closed_windows(&client).await?;
    while closed < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = closed_windows(&client).await?;
    }
    Ok(closed)
}

#[tokio::test]
async fn an_idle_input_stops_holding_the_watermark_back() -> Result<()> {
    // 100 rows one second apart: ten 10-second windows, all closed once the
    // source runs out, if the quiet table no longer counts.
    let closed = windows_closed_within(
        &["--source-idle-timeout-ms", "300"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(closed, 10);
    // Without the timeout the table, which never had a row, holds them all.
    let held = windows_closed_within(&[], Duration::from_secs(3)).await?;
    assert_eq!(held, 0);
    Ok(())
}
