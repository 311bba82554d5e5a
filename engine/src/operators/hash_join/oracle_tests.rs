//! The join against an oracle: random changelogs on both sides (inserts,
//! deletes and update pairs; nulls in the join key and in the compared
//! value; keys shared by many rows) go through every join kind, with and
//! without an extra condition, nulls equal or not; the emitted changes are
//! applied to a view, and after every barrier the view must equal the
//! join computed directly over the rows alive at that point — with every
//! key kept in memory, with none (each read back from state), with one at
//! a time, and with a few (evicted keys remembered, so a miss on any other
//! is known to be a new key).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, binary};
use datafusion::scalar::ScalarValue;
use runnel_storage::{Store, StoreOptions};

use super::HashJoinOperator;
use crate::graph::{JoinKind, JoinSide};
use crate::operators::harness::{Harness, Rng, apply_changes, barrier};
use crate::{Op, StreamChunk};

/// A row of either side: stream key, join key, compared value.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    k: Option<i64>,
    v: Option<i64>,
}

fn side_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn side() -> JoinSide {
    JoinSide {
        schema: side_schema(),
        visible: 3,
        keys: vec![1],
        stream_key: vec![0],
    }
}

fn chunk(rows: &[(Op, Row)]) -> StreamChunk {
    let batch = RecordBatch::try_new(
        side_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| r.id.as_str()),
            )),
            Arc::new(Int64Array::from_iter(rows.iter().map(|(_, r)| r.k))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|(_, r)| r.v))),
        ],
    )
    .unwrap();
    let ops: Vec<Op> = rows.iter().map(|(op, _)| *op).collect();
    StreamChunk::new(batch, &ops).unwrap()
}

/// A value below `n`, or (one time in six) null.
fn maybe(rng: &mut Rng, n: u64) -> Option<i64> {
    (rng.below(6) != 0).then(|| rng.below(n) as i64)
}

/// A chunk's rows for one side (0 or 1).
type SideChunk = (usize, Vec<(Op, Row)>);

/// Per epoch, chunks each for one side: inserts of new rows, deletes and
/// update pairs of that side's live rows.
fn changelog(seed: u64, epochs: usize) -> Vec<Vec<SideChunk>> {
    let mut rng = Rng(seed);
    let mut live: [Vec<Row>; 2] = [vec![], vec![]];
    let mut next = 0;
    let mut row = |rng: &mut Rng| {
        next += 1;
        Row {
            id: format!("r{next}"),
            k: maybe(rng, 4),
            v: maybe(rng, 10),
        }
    };
    (0..epochs)
        .map(|_| {
            (0..1 + rng.below(4))
                .map(|_| {
                    let side = rng.below(2) as usize;
                    let live = &mut live[side];
                    let mut rows = vec![];
                    for _ in 0..1 + rng.below(12) {
                        let choice = rng.below(5);
                        if live.is_empty() || choice < 3 {
                            let new = row(&mut rng);
                            live.push(new.clone());
                            rows.push((Op::Insert, new));
                        } else {
                            let old = live.swap_remove(rng.below(live.len() as u64) as usize);
                            if choice == 3 {
                                rows.push((Op::Delete, old));
                            } else {
                                let new = Row {
                                    v: maybe(&mut rng, 10),
                                    ..old.clone()
                                };
                                live.push(new.clone());
                                rows.push((Op::UpdateDelete, old));
                                rows.push((Op::UpdateInsert, new));
                            }
                        }
                    }
                    (side, rows)
                })
                .collect()
        })
        .collect()
}

/// What one test runs: the kind, `left.v < right.v` or not, nulls equal.
#[derive(Debug, Clone, Copy)]
struct Case {
    kind: JoinKind,
    condition: bool,
    nulls_equal: bool,
}

impl Case {
    /// The side a semi or anti join emits, and whether it is a semi join.
    fn kept(&self) -> Option<(usize, bool)> {
        match self.kind {
            JoinKind::LeftSemi => Some((0, true)),
            JoinKind::LeftAnti => Some((0, false)),
            JoinKind::RightSemi => Some((1, true)),
            JoinKind::RightAnti => Some((1, false)),
            _ => None,
        }
    }

    fn padded(&self, side: usize) -> bool {
        matches!(
            (self.kind, side),
            (JoinKind::Left | JoinKind::Full, 0) | (JoinKind::Right | JoinKind::Full, 1)
        )
    }

