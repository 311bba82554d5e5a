//! Session aggregation through the operator harness: sessions grow and
//! merge, close on the watermark, late rows, freed state, restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::max_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{col, lit};
use datafusion::scalar::ScalarValue;
use runnel_storage::{Store, StoreOptions};

use super::{SessionAggOperator, SessionSetup};
use crate::graph::{AggregateCall, SessionColumn, SessionWindow};
use crate::operators::harness::{Harness, barrier, chunk, schema};
use crate::{Op, Watermark};

/// `SELECT k, window_start, window_end, count(*), max(n) FROM SESSION(input,
/// n, 3, k) GROUP BY k, window_start, window_end` (time in plain numbers).
fn sessions(store: &Store, emit_on_close: bool, late: &Arc<AtomicU64>) -> SessionAggOperator {
    let input = schema();
    let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
        .schema(Arc::clone(&input))
        .alias("c")
        .build()
        .unwrap();
    let max = AggregateExprBuilder::new(max_udaf(), vec![col("n", &input).unwrap()])
        .schema(Arc::clone(&input))
        .alias("m")
        .build()
        .unwrap();
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("window_start", DataType::Int64, true),
        Field::new("window_end", DataType::Int64, true),
        Field::new("c", DataType::Int64, true),
        Field::new("m", DataType::Int64, true),
    ]));
    SessionAggOperator::new(
        SessionSetup {
            window: SessionWindow {
                keys: vec![0],
                time: 1,
                gap_nanos: 3,
                groups: vec![
                    SessionColumn::Key(0),
                    SessionColumn::Start,
                    SessionColumn::End,
                ],
                watermarked: true,
                emit_on_close,
            },
            key_groups: (0..runnel_storage::state_table::KEY_GROUPS).collect(),
            late_rows: Arc::clone(late),
        },
        [count, max]
            .into_iter()
            .map(|f| AggregateCall {
                function: Arc::new(f),
                filter: None,
            })
            .collect(),
        &input,
        output,
        store.clone(),
        60,
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

fn sorted(text: String) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn sessions_grow_and_merge_and_retract_their_old_rows() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(sessions(&store, false, &late), store.clone());
    // a: 1 and 3 are within the gap, 8 is not; b has its own session.
    h.push_chunk(chunk(&[
        (Op::Insert, "a", 3),
        (Op::Insert, "a", 1),
        (Op::Insert, "a", 8),
        (Op::Insert, "b", 2),
    ]))
    .await
    .unwrap();
    assert_eq!(
        sorted(h.push_barrier(barrier(1)).await.unwrap()),
        ["+ a 1 6 2 3", "+ a 8 11 1 8", "+ b 2 5 1 2"]
    );
    // 6 touches both sessions of a (3 + 3 >= 6 and 8 <= 6 + 3): one.
    h.push_chunk(chunk(&[(Op::Insert, "a", 6)])).await.unwrap();
    assert_eq!(
        sorted(h.push_barrier(barrier(2)).await.unwrap()),
        ["+ a 1 11 4 8", "- a 1 6 2 3", "- a 8 11 1 8"]
    );
    // Nothing changed, nothing emitted.
    assert_eq!(h.push_barrier(barrier(3)).await.unwrap(), "");
}

#[tokio::test]
async fn the_watermark_closes_sessions_frees_them_and_drops_late_rows() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(sessions(&store, true, &late), store.clone());
    h.push_chunk(chunk(&[
        (Op::Insert, "a", 1),
        (Op::Insert, "a", 2),
        (Op::Insert, "b", 8),
    ]))
    .await
    .unwrap();
    // Emit on close: nothing at the barrier.
    assert_eq!(h.push_barrier(barrier(1)).await.unwrap(), "");
    // a's session ends at 5: a watermark of 5 does not close it (a row at 5
    // could still extend it), 6 does.
    h.push_watermark(watermark(5)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "");
    h.push_watermark(watermark(6)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ a 1 5 2 2\n");
    // Late: behind the watermark. On time: 6 starts a new session of a.
    h.push_chunk(chunk(&[(Op::Insert, "a", 4), (Op::Insert, "a", 6)]))
        .await
        .unwrap();
    assert_eq!(late.load(Ordering::Relaxed), 1);
    h.push_barrier(barrier(2)).await.unwrap();
    h.push_watermark(watermark(100)).await.unwrap();
    assert_eq!(
        sorted(h.drain_chunks().unwrap()),
        ["+ a 6 9 1 6", "+ b 8 11 1 8"]
    );
    h.push_barrier(barrier(3)).await.unwrap();
    // Closed sessions leave no state behind.
    let table = runnel_storage::StateTable::new(store.clone(), 60);
    for group in 0..runnel_storage::state_table::KEY_GROUPS {
        assert!(table.scan_prefix(group, b"").unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_restarted_session_aggregation_keeps_its_sessions_and_watermark() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::with_store(sessions(&store, false, &late), store.clone());
    h.push_chunk(chunk(&[(Op::Insert, "a", 10), (Op::Insert, "a", 12)]))
        .await
        .unwrap();
    h.push_watermark(watermark(9)).await.unwrap();
    assert_eq!(h.drain_chunks().unwrap(), "+ a 10 15 2 12\n");
    h.push_barrier(barrier(1)).await.unwrap();

    let mut restarted = Harness::with_store(sessions(&store, false, &late), store.clone());
    restarted
        .push_chunk(chunk(&[(Op::Insert, "a", 5), (Op::Insert, "a", 14)]))
        .await
        .unwrap();
    // 5 is behind the restored watermark; 14 extends the restored session,
    // whose old row is retracted.
    assert_eq!(late.load(Ordering::Relaxed), 1);
    assert_eq!(
        sorted(restarted.push_barrier(barrier(2)).await.unwrap()),
        ["+ a 10 17 3 14", "- a 10 15 2 12"]
    );
    // The index of open sessions came back too: the watermark closes it.
    restarted.push_watermark(watermark(18)).await.unwrap();
    restarted.push_barrier(barrier(3)).await.unwrap();
    let table = runnel_storage::StateTable::new(store.clone(), 60);
    let left: usize = (0..runnel_storage::state_table::KEY_GROUPS)
        .map(|g| table.scan_prefix(g, b"").unwrap().len())
        .sum();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_delete_is_refused() {
    let (_dir, store) = store();
    let late = Arc::new(AtomicU64::new(0));
    let mut h = Harness::new(sessions(&store, false, &late));
    let error = h
        .push_chunk(chunk(&[(Op::Delete, "a", 1)]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}
