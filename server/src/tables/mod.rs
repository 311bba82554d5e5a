//! Stored tables: the DataFusion provider that reads them and the write
//! path that INSERT, UPDATE and DELETE go through.

mod provider;
mod write;

pub use provider::StoredTable;
pub use write::{RowIds, delete_rows, insert_rows, rewrite_rows, update_rows};
