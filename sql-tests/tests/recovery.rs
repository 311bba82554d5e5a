//! Kill and recover: a `runnel` process is killed with SIGKILL at random
//! moments while a writer keeps changing a table and a source keeps
//! producing rows, and started again. Afterwards every materialized view
//! over the table equals its query run as a batch (`CHECK MATERIALIZED
//! VIEW`), and the views over the source saw every row exactly once.
//!
//! Four ways back:
//! - the data directory survives: the store's committed epochs are used;
//! - the data directory is lost (deleted before the restart): the store is
//!   restored from the newest checkpoint, on local files;
//! - the same with checkpoints on an S3-compatible server (moto);
//! - the store lives in memory (`state.backend: memory`): every restart
//!   restores the newest checkpoint.
//!
//! A restore goes back to the checkpoint: table changes committed after it
//! are gone (as with any restore of a lost disk), but the views still equal
//! their queries over what the tables hold, and the source resumes at the
//! checkpoint's position, so no row is lost or counted twice.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{Rng, S3Server, TestServer, connect, runnel_binary, text_rows};
use tokio_postgres::Client;

const SETUP: &str = "
    CREATE TABLE accounts (id int PRIMARY KEY, owner int, balance bigint);
    CREATE SOURCE ticks (id bigint, ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
      WITH (connector = 'datagen', rows.per.second = '400',
            fields.id.kind = 'sequence', fields.ts.kind = 'sequence');
    CREATE MATERIALIZED VIEW per_owner AS
      SELECT owner, count(*) AS n, sum(balance) AS total FROM accounts GROUP BY owner;
    CREATE MATERIALIZED VIEW rich AS
      SELECT a.id, a.balance, b.n FROM accounts a JOIN per_owner b ON a.owner = b.owner
      WHERE a.balance > 500;
    CREATE MATERIALIZED VIEW tick_totals AS
      SELECT count(*) AS n, count(DISTINCT id) AS distinct_ids, min(id) AS lo, max(id) AS hi
      FROM ticks;
    CREATE MATERIALIZED VIEW tick_windows AS
      SELECT window_start, count(*) AS n FROM TUMBLE(ticks, ts, INTERVAL '10' SECOND)
      GROUP BY window_start EMIT ON WINDOW CLOSE;";

const TABLE_VIEWS: &[&str] = &["per_owner", "rich"];

/// Random inserts, updates and deletes until the connection breaks (the
/// server was killed). Failed statements (key clashes) change nothing.
async fn write_until_killed(client: Client, seed: u64) {
    let mut rng = Rng(seed);
    loop {
        let id = rng.below(300);
        let sql = match rng.below(4) {
            0 | 1 => format!(
                "INSERT INTO accounts VALUES ({id}, {}, {})",
                rng.below(12),
                rng.below(1000)
            ),
            2 => format!(
                "UPDATE accounts SET balance = balance + {} WHERE id = {id}",
                rng.below(200)
            ),
            _ => format!("DELETE FROM accounts WHERE id = {id}"),
        };
        if let Err(e) = client.simple_query(&sql).await
            && e.as_db_error().is_none()
        {
            return;
        }
    }
}

/// Every view over the table equals its query; the source's rows were each
/// counted once.
async fn check(client: &Client, round: usize) -> Result<()> {
    client.simple_query("FLUSH").await?;
    for view in TABLE_VIEWS {
        let result = text_rows(client, &format!("CHECK MATERIALIZED VIEW {view}")).await?;
        let [name, total, missing, extra, sample] = result
            .first()
            .map(Vec::as_slice)
            .context("CHECK returned no row")?
        else {
            bail!("CHECK returned {result:?}");
        };
        if missing != "0" || extra != "0" {
            bail!(
                "round {round}: {name} ({total} rows) has {missing} missing and {extra} extra rows: {sample}"
            );
        }
    }
    let totals = text_rows(client, "SELECT n, distinct_ids, lo, hi FROM tick_totals").await?;
    if let Some([n, distinct, lo, hi]) = totals.first().map(Vec::as_slice)
        && !(n == distinct && n == hi && lo == "1")
    {
        bail!("round {round}: ticks seen {n} times, {distinct} distinct, ids {lo}..{hi}");
    }
    // One tick per second of event time: every closed window holds ten.
    let windows = text_rows(
        client,
        "SELECT window_start, n FROM tick_windows WHERE n <> 10",
    )
    .await?;
    if !windows.is_empty() {
        bail!("round {round}: windows without exactly ten ticks: {windows:?}");
    }
    Ok(())
}

async fn completed_checkpoints(client: &Client) -> Result<usize> {
    Ok(text_rows(client, "SHOW CHECKPOINTS")
        .await?
        .iter()
        .filter(|r| r.get(2).map(String::as_str) == Some("completed"))
        .count())
}

/// What a restart comes back from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// The data directory as the kill left it.
    DataDir,
    /// The newest checkpoint: the store is deleted before the restart.
    LostStore,
    /// The newest checkpoint: the store lives in memory.
    InMemory,
}

