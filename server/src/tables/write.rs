//! Applying INSERT, UPDATE and DELETE to a stored table: constraint checks,
//! key assignment and one atomic write per statement.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use runnel_engine::Op;
use runnel_engine::log::ChangeLog;
use runnel_engine::log_codec::RowChanges;
use runnel_engine::runtime::table_log_seq_key;
use runnel_planner::catalog::TableDef;
use runnel_planner::types::ColumnType;
use runnel_storage::key_codec::encode_key;
use runnel_storage::row_codec::encode_row;
use runnel_storage::{Store, WriteSet};

use super::indexes::{IndexChanges, build_index, changes_of_rows, check_unique};
use super::pending::PendingTable;

use crate::error::{ServerError, ServerResult};
use crate::streaming::table_stream_schema;

/// Where a statement's rows go: straight to the store (with the table's
/// change log, when views read it), or into a transaction block's pending
/// rows.
pub enum WriteTarget<'a> {
    Store(Option<&'a ChangeLog>),
    Block(&'a mut PendingTable),
}

impl WriteTarget<'_> {
    /// The row at `key` as the statement sees it.
    pub(super) fn get(
        &self,
        store: &Store,
        def: &TableDef,
        key: &[u8],
    ) -> ServerResult<Option<Vec<u8>>> {
        match self {
            WriteTarget::Store(_) => Ok(store.table(def.id).get(key)?),
            WriteTarget::Block(pending) => pending.get(store, key),
        }
    }

    fn contains(&self, store: &Store, def: &TableDef, key: &[u8]) -> ServerResult<bool> {
        match self {
            WriteTarget::Store(_) => Ok(store.table(def.id).contains(key)?),
            WriteTarget::Block(pending) => pending.contains(store, key),
        }
    }

    /// Whether the change log wants the rows' old versions.
    fn logs(&self) -> bool {
        matches!(self, WriteTarget::Store(Some(_)))
    }
}

/// A statement's row writes (key, new version or None for a delete), in
/// order, and the change log entries they make.
#[derive(Default)]
pub(super) struct StatementWrites {
    pub(super) rows: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub(super) changes: RowChanges,
}

/// Applies a statement's writes: in one atomic write with its change log
/// entries and index entries, or into the block's pending rows; fails
/// without writing when a unique index would hold a value twice.
pub(super) fn apply(
    def: &TableDef,
    store: &Store,
    target: WriteTarget<'_>,
    statement: StatementWrites,
) -> ServerResult<()> {
    let index_changes = if def.indexes.is_empty() {
        None
    } else {
        Some(statement_index_changes(
            def,
            store,
            &target,
            &statement.rows,
        )?)
    };
    match target {
        WriteTarget::Block(pending) => {
            if let Some(changes) = &index_changes {
                check_unique(def, store, Some(&pending.indexes), changes)?;
            }
            for (key, value) in statement.rows {
                pending.write(store, key, value)?;
            }
            if let Some(changes) = &index_changes {
                pending.indexes.extend(changes);
            }
            Ok(())
        }
        WriteTarget::Store(log) => {
            let mut writes = WriteSet::new();
            if let Some(changes) = &index_changes {
                check_unique(def, store, None, changes)?;
                changes.add_to(&mut writes);
            }
            for (key, value) in &statement.rows {
                match value {
                    Some(value) => writes.put_row(def.id, key, value),
                    None => writes.delete_row(def.id, key),
                }
            }
            write_logged(store, writes, &[(def, &statement.changes, log)])
        }
    }
}

/// The index changes of a statement's row writes: per row it writes, the
/// version the statement found and the last it wrote.
fn statement_index_changes(
    def: &TableDef,
    store: &Store,
    target: &WriteTarget<'_>,
    rows: &[(Vec<u8>, Option<Vec<u8>>)],
) -> ServerResult<IndexChanges> {
    let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
    for (key, value) in rows {
        last.insert(key, value.as_deref());
    }
    let mut found = Vec::with_capacity(last.len());
    for key in last.keys() {
        found.push(target.get(store, def, key)?);
    }
    let changes: Vec<_> = last
        .iter()
        .zip(&found)
        .map(|((key, new), old)| (*key, old.as_deref(), *new))
        .collect();
    changes_of_rows(def, &changes)
}

