//! The differential oracle: materialized views over tables that take long
//! random sequences of inserts, updates and deletes (and, now and then, a
//! `kill -9` of the server) must always equal their own query run as a batch
//! `SELECT` over the same tables (multiset equality).
//!
//! Fixed seed and 150 steps by default (60 for the parallel run);
//! `RUNNEL_ORACLE_SEED` and `RUNNEL_ORACLE_STEPS` change them for longer
//! soaks, `RUNNEL_ORACLE_FULL` prints the whole history on a failure.

use anyhow::{Context, Result, bail};
use runnel_sql_tests::{Rng, TestServer, connect, runnel_binary, sorted_lines};
use tokio_postgres::Client;

fn text(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => "NULL".into(),
        n => format!("'s{n}'"),
    }
}

/// A time within four hours of a fixed start, or NULL.
fn timestamp(rng: &mut Rng) -> String {
    if rng.below(10) == 0 {
        return "NULL".into();
    }
    let minutes = rng.below(240);
    format!("TIMESTAMP '2024-03-01 00:00:00' + INTERVAL '{minutes} minutes'")
}

fn int_or_null(rng: &mut Rng, n: u64) -> String {
    if rng.below(8) == 0 {
        "NULL".into()
    } else {
        rng.below(n).to_string()
    }
}

const TABLES: &[&str] = &[
    "CREATE TABLE a (id int PRIMARY KEY, k int, v int, s text)",
    "CREATE TABLE b (id int PRIMARY KEY, k int, w bigint)",
    "CREATE TABLE c (x int, y int)",
    "CREATE TABLE d (id int PRIMARY KEY, at timestamp, v int)",
];

/// (name, query): each becomes `CREATE MATERIALIZED VIEW name AS query`.
const VIEWS: &[(&str, &str)] = &[
    (
        "v_agg",
        "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS sv, min(v) AS mn, max(v) AS mx, \
         count(DISTINCT s) AS ds, avg(v) AS av, bool_or(v > 5) AS big FROM a GROUP BY k",
    ),
    (
        "v_filter",
        "SELECT id, v * 2 AS v2, upper(s) AS us FROM a WHERE v % 3 <> 0",
    ),
    (
        "v_global",
        "SELECT count(*) AS n, sum(w) AS sw, max(w) AS mw, min(k) AS mk FROM b",
    ),
    (
        "v_nested",
        "SELECT n, count(*) AS groups, sum(sv) AS total FROM v_agg GROUP BY n",
    ),
    (
        "v_union",
        "SELECT k, v AS val FROM a UNION ALL SELECT k, w FROM b WHERE w > 3",
    ),
    (
        "v_bag",
        "SELECT x, count(*) AS c, sum(y) AS sy FROM c GROUP BY x HAVING count(*) > 1",
    ),
    ("v_distinct", "SELECT DISTINCT y FROM c"),
    (
        "v_join",
        "SELECT a.id, a.v, b.id AS bid, b.w FROM a JOIN b ON a.k = b.k",
    ),
    (
        "v_left",
        "SELECT a.id, a.s, b.w FROM a LEFT JOIN b ON a.id = b.id AND b.w > a.v",
    ),
    (
        "v_full_agg",
        "SELECT a.k AS ak, b.k AS bk, count(*) AS n, sum(b.w) AS sw FROM a FULL JOIN b ON a.k = b.k GROUP BY a.k, b.k",
    ),
    (
        "v_semi",
        "SELECT x, y FROM c WHERE EXISTS (SELECT 1 FROM a WHERE a.k = c.x AND a.v > c.y)",
    ),
    (
        "v_anti",
        "SELECT id, k FROM b WHERE NOT EXISTS (SELECT 1 FROM c WHERE c.x = b.k)",
    ),
    (
        "v_in",
        "SELECT id FROM a WHERE k IN (SELECT x FROM c WHERE y = 1)",
    ),
    (
        "v_join_views",
        "SELECT g.k, g.n, f.v2 FROM v_agg g JOIN v_filter f ON f.id = g.n",
    ),
    (
        "v_top",
        "SELECT id, v FROM a ORDER BY v DESC NULLS LAST, id LIMIT 3",
    ),
    (
        "v_page",
        "SELECT id, w FROM b ORDER BY w, id LIMIT 2 OFFSET 1",
    ),
    (
        "v_rank",
        "SELECT * FROM (SELECT k, id, v, row_number() OVER (PARTITION BY k ORDER BY v, id) AS rn FROM a) t WHERE rn <= 2",
    ),
    (
        "v_tumble",
        "SELECT window_start, window_end, count(*) AS n, sum(v) AS sv, max(v) AS mx \
         FROM TUMBLE(d, at, INTERVAL '1' HOUR) GROUP BY window_start, window_end",
    ),
    (
        "v_hop",
        "SELECT window_start, count(DISTINCT v) AS dv, min(id) AS first \
         FROM HOP(d, at, INTERVAL '20' MINUTE, INTERVAL '1' HOUR) WHERE v IS NOT NULL GROUP BY window_start",
    ),
    // The same aggregation twice, GROUP BY in two orders: computed once
    // and read by both sides of the join.
    (
        "v_shared_agg",
        "SELECT g.k, g.s, g.n FROM (SELECT k, s, count(*) AS n FROM a GROUP BY k, s) g \
         JOIN (SELECT max(c.n) AS mx, c.k FROM (SELECT count(*) AS n, k FROM a GROUP BY s, k) c GROUP BY c.k) m \
         ON g.k = m.k AND g.n >= m.mx",
    ),
    // One table read once for both sides of a self-join.
    (
        "v_self_join",
        "SELECT x.id, y.id AS other FROM a x JOIN a y ON x.k = y.k AND x.id < y.id",
    ),
    (
        "v_union_of_views",
        "SELECT n AS a, total AS b FROM v_nested UNION ALL SELECT n, sw FROM v_global",
    ),
];

