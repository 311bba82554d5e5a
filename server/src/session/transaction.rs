//! Transaction blocks: `BEGIN … COMMIT | ROLLBACK`, savepoints and the
//! read-only mode.
//!
//! Inside a block, INSERT, UPDATE and DELETE go to the block's pending rows
//! ([`PendingWrites`]) rather than the store; the block's reads see them
//! over the committed rows, other sessions see nothing of them until
//! COMMIT writes them all at once. Each statement reads the latest
//! committed rows (READ COMMITTED); a block whose changed rows another
//! session changed first fails at COMMIT (40001) instead of overwriting
//! them. REPEATABLE READ and SERIALIZABLE are refused (0A000).
//!
//! DDL inside a block takes effect at once and stays after ROLLBACK (a
//! warning says so); DDL on a table the block has pending rows in is
//! refused until COMMIT.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Ident, TransactionAccessMode, TransactionIsolationLevel, TransactionMode,
};
use runnel_engine::Op;
use runnel_engine::log_codec::RowChanges;
use runnel_storage::WriteSet;

use super::{Outcome, Session, StatementResult};
use crate::error::{ServerError, ServerResult};
use crate::tables::{PendingTable, PendingWrites, write_logged};

/// The state of a session's open block.
#[derive(Debug, Default)]
pub(super) struct Block {
    /// Savepoints, oldest first: their names and the pending rows then.
    savepoints: Vec<(String, PendingWrites)>,
    read_only: bool,
    /// DDL ran inside the block (ROLLBACK cannot undo it).
    ran_ddl: bool,
}

/// Refuses the isolation levels a block cannot give; notes READ ONLY.
fn read_only_mode(modes: &[TransactionMode]) -> ServerResult<Option<bool>> {
    let mut read_only = None;
    for mode in modes {
        match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => read_only = Some(true),
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => {
                read_only = Some(false)
            }
            TransactionMode::IsolationLevel(
                TransactionIsolationLevel::ReadCommitted
                | TransactionIsolationLevel::ReadUncommitted,
            ) => {}
            TransactionMode::IsolationLevel(level) => {
                return Err(ServerError::NotSupported(format!(
                    "ISOLATION LEVEL {level} (transaction blocks are READ COMMITTED)"
                )));
            }
        }
    }
    Ok(read_only)
}

impl Session {
    /// Whether the session is inside BEGIN … COMMIT.
    pub fn in_block(&self) -> bool {
        self.block.is_some()
    }

    pub(super) fn begin(&mut self, modes: &[TransactionMode]) -> ServerResult<StatementResult> {
        let read_only = read_only_mode(modes)?;
        let mut result = StatementResult::from(Outcome::TransactionStart);
        match &mut self.block {
            Some(block) => {
                result.notices.push((
                    "WARNING",
                    "there is already a transaction in progress".into(),
                ));
                if let Some(read_only) = read_only {
                    block.read_only = read_only;
                }
            }
            None => {
                *self.block_writes.lock() = Some(PendingWrites::default());
                self.block = Some(Block {
                    read_only: read_only.unwrap_or(false),
                    ..Block::default()
                });
            }
        }
        Ok(result)
    }

    /// `SET TRANSACTION …`: the modes of the open block.
    pub(super) fn set_transaction(
        &mut self,
        modes: &[TransactionMode],
    ) -> ServerResult<StatementResult> {
        let read_only = read_only_mode(modes)?;
        let mut result = StatementResult::command("SET", None);
        match &mut self.block {
            Some(block) => {
                if let Some(read_only) = read_only {
                    block.read_only = read_only;
                }
            }
            None => result.notices.push((
                "WARNING",
                "SET TRANSACTION can only be used in transaction blocks".into(),
            )),
        }
        Ok(result)
    }

    /// COMMIT: the block's pending rows, all in one write.
    pub(super) async fn commit(&mut self) -> ServerResult<StatementResult> {
        let mut result = StatementResult::from(Outcome::TransactionEnd("COMMIT".into()));
        if self.block.is_none() {
            result
                .notices
                .push(("WARNING", "there is no transaction in progress".into()));
            return Ok(result);
        }
        let pending = self.block_writes.lock().take().unwrap_or_default();
        self.block = None;
        self.close_block_cursors();
        if pending.is_empty() {
            return Ok(result);
        }
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        for table in pending.tables() {
            let current = db.catalog.table(&table.def.name);
            if current.as_deref() != Some(table.def.as_ref()) {
                return Err(ServerError::SerializationFailure(format!(
                    "table {} was dropped or altered since this transaction wrote it",
                    table.def.name
                )));
            }
        }
        let commit_db = Arc::clone(&db);
        tokio::task::spawn_blocking(move || commit_pending(&commit_db, &pending))
            .await
            .map_err(|e| ServerError::Internal(format!("commit task failed: {e}")))??;
        Ok(result)
    }