/// Writes `writes` and every table's change log entries in one atomic
/// write, then hands the changes to the logs' readers.
pub fn write_logged(
    store: &Store,
    mut writes: WriteSet,
    tables: &[(&TableDef, &RowChanges, Option<&ChangeLog>)],
) -> ServerResult<()> {
    let mut appends = vec![];
    for (def, changes, log) in tables {
        let Some(log) = log else { continue };
        if changes.is_empty() {
            continue;
        }
        let chunk = changes.to_chunk(&table_stream_schema(def))?;
        let appender = log.appender();
        let seq = appender.next_seq();
        writes.put_change(def.id, seq, &changes.encode());
        writes.put_meta(&table_log_seq_key(def.id), &(seq + 1).to_be_bytes());
        appends.push((appender, chunk));
    }
    if !writes.is_empty() {
        store.write(writes)?;
    }
    for (mut appender, chunk) in appends {
        appender.append(chunk);
    }
    Ok(())
}

/// Hands out hidden row ids for tables without a primary key. Callers hold
/// the database's write lock, so ids are handed out one statement at a time.
#[derive(Debug, Default)]
pub struct RowIds {
    next: Mutex<HashMap<u64, u64>>,
}

impl RowIds {
    /// Reserves `count` consecutive ids for table `def`, returning the first.
    fn reserve(&self, def: &TableDef, store: &Store, count: u64) -> ServerResult<u64> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let first = match next.get(&def.id) {
            Some(n) => *n,
            None => match store.table(def.id).last_key()? {
                Some(key) => {
                    let bytes: [u8; 8] = key.as_slice().try_into().map_err(|_| {
                        ServerError::Internal(format!("row id of {} is not 8 bytes", def.name))
                    })?;
                    u64::from_be_bytes(bytes) + 1
                }
                None => 1,
            },
        };
        next.insert(def.id, first + count);
        Ok(first)
    }

    /// Forgets the counter of a dropped or truncated table.
    pub fn forget(&self, table_id: u64) {
        self.next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&table_id);
    }
}

/// Brings a batch to the table's exact column types and checks NOT NULL and
/// varchar lengths.
pub(super) fn conform(def: &TableDef, batch: &RecordBatch) -> ServerResult<Vec<ArrayRef>> {
    if batch.num_columns() != def.columns.len() {
        return Err(ServerError::Internal(format!(
            "{} values for {} columns of {}",
            batch.num_columns(),
            def.columns.len(),
            def.name
        )));
    }
    let mut columns = Vec::with_capacity(def.columns.len());
    for (column, array) in def.columns.iter().zip(batch.columns()) {
        let wanted = column.column_type.arrow_type();
        let array = if array.data_type() == &wanted {
            Arc::clone(array)
        } else {
            cast(array, &wanted).map_err(|e| ServerError::DatatypeMismatch {
                column: column.name.clone(),
                expected: column.column_type.pg_name(),
                found: format!("{} ({e})", array.data_type()),
            })?
        };
        if column.not_null && array.null_count() > 0 {
            return Err(ServerError::NotNullViolation {
                table: def.name.name.clone(),
                column: column.name.clone(),
            });
        }
        if let ColumnType::Varchar {
            max_length: Some(max),
        } = column.column_type
        {
            let strings = array.as_string::<i32>();
            if strings
                .iter()
                .flatten()
                .any(|s| s.len() > max as usize && s.chars().count() > max as usize)
            {
                return Err(ServerError::StringTooLong {
                    column: column.name.clone(),
                    max,
                });
            }
        }
        if matches!(column.column_type, ColumnType::Json | ColumnType::Jsonb) {
            check_json(&column.name, &array)?;
        }
        columns.push(array);
    }
    Ok(columns)
}

fn check_json(column: &str, array: &ArrayRef) -> ServerResult<()> {
    for text in array.as_string::<i32>().iter().flatten() {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(ServerError::InvalidJson {
                column: column.into(),
                reason: e.to_string(),
            });
        }
    }
    Ok(())
}