/// One random change to one table.
fn random_statement(rng: &mut Rng) -> String {
    let id = rng.below(12);
    match rng.below(10) {
        0..=2 => format!(
            "INSERT INTO a VALUES ({id}, {}, {}, {})",
            int_or_null(rng, 4),
            int_or_null(rng, 10),
            text(rng)
        ),
        3 => format!(
            "UPDATE a SET v = {}, s = {} WHERE id = {id}",
            int_or_null(rng, 10),
            text(rng)
        ),
        4 => format!(
            "UPDATE a SET k = {}, id = {} WHERE id = {id}",
            int_or_null(rng, 4),
            rng.below(12)
        ),
        5 => format!("DELETE FROM a WHERE k = {}", rng.below(4)),
        6 => format!(
            "INSERT INTO b VALUES ({id}, {}, {})",
            int_or_null(rng, 4),
            int_or_null(rng, 8)
        ),
        7 => format!("UPDATE b SET w = w + 1 WHERE k = {}", rng.below(4)),
        8 => format!(
            "INSERT INTO c VALUES ({}, {}), ({}, {})",
            rng.below(4),
            int_or_null(rng, 3),
            rng.below(4),
            int_or_null(rng, 3)
        ),
        _ => match rng.below(5) {
            3 => format!(
                "INSERT INTO d VALUES ({id}, {}, {})",
                timestamp(rng),
                int_or_null(rng, 5)
            ),
            4 => match rng.below(2) {
                0 => format!("UPDATE d SET at = {} WHERE id = {id}", timestamp(rng)),
                _ => format!("DELETE FROM d WHERE v = {}", rng.below(5)),
            },
            0 => format!("DELETE FROM c WHERE x = {}", rng.below(4)),
            1 => format!("DELETE FROM b WHERE id = {id}"),
            _ => format!(
                "UPDATE c SET y = {} WHERE x = {}",
                int_or_null(rng, 3),
                rng.below(4)
            ),
        },
    }
}

async fn check_views(client: &Client, step: usize, history: &[String]) -> Result<()> {
    client.simple_query("FLUSH").await?;
    for (name, query) in VIEWS {
        let view = sorted_lines(client, &format!("SELECT * FROM {name}")).await?;
        let batch = sorted_lines(client, query).await?;
        if view != batch {
            bail!(
                "after step {step}, {name} differs from its query\n view:  {view:?}\n query: {batch:?}\nlast statements:\n{}",
                history[history.len().saturating_sub(
                    if std::env::var_os("RUNNEL_ORACLE_FULL").is_some() {
                        usize::MAX
                    } else {
                        10
                    }
                )..]
                    .join("\n")
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_their_queries_after_random_changes() -> Result<()> {
    run_oracle(1, 150).await
}

/// The same with the stateful fragments split over three subtasks, so rows
/// cross hash exchanges and arrive at the view from several of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_views_equal_their_queries() -> Result<()> {
    run_oracle(3, 60).await
}

async fn run_oracle(parallelism: usize, default_steps: usize) -> Result<()> {
    let seed: u64 = std::env::var("RUNNEL_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261124);
    let steps: usize = std::env::var("RUNNEL_ORACLE_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_steps);
    let mut server = TestServer::start(&runnel_binary()?)?;
    let mut client = connect(&server).await?;
    client
        .simple_query(&format!("SET parallelism = {parallelism}"))
        .await?;
    for sql in TABLES {
        client.simple_query(sql).await?;
    }
    for (name, query) in VIEWS {
        client
            .simple_query(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    let mut rng = Rng(seed);
    let mut history = vec![];
    check_views(&client, 0, &history).await?;
    for step in 1..=steps {
        let sql = random_statement(&mut rng);
        // Key clashes and NOT NULL keys fail; the state must not change.
        let outcome = client.simple_query(&sql).await;
        history.push(format!(
            "{sql}{}",
            if outcome.is_err() { "  -- failed" } else { "" }
        ));
        if rng.below(40) == 0 {
            // Crash: whatever the views had not yet committed is redone.
            history.push("-- kill -9 and restart".into());
            server.kill_and_restart()?;
            client = connect(&server).await?;
        }
        if step % 3 == 0 || step == steps {
            check_views(&client, step, &history).await?;
        }
    }
    Ok(())
}
