//! The streaming operators, one per file.

mod filter;
mod hash_agg;
mod hash_join;
mod materialize;
mod project;
mod session_agg;
mod top_n;
mod union;
mod unnest;
mod watermark;

pub use filter::FilterOperator;
pub use hash_agg::{HashAggOperator, WindowSetup};
pub use hash_join::HashJoinOperator;
pub use materialize::MaterializeOperator;
pub use project::ProjectOperator;
pub use session_agg::{SessionAggOperator, SessionSetup, nanos_per_unit};
pub use top_n::{TopNOperator, TopNWindowSetup};
pub use union::UnionOperator;
pub use unnest::UnnestOperator;
pub use watermark::WatermarkOperator;

#[cfg(test)]
pub(crate) mod harness;