/// The primary key of `row`, or None for tables keyed by row id.
pub(super) fn primary_key(
    def: &TableDef,
    columns: &[ArrayRef],
    row: usize,
) -> ServerResult<Option<Vec<u8>>> {
    if def.primary_key.is_empty() {
        return Ok(None);
    }
    let key_columns: Vec<&ArrayRef> = def.primary_key.iter().map(|&i| &columns[i]).collect();
    let mut key = Vec::new();
    encode_key(&key_columns, row, &mut key)?;
    Ok(Some(key))
}

fn describe_key(def: &TableDef, columns: &[ArrayRef], row: usize) -> String {
    def.primary_key
        .iter()
        .map(|&i| {
            datafusion::arrow::util::display::array_value_to_string(&columns[i], row)
                .unwrap_or_else(|_| "?".into())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts every row of `batches`; fails without writing anything on the
/// first constraint violation. Returns the number of rows written.
pub fn insert_rows(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    batches: &[RecordBatch],
    target: WriteTarget<'_>,
) -> ServerResult<u64> {
    let mut statement = StatementWrites::default();
    let total = add_inserts(def, store, row_ids, batches, &mut statement, Some(&target))?;
    apply(def, store, target, statement)?;
    Ok(total)
}

/// Replaces every row of the table by `batches` (ALTER TABLE), adding the
/// changes to `writes`.
pub fn rewrite_rows(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    batches: &[RecordBatch],
    writes: &mut WriteSet,
) -> ServerResult<()> {
    writes.delete_all_rows(def.id);
    row_ids.forget(def.id);
    let mut statement = StatementWrites::default();
    add_inserts(def, store, row_ids, batches, &mut statement, None)?;
    for (key, value) in &statement.rows {
        if let Some(value) = value {
            writes.put_row(def.id, key, value);
        }
    }
    let rows: Vec<(&[u8], &[u8])> = statement
        .rows
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
        .collect();
    for index in &def.indexes {
        build_index(def, index, &rows, writes)?;
    }
    Ok(())
}

/// Replaces every row of a table inside a block (ALTER TABLE): the rows
/// at `old_keys` go, the rows of `batches` (under `def`, the table's new
/// definition) come, all as the block's pending rows.
pub fn rewrite_into_block(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    old_keys: &[Vec<u8>],
    batches: &[RecordBatch],
    pending: &mut PendingTable,
) -> ServerResult<()> {
    let mut inserts = StatementWrites::default();
    add_inserts(def, store, row_ids, batches, &mut inserts, None)?;
    // Every index starts again from the new rows (the old rows may be in
    // the layout before the ALTER).
    let mut changes = IndexChanges::default();
    for index in &def.indexes {
        changes.clear(index.id);
    }
    let rows: Vec<_> = inserts
        .rows
        .iter()
        .map(|(key, value)| (key.as_slice(), None, value.as_deref()))
        .collect();
    changes.extend(&changes_of_rows(def, &rows)?);
    check_unique(def, store, None, &changes)?;
    for key in old_keys {
        pending.write(store, key.clone(), None)?;
    }
    for (key, value) in inserts.rows {
        pending.write(store, key, value)?;
    }
    pending.indexes.extend(&changes);
    Ok(())
}

/// Adds the inserts of `batches`; `target` (None: the table is being
/// rewritten) is where existing keys are looked up.
pub(super) fn add_inserts(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    batches: &[RecordBatch],
    statement: &mut StatementWrites,
    target: Option<&WriteTarget<'_>>,
) -> ServerResult<u64> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut seen = HashSet::new();
    let mut next_id = if def.primary_key.is_empty() && total > 0 {
        row_ids.reserve(def, store, total as u64)?
    } else {
        0
    };
    let logs = target.is_some_and(WriteTarget::logs);
    let mut value = Vec::new();
    for batch in batches {
        let columns = conform(def, batch)?;
        for row in 0..batch.num_rows() {
            let key = match primary_key(def, &columns, row)? {
                Some(key) => {
                    let stored = match target {
                        Some(target) => target.contains(store, def, &key)?,
                        None => false,
                    };
                    if !seen.insert(key.clone()) || stored {
                        return Err(ServerError::UniqueViolation {
                            table: def.name.name.clone(),
                            key: describe_key(def, &columns, row),
                        });
                    }
                    key
                }
                None => {
                    next_id += 1;
                    (next_id - 1).to_be_bytes().to_vec()
                }
            };
            value.clear();
            encode_row(&columns, row, &mut value)?;
            if logs {
                statement
                    .changes
                    .push(Op::Insert, key.clone(), value.clone());
            }
            statement.rows.push((key, Some(value.clone())));
        }
    }
    Ok(total as u64)
}

/// Replaces the rows at `old_keys` by the rows of `new_rows` (same order).
pub fn update_rows(
    def: &TableDef,
    store: &Store,
    old_keys: &[Vec<u8>],
    new_rows: &[RecordBatch],
    target: WriteTarget<'_>,
) -> ServerResult<u64> {
    let mut statement = StatementWrites::default();
    add_updates(def, store, old_keys, new_rows, &target, &mut statement)?;
    apply(def, store, target, statement)?;
    Ok(old_keys.len() as u64)
}

/// Adds the replacement of the rows at `old_keys` by `new_rows`; returns
/// the keys written.
pub(super) fn add_updates(
    def: &TableDef,
    store: &Store,
    old_keys: &[Vec<u8>],
    new_rows: &[RecordBatch],
    target: &WriteTarget<'_>,
    statement: &mut StatementWrites,
) -> ServerResult<HashSet<Vec<u8>>> {
    let deleted: HashSet<&[u8]> = old_keys.iter().map(Vec::as_slice).collect();
    if deleted.len() != old_keys.len() {
        // UPDATE … FROM matched a row more than once.
        return Err(ServerError::CardinalityViolation(
            "UPDATE would change a row more than once; make the FROM join match each row once"
                .into(),
        ));
    }
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    let mut keys = old_keys.iter();
    let mut value = Vec::new();
    for batch in new_rows {
        let columns = conform(def, batch)?;
        for row in 0..batch.num_rows() {
            let old_key = keys
                .next()
                .ok_or_else(|| ServerError::Internal("more new rows than old keys".into()))?;
            let key = primary_key(def, &columns, row)?.unwrap_or_else(|| old_key.clone());
            let taken_before = key != *old_key
                && !deleted.contains(key.as_slice())
                && target.contains(store, def, &key)?;
            if taken_before || !written.insert(key.clone()) {
                return Err(ServerError::UniqueViolation {
                    table: def.name.name.clone(),
                    key: describe_key(def, &columns, row),
                });
            }
            if key != *old_key && !written.contains(old_key) {
                statement.rows.push((old_key.clone(), None));
            }
            value.clear();
            encode_row(&columns, row, &mut value)?;
            if target.logs() {
                let old_value = target.get(store, def, old_key)?.ok_or_else(|| {
                    ServerError::Internal(format!("updated row of {} vanished", def.name))
                })?;
                let (before, after) = if key == *old_key {
                    (Op::UpdateDelete, Op::UpdateInsert)
                } else {
                    (Op::Delete, Op::Insert)
                };
                statement.changes.push(before, old_key.clone(), old_value);
                statement.changes.push(after, key.clone(), value.clone());
            }
            statement.rows.push((key, Some(value.clone())));
        }
    }
    Ok(written)
}

/// Deletes the rows at `keys`.
pub fn delete_rows(
    def: &TableDef,
    store: &Store,
    keys: &[Vec<u8>],
    target: WriteTarget<'_>,
) -> ServerResult<u64> {
    let mut statement = StatementWrites::default();
    for key in keys {
        if target.logs()
            && let Some(old_value) = target.get(store, def, key)?
        {
            statement.changes.push(Op::Delete, key.clone(), old_value);
        }
        statement.rows.push((key.clone(), None));
    }
    apply(def, store, target, statement)?;
    Ok(keys.len() as u64)
}
