//! INSERT … ON CONFLICT at the storage level: which proposed rows conflict
//! with existing ones on the arbiter (primary key or unique index), and
//! writing the inserts and the updates they turn into in one write.

use std::collections::HashSet;

use datafusion::arrow::array::RecordBatch;
use runnel_planner::catalog::TableDef;
use runnel_storage::Store;

use super::write::{
    RowIds, StatementWrites, WriteTarget, add_inserts, add_updates, apply, conform, primary_key,
};
use crate::error::{ServerError, ServerResult};

/// INSERT … ON CONFLICT DO UPDATE: inserts `inserts` and replaces the
/// rows at `old_keys` by `updates` (same order, same keys), in one write.
pub fn upsert_rows(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    inserts: &[RecordBatch],
    old_keys: &[Vec<u8>],
    updates: &[RecordBatch],
    target: WriteTarget<'_>,
) -> ServerResult<u64> {
    let mut statement = StatementWrites::default();
    let inserted = add_inserts(def, store, row_ids, inserts, &mut statement, Some(&target))?;
    let updated: HashSet<Vec<u8>> =
        add_updates(def, store, old_keys, updates, &target, &mut statement)?;
    if updated.iter().any(|k| !old_keys.contains(k)) {
        return Err(ServerError::NotSupported(
            "ON CONFLICT DO UPDATE that changes the primary key".into(),
        ));
    }
    apply(def, store, target, statement)?;
    Ok(inserted + old_keys.len() as u64)
}

/// What an INSERT … ON CONFLICT finds for one proposed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// No row holds its arbiter values: it is inserted.
    None,
    /// The row at this key (its stored version) holds them.
    Existing(Vec<u8>, Vec<u8>),
    /// An earlier proposed row of the statement has them.
    Repeat,
}

/// Which constraint decides that a proposed row conflicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arbiter {
    PrimaryKey,
    /// A unique index, by id.
    Index(u64),
    /// Any (ON CONFLICT DO NOTHING without a target).
    Any,
}

/// For every proposed row of `batches` (the table's columns), what it
/// conflicts with on `arbiter`, as `target` sees the table.
pub fn find_conflicts(
    def: &TableDef,
    store: &Store,
    target: &WriteTarget<'_>,
    batches: &[RecordBatch],
    arbiter: &Arbiter,
) -> ServerResult<Vec<Conflict>> {
    let base = match target {
        WriteTarget::Block(pending) => Some(&pending.indexes),
        WriteTarget::Store(_) => None,
    };
    let indexes: Vec<&runnel_planner::catalog::IndexDef> = def
        .indexes
        .iter()
        .filter(|i| {
            i.unique
                && match arbiter {
                    Arbiter::Index(id) => i.id == *id,
                    Arbiter::Any => true,
                    Arbiter::PrimaryKey => false,
                }
        })
        .collect();
    let use_key = matches!(arbiter, Arbiter::PrimaryKey | Arbiter::Any);
    let mut seen_keys = HashSet::new();
    let mut seen_values: Vec<HashSet<Vec<u8>>> = vec![HashSet::new(); indexes.len()];
    let mut out = vec![];
    for batch in batches {
        let columns = conform(def, batch)?;
        for row in 0..batch.num_rows() {
            let mut found = Conflict::None;
            if use_key && let Some(key) = primary_key(def, &columns, row)? {
                if !seen_keys.insert(key.clone()) {
                    found = Conflict::Repeat;
                } else if let Some(value) = target.get(store, def, &key)? {
                    found = Conflict::Existing(key, value);
                }
            }
            for (i, index) in indexes.iter().enumerate() {
                if found != Conflict::None {
                    break;
                }
                let Some(values) = super::indexes::values_of(&columns, index, row)? else {
                    continue;
                };
                if !seen_values[i].insert(values.clone()) {
                    found = Conflict::Repeat;
                } else if let Some(owner) = super::indexes::owner(store, base, index.id, &values)? {
                    let value = target.get(store, def, &owner)?.ok_or_else(|| {
                        ServerError::Internal(format!("index of {} names a missing row", def.name))
                    })?;
                    found = Conflict::Existing(owner, value);
                }
            }
            out.push(found);
        }
    }
    Ok(out)
}
