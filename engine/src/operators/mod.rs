//! The streaming operators, one per file.

mod blackhole;
mod filter;
mod hash_agg;
mod hash_join;
mod keyed_changes;
mod materialize;
mod project;
mod session_agg;
mod sink;
mod top_n;
mod union;
mod unnest;
mod upsert;
mod watermark;
mod window_state;

pub use blackhole::BlackholeOperator;
pub use filter::FilterOperator;
pub use hash_agg::{HashAggOperator, WindowSetup};
pub use hash_join::HashJoinOperator;
pub use materialize::MaterializeOperator;
pub use project::ProjectOperator;
pub use session_agg::{SessionAggOperator, SessionSetup, nanos_per_unit};
pub use sink::{SinkOperator, StagedEpoch};
pub use top_n::{TopNOperator, TopNWindowSetup};
pub use union::UnionOperator;
pub use unnest::UnnestOperator;
pub use upsert::UpsertOperator;
pub use watermark::WatermarkOperator;

#[cfg(test)]
mod cache_tests;
#[cfg(test)]
pub(crate) mod harness;

/// The rows of `rows` an aggregate's `FILTER (WHERE …)` mask keeps (all
/// without a filter; a null counts as false).
pub(crate) fn rows_passing(
    rows: &[u32],
    filter: Option<&datafusion::arrow::array::ArrayRef>,
) -> Vec<u32> {
    use datafusion::arrow::array::{Array, AsArray};
    match filter {
        None => rows.to_vec(),
        Some(mask) => {
            let mask = mask.as_boolean();
            rows.iter()
                .copied()
                .filter(|&r| mask.is_valid(r as usize) && mask.value(r as usize))
                .collect()
        }
    }
}
