//! The catalog's sequences: created and dropped like relations (in the
//! same name space, inside transaction blocks with the rest of a draft),
//! while their counters advance outside any transaction.

use std::sync::Arc;

use runnel_planner::catalog::RelationName;
use runnel_storage::WriteSet;

use super::Catalog;
use crate::error::{ServerError, ServerResult};
use crate::sequences::{SequenceCell, SequenceDef, validate};

impl Catalog {
    /// The sequence called `name`.
    pub fn sequence(&self, name: &RelationName) -> Option<Arc<SequenceCell>> {
        self.read().sequences.get(name).cloned()
    }

    /// Every sequence.
    pub fn sequences(&self) -> Vec<Arc<SequenceCell>> {
        self.read().sequences.values().cloned().collect()
    }

    /// Creates sequence `def`.
    pub fn create_sequence(&self, def: SequenceDef) -> ServerResult<()> {
        let mut state = self.write();
        self.check_free(&state, &def.name)?;
        let mut writes = WriteSet::new();
        let cell = self.new_sequence(def, &mut writes)?;
        self.persist(&mut state, writes)?;
        state.sequences.insert(cell.def().name.clone(), cell);
        Ok(())
    }

    /// A new sequence cell, its record added to `writes` (in a draft the
    /// record is written at COMMIT, with the counter as it is then).
    pub(super) fn new_sequence(
        &self,
        def: SequenceDef,
        writes: &mut WriteSet,
    ) -> ServerResult<Arc<SequenceCell>> {
        validate(&def)?;
        let cell = SequenceCell::new(def, self.draft.is_none());
        if self.draft.is_none() {
            let (key, value) = cell.record()?;
            writes.put_meta(&key, &value);
        }
        Ok(Arc::new(cell))
    }

    /// Drops sequence `name`; false when there is none.
    pub fn drop_sequence(&self, name: &RelationName) -> ServerResult<bool> {
        let mut state = self.write();
        if !state.sequences.contains_key(name) {
            return Ok(false);
        }
        let mut writes = WriteSet::new();
        writes.delete_meta(&crate::sequences::record_key(name));
        self.persist(&mut state, writes)?;
        state.sequences.remove(name);
        Ok(true)
    }

    /// Refuses a name a relation, sequence or index already has.
    pub fn check_name_free(&self, name: &RelationName) -> ServerResult<()> {
        let state = self.read();
        self.check_free(&state, name)
    }
}

/// Refuses a second definition of the same sequence in one statement.
pub(super) fn check_distinct(sequences: &[SequenceDef]) -> ServerResult<()> {
    for (i, def) in sequences.iter().enumerate() {
        if sequences[..i].iter().any(|d| d.name == def.name) {
            return Err(ServerError::DuplicateTable(def.name.name.clone()));
        }
    }
    Ok(())
}
