//! Applying INSERT, UPDATE and DELETE to a stored table: constraint checks,
//! key assignment and one atomic write per statement.

use std::collections::{HashMap, HashSet};
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

use crate::error::{ServerError, ServerResult};
use crate::streaming::table_stream_schema;

/// Applies a statement's writes; when materialized views read the table,
/// its changes go to the table's change log in the same atomic write.
fn apply(
    def: &TableDef,
    store: &Store,
    mut writes: WriteSet,
    changes: Option<RowChanges>,
    log: Option<&ChangeLog>,
) -> ServerResult<()> {
    match (log, changes) {
        (Some(log), Some(changes)) if !changes.is_empty() => {
            let chunk = changes.to_chunk(&table_stream_schema(def))?;
            let mut appender = log.appender();
            let seq = appender.next_seq();
            writes.put_change(def.id, seq, &changes.encode());
            writes.put_meta(&table_log_seq_key(def.id), &(seq + 1).to_be_bytes());
            store.write(writes)?;
            appender.append(chunk);
        }
        _ if !writes.is_empty() => store.write(writes)?,
        _ => {}
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
fn conform(def: &TableDef, batch: &RecordBatch) -> ServerResult<Vec<ArrayRef>> {
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
fn primary_key(def: &TableDef, columns: &[ArrayRef], row: usize) -> ServerResult<Option<Vec<u8>>> {
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
    log: Option<&ChangeLog>,
) -> ServerResult<u64> {
    let mut writes = WriteSet::new();
    let mut changes = log.map(|_| RowChanges::default());
    let total = add_inserts(
        def,
        store,
        row_ids,
        batches,
        &mut writes,
        true,
        changes.as_mut(),
    )?;
    apply(def, store, writes, changes, log)?;
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
    add_inserts(def, store, row_ids, batches, writes, false, None).map(|_| ())
}

fn add_inserts(
    def: &TableDef,
    store: &Store,
    row_ids: &RowIds,
    batches: &[RecordBatch],
    writes: &mut WriteSet,
    check_stored: bool,
    mut changes: Option<&mut RowChanges>,
) -> ServerResult<u64> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let table = store.table(def.id);
    let mut seen = HashSet::new();
    let mut next_id = if def.primary_key.is_empty() && total > 0 {
        row_ids.reserve(def, store, total as u64)?
    } else {
        0
    };
    let mut value = Vec::new();
    for batch in batches {
        let columns = conform(def, batch)?;
        for row in 0..batch.num_rows() {
            let key = match primary_key(def, &columns, row)? {
                Some(key) => {
                    if !seen.insert(key.clone()) || (check_stored && table.contains(&key)?) {
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
            writes.put_row(def.id, &key, &value);
            if let Some(changes) = changes.as_deref_mut() {
                changes.push(Op::Insert, key, value.clone());
            }
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
    log: Option<&ChangeLog>,
) -> ServerResult<u64> {
    let mut changes = log.map(|_| RowChanges::default());
    let deleted: HashSet<&[u8]> = old_keys.iter().map(Vec::as_slice).collect();
    if deleted.len() != old_keys.len() {
        // UPDATE … FROM matched a row more than once.
        return Err(ServerError::CardinalityViolation(
            "UPDATE would change a row more than once; make the FROM join match each row once"
                .into(),
        ));
    }
    let table = store.table(def.id);
    let mut written: HashSet<Vec<u8>> = HashSet::new();
    let mut writes = WriteSet::new();
    let mut keys = old_keys.iter();
    let mut value = Vec::new();
    for batch in new_rows {
        let columns = conform(def, batch)?;
        for row in 0..batch.num_rows() {
            let old_key = keys
                .next()
                .ok_or_else(|| ServerError::Internal("more new rows than old keys".into()))?;
            let key = primary_key(def, &columns, row)?.unwrap_or_else(|| old_key.clone());
            let taken_before =
                key != *old_key && !deleted.contains(key.as_slice()) && table.contains(&key)?;
            if taken_before || !written.insert(key.clone()) {
                return Err(ServerError::UniqueViolation {
                    table: def.name.name.clone(),
                    key: describe_key(def, &columns, row),
                });
            }
            if key != *old_key && !written.contains(old_key) {
                writes.delete_row(def.id, old_key);
            }
            value.clear();
            encode_row(&columns, row, &mut value)?;
            writes.put_row(def.id, &key, &value);
            if let Some(changes) = changes.as_mut() {
                let old_value = table.get(old_key)?.ok_or_else(|| {
                    ServerError::Internal(format!("updated row of {} vanished", def.name))
                })?;
                let (before, after) = if key == *old_key {
                    (Op::UpdateDelete, Op::UpdateInsert)
                } else {
                    (Op::Delete, Op::Insert)
                };
                changes.push(before, old_key.clone(), old_value);
                changes.push(after, key, value.clone());
            }
        }
    }
    let count = old_keys.len() as u64;
    apply(def, store, writes, changes, log)?;
    Ok(count)
}

/// Deletes the rows at `keys`.
pub fn delete_rows(
    def: &TableDef,
    store: &Store,
    keys: &[Vec<u8>],
    log: Option<&ChangeLog>,
) -> ServerResult<u64> {
    let mut writes = WriteSet::new();
    let mut changes = log.map(|_| RowChanges::default());
    let table = store.table(def.id);
    for key in keys {
        writes.delete_row(def.id, key);
        if let Some(changes) = changes.as_mut()
            && let Some(old_value) = table.get(key)?
        {
            changes.push(Op::Delete, key.clone(), old_value);
        }
    }
    apply(def, store, writes, changes, log)?;
    Ok(keys.len() as u64)
}