    fn operator(&self, store: &Store) -> HashJoinOperator {
        let pairs = Arc::new(Schema::new(
            [
                side_schema().fields().to_vec(),
                side_schema().fields().to_vec(),
            ]
            .concat(),
        ));
        let filter: Option<Arc<dyn PhysicalExpr>> = self.condition.then(|| {
            binary(
                Arc::new(Column::new("v", 2)),
                Operator::Lt,
                Arc::new(Column::new("v", 5)),
                &pairs,
            )
            .unwrap()
        });
        let output = match self.kept() {
            Some(_) => side_schema(),
            None => Arc::new(Schema::new(
                pairs
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            )),
        };
        HashJoinOperator::new(
            self.kind,
            side(),
            side(),
            filter,
            self.nulls_equal,
            output,
            store.clone(),
            60,
            None,
        )
        .unwrap()
    }

    fn matches(&self, left: &Row, right: &Row) -> bool {
        let keys = match (left.k, right.k) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.nulls_equal,
            _ => false,
        };
        let condition = !self.condition || matches!((left.v, right.v), (Some(a), Some(b)) if a < b);
        keys && condition
    }

    /// The join's rows over the live rows of both sides, as text → count.
    fn expected(&self, live: &[BTreeMap<String, Row>; 2]) -> BTreeMap<String, i64> {
        let mut rows = BTreeMap::new();
        let mut add = |text: String| *rows.entry(text).or_insert(0) += 1;
        let text = |row: Option<&Row>| match row {
            Some(r) => format!(
                "{} {} {}",
                r.id,
                ScalarValue::Int64(r.k),
                ScalarValue::Int64(r.v)
            ),
            None => "NULL NULL NULL".to_string(),
        };
        for (side, own) in live.iter().enumerate() {
            for row in own.values() {
                let other = &live[1 - side];
                let matched: Vec<&Row> = other
                    .values()
                    .filter(|o| {
                        if side == 0 {
                            self.matches(row, o)
                        } else {
                            self.matches(o, row)
                        }
                    })
                    .collect();
                if let Some((kept, semi)) = self.kept() {
                    if kept == side && matched.is_empty() != semi {
                        add(text(Some(row)));
                    }
                    continue;
                }
                if side == 0 {
                    for o in &matched {
                        add(format!("{} {}", text(Some(row)), text(Some(o))));
                    }
                }
                if matched.is_empty() && self.padded(side) {
                    add(if side == 0 {
                        format!("{} {}", text(Some(row)), text(None))
                    } else {
                        format!("{} {}", text(None), text(Some(row)))
                    });
                }
            }
        }
        rows
    }
}

async fn check(case: Case, seed: u64, budget: usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        state_cache_bytes: budget,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &options).unwrap();
    let mut h = Harness::with_store(case.operator(&store), store.clone());
    let mut live: [BTreeMap<String, Row>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut view = BTreeMap::new();
    for (epoch, chunks) in changelog(seed, 20).into_iter().enumerate() {
        for (side, rows) in chunks {
            for (op, row) in &rows {
                if op.sign() > 0 {
                    live[side].insert(row.id.clone(), row.clone());
                } else {
                    live[side].remove(&row.id);
                }
            }
            let emitted = h.push_chunk_chunks(side, chunk(&rows)).await.unwrap();
            apply_changes(&mut view, &emitted);
        }
        let emitted = h
            .push_barrier_chunks(barrier(epoch as u64 + 1))
            .await
            .unwrap();
        apply_changes(&mut view, &emitted);
        assert_eq!(
            view,
            case.expected(&live),
            "{case:?}, seed {seed}, budget {budget}, epoch {epoch}"
        );
    }
}

#[tokio::test]
async fn random_changelogs_give_the_batch_answer_for_every_kind_with_any_cache() {
    let kinds = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
        JoinKind::RightSemi,
        JoinKind::RightAnti,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        for (condition, nulls_equal) in [(false, false), (true, false), (false, true)] {
            let case = Case {
                kind,
                condition,
                nulls_equal,
            };
            for seed in 0..3 {
                for budget in [64 << 20, 0, 1, 1000] {
                    check(case, seed * 17 + i as u64, budget).await;
                }
            }
        }
    }
}
