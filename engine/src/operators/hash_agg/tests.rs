//! Windowed aggregation through the operator harness: closing on the
//! watermark, late rows, state freed, and the watermark restored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{col, lit};
use datafusion::scalar::ScalarValue;
use runnel_storage::{Store, StoreOptions};

use super::{HashAggOperator, WindowSetup};
use crate::graph::{AggregateCall, WindowedGroups};
use crate::operators::harness::{Harness, barrier, chunk, schema};
use crate::{Op, Watermark};

/// `SELECT n, count(*) FROM input GROUP BY n`, with `n` as the window.
fn windowed(store: &Store, emit_on_close: bool, late: &Arc<AtomicU64>) -> HashAggOperator {
    windowed_keeping(store, emit_on_close, false, late)
}

/// [`windowed`], keeping late rows or not.
fn windowed_keeping(
    store: &Store,
    emit_on_close: bool,
    keep_late: bool,
    late: &Arc<AtomicU64>,
) -> HashAggOperator {
    let input = schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(Arc::clone(&input))
        .alias("c")
        .build()
        .unwrap();
    let output = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, true),
        Field::new("c", DataType::Int64, true),
    ]));
    HashAggOperator::new(
        vec![col("n", &input).unwrap()],
        vec![AggregateCall {
            function: Arc::new(count),
            filter: None,
        }],
        output,
        store.clone(),
        40,
        Some(WindowSetup {
            spec: WindowedGroups {
                group_column: 0,
                input_column: 1,
                emit_on_close,
                keep_late,
            },
            key_groups: (0..runnel_storage::state_table::KEY_GROUPS).collect(),
            late_rows: Arc::clone(late),
        }),
    )
    .unwrap()
}

fn watermark(value: i64) -> Watermark {
    Watermark {
        column: 1,
        value: ScalarValue::Int64(Some(value)),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    (dir, store)
}

#[tokio::test]
async fn emit_on_close_emits_each_window_once_when_the_watermark_passes() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(windowed(&store, true, &late), store.clone());
    h.push_chunk(chunk(&[
        (Op::Insert, "a", 1),
        (Op::Insert, "b", 1),
        (Op::Insert, "c", 2),
    ]))
    .await
    .unwrap();
    assert_eq!(h.push_barrier(barrier(1)).await.unwrap(), "");
    // A retraction inside an open window is applied, not emitted.
    h.push_chunk(chunk(&[(Op::Delete, "b", 1)])).await.unwrap();
    let forwarded = h.push_watermark(watermark(2)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ 1 1\n");
    assert_eq!(
        forwarded,
        vec![Watermark {
            column: 0,
            value: ScalarValue::Int64(Some(2))
        }]
    );
    // Window 1 is closed: a row for it is late, dropped and counted.
    h.push_chunk(chunk(&[(Op::Insert, "d", 1), (Op::Insert, "e", 2)]))
        .await
        .unwrap();
    assert_eq!(late.load(Ordering::Relaxed), 1);
    // A watermark that does not rise closes nothing.
    assert!(h.push_watermark(watermark(1)).await.unwrap().is_empty());
    h.push_watermark(watermark(3)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ 2 2\n");
    assert_eq!(h.push_barrier(barrier(2)).await.unwrap(), "");
    // Closed windows leave no state behind but the watermark.
    let groups = runnel_storage::StateTable::new(store.clone(), 40);
    for group in 0..runnel_storage::state_table::KEY_GROUPS {
        assert!(groups.scan_prefix(group, b"").unwrap().is_empty());
    }
}

#[tokio::test]
async fn kept_late_rows_close_at_the_next_watermark() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(windowed_keeping(&store, true, true, &late), store.clone());
    h.push_chunk(chunk(&[(Op::Insert, "a", 1), (Op::Insert, "b", 2)]))
        .await
        .unwrap();
    h.push_watermark(watermark(2)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ 1 1\n");
    // Window 1 closed, but its late rows are kept, not counted as dropped…
    h.push_chunk(chunk(&[(Op::Insert, "c", 1), (Op::Insert, "d", 1)]))
        .await
        .unwrap();
    assert_eq!(late.load(Ordering::Relaxed), 0);
    assert_eq!(h.push_barrier(barrier(1)).await.unwrap(), "");
    // …and come out as a group of their own when the watermark next rises,
    // before the watermark goes on.
    let forwarded = h.push_watermark(watermark(3)).await.unwrap();
    let mut lines: Vec<String> = h
        .drain_chunks()
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, ["+ 1 2", "+ 2 1"]);
    assert_eq!(forwarded.len(), 1);
    h.push_barrier(barrier(2)).await.unwrap();
    let groups = runnel_storage::StateTable::new(store.clone(), 40);
    for group in 0..runnel_storage::state_table::KEY_GROUPS {
        assert!(groups.scan_prefix(group, b"").unwrap().is_empty());
    }
}

#[tokio::test]
async fn updating_windows_emit_at_barriers_and_free_closed_groups() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(windowed(&store, false, &late), store.clone());
    h.push_chunk(chunk(&[(Op::Insert, "a", 1), (Op::Insert, "b", 5)]))
        .await
        .unwrap();
    // Groups come out in no fixed order.
    let mut lines: Vec<String> = h
        .push_barrier(barrier(1))
        .await
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(lines, ["+ 1 1", "+ 5 1"]);
    h.push_chunk(chunk(&[(Op::Insert, "c", 1)])).await.unwrap();
    // Pending changes of a closing window go out before it is freed.
    h.push_watermark(watermark(3)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "U- 1 1\nU+ 1 2\n");
    h.push_chunk(chunk(&[(Op::Insert, "d", 1), (Op::Insert, "e", 5)]))
        .await
        .unwrap();
    assert_eq!(late.load(Ordering::Relaxed), 1);
    assert_eq!(
        h.push_barrier(barrier(2)).await.unwrap(),
        "U- 5 1\nU+ 5 2\n"
    );
}

#[tokio::test]
async fn a_restarted_aggregation_keeps_its_watermark_and_open_windows() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(windowed(&store, true, &late), store.clone());
    h.push_chunk(chunk(&[(Op::Insert, "a", 5), (Op::Insert, "b", 9)]))
        .await
        .unwrap();
    h.push_watermark(watermark(6)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ 5 1\n");
    h.push_barrier(barrier(1)).await.unwrap();

    let mut restarted = Harness::with_store(windowed(&store, true, &late), store.clone());
    // Still late after the restart: the watermark came back from state.
    restarted
        .push_chunk(chunk(&[(Op::Insert, "c", 5), (Op::Insert, "d", 9)]))
        .await
        .unwrap();
    assert_eq!(late.load(Ordering::Relaxed), 1);
    restarted.push_watermark(watermark(10)).await.unwrap();
    assert_eq!(restarted.drain_chunks().unwrap(), "+ 9 2\n");
}
