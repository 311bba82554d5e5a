//! Checkpoints as a user sees them: `SHOW CHECKPOINTS` and the same as JSON
//! at `/jobs/<id>/checkpoints`; a location that cannot be written fails its
//! checkpoints (shown, counted) while the views keep running, and
//! checkpoints succeed again once it can.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{TestServer, connect, runnel_binary, text_rows};
use tokio_postgres::Client;

/// Status and body of `GET path` on the server's web port.
fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// Waits until `SHOW CHECKPOINTS` has a row with `status` taken after the
/// job's first epoch (one the interval took before the view existed has
/// epoch 0 and nothing of the job).
async fn wait_for_status(client: &Client, status: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(row) = text_rows(client, "SHOW CHECKPOINTS")
            .await?
            .into_iter()
            .find(|r| r[2] == status && r[1] != "0")
        {
            return Ok(row);
        }
        if Instant::now() > deadline {
            bail!("no {status} checkpoint within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_with_view(args: &[&str]) -> Result<(TestServer, Client, String)> {
    let mut all = vec!["--execution-checkpointing-interval", "200ms"];
    all.extend_from_slice(args);
    let server = TestServer::start_with(&runnel_binary()?, &all)?;
    let client = connect(&server).await?;
    client
        .batch_execute(
            "CREATE TABLE t (k int PRIMARY KEY, v int);
             INSERT INTO t VALUES (1, 10), (2, 20);
             CREATE MATERIALIZED VIEW total AS SELECT sum(v) AS s FROM t;",
        )
        .await?;
    let job = text_rows(&client, "SHOW JOBS").await?[0][0].clone();
    Ok((server, client, job))
}

#[tokio::test]
async fn checkpoints_are_shown_in_sql_and_json() -> Result<()> {
    let (server, client, job) = start_with_view(&[]).await?;
    let row = wait_for_status(&client, "completed").await?;
    let [id, epoch, _, started_at, _, size, incremental, error] = row.as_slice() else {
        bail!("SHOW CHECKPOINTS has {} columns", row.len());
    };
    assert!(id.parse::<u64>()? >= 1);
    assert!(epoch.parse::<u64>()? >= 1);
    assert!(started_at.ends_with("+00"), "{started_at}");
    let (size, incremental): (u64, u64) = (size.parse()?, incremental.parse()?);
    assert!(size > 0 && incremental <= size, "{size} {incremental}");
    assert!(error.is_empty());

    let (status, body) = http_get(server.web_port, &format!("/jobs/{job}/checkpoints"))?;
    assert!(status.contains("200"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&body)?;
    assert!(json["counts"]["completed"].as_u64() >= Some(1), "{json}");
    assert_eq!(json["latest"]["completed"]["status"], "completed");
    assert!(json["history"].as_array().is_some_and(|h| !h.is_empty()));
    let (status, _) = http_get(server.web_port, "/jobs/987654/checkpoints")?;
    assert!(status.contains("404"), "{status}");
    Ok(())
}

#[tokio::test]
async fn an_unwritable_location_fails_checkpoints_but_not_the_views() -> Result<()> {
    let temp = tempfile::tempdir()?;
    // A file where the checkpoint directory should be.
    let blocked = temp.path().join("blocked");
    std::fs::write(&blocked, b"not a directory")?;
    let dir = format!("file://{}", blocked.display());
    let (_server, client, _) = start_with_view(&["--state-checkpoints-dir", &dir]).await?;
    let failed = wait_for_status(&client, "failed").await?;
    assert!(failed[7].contains("blocked"), "{failed:?}");
    // The view keeps running.
    client
        .batch_execute("INSERT INTO t VALUES (3, 30); FLUSH")
        .await?;
    assert_eq!(
        text_rows(&client, "SELECT s FROM total").await?,
        vec![vec!["60"]]
    );
    // Once the location can be written, the next checkpoint succeeds.
    std::fs::remove_file(&blocked)?;
    wait_for_status(&client, "completed").await?;
    Ok(())
}
