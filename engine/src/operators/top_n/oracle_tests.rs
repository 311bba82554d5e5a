//! Top-N against an oracle: random changelogs (with retractions, or
//! inserts only for the append-only path) go through the operator, its
//! emitted changes are applied to a view, and after every barrier the view
//! must equal the Top-N computed directly over the rows alive at that
//! point — with every partition kept in memory, none, one at a time and a
//! few (evicted ones remembered), and across a restart on the same store.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use runnel_storage::Store;

use super::TopNOperator;
use crate::graph::SortOrder;
use crate::operators::harness::{Rng, random_changelog, replay_changelog};
use crate::{Op, StreamChunk};

/// An input row: stream key, partition, sort value.
#[derive(Debug, Clone)]
struct Row {
    k: String,
    n: Option<i64>,
    x: Option<i64>,
}

const OFFSET: usize = 1;
const LIMIT: usize = 3;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
        Field::new("x", DataType::Int64, true),
    ]))
}

fn chunk(rows: &[(Op, Row)]) -> StreamChunk {
    let batch = RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, r)| r.k.as_str()),
            )),
            Arc::new(Int64Array::from_iter(rows.iter().map(|(_, r)| r.n))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|(_, r)| r.x))),
        ],
    )
    .unwrap();
    let ops: Vec<Op> = rows.iter().map(|(op, _)| *op).collect();
    StreamChunk::new(batch, &ops).unwrap()
}

/// `SELECT k, n, x, rank FROM (SELECT *, row_number() OVER (PARTITION BY n
/// ORDER BY x DESC NULLS LAST, k) AS rank FROM input) WHERE rank BETWEEN 2
/// AND 4`.
fn top_n(store: &Store, append_only: bool) -> TopNOperator {
    let input = input_schema();
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("rank", DataType::Int64, false));
    TopNOperator::new(
        vec![1],
        vec![SortOrder {
            column: 2,
            descending: true,
            nulls_first: false,
        }],
        OFFSET,
        LIMIT,
        Some(3),
        input,
        vec![0],
        Arc::new(Schema::new(fields)),
        store.clone(),
        80,
        None,
    )
    .unwrap()
    .with_append_only_input(append_only)
    .unwrap()
}

/// Per epoch, chunks of inserts of new rows and (unless `inserts_only`)
/// deletes or update pairs of live ones.
fn changelog(seed: u64, epochs: usize, inserts_only: bool) -> Vec<Vec<Vec<(Op, Row)>>> {
    let mut next = 0;
    random_changelog(&mut Rng(seed), epochs, 12, inserts_only, |rng| {
        next += 1;
        let mut maybe = |n: u64| (rng.below(6) != 0).then(|| rng.below(n) as i64);
        Row {
            k: format!("r{next:05}"),
            n: maybe(4),
            x: maybe(30),
        }
    })
}

/// The query's rows over `live`, as the view holds them.
fn expected(live: &BTreeMap<String, Row>) -> Vec<String> {
    let mut partitions: BTreeMap<Option<i64>, Vec<&Row>> = BTreeMap::new();
    for row in live.values() {
        partitions.entry(row.n).or_default().push(row);
    }
    let int = |v: Option<i64>| ScalarValue::Int64(v).to_string();
    let mut rows = vec![];
    for (_, mut members) in partitions {
        // x descending, nulls last, then k.
        members.sort_by(|a, b| match (a.x, b.x) {
            (Some(x), Some(y)) => y.cmp(&x).then(a.k.cmp(&b.k)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.k.cmp(&b.k),
        });
        for (i, row) in members.iter().enumerate().skip(OFFSET).take(LIMIT) {
            rows.push(format!("{} {} {} {}", row.k, int(row.n), int(row.x), i + 1));
        }
    }
    rows.sort();
    rows
}

async fn check(seed: u64, budget: usize, inserts_only: bool) {
    replay_changelog(
        budget,
        |store| top_n(store, inserts_only),
        Some(15),
        changelog(seed, 30, inserts_only),
        |row| row.k.clone(),
        chunk,
        |epoch, live, view| {
            assert_eq!(
                view,
                expected(live),
                "seed {seed}, budget {budget}, inserts only {inserts_only}, epoch {epoch}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn random_changelogs_give_the_batch_answer() {
    for seed in 0..8 {
        check(seed, 64 << 20, false).await;
    }
}

#[tokio::test]
async fn random_inserts_keep_only_the_top_rows_with_any_cache() {
    for seed in 0..8 {
        for budget in [64 << 20, 0, 1, 1000] {
            check(seed, budget, true).await;
        }
    }
}
