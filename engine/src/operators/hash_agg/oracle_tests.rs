//! The aggregation against an oracle: random changelogs with retractions
//! (nulls in the group column and in arguments, several chunks per epoch)
//! go through the operator, its emitted changes are applied to a view, and
//! after every barrier the view must equal the aggregates computed directly
//! over the rows alive at that point — with every group kept in memory,
//! with none (each read back from state), with one at a time, and with a
//! few (evicted keys remembered, so a miss on any other is a new group).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::functions_aggregate::average::avg_udaf;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::{AggregateUDF, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{binary, cast, col, lit};
use datafusion::scalar::ScalarValue;
use runnel_storage::Store;

use super::HashAggOperator;
use crate::graph::AggregateCall;
use crate::operators::harness::{Rng, random_changelog, replay_changelog};
use crate::{Op, StreamChunk};

/// An input row: key, group, integer argument, float argument.
#[derive(Debug, Clone)]
struct Row {
    k: String,
    n: Option<i64>,
    x: Option<i64>,
    f: Option<f64>,
}

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
        Field::new("x", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
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
            Arc::new(Float64Array::from_iter(rows.iter().map(|(_, r)| r.f))),
        ],
    )
    .unwrap();
    let ops: Vec<Op> = rows.iter().map(|(op, _)| *op).collect();
    StreamChunk::new(batch, &ops).unwrap()
}

/// A value below `n`, shifted by `offset`, or (one time in five) null.
fn maybe(rng: &mut Rng, n: u64, offset: i64) -> Option<i64> {
    let value = rng.below(n) as i64 + offset;
    (rng.below(5) != 0).then_some(value)
}

/// Per epoch, chunks of inserts of new rows and deletes (or update pairs)
/// of live ones; `inserts_only` leaves the deletes out.
fn changelog(seed: u64, epochs: usize, inserts_only: bool) -> Vec<Vec<Vec<(Op, Row)>>> {
    let mut next = 0;
    random_changelog(&mut Rng(seed), epochs, 16, inserts_only, |rng| {
        next += 1;
        Row {
            k: format!("r{next}"),
            n: maybe(rng, 5, 0),
            x: maybe(rng, 40, -20),
            // Halves add up exactly, so sums do not depend on order.
            f: maybe(rng, 9, -4).map(|v| v as f64 / 2.0),
        }
    })
}

/// `SELECT n, count(*), count(x), sum(x), sum(f), avg(x), min(x), max(x),
/// sum(x) FILTER (WHERE f > 0), count(DISTINCT x), count(DISTINCT x)
/// FILTER (WHERE f > 0), sum(DISTINCT x) FROM input GROUP BY n`.
fn aggregation(store: &Store, append_only: bool) -> HashAggOperator {
    let input = input_schema();
    let column = |name: &str| col(name, &input).unwrap();
    let call = |function: Arc<AggregateUDF>,
                args: Vec<Arc<dyn PhysicalExpr>>,
                distinct: bool,
                filter: Option<Arc<dyn PhysicalExpr>>| AggregateCall {
        function: Arc::new(
            AggregateExprBuilder::new(function, args)
                .schema(Arc::clone(&input))
                .alias("a")
                .with_distinct(distinct)
                .build()
                .unwrap(),
        ),
        filter,
    };
    let positive: Arc<dyn PhysicalExpr> =
        binary(column("f"), Operator::Gt, lit(0.0f64), &input).unwrap();
    let x_as_float = cast(column("x"), &input, DataType::Float64).unwrap();
    let field = |name: &str, t: DataType| Field::new(name, t, true);
    let output = Arc::new(Schema::new(vec![
        field("n", DataType::Int64),
        field("c", DataType::Int64),
        field("cx", DataType::Int64),
        field("sx", DataType::Int64),
        field("sf", DataType::Float64),
        field("ax", DataType::Float64),
        field("mn", DataType::Int64),
        field("mx", DataType::Int64),
        field("sp", DataType::Int64),
        field("dx", DataType::Int64),
        field("dp", DataType::Int64),
        field("ds", DataType::Int64),
    ]));
    HashAggOperator::new(
        vec![column("n")],
        vec![
            call(count_udaf(), vec![lit(1i64)], false, None),
            call(count_udaf(), vec![column("x")], false, None),
            call(sum_udaf(), vec![column("x")], false, None),
            call(sum_udaf(), vec![column("f")], false, None),
            call(avg_udaf(), vec![x_as_float], false, None),
            call(min_udaf(), vec![column("x")], false, None),
            call(max_udaf(), vec![column("x")], false, None),
            call(
                sum_udaf(),
                vec![column("x")],
                false,
                Some(Arc::clone(&positive)),
            ),
            call(count_udaf(), vec![column("x")], true, None),
            call(
                count_udaf(),
                vec![column("x")],
                true,
                Some(Arc::clone(&positive)),
            ),
            call(sum_udaf(), vec![column("x")], true, None),
        ],
        output,
        store.clone(),
        60,
        None,
    )
    .unwrap()
    .with_append_only_input(append_only)
    .unwrap()
}

