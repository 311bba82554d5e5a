//! A table's secondary indexes (`UNIQUE` constraints, `CREATE INDEX`):
//! their entries are kept in the store beside the rows, changed in the
//! same write as the rows, and the unique ones are enforced.
//!
//! An entry's key is the indexed values (memcomparable, nulls marked)
//! followed by the row key, so every row has one entry per index and the
//! rows holding a value are found by a prefix scan. As in Postgres, rows
//! whose indexed values hold a null never conflict.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use runnel_planner::catalog::{IndexDef, TableDef};
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::RowDecoder;
use runnel_storage::{Store, WriteSet};

use crate::error::{ServerError, ServerResult};

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The indexed values, encoded.
    values: Vec<u8>,
    /// The key of the row that holds them.
    row: Vec<u8>,
    /// Some indexed value is null (the entry never conflicts).
    has_null: bool,
}

impl Entry {
    fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.values.len() + self.row.len());
        key.extend_from_slice(&self.values);
        key.extend_from_slice(&self.row);
        key
    }
}

/// Changes to a table's index entries, per index id, as they apply over
/// the store: a statement's, or all of a transaction block's.
#[derive(Debug, Clone, Default)]
pub struct IndexChanges {
    puts: BTreeMap<u64, BTreeSet<Entry>>,
    dels: BTreeMap<u64, BTreeSet<Entry>>,
    /// Indexes whose stored entries are all gone (the rows were rewritten
    /// by an ALTER TABLE): only `puts` holds theirs.
    cleared: BTreeSet<u64>,
}

impl IndexChanges {
    fn put(&mut self, index: u64, entry: Entry) {
        if !self.dels.entry(index).or_default().remove(&entry) {
            self.puts.entry(index).or_default().insert(entry);
        }
    }

    fn del(&mut self, index: u64, entry: Entry) {
        if !self.puts.entry(index).or_default().remove(&entry) && !self.cleared.contains(&index) {
            self.dels.entry(index).or_default().insert(entry);
        }
    }

    /// Drops every entry of `index`, stored or changed.
    pub fn clear(&mut self, index: u64) {
        self.puts.remove(&index);
        self.dels.remove(&index);
        self.cleared.insert(index);
    }

    /// Applies `later` (changes made over the view these give) after these.
    pub fn extend(&mut self, later: &IndexChanges) {
        for index in &later.cleared {
            self.clear(*index);
        }
        for (index, entries) in &later.dels {
            for entry in entries {
                self.del(*index, entry.clone());
            }
        }
        for (index, entries) in &later.puts {
            for entry in entries {
                self.put(*index, entry.clone());
            }
        }
    }

    /// Forgets the changes to index `index` (dropped).
    pub fn forget(&mut self, index: u64) {
        self.puts.remove(&index);
        self.dels.remove(&index);
        self.cleared.remove(&index);
    }

    /// Adds the changes to `writes`.
    pub fn add_to(&self, writes: &mut WriteSet) {
        for index in &self.cleared {
            writes.delete_all_rows(*index);
        }
        for (index, entries) in &self.dels {
            for entry in entries {
                writes.delete_row(*index, &entry.key());
            }
        }
        for (index, entries) in &self.puts {
            for entry in entries {
                writes.put_row(*index, &entry.key(), &[]);
            }
        }
    }
}

/// The table's schema with every column nullable: rows stored before a
/// column was added read it as null.
pub(crate) fn all_nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Per index of `indexes`, the entries of the encoded `rows` (key, value).
fn entries(
    def: &TableDef,
    indexes: &[&IndexDef],
    rows: &[(&[u8], &[u8])],
) -> ServerResult<Vec<Vec<Entry>>> {
    if rows.is_empty() {
        return Ok(vec![vec![]; indexes.len()]);
    }
    let mut decoder = RowDecoder::new(&all_nullable(&def.arrow_schema()), None)?;
    for (_, value) in rows {
        decoder.push(value)?;
    }
    let batch = decoder.finish()?;
    indexes
        .iter()
        .map(|index| {
            let columns: Vec<&ArrayRef> = index.columns.iter().map(|&c| batch.column(c)).collect();
            rows.iter()
                .enumerate()
                .map(|(i, (key, _))| {
                    let mut values = vec![];
                    encode_nullable_key(&columns, i, &mut values)?;
                    Ok(Entry {
                        values,
                        row: key.to_vec(),
                        has_null: columns.iter().any(|c| c.is_null(i)),
                    })
                })
                .collect()
        })
        .collect()
}

/// The encoded values `index` holds for row `row` of `columns` (the
/// table's columns), None when one of them is null (it never conflicts).
pub fn values_of(
    columns: &[ArrayRef],
    index: &IndexDef,
    row: usize,
) -> ServerResult<Option<Vec<u8>>> {
    let indexed: Vec<&ArrayRef> = index.columns.iter().map(|&c| &columns[c]).collect();
    if indexed.iter().any(|c| c.is_null(row)) {
        return Ok(None);
    }
    let mut values = vec![];
    encode_nullable_key(&indexed, row, &mut values)?;
    Ok(Some(values))
}

