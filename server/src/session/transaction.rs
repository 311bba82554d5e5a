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
//! DDL inside a block changes a draft of the catalog ([`Catalog::draft`])
//! that only the block sees; COMMIT writes the draft's changes together
//! with the pending rows, ROLLBACK drops both. Another session's DDL in
//! the meantime fails the COMMIT (40001). DDL on a table the block has
//! pending rows in is refused until COMMIT, and statements that start or
//! stop jobs (materialized views, sources, sinks) are refused inside a
//! block (25001): a job cannot wait for COMMIT.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Ident, TransactionAccessMode, TransactionIsolationLevel, TransactionMode,
};
use runnel_engine::Op;
use runnel_engine::log_codec::RowChanges;
use runnel_storage::WriteSet;

use super::{Outcome, Session, StatementResult};
use crate::catalog::Catalog;
use crate::error::{ServerError, ServerResult};
use crate::tables::{PendingTable, PendingWrites, write_logged};

/// The state of a session's open block.
#[derive(Debug, Default)]
pub(super) struct Block {
    /// Savepoints, oldest first.
    savepoints: Vec<Savepoint>,
    read_only: bool,
    /// The catalog as the block's DDL changed it, once it ran DDL.
    pub(super) draft: Option<Arc<Catalog>>,
}

/// A savepoint: its name, and the block's rows and draft then.
#[derive(Debug)]
struct Savepoint {
    name: String,
    pending: PendingWrites,
    draft: Option<Arc<Catalog>>,
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

    /// COMMIT: the block's pending rows and DDL, all in one write.
    pub(super) async fn commit(&mut self) -> ServerResult<StatementResult> {
        let mut result = StatementResult::from(Outcome::TransactionEnd("COMMIT".into()));
        let Some(block) = self.block.take() else {
            result
                .notices
                .push(("WARNING", "there is no transaction in progress".into()));
            return Ok(result);
        };
        self.release_transaction_locks();
        let pending = self.block_writes.lock().take().unwrap_or_default();
        self.close_block_cursors();
        if block.draft.is_some() {
            self.resolve_in_current_catalog()?;
        }
        if pending.is_empty() && block.draft.is_none() {
            return Ok(result);
        }
        let db = Arc::clone(&self.db);
        let _write = db.write_lock.lock().await;
        let catalog = block.draft.as_ref().unwrap_or(&db.catalog);
        for table in pending.tables() {
            let current = catalog.table(&table.def.name);
            if current.as_deref() != Some(table.def.as_ref()) {
                return Err(ServerError::SerializationFailure(format!(
                    "table {} was dropped or altered since this transaction wrote it",
                    table.def.name
                )));
            }
        }
        let commit_db = Arc::clone(&db);
        tokio::task::spawn_blocking(move || match block.draft {
            Some(draft) => commit_db.catalog.commit_draft(&draft, |writes| {
                commit_pending(&commit_db, &pending, writes)
            }),
            None => commit_pending(&commit_db, &pending, WriteSet::new()),
        })
        .await
        .map_err(|e| ServerError::Internal(format!("commit task failed: {e}")))??;
        Ok(result)
    }

    /// ROLLBACK: drops the block's pending rows and draft.
    pub(super) fn rollback(&mut self) -> ServerResult<StatementResult> {
        let mut result = StatementResult::from(Outcome::TransactionEnd("ROLLBACK".into()));
        if self.block.is_none() {
            result
                .notices
                .push(("WARNING", "there is no transaction in progress".into()));
        }
        self.end_failed_block()?;
        Ok(result)
    }

    /// Ends the block without writing anything: ROLLBACK, and a failed
    /// block's COMMIT (which answers ROLLBACK, as in Postgres).
    pub fn end_failed_block(&mut self) -> ServerResult<()> {
        let block = self.block.take();
        self.release_transaction_locks();
        *self.block_writes.lock() = None;
        self.close_block_cursors();
        if block.is_some_and(|b| b.draft.is_some()) {
            self.resolve_in_current_catalog()?;
        }
        Ok(())
    }

    pub(super) fn savepoint(&mut self, name: &Ident) -> ServerResult<StatementResult> {
        let name = runnel_planner::ddl::normalize_ident(name);
        let Some(block) = &mut self.block else {
            return Err(ServerError::NoActiveTransaction("SAVEPOINT".into()));
        };
        let pending = self.block_writes.lock().clone().unwrap_or_default();
        let draft = block.draft.as_ref().and_then(|d| d.snapshot_draft());
        block.savepoints.push(Savepoint {
            name,
            pending,
            draft,
        });
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
            .rposition(|s| s.name == name)
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
            let saved = &block.savepoints[at];
            *self.block_writes.lock() = Some(saved.pending.clone());
            // The savepoint keeps its own copy: the block may return to it
            // again.
            let draft = saved.draft.as_ref().and_then(|d| d.snapshot_draft());
            let changed = draft.is_some() || block.draft.is_some();
            block.draft = draft;
            if changed {
                self.resolve_in_current_catalog()?;
            }
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

    /// Before DDL: inside a block, starts the block's draft of the catalog
    /// if this is its first DDL.
    pub(super) fn before_ddl(&mut self, what: &str) -> ServerResult<()> {
        self.check_writable(what)?;
        let Some(block) = &mut self.block else {
            return Ok(());
        };
        if block.draft.is_none() {
            block.draft = Some(self.db.catalog.draft());
            self.resolve_in_current_catalog()?;
        }
        Ok(())
    }

    /// After DDL inside a block: forgets the pending rows of tables it
    /// dropped.
    pub(super) fn after_ddl(&mut self) {
        let Some(draft) = self.block.as_ref().and_then(|b| b.draft.clone()) else {
            return;
        };
        if let Some(pending) = self.block_writes.lock().as_mut() {
            let gone: Vec<u64> = pending
                .tables()
                .map(|t| t.def.id)
                .filter(|id| draft.table_by_id(*id).is_none())
                .collect();
            for id in gone {
                pending.forget(id);
            }
        }
    }

    /// Gives back the advisory locks taken for the transaction.
    pub(super) fn release_transaction_locks(&self) {
        self.db
            .advisory_locks
            .release_all(self.id, Some(crate::advisory_locks::Scope::Transaction));
    }

    /// Refuses `what`, a statement that starts or stops jobs, inside a
    /// block.
    pub(super) fn refuse_in_block(&self, what: &str) -> ServerResult<()> {
        if self.in_block() {
            return Err(ServerError::ActiveTransaction(what.into()));
        }
        Ok(())
    }
}

/// Writes every table's pending rows and their change log entries in one
/// atomic write with `writes` (the block's DDL), after checking no other
/// session changed them since.
/// Callers hold the database's write lock.
fn commit_pending(
    db: &crate::database::Database,
    pending: &PendingWrites,
    mut writes: WriteSet,
) -> ServerResult<()> {
    let store = &db.store;
    let mut logged = vec![];
    for table in pending.tables() {
        table.check_unchanged(store)?;
        if !table.def.indexes.is_empty() {
            crate::tables::check_unique(&table.def, store, None, &table.indexes)?;
            table.indexes.add_to(&mut writes);
        }
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
