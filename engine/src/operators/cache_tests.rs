//! The state caches change nothing but speed: an aggregation and a join
//! fed the same random changelog (inserts and deletes, over many epochs)
//! emit the same changes whether their caches hold everything, nothing
//! (`state.cache-mb = 0`), or one entry at a time (every insert evicts the
//! rest, so entries are read back from state over and over).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{col, lit};
use runnel_storage::{Store, StoreOptions};

use super::harness::{Harness, Rng, barrier, chunk, schema};
use super::{HashAggOperator, HashJoinOperator};
use crate::Op;
use crate::graph::{AggregateCall, JoinKind, JoinSide};
use crate::operator::StreamOperator;

/// A changelog: per epoch, chunks of `(op, k, n)` rows.
type Log = Vec<Vec<Vec<(Op, String, i64)>>>;

/// Budgets: everything fits, nothing is cached, one entry at a time.
const BUDGETS: [usize; 3] = [64 << 20, 0, 1];

/// A random changelog over `(k, n)` rows: per epoch a few chunks, each
/// inserting new rows or deleting rows inserted before (so it is a valid
/// changelog). Rows are unique by `k`; `n` is drawn from a few values.
fn changelog(seed: u64, epochs: usize) -> Log {
    let mut rng = Rng(seed);
    let mut live: Vec<(String, i64)> = vec![];
    let mut next = 0;
    (0..epochs)
        .map(|_| {
            (0..1 + rng.below(3))
                .map(|_| {
                    let mut rows = vec![];
                    for _ in 0..1 + rng.below(12) {
                        if !live.is_empty() && rng.below(3) == 0 {
                            let (k, n) = live.swap_remove(rng.below(live.len() as u64) as usize);
                            rows.push((Op::Delete, k, n));
                        } else {
                            next += 1;
                            let row = (format!("r{next}"), rng.below(6) as i64);
                            live.push(row.clone());
                            rows.push((Op::Insert, row.0, row.1));
                        }
                    }
                    rows
                })
                .collect()
        })
        .collect()
}

fn store(budget: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        state_cache_bytes: budget,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &options).unwrap();
    (dir, store)
}

/// What `operator` emits for `log`, pushed on `input_of(chunk index)`:
/// per chunk and per barrier the emitted lines, sorted (groups and
/// matches come in no fixed order).
async fn run<O: StreamOperator>(
    h: Harness<O>,
    log: &Log,
    input_of: impl Fn(usize) -> usize,
) -> Vec<Vec<String>> {
    run_restarting(h, log, input_of, |_| None).await
}

/// Like [`run`], but after each barrier `restart(epoch)` may give a new
/// harness to go on with (an operator started again on the same store, as
/// after a failure: empty caches, state as the barriers wrote it).
async fn run_restarting<O: StreamOperator>(
    mut h: Harness<O>,
    log: &Log,
    input_of: impl Fn(usize) -> usize,
    restart: impl Fn(usize) -> Option<Harness<O>>,
) -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut pushed = 0;
    for (epoch, chunks) in log.iter().enumerate() {
        for rows in chunks {
            let rows: Vec<(Op, &str, i64)> = rows
                .iter()
                .map(|(op, k, n)| (*op, k.as_str(), *n))
                .collect();
            let text = h
                .push_chunk_on(input_of(pushed), chunk(&rows))
                .await
                .unwrap();
            pushed += 1;
            out.push(sorted(&text));
        }
        let text = h.push_barrier(barrier(epoch as u64 + 1)).await.unwrap();
        out.push(sorted(&text));
        if let Some(restarted) = restart(epoch) {
            h = restarted;
        }
    }
    out
}

fn sorted(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// `SELECT n, count(*), sum(n), min(k), max(k) FROM input GROUP BY n`.
fn aggregation(store: &Store) -> HashAggOperator {
    let input = schema();
    let call = |function, args| AggregateCall {
        function: Arc::new(
            AggregateExprBuilder::new(function, args)
                .schema(Arc::clone(&input))
                .alias("a")
                .build()
                .unwrap(),
        ),
        filter: None,
    };
    let output = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, true),
        Field::new("c", DataType::Int64, true),
        Field::new("s", DataType::Int64, true),
        Field::new("mn", DataType::Utf8, true),
        Field::new("mx", DataType::Utf8, true),
    ]));
    let n = col("n", &input).unwrap();
    let k = col("k", &input).unwrap();
    HashAggOperator::new(
        vec![Arc::clone(&n)],
        vec![
            call(count_udaf(), vec![lit(1i64)]),
            call(sum_udaf(), vec![Arc::clone(&n)]),
            call(min_udaf(), vec![Arc::clone(&k)]),
            call(max_udaf(), vec![k]),
        ],
        output,
        store.clone(),
        10,
        None,
    )
    .unwrap()
}

