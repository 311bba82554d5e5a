//! HOP windows counted per slice (`EMIT ON WINDOW CLOSE` over a HOP is
//! planned as a slice aggregation and a merge) must give the windows the
//! unsliced plan gives: the same queries without `EMIT ON WINDOW CLOSE` are
//! planned as written, and once the watermark passes a window both must
//! hold the same row for it. Random rows around a moving event time over a
//! watermarked table, with a `kill -9` now and then: in one subtask with
//! late rows (behind the watermark by less than a window and by more),
//! which must count in the same windows; in two subtasks without (there,
//! which windows a late row still reaches depends on how far each subtask
//! got, in either plan).

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{Rng, TestServer, connect, runnel_binary, sorted_lines};
use tokio_postgres::Client;

/// The watermark's delay behind the latest `at`, in seconds.
const DELAY: i64 = 30;

/// (sliced view, unsliced view, query; the query's windows end at
/// `window_end`).
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "per_key",
        "per_key_running",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, min(v) AS lo, \
         max(v) AS hi, count(v) AS nv \
         FROM HOP(ev, at, INTERVAL '10' SECOND, INTERVAL '40' SECOND) \
         WHERE v IS DISTINCT FROM 3 GROUP BY k, window_start, window_end",
    ),
    (
        "overall",
        "overall_running",
        "SELECT window_end, window_start, count(*) AS n, max(k) AS top \
         FROM HOP(ev, at, INTERVAL '5' SECOND, INTERVAL '15' SECOND) \
         GROUP BY window_start, window_end",
    ),
];

fn timestamp(seconds: i64) -> String {
    format!("TIMESTAMP '2024-03-01 00:00:00' + INTERVAL '{seconds} seconds'")
}

/// Every window the watermark (`latest - DELAY`) closed must be in the
/// sliced view as in the unsliced one, and no other.
async fn check(client: &Client, latest: i64, history: &[String]) -> Result<()> {
    client.simple_query("FLUSH").await?;
    let closed = format!("window_end <= {}", timestamp(latest - DELAY));
    for (sliced, unsliced, _) in VIEWS {
        let got = sorted_lines(client, &format!("SELECT * FROM {sliced}")).await?;
        let want =
            sorted_lines(client, &format!("SELECT * FROM {unsliced} WHERE {closed}")).await?;
        if got != want {
            bail!(
                "{sliced} differs from {unsliced} at watermark {}s\n sliced:   {got:?}\n unsliced: {want:?}\nlast statements:\n{}",
                latest - DELAY,
                history[history.len().saturating_sub(12)..].join("\n")
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliced_hop_windows_count_late_rows_as_unsliced_ones() -> Result<()> {
    compare(1, true, 20261207).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sliced_hop_windows_equal_unsliced_ones() -> Result<()> {
    compare(2, false, 20261208).await
}

/// Creates the views at `parallelism`, inserts random rows (some late, if
/// `late`) and compares the views as windows close.
async fn compare(parallelism: usize, late: bool, seed: u64) -> Result<()> {
    let mut server = TestServer::start(&runnel_binary()?)?;
    let mut client = connect(&server).await?;
    client
        .simple_query(&format!("SET parallelism = {parallelism}"))
        .await?;
    client
        .simple_query(&format!(
            "CREATE TABLE ev (k int, at timestamp, v int, \
             WATERMARK FOR at AS at - INTERVAL '{DELAY}' SECOND)"
        ))
        .await?;
    for (sliced, unsliced, query) in VIEWS {
        let plan = sorted_lines(
            &client,
            &format!("EXPLAIN CREATE MATERIALIZED VIEW {sliced} AS {query} EMIT ON WINDOW CLOSE"),
        )
        .await?;
        assert!(
            plan.iter().any(|line| line.contains("late rows kept")),
            "{sliced} is not counted per slice: {plan:#?}"
        );
        client
            .simple_query(&format!(
                "CREATE MATERIALIZED VIEW {sliced} AS {query} EMIT ON WINDOW CLOSE"
            ))
            .await?;
        client
            .simple_query(&format!("CREATE MATERIALIZED VIEW {unsliced} AS {query}"))
            .await?;
    }
    let mut rng = Rng(seed);
    let mut history = vec![];
    let (mut now, mut latest) = (0i64, 0i64);
    for step in 1..=80 {
        now += rng.below(12) as i64;
        let mut values = vec![];
        for _ in 0..=rng.below(5) {
            // Near the present, which never falls behind the watermark;
            // or one row in six behind it by up to three windows, so late
            // for some of its windows or all.
            let at = if late && rng.below(6) == 0 {
                now - DELAY - rng.below(90) as i64
            } else {
                now.max(latest - DELAY) + rng.below(20) as i64
            };
            latest = latest.max(at);
            let v = match rng.below(7) {
                0 => "NULL".to_string(),
                n => n.to_string(),
            };
            values.push(format!("({}, {}, {v})", rng.below(3), timestamp(at)));
        }
        let sql = format!("INSERT INTO ev VALUES {}", values.join(", "));
        client.simple_query(&sql).await.context(sql.clone())?;
        history.push(sql);
        if rng.below(30) == 0 {
            history.push("-- kill -9 and restart".into());
            server.kill_and_restart()?;
            client = connect(&server).await?;
        }
        if step % 8 == 0 {
            check(&client, latest, &history).await?;
        }
    }
    // A row far ahead closes every window.
    latest += 1000;
    client
        .simple_query(&format!(
            "INSERT INTO ev VALUES (0, {}, 1)",
            timestamp(latest)
        ))
        .await?;
    check(&client, latest, &history).await?;
    let all = sorted_lines(&client, "SELECT * FROM per_key").await?;
    assert!(all.len() > 50, "too few windows to compare: {}", all.len());
    Ok(())
}