    /// ROLLBACK: drops the block's pending rows.
    pub(super) fn rollback(&mut self) -> StatementResult {
        let mut result = StatementResult::from(Outcome::TransactionEnd("ROLLBACK".into()));
        match self.block.take() {
            None => result
                .notices
                .push(("WARNING", "there is no transaction in progress".into())),
            Some(block) if block.ran_ddl => result.notices.push((
                "WARNING",
                "ROLLBACK undid the block's row changes but not its DDL, which took effect when it ran".into(),
            )),
            Some(_) => {}
        }
        *self.block_writes.lock() = None;
        self.close_block_cursors();
        result
    }

    /// A failed block ends with COMMIT answering ROLLBACK, as in Postgres.
    pub fn end_failed_block(&mut self) {
        self.block = None;
        *self.block_writes.lock() = None;
        self.close_block_cursors();
    }

    pub(super) fn savepoint(&mut self, name: &Ident) -> ServerResult<StatementResult> {
        let name = runnel_planner::ddl::normalize_ident(name);
        let Some(block) = &mut self.block else {
            return Err(ServerError::NoActiveTransaction("SAVEPOINT".into()));
        };
        let pending = self.block_writes.lock().clone().unwrap_or_default();
        block.savepoints.push((name, pending));
        Ok(StatementResult::command("SAVEPOINT", None))
    }

    /// The index of the newest savepoint called `name`.
    fn find_savepoint(&self, name: &Ident, what: &str) -> ServerResult<usize> {
        let name = runnel_planner::ddl::normalize_ident(name);
        let block = self
            .block
            .as_ref()
            .ok_or_else(|| ServerError::NoActiveTransaction(what.into()))?;
        block
            .savepoints
            .iter()
            .rposition(|(n, _)| *n == name)
            .ok_or(ServerError::UndefinedSavepoint(name))
    }

    pub(super) fn release_savepoint(&mut self, name: &Ident) -> ServerResult<StatementResult> {
        let at = self.find_savepoint(name, "RELEASE SAVEPOINT")?;
        if let Some(block) = &mut self.block {
            block.savepoints.truncate(at);
        }
        Ok(StatementResult::command("RELEASE", None))
    }

    pub(super) fn rollback_to_savepoint(&mut self, name: &Ident) -> ServerResult<StatementResult> {
        let at = self.find_savepoint(name, "ROLLBACK TO SAVEPOINT")?;
        if let Some(block) = &mut self.block {
            block.savepoints.truncate(at + 1);
            let saved = block.savepoints[at].1.clone();
            *self.block_writes.lock() = Some(saved);
        }
        Ok(StatementResult::command("ROLLBACK", None))
    }

    /// Refuses `what` (a statement that writes) in a read-only block.
    pub(super) fn check_writable(&self, what: &str) -> ServerResult<()> {
        match &self.block {
            Some(block) if block.read_only => Err(ServerError::ReadOnlyTransaction(what.into())),
            _ => Ok(()),
        }
    }

    /// Notes DDL run inside a block, refusing it on a table with pending
    /// rows (they were encoded for the table as it was).
    pub(super) fn before_ddl(&mut self, tables: &[u64], what: &str) -> ServerResult<()> {
        self.check_writable(what)?;
        let Some(block) = &mut self.block else {
            return Ok(());
        };
        let pending = self.block_writes.lock();
        if let Some(pending) = pending.as_ref()
            && let Some(table) = tables.iter().find_map(|id| pending.table(*id))
            && !table.rows.is_empty()
        {
            return Err(ServerError::NotSupported(format!(
                "{what} of {} after this transaction block changed its rows; COMMIT first",
                table.def.name
            )));
        }
        block.ran_ddl = true;
        Ok(())
    }
}

/// Writes every table's pending rows and their change log entries in one
/// atomic write, after checking no other session changed them since.
/// Callers hold the database's write lock.
fn commit_pending(db: &crate::database::Database, pending: &PendingWrites) -> ServerResult<()> {
    let store = &db.store;
    let mut writes = WriteSet::new();
    let mut logged = vec![];
    for table in pending.tables() {
        table.check_unchanged(store)?;
        let log = db.runtime.logs().table_log(table.def.id);
        let changes = match &log {
            Some(_) => changes_of(table),
            None => RowChanges::default(),
        };
        for (key, value) in &table.rows {
            match value {
                Some(value) => writes.put_row(table.def.id, key, value),
                None => writes.delete_row(table.def.id, key),
            }
        }
        logged.push((table, changes, log));
    }
    let tables: Vec<_> = logged
        .iter()
        .map(|(table, changes, log)| (table.def.as_ref(), changes, log.as_deref()))
        .collect();
    write_logged(store, writes, &tables)
}

/// The change log entries of a table's pending rows: per row, the
/// committed version it replaces out and its new version in.
fn changes_of(table: &PendingTable) -> RowChanges {
    let mut changes = RowChanges::default();
    for (key, after) in &table.rows {
        let before = table.before.get(key).cloned().flatten();
        if before == *after {
            continue;
        }
        match (before, after) {
            (Some(old), Some(new)) => {
                changes.push(Op::UpdateDelete, key.clone(), old);
                changes.push(Op::UpdateInsert, key.clone(), new.clone());
            }
            (Some(old), None) => changes.push(Op::Delete, key.clone(), old),
            (None, Some(new)) => changes.push(Op::Insert, key.clone(), new.clone()),
            (None, None) => {}
        }
    }
    changes
}