/// The query's rows over `live`, as text.
fn expected(live: &BTreeMap<String, Row>) -> BTreeSet<String> {
    let mut groups: BTreeMap<Option<i64>, Vec<&Row>> = BTreeMap::new();
    for row in live.values() {
        groups.entry(row.n).or_default().push(row);
    }
    let int = |v: Option<i64>| ScalarValue::Int64(v).to_string();
    let float = |v: Option<f64>| ScalarValue::Float64(v).to_string();
    groups
        .into_iter()
        .map(|(n, rows)| {
            let xs: Vec<i64> = rows.iter().filter_map(|r| r.x).collect();
            let fs: Vec<f64> = rows.iter().filter_map(|r| r.f).collect();
            let positive: Vec<i64> = rows
                .iter()
                .filter(|r| r.f.is_some_and(|f| f > 0.0))
                .filter_map(|r| r.x)
                .collect();
            let sum = (!xs.is_empty()).then(|| xs.iter().sum::<i64>());
            let distinct: BTreeSet<i64> = xs.iter().copied().collect();
            let distinct_positive: BTreeSet<i64> = positive.iter().copied().collect();
            [
                int(n),
                int(Some(rows.len() as i64)),
                int(Some(xs.len() as i64)),
                int(sum),
                float((!fs.is_empty()).then(|| fs.iter().sum())),
                float(sum.map(|s| s as f64 / xs.len() as f64)),
                int(xs.iter().min().copied()),
                int(xs.iter().max().copied()),
                int((!positive.is_empty()).then(|| positive.iter().sum())),
                int(Some(distinct.len() as i64)),
                int(Some(distinct_positive.len() as i64)),
                int((!distinct.is_empty()).then(|| distinct.iter().sum())),
            ]
            .join(" ")
        })
        .collect()
}

async fn check(seed: u64, budget: usize, inserts_only: bool) {
    replay_changelog(
        budget,
        |store| aggregation(store, inserts_only),
        None,
        changelog(seed, 25, inserts_only),
        |row| row.k.clone(),
        chunk,
        |epoch, live, view| {
            let view: BTreeSet<String> = view.into_iter().collect();
            assert_eq!(
                view,
                expected(live),
                "seed {seed}, budget {budget}, epoch {epoch}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn random_changelogs_give_the_batch_answer_with_any_cache() {
    for seed in 0..12 {
        for budget in [64 << 20, 0, 1, 1000] {
            check(seed, budget, false).await;
        }
    }
}

#[tokio::test]
async fn random_inserts_give_the_batch_answer_with_running_min_and_max() {
    for seed in 0..6 {
        for budget in [64 << 20, 0, 1, 1000] {
            check(seed, budget, true).await;
        }
    }
}
