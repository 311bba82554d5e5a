//! Local JSON-lines files read by `filesystem` sources, as a user points
//! one at a file:
//! - a path naming one file reads it (not only a folder or a glob);
//! - a line that does not decode is skipped and counted, and with
//!   `format.error-policy = 'fail'` fails the job naming the file;
//! - `FLUSH` waits until the bounded source ended and its rows are in the
//!   view, and SHOW JOBS then says `finished`;
//! - a `blackhole` sink runs the same query and writes nothing;
//! - with `SET parallelism = 2` two readers split the file by bytes;
//! - a kill and restart after the end reads nothing twice;
//! - a windowed query into a PLAIN file sink is refused while its windows
//!   update, and with EMIT ON WINDOW CLOSE writes each window once, final.

use anyhow::Result;
use runnel_sql_tests::{TestServer, connect, error_of, job_state, text_rows};

/// `rows` bids as JSON lines, one of them broken after `broken_after`.
fn bids(rows: usize, broken_after: Option<usize>) -> (String, i64) {
    let mut text = String::new();
    let mut total = 0;
    for i in 0..rows {
        let price = (i * 37 % 101) as i64;
        total += price;
        text.push_str(&format!(
            "{{\"auction\": {}, \"price\": {price}, \"date_time\": \"2015-07-15 00:00:{:02}.{:03}\"}}\n",
            i % 10,
            (i / 1000) % 60,
            i % 1000
        ));
        if broken_after == Some(i) {
            text.push_str("{\"auction\": \"not a number\", \"price\": 1}\n");
        }
    }
    (text, total)
}

const SOURCE: &str = "CREATE SOURCE bid (auction bigint, price bigint, date_time timestamp, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
     WITH (connector = 'filesystem', path = 'file://{path}' {extra}) FORMAT PLAIN ENCODE JSON";

fn source_sql(path: &std::path::Path, extra: &str) -> String {
    SOURCE
        .replace("{path}", &path.display().to_string())
        .replace("{extra}", extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_json_file_is_read_to_its_end_skipping_a_bad_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bid.json");
    // Enough rows to span several 4 MiB blocks would slow the suite; a few
    // thousand still take many reads of 1024 rows.
    let (text, total) = bids(5000, Some(2500));
    std::fs::write(&file, text)?;
    let mut server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client.batch_execute(&source_sql(&file, "")).await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(price) AS total FROM bid;
             CREATE SINK dropped AS SELECT auction, max(price) FROM bid GROUP BY auction
               WITH (connector = 'blackhole');
             FLUSH",
        )
        .await?;
    // FLUSH waited for the end of the file: no retry needed.
    assert_eq!(
        text_rows(&client, "SELECT n, total FROM totals").await?,
        vec![vec!["5000".to_string(), total.to_string()]]
    );
    let view = job_state(&client, "public.totals").await?;
    assert_eq!(view.status, "finished", "{view:?}");
    assert_eq!(view.skipped_messages, "1", "{view:?}");
    let sink = job_state(&client, "public.dropped").await?;
    assert_eq!(sink.status, "finished", "{sink:?}");

    // Two readers, each a byte range of the file: every line once.
    client
        .batch_execute(
            "SET parallelism = 2;
             CREATE MATERIALIZED VIEW by_auction AS
               SELECT auction, count(*) AS n, sum(price) AS total FROM bid GROUP BY auction;
             FLUSH",
        )
        .await?;
    assert_eq!(
        text_rows(&client, "SELECT sum(n), sum(total) FROM by_auction").await?,
        vec![vec!["5000".to_string(), total.to_string()]]
    );
    let plan = text_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT auction FROM bid",
    )
    .await?;
    let plan: Vec<String> = plan.into_iter().flatten().collect();
    assert!(
        plan.iter().any(|l| l.contains("parallelism 2")),
        "{plan:#?}"
    );

    // After a kill -9 and a restart the source is at its end: nothing is
    // read again.
    server.kill_and_restart()?;
    let client = connect(&server).await?;
    client.batch_execute("FLUSH").await?;
    assert_eq!(
        text_rows(&client, "SELECT n, total FROM totals").await?,
        vec![vec!["5000".to_string(), total.to_string()]]
    );
    assert_eq!(
        job_state(&client, "public.totals").await?.status,
        "finished"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_sink_emitting_on_window_close_writes_each_window_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bid.json");
    // Seconds 0 to 4, a thousand rows each.
    let (text, total) = bids(5000, None);
    std::fs::write(&file, text)?;
    let out = dir.path().join("out");
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client.batch_execute(&source_sql(&file, "")).await?;
    let sink = |emit: &str| {
        format!(
            "CREATE SINK per_second AS SELECT window_start, count(*) AS n, sum(price) AS total \
             FROM TUMBLE(bid, date_time, INTERVAL '1' SECOND) GROUP BY window_start {emit} \
             WITH (connector = 'filesystem', path = 'file://{}') FORMAT PLAIN ENCODE JSON",
            out.display()
        )
    };
    let (_, refused) = error_of(&client, &sink("")).await?;
    assert!(refused.contains("EMIT ON WINDOW CLOSE"), "{refused}");
    client.batch_execute(&sink("EMIT ON WINDOW CLOSE")).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rows = loop {
        let mut rows = vec![];
        if out.exists() {
            for entry in std::fs::read_dir(&out)? {
                for line in std::fs::read_to_string(entry?.path())?.lines() {
                    let row: serde_json::Value = serde_json::from_str(line)?;
                    rows.push((
                        row["window_start"].to_string(),
                        row["n"].as_i64().unwrap_or(-1),
                        row["total"].as_i64().unwrap_or(-1),
                    ));
                }
            }
        }
        if rows.len() >= 5 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    // Five windows, each once with all its rows: no partial counts.
    assert_eq!(rows.len(), 5, "{rows:?}");
    let mut starts: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    starts.sort();
    starts.dedup();
    assert_eq!(starts.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| r.1 == 1000), "{rows:?}");
    assert_eq!(rows.iter().map(|r| r.2).sum::<i64>(), total);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_line_fails_the_job_when_asked_and_a_missing_path_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bid.json");
    let (text, _) = bids(100, Some(50));
    std::fs::write(&file, text)?;
    let server = TestServer::start_with_fast_barriers()?;
    let client = connect(&server).await?;
    client
        .batch_execute(&source_sql(&file, ", format.error-policy = 'fail'"))
        .await?;
    // The job fails after its first epoch, or the CREATE is refused when
    // the bad line is read before the first epoch commits.
    let created = client
        .batch_execute("CREATE MATERIALIZED VIEW n AS SELECT count(*) FROM bid; FLUSH")
        .await;
    let error = match created {
        Err(e) => e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default(),
        Ok(()) => job_state(&client, "public.n").await?.error,
    };
    assert!(
        error.contains("bid.json") && error.contains("does not decode"),
        "{error}"
    );

    let missing = dir.path().join("nothing-here.json");
    let missing_sql = source_sql(&missing, "").replace("CREATE SOURCE bid", "CREATE SOURCE b2");
    let (_, refused) = error_of(&client, &missing_sql).await?;
    assert!(refused.contains("no file is there to read"), "{refused}");
    Ok(())
}
