//! A join on a window bound through the operator harness: rows below both
//! sides' watermarks are deleted and the smaller watermark goes on.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::scalar::ScalarValue;
use runnel_storage::{Store, StoreOptions};

use super::HashJoinOperator;
use crate::graph::{JoinCleanup, JoinKind, JoinOffset, JoinSide};
use crate::operators::harness::{Harness, chunk, schema};
use crate::{Op, Watermark};

fn side() -> JoinSide {
    JoinSide {
        schema: schema(),
        visible: 2,
        keys: vec![1],
        stream_key: vec![0],
    }
}

fn watermark(value: i64) -> Watermark {
    Watermark {
        column: 1,
        value: ScalarValue::Int64(Some(value)),
    }
}

#[tokio::test]
async fn rows_both_watermarks_passed_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let output = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("k2", DataType::Utf8, true),
        Field::new("n2", DataType::Int64, true),
    ]));
    let join = HashJoinOperator::new(
        JoinKind::Inner,
        side(),
        side(),
        None,
        false,
        output,
        store,
        60,
        Some((
            JoinCleanup {
                columns: [1, 1],
                lower: Some(JoinOffset::Zero),
                upper: Some(JoinOffset::Zero),
                outputs: [vec![1], vec![3]],
            },
            (0..runnel_storage::state_table::KEY_GROUPS).collect(),
        )),
    )
    .unwrap();
    let mut h = Harness::new(join);
    h.push_chunk_on(0, chunk(&[(Op::Insert, "a", 1), (Op::Insert, "b", 5)]))
        .await
        .unwrap();
    let out = h
        .push_chunk_on(1, chunk(&[(Op::Insert, "x", 1)]))
        .await
        .unwrap();
    assert_eq!(out, "+ a 1 x 1\n");
    // One side's watermark alone frees nothing and forwards nothing.
    assert!(
        h.push_watermark_on(0, watermark(3))
            .await
            .unwrap()
            .is_empty()
    );
    let forwarded = h.push_watermark_on(1, watermark(4)).await.unwrap();
    let value = ScalarValue::Int64(Some(3));
    assert_eq!(
        forwarded,
        vec![
            Watermark {
                column: 1,
                value: value.clone()
            },
            Watermark { column: 3, value }
        ]
    );
    // Window 1 is gone from both sides; window 5 still matches.
    let out = h
        .push_chunk_on(1, chunk(&[(Op::Insert, "y", 1), (Op::Insert, "z", 5)]))
        .await
        .unwrap();
    assert_eq!(out, "+ b 5 z 5\n");
}
