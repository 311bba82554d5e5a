//! Sinks in the catalog: named like relations (one namespace), persisted
//! as `sink/<id>` records, dropped with their job's staged changes and
//! state. A relation a sink reads cannot be dropped, even with CASCADE,
//! until the sink is.

use std::collections::BTreeSet;
use std::sync::Arc;

use runnel_planner::catalog::{RelationName, SinkDef};
use runnel_storage::WriteSet;

use super::{Catalog, CatalogState, encode};
use crate::error::{ServerError, ServerResult};

pub(super) const SINK_PREFIX: &[u8] = b"sink/";

fn sink_key(id: u64) -> Vec<u8> {
    format!("sink/{id:020}").into_bytes()
}

impl Catalog {
    /// Every sink.
    pub fn sinks(&self) -> Vec<Arc<SinkDef>> {
        self.read().sinks.values().cloned().collect()
    }

    /// The sink `name`, if there is one.
    pub fn sink(&self, name: &RelationName) -> Option<Arc<SinkDef>> {
        self.read().sinks.get(name).cloned()
    }

    /// Creates a sink from `build(id)`, which runs without the catalog
    /// locked.
    pub fn create_sink(
        &self,
        name: &RelationName,
        build: impl FnOnce(u64) -> ServerResult<SinkDef>,
    ) -> ServerResult<Arc<SinkDef>> {
        let id = self.reserve_id(name)?;
        let def = Arc::new(build(id)?);
        let mut state = self.write();
        self.check_free(&state, name)?;
        let mut writes = WriteSet::new();
        writes.put_meta(&sink_key(id), &encode(def.as_ref())?);
        clear_sink_data(id, &mut writes);
        self.persist(&mut state, writes)?;
        state.sinks.insert(name.clone(), Arc::clone(&def));
        Ok(def)
    }

    /// Drops sink `name` with what it staged and its job's state; returns
    /// it, or None when there is no such sink.
    pub fn drop_sink(&self, name: &RelationName) -> ServerResult<Option<Arc<SinkDef>>> {
        let mut state = self.write();
        let Some(def) = state.sinks.get(name).cloned() else {
            return Ok(None);
        };
        let mut writes = WriteSet::new();
        writes.delete_meta(&sink_key(def.id));
        clear_sink_data(def.id, &mut writes);
        self.persist(&mut state, writes)?;
        state.sinks.remove(name);
        Ok(Some(def))
    }
}

/// Deletes a sink's staged changes and its job's state.
fn clear_sink_data(id: u64, writes: &mut WriteSet) {
    writes.delete_all_changes(id);
    runnel_storage::state_table::delete_state_tables(id << 12, (id + 1) << 12, writes);
    writes.delete_meta(&runnel_engine::runtime::failed_job_key(id));
}

/// Refuses to drop `name` (and the views that read it) while a sink reads
/// any of them.
pub(super) fn check_no_sink_reads(
    state: &CatalogState,
    name: &RelationName,
    dependants: &BTreeSet<RelationName>,
) -> ServerResult<()> {
    let readers: Vec<String> = state
        .sinks
        .values()
        .filter(|sink| {
            sink.depends_on
                .iter()
                .any(|d| d == name || dependants.contains(d))
        })
        .map(|sink| sink.name.to_string())
        .collect();
    if readers.is_empty() {
        return Ok(());
    }
    Err(ServerError::DependentObjects {
        what: name.to_string(),
        dependants: format!("sink {} (DROP SINK first)", readers.join(", ")),
    })
}
