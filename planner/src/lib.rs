//! SQL front half of Runnel: parsing (the Postgres dialect through
//! DataFusion's sqlparser, plus the rewrites that let `psql` and BI tools'
//! catalog queries plan), the SQL type system and its mapping to Arrow, the
//! catalog's definitions (`TableDef`, `ViewDef`, …) and the analysis of DDL
//! statements into them.
//!
//! Entry points: [`parser::parse_sql`] for text to statements,
//! [`ddl::table_def_from_create`] for `CREATE TABLE`, [`types::ColumnType`]
//! for the type mapping, [`stream::plan_view`] for the streaming planner
//! (an optimized `LogicalPlan` to the engine's `StreamGraph`), and
//! [`windows`] for the `TUMBLE`/`HOP`/`SESSION` window table functions.

pub mod array_input;
pub mod catalog;
pub mod catalog_names;
pub mod ddl;
mod error;
pub mod exists_in_select;
pub mod expr_rewrite;
pub mod field_access;
pub mod from_functions;
pub mod outer_conditions;
pub mod output_names;
pub mod parser;
pub mod pg_compat;
pub mod scalar_subquery;
pub mod set_returning;
pub mod sql_ast;
pub mod stream;
pub mod time_literals;
pub mod time_shift;
pub mod types;
pub mod user_keyword;
pub mod windows;

pub use error::{PlanError, PlanResult};
