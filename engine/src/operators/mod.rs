//! The streaming operators, one per file.

mod filter;
mod hash_agg;
mod hash_join;
mod materialize;
mod project;
mod top_n;
mod union;
mod watermark;

pub use filter::FilterOperator;
pub use hash_agg::{HashAggOperator, WindowSetup};
pub use hash_join::HashJoinOperator;
pub use materialize::MaterializeOperator;
pub use project::ProjectOperator;
pub use top_n::TopNOperator;
pub use union::UnionOperator;
pub use watermark::WatermarkOperator;

#[cfg(test)]
pub(crate) mod harness;
