//! A transaction block's draft of the catalog: DDL inside a block changes
//! a copy of the catalog whose writes are collected, and COMMIT installs
//! the copy and writes everything in one atomic write — or fails with
//! 40001 when another session changed the catalog meanwhile.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};

use runnel_storage::WriteSet;

use super::Catalog;
use crate::error::{ServerError, ServerResult};

/// What a draft will write at COMMIT.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    /// The live catalog's version the draft was copied from.
    base_version: u64,
    pub(super) writes: WriteSet,
    /// Tables whose rows the draft rewrote (ALTER TABLE), with a digest of
    /// their rows when read: other sessions must not have changed them.
    rewritten: Vec<(u64, u64)>,
    hasher: RandomState,
}

impl Catalog {
    /// A copy of the catalog for a transaction block's DDL: its changes
    /// are visible through it alone and written by
    /// [`Catalog::commit_draft`].
    pub fn draft(&self) -> Arc<Catalog> {
        let state = self.read().clone();
        Arc::new(Catalog {
            store: self.store.clone(),
            draft: Some(Mutex::new(Draft {
                base_version: state.version,
                writes: WriteSet::new(),
                rewritten: vec![],
                hasher: RandomState::new(),
            })),
            state: RwLock::new(state),
        })
    }

    /// A copy of this draft as it stands, to return to (SAVEPOINT); None
    /// for the live catalog. Sequences stay shared: their counters are
    /// not transactional.
    pub fn snapshot_draft(&self) -> Option<Arc<Catalog>> {
        let draft = self
            .draft
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(Arc::new(Catalog {
            store: self.store.clone(),
            state: RwLock::new(self.read().clone()),
            draft: Some(Mutex::new(draft)),
        }))
    }

    /// True for a transaction block's draft.
    pub fn is_draft(&self) -> bool {
        self.draft.is_some()
    }

    /// Notes, in a draft, that table `table_id`'s rows were read to be
    /// rewritten; COMMIT fails if they changed since. Blocking.
    pub fn note_rewrite(&self, table_id: u64) -> ServerResult<()> {
        let Some(draft) = &self.draft else {
            return Ok(());
        };
        let mut draft = draft.lock().unwrap_or_else(|p| p.into_inner());
        let digest = self
            .store
            .table(table_id)
            .digest(draft.hasher.build_hasher())?;
        draft.rewritten.push((table_id, digest));
        Ok(())
    }

    /// Makes `draft` (taken from this catalog) the catalog: `finish` gets
    /// the draft's writes, adds its own (the block's rows) and writes them
    /// all at once; the draft's state becomes live when that succeeded.
    /// Callers hold the database's write lock, so no rows change meanwhile.
    pub fn commit_draft(
        &self,
        draft: &Catalog,
        finish: impl FnOnce(WriteSet) -> ServerResult<()>,
    ) -> ServerResult<()> {
        let mut state = self.write();
        let Some(pending) = &draft.draft else {
            return Err(ServerError::Internal(
                "commit of a catalog that is no draft".into(),
            ));
        };
        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
        if state.version != pending.base_version {
            return Err(ServerError::SerializationFailure(
                "another session changed the catalog (ran DDL) while this transaction block ran DDL; run the block again".into(),
            ));
        }
        for (table_id, digest) in &pending.rewritten {
            let now = self
                .store
                .table(*table_id)
                .digest(pending.hasher.build_hasher())?;
            if now != *digest {
                return Err(ServerError::SerializationFailure(
                    "another session changed the rows of a table this transaction block altered; run the block again".into(),
                ));
            }
        }
        let new_state = draft.read().clone();
        let mut writes = std::mem::take(&mut pending.writes);
        for cell in new_state.sequences.values() {
            if let Some((key, value)) = cell.take_unpersisted_record()? {
                writes.put_meta(&key, &value);
            }
        }
        finish(writes)?;
        *state = new_state;
        Ok(())
    }
}
