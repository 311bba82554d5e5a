//! The streaming operators, one per file.

mod filter;
mod project;

pub use filter::FilterOperator;
pub use project::ProjectOperator;

#[cfg(test)]
pub(crate) mod harness;