/// The key of the row that holds `values` in unique index `index`, in the
/// store with `base` (a block's changes) over it.
pub fn owner(
    store: &Store,
    base: Option<&IndexChanges>,
    index: u64,
    values: &[u8],
) -> ServerResult<Option<Vec<u8>>> {
    let empty = BTreeSet::new();
    let dels = base.and_then(|b| b.dels.get(&index)).unwrap_or(&empty);
    let stored = if base.is_some_and(|b| b.cleared.contains(&index)) {
        vec![]
    } else {
        store.table(index).keys_with_prefix(values)?
    };
    for key in stored {
        let entry = Entry {
            values: values.to_vec(),
            row: key[values.len()..].to_vec(),
            has_null: false,
        };
        if !dels.contains(&entry) {
            return Ok(Some(entry.row));
        }
    }
    let from = Entry {
        values: values.to_vec(),
        row: vec![],
        has_null: false,
    };
    Ok(base
        .and_then(|b| b.puts.get(&index))
        .and_then(|puts| puts.range(from..).find(|e| e.values == values))
        .map(|e| e.row.clone()))
}

/// One changed row: its key, the version it had and the one it gets
/// (None: absent).
pub type RowChange<'a> = (&'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);

/// The index changes that `rows` make.
pub fn changes_of_rows(def: &TableDef, rows: &[RowChange<'_>]) -> ServerResult<IndexChanges> {
    let mut changes = IndexChanges::default();
    if def.indexes.is_empty() {
        return Ok(changes);
    }
    let indexes: Vec<&IndexDef> = def.indexes.iter().collect();
    let old: Vec<(&[u8], &[u8])> = rows
        .iter()
        .filter_map(|(k, o, _)| o.map(|o| (*k, o)))
        .collect();
    let new: Vec<(&[u8], &[u8])> = rows
        .iter()
        .filter_map(|(k, _, n)| n.map(|n| (*k, n)))
        .collect();
    for (index, entries) in indexes.iter().zip(entries(def, &indexes, &old)?) {
        for entry in entries {
            changes.del(index.id, entry);
        }
    }
    for (index, entries) in indexes.iter().zip(entries(def, &indexes, &new)?) {
        for entry in entries {
            changes.put(index.id, entry);
        }
    }
    Ok(changes)
}

/// The entries of `index` for every row `rows` holds, checked to hold no
/// value twice when the index is unique (CREATE INDEX, ADD CONSTRAINT).
pub fn build_index(
    def: &TableDef,
    index: &IndexDef,
    rows: &[(&[u8], &[u8])],
    writes: &mut WriteSet,
) -> ServerResult<()> {
    writes.delete_all_rows(index.id);
    let mut changes = IndexChanges::default();
    for entry in entries(def, &[index], rows)?.remove(0) {
        changes.put(index.id, entry);
    }
    let mut seen = HashMap::new();
    for entry in changes.puts.get(&index.id).into_iter().flatten() {
        if index.unique && !entry.has_null && seen.insert(&entry.values, &entry.row).is_some() {
            return Err(violation(def, index, "is held by more than one row"));
        }
        writes.put_row(index.id, &entry.key(), &[]);
    }
    Ok(())
}

fn violation(def: &TableDef, index: &IndexDef, what: &str) -> ServerError {
    let columns: Vec<&str> = index
        .columns
        .iter()
        .map(|&c| def.columns[c].name.as_str())
        .collect();
    ServerError::UniqueConstraint {
        constraint: index.name.clone(),
        detail: format!("Key ({}) {what}.", columns.join(", ")),
    }
}

/// Fails when a unique index would hold a value for two rows once
/// `changes` apply over the store with `base` (the block's earlier
/// changes, for a statement inside a block) over it.
pub fn check_unique(
    def: &TableDef,
    store: &Store,
    base: Option<&IndexChanges>,
    changes: &IndexChanges,
) -> ServerResult<()> {
    let empty = BTreeSet::new();
    for index in def.indexes.iter().filter(|i| i.unique) {
        let Some(puts) = changes.puts.get(&index.id) else {
            continue;
        };
        let own_dels = changes.dels.get(&index.id).unwrap_or(&empty);
        let base_dels = base.and_then(|b| b.dels.get(&index.id)).unwrap_or(&empty);
        let base_puts = base.and_then(|b| b.puts.get(&index.id)).unwrap_or(&empty);
        let gone = |entry: &Entry| own_dels.contains(entry) || base_dels.contains(entry);
        let stored = !changes.cleared.contains(&index.id)
            && !base.is_some_and(|b| b.cleared.contains(&index.id));
        let mut seen: HashMap<&[u8], &[u8]> = HashMap::new();
        for entry in puts.iter().filter(|e| !e.has_null) {
            if seen.insert(&entry.values, &entry.row).is_some() {
                return Err(violation(def, index, "would be held by two rows"));
            }
            let keys = if stored {
                store.table(index.id).keys_with_prefix(&entry.values)?
            } else {
                vec![]
            };
            for key in keys {
                let other = Entry {
                    values: entry.values.clone(),
                    row: key[entry.values.len()..].to_vec(),
                    has_null: false,
                };
                if other.row != entry.row && !gone(&other) {
                    return Err(violation(def, index, "already exists"));
                }
            }
            let from = Entry {
                values: entry.values.clone(),
                row: vec![],
                has_null: false,
            };
            let held = base_puts
                .range(from..)
                .take_while(|b| b.values == entry.values)
                .any(|b| b.row != entry.row && !own_dels.contains(b));
            if held {
                return Err(violation(def, index, "already exists"));
            }
        }
    }
    Ok(())
}