fn join(store: &Store) -> HashJoinOperator {
    let side = JoinSide {
        schema: schema(),
        visible: 2,
        keys: vec![1],
        stream_key: vec![0],
    };
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("k2", DataType::Utf8, true),
        Field::new("n2", DataType::Int64, true),
    ]));
    HashJoinOperator::new(
        JoinKind::Full,
        side.clone(),
        side,
        None,
        false,
        output,
        store.clone(),
        20,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn aggregation_emits_the_same_with_any_cache() {
    for seed in 0..8 {
        let log = changelog(seed, 30);
        let mut outputs = vec![];
        for budget in BUDGETS {
            let (_dir, store) = store(budget);
            let h = Harness::with_store(aggregation(&store), store.clone());
            outputs.push(run(h, &log, |_| 0).await);
        }
        assert_eq!(outputs[0], outputs[1], "seed {seed}: no cache differs");
        assert_eq!(outputs[0], outputs[2], "seed {seed}: a tiny cache differs");
        assert!(outputs[0].iter().any(|lines| !lines.is_empty()));
    }
}

#[tokio::test]
async fn running_min_and_max_over_inserts_equal_recomputed_ones() {
    // The same inserts-only log through an aggregation told its input
    // only inserts (running min/max) and one not told (recomputed).
    for seed in 0..4 {
        let log: Log = changelog(seed, 20)
            .into_iter()
            .map(|chunks| {
                chunks
                    .into_iter()
                    .map(|rows| rows.into_iter().filter(|r| r.0 == Op::Insert).collect())
                    .collect()
            })
            .collect();
        let (_a, running_store) = store(1);
        let running = aggregation(&running_store)
            .with_append_only_input(true)
            .unwrap();
        let running = run(
            Harness::with_store(running, running_store.clone()),
            &log,
            |_| 0,
        )
        .await;
        let (_b, kept_store) = store(1);
        let kept = run(
            Harness::with_store(aggregation(&kept_store), kept_store.clone()),
            &log,
            |_| 0,
        )
        .await;
        assert_eq!(running, kept, "seed {seed}");
    }
}

#[tokio::test]
async fn join_emits_the_same_with_any_cache() {
    for seed in 0..8 {
        let log = changelog(seed, 30);
        // Chunks alternate between the sides.
        let mut outputs = vec![];
        for budget in BUDGETS {
            let (_dir, store) = store(budget);
            let h = Harness::with_store(join(&store), store.clone());
            outputs.push(run(h, &side_logs(&log), |i| i % 2).await);
        }
        assert_eq!(outputs[0], outputs[1], "seed {seed}: no cache differs");
        assert_eq!(outputs[0], outputs[2], "seed {seed}: a tiny cache differs");
        assert!(outputs[0].iter().any(|lines| !lines.is_empty()));
    }
}

#[tokio::test]
async fn operators_restarted_from_their_state_emit_the_same() {
    // Every seventh epoch the operator starts again from what the
    // barriers wrote: rows and groups only in memory must have been
    // written out, whatever the cache held.
    for seed in 0..6 {
        let log = changelog(seed, 30);
        let restart_at = |epoch: usize| epoch % 7 == 6;
        for budget in BUDGETS {
            let (_a, store) = self::store(budget);
            let whole = run(
                Harness::with_store(aggregation(&store), store.clone()),
                &log,
                |_| 0,
            )
            .await;
            let (_b, store) = self::store(budget);
            let restarted = run_restarting(
                Harness::with_store(aggregation(&store), store.clone()),
                &log,
                |_| 0,
                |epoch| {
                    restart_at(epoch)
                        .then(|| Harness::with_store(aggregation(&store), store.clone()))
                },
            )
            .await;
            assert_eq!(
                whole, restarted,
                "aggregation, seed {seed}, budget {budget}"
            );

            let sides = side_logs(&log);
            let (_c, store) = self::store(budget);
            let whole = run(
                Harness::with_store(join(&store), store.clone()),
                &sides,
                |i| i % 2,
            )
            .await;
            let (_d, store) = self::store(budget);
            let restarted = run_restarting(
                Harness::with_store(join(&store), store.clone()),
                &sides,
                |i| i % 2,
                |epoch| restart_at(epoch).then(|| Harness::with_store(join(&store), store.clone())),
            )
            .await;
            assert_eq!(whole, restarted, "join, seed {seed}, budget {budget}");
        }
    }
}

/// The log with every chunk given to the side of its index's parity; a
/// delete whose insert went to the other side is left out, so each side's
/// rows are a valid changelog of their own.
fn side_logs(log: &Log) -> Log {
    let mut side_of = std::collections::HashMap::new();
    let mut pushed = 0;
    log.iter()
        .map(|chunks| {
            chunks
                .iter()
                .map(|rows| {
                    let side = pushed % 2;
                    pushed += 1;
                    rows.iter()
                        .filter(|(op, k, _)| {
                            if *op == Op::Insert {
                                side_of.insert(k.clone(), side);
                                true
                            } else {
                                side_of.get(k) == Some(&side)
                            }
                        })
                        .cloned()
                        .collect()
                })
                .collect()
        })
        .collect()
}
