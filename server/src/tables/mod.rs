//! Stored tables: the DataFusion provider that reads them and the write
//! path that INSERT, UPDATE and DELETE go through.

mod conflicts;
mod indexes;
mod pending;
mod provider;
mod write;

pub(crate) use indexes::all_nullable;
pub use indexes::{IndexChanges, build_index, check_unique};
pub use pending::{BlockWrites, PendingTable, PendingWrites};

pub use conflicts::{Arbiter, Conflict, find_conflicts, upsert_rows};
pub use provider::StoredTable;
pub use write::{
    RowIds, WriteTarget, delete_rows, insert_rows, rewrite_into_block, rewrite_rows, update_rows,
    write_logged,
};