/// Kills the server six times at random moments and checks after each
/// restart.
async fn kill_and_recover(extra_args: &[String], recovery: Recovery, seed: u64) -> Result<()> {
    let from_checkpoint = recovery != Recovery::DataDir;
    let mut args: Vec<&str> = vec![
        "--execution-checkpointing-interval",
        "300ms",
        "--streaming-barrier-interval-ms",
        "100",
    ];
    args.extend(extra_args.iter().map(String::as_str));
    let mut server = TestServer::start_with(&runnel_binary()?, &args)?;
    let client = connect(&server).await?;
    client.batch_execute(SETUP).await?;
    let mut rng = Rng(seed);
    let mut restored_rounds = 0;
    for round in 1..=6 {
        let writer = tokio::spawn(write_until_killed(
            connect(&server).await?,
            seed + round as u64,
        ));
        if from_checkpoint {
            // A restore needs a checkpoint taken since the last one.
            let client = connect(&server).await?;
            let before = completed_checkpoints(&client).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while completed_checkpoints(&client).await? <= before {
                if std::time::Instant::now() > deadline {
                    bail!("round {round}: no checkpoint completed within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1200))).await;
        server.kill();
        let _ = writer.await;
        if recovery == Recovery::LostStore {
            let store = server.data_dir().join("store");
            std::fs::remove_dir_all(&store)
                .with_context(|| format!("deleting {}", store.display()))?;
        }
        if recovery == Recovery::InMemory {
            assert!(!server.data_dir().join("store").join("CURRENT").exists());
        }
        if from_checkpoint {
            restored_rounds += 1;
        }
        server.restart()?;
        let client = connect(&server).await?;
        check(&client, round)
            .await
            .with_context(|| format!("after restart {round}"))?;
    }
    if from_checkpoint {
        assert_eq!(restored_rounds, 6);
    }
    // The source kept flowing across all of it.
    let client = connect(&server).await?;
    let ticks = text_rows(&client, "SELECT n FROM tick_totals").await?;
    let n: i64 = ticks
        .first()
        .and_then(|r| r.first())
        .context("no tick totals")?
        .parse()?;
    assert!(n > 0, "the source produced nothing");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_survive_kill_9_with_the_data_directory() -> Result<()> {
    kill_and_recover(&[], Recovery::DataDir, 11).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_come_back_from_local_checkpoints_when_the_data_directory_is_lost() -> Result<()> {
    let checkpoints = tempfile::tempdir()?;
    let dir = format!("file://{}", checkpoints.path().display());
    kill_and_recover(
        &["--state-checkpoints-dir".into(), dir],
        Recovery::LostStore,
        23,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_come_back_from_s3_checkpoints_when_the_data_directory_is_lost() -> Result<()> {
    let s3 = S3Server::start("runnel")?;
    kill_and_recover(&s3.checkpoint_args("checkpoints"), Recovery::LostStore, 37).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_in_memory_come_back_from_checkpoints_after_kill_9() -> Result<()> {
    let checkpoints = tempfile::tempdir()?;
    let dir = format!("file://{}", checkpoints.path().display());
    kill_and_recover(
        &[
            "--state-backend".into(),
            "memory".into(),
            "--state-checkpoints-dir".into(),
            dir,
        ],
        Recovery::InMemory,
        41,
    )
    .await
}
