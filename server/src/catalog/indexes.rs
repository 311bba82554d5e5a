//! The catalog's view of secondary indexes: they live in their tables'
//! definitions, but their names share the relation name space.

use std::sync::Arc;

use runnel_planner::catalog::{IndexDef, RelationName, TableDef};
use runnel_storage::WriteSet;

use super::{Catalog, CatalogState};
use crate::error::ServerResult;

impl Catalog {
    /// The table that has an index called `name`, and the index.
    pub fn index(&self, name: &RelationName) -> Option<(Arc<TableDef>, IndexDef)> {
        let state = self.read();
        index_named(&state, name).map(|(t, i)| (Arc::clone(t), i.clone()))
    }

    /// Takes a storage id for a new index.
    pub fn new_index_id(&self) -> ServerResult<u64> {
        let mut state = self.write();
        let mut writes = WriteSet::new();
        let id = self.take_id(&mut state, &mut writes)?;
        self.persist(&mut state, writes)?;
        Ok(id)
    }
}

/// The table that has an index called `name` (in the table's schema),
/// and the index.
pub(super) fn index_named<'a>(
    state: &'a CatalogState,
    name: &RelationName,
) -> Option<(&'a Arc<TableDef>, &'a IndexDef)> {
    state
        .tables
        .iter()
        .filter(|(n, _)| n.schema == name.schema)
        .find_map(|(_, t)| {
            t.indexes
                .iter()
                .find(|i| i.name == name.name)
                .map(|i| (t, i))
        })
}
