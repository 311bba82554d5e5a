use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, WriteOptions};

use crate::epoch_buffer::EpochBuffer;
use crate::row_codec::RowDecoder;
use crate::state_cache::CacheBudget;
use crate::write_set::WriteSet;
use crate::{StorageError, StorageResult};

pub(crate) const META_PREFIX: u8 = b'm';
const ROW_PREFIX: u8 = b'r';
const STATE_PREFIX: u8 = b's';
const CHANGE_PREFIX: u8 = b'l';

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the write-ahead log on every write. Without it a process crash
    /// (`kill -9`) still loses nothing, but a machine crash may lose the last
    /// writes.
    pub sync_writes: bool,
    /// Size of RocksDB's block cache, shared by every table.
    pub block_cache_bytes: usize,
    /// Memory all memtables together may hold before RocksDB flushes them
    /// (charged to the block cache, so the two together bound RocksDB's
    /// memory).
    pub write_buffer_bytes: usize,
    /// Uncommitted writes that operators may hold in memory before sources
    /// wait for an early barrier (0: no limit); see [`EpochBuffer`].
    pub epoch_buffer_bytes: usize,
    /// Decoded state all operators' caches may hold together (0: none);
    /// see [`CacheBudget`].
    pub state_cache_bytes: usize,
    /// Keep everything in memory (`state.backend: memory`): nothing is
    /// written under the path, and only a checkpoint survives the process.
    pub in_memory: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync_writes: true,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 64 << 20,
            epoch_buffer_bytes: 64 << 20,
            state_cache_bytes: 256 << 20,
            in_memory: false,
        }
    }
}

/// RocksDB's memory and the operator state's size, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryReport {
    /// Memtables, active and waiting to be flushed.
    pub memtable_bytes: u64,
    pub block_cache_bytes: u64,
    /// Index and filter blocks of open SST files outside the cache.
    pub table_reader_bytes: u64,
    /// Live rows of every operator's state tables.
    pub state_rows: u64,
}

/// The process's RocksDB instance. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) path: PathBuf,
    sync_writes: bool,
    in_memory: bool,
    epoch_buffer: Arc<EpochBuffer>,
    cache_budget: Arc<CacheBudget>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`.
    pub fn open(path: &Path, options: &StoreOptions) -> StorageResult<Self> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.set_max_background_jobs(2);
        db_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut table_options = rocksdb::BlockBasedOptions::default();
        let write_buffers = options.write_buffer_bytes.max(4 << 20);
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_bytes + write_buffers);
        // Memtables count against the cache: together they stay within
        // block cache plus write buffers however much is written.
        let manager = rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(
            write_buffers,
            false,
            cache.clone(),
        );
        db_options.set_write_buffer_manager(&manager);
        db_options.set_write_buffer_size(write_buffers / 2);
        table_options.set_block_cache(&cache);
        // Operators look up many keys that are not there (a new group, a
        // join key never seen): a bloom filter answers most of them
        // without reading a block.
        table_options.set_bloom_filter(10.0, false);
        db_options.set_block_based_table_factory(&table_options);
        if options.in_memory {
            let env = rocksdb::Env::mem_env().map_err(|e| rocks_error(path, e))?;
            db_options.set_env(&env);
        }
        let db = DB::open(&db_options, path).map_err(|e| rocks_error(path, e))?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            sync_writes: options.sync_writes && !options.in_memory,
            in_memory: options.in_memory,
            epoch_buffer: Arc::new(EpochBuffer::new(options.epoch_buffer_bytes)),
            cache_budget: Arc::new(CacheBudget::new(options.state_cache_bytes)),
        })
    }

    /// Whether the store lives in memory only (`state.backend: memory`).
    pub fn is_in_memory(&self) -> bool {
        self.in_memory
    }

    /// The budget every holder of uncommitted writes is charged against.
    pub fn epoch_buffer(&self) -> &Arc<EpochBuffer> {
        &self.epoch_buffer
    }

    /// The budget every operator's state cache is charged against.
    pub fn cache_budget(&self) -> &Arc<CacheBudget> {
        &self.cache_budget
    }

    /// Applies every change in `writes` atomically.
    pub fn write(&self, writes: WriteSet) -> StorageResult<()> {
        let mut options = WriteOptions::default();
        options.set_sync(self.sync_writes);
        // The set is freed as the batch is built, before RocksDB copies
        // the batch into its memtables: an epoch's changes are not held
        // three times over.
        let batch = writes.into_batch();
        self.db
            .write_opt(batch, &options)
            .map_err(|e| rocks_error(&self.path, e))
    }

    /// Writes a consistent copy of the store to `dir` (which must not exist):
    /// memtables are flushed, table files hard-linked, the rest copied.
    pub fn create_checkpoint(&self, dir: &Path) -> StorageResult<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(dir))
            .map_err(|e| rocks_error(dir, e))
    }

    /// RocksDB's sequence number of the last write: unchanged means nothing
    /// was written.
    pub fn latest_sequence_number(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// Every catalog record whose name starts with `prefix`, in name order.
    pub fn meta_scan(&self, prefix: &[u8]) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = meta_key(prefix);
        let mut out = vec![];
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| rocks_error(&self.path, e))?;
            if !key.starts_with(&start) {
                break;
            }
            out.push((key[1..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// One row of state table `id` (`key` includes the key group).
    pub(crate) fn get_state(&self, id: u64, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let mut full = state_prefix(id).to_vec();
        full.extend_from_slice(key);
        self.db.get(full).map_err(|e| rocks_error(&self.path, e))
    }

    /// Whether state table `id` holds no committed row.
    pub(crate) fn state_is_empty(&self, id: u64) -> StorageResult<bool> {
        let start = state_prefix(id);
        match self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
            .next()
        {
            None => Ok(true),
            Some(item) => {
                let (key, _) = item.map_err(|e| rocks_error(&self.path, e))?;
                Ok(!key.starts_with(&start))
            }
        }
    }

    /// Every row of state table `id` whose key starts with `prefix`, as
    /// (key, value) with the table's prefix removed.
    pub(crate) fn scan_state(
        &self,
        id: u64,
        prefix: &[u8],
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut start = state_prefix(id).to_vec();
        let skip = start.len();
        start.extend_from_slice(prefix);
        self.scan_from(&start, skip)
    }

    fn scan_from(&self, start: &[u8], skip: usize) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        for item in self
            .db
            .iterator(IteratorMode::From(start, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| rocks_error(&self.path, e))?;
            if !key.starts_with(start) {
                break;
            }
            out.push((key[skip..].to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// The durable change-log entries of table `table_id` from sequence
    /// number `from` on, in order.
    pub fn scan_changes(&self, table_id: u64, from: u64) -> StorageResult<Vec<(u64, Vec<u8>)>> {
        let prefix = change_prefix(table_id);
        let mut out = vec![];
        for item in self.db.iterator(IteratorMode::From(
            &change_key(table_id, from),
            Direction::Forward,
        )) {
            let (key, value) = item.map_err(|e| rocks_error(&self.path, e))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let seq: [u8; 8] = key[prefix.len()..]
                .try_into()
                .map_err(|_| StorageError::corrupt("change log", "bad sequence number"))?;
            out.push((u64::from_be_bytes(seq), value.to_vec()));
        }
        Ok(out)
    }

    /// What RocksDB holds in memory now, and how many operator state rows
    /// the store has (a full scan: for benchmarks and diagnostics).
    pub fn memory_report(&self) -> StorageResult<MemoryReport> {
        let property = |name: &str| -> StorageResult<u64> {
            Ok(self
                .db
                .property_int_value(name)
                .map_err(|e| rocks_error(&self.path, e))?
                .unwrap_or(0))
        };
        let mut state_rows = 0;
        for item in self
            .db
            .iterator(IteratorMode::From(&[STATE_PREFIX], Direction::Forward))
        {
            let (key, _) = item.map_err(|e| rocks_error(&self.path, e))?;
            if key.first() != Some(&STATE_PREFIX) {
                break;
            }
            state_rows += 1;
        }
        Ok(MemoryReport {
            memtable_bytes: property("rocksdb.cur-size-all-mem-tables")?,
            block_cache_bytes: property("rocksdb.block-cache-usage")?,
            table_reader_bytes: property("rocksdb.estimate-table-readers-mem")?,
            state_rows,
        })
    }

    /// The rows of one table.
    pub fn table(&self, table_id: u64) -> TableStore {
        TableStore {
            store: self.clone(),
            table_id,
        }
    }
}

pub(crate) fn rocks_error(path: &Path, e: rocksdb::Error) -> StorageError {
    StorageError::Rocks {
        path: path.display().to_string(),
        reason: e.into_string(),
    }
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(META_PREFIX);
    key.extend_from_slice(name);
    key
}

/// The first bytes of every key of relation `id` in key area `area`.
fn id_prefix(area: u8, id: u64) -> [u8; 9] {
    let mut key = [area; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The prefix of every row key of table `table_id`.
pub(crate) fn table_prefix(table_id: u64) -> [u8; 9] {
    id_prefix(ROW_PREFIX, table_id)
}

/// The prefix of every key of state table `id`.
pub(crate) fn state_prefix(id: u64) -> [u8; 9] {
    id_prefix(STATE_PREFIX, id)
}

/// The prefix of every change-log key of table `table_id`.
pub(crate) fn change_prefix(table_id: u64) -> [u8; 9] {
    id_prefix(CHANGE_PREFIX, table_id)
}

fn change_key(table_id: u64, seq: u64) -> Vec<u8> {
    let mut key = change_prefix(table_id).to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn row_key(table_id: u64, key: &[u8]) -> Vec<u8> {
    let mut out = table_prefix(table_id).to_vec();
    out.extend_from_slice(key);
    out
}

/// What a table scan reads and how it cuts batches.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    /// The table's full schema, in stored column order.
    pub table_schema: SchemaRef,
    /// Columns to produce (indices into `table_schema`); `None` for all.
    pub projection: Option<Vec<usize>>,
    /// Rows per produced batch.
    pub batch_size: usize,
    /// Stop after this many rows.
    pub limit: Option<usize>,
}

/// Rows of one table, addressed by row key.
#[derive(Clone, Debug)]
pub struct TableStore {
    store: Store,
    table_id: u64,
}

impl TableStore {
    /// True when a row with this key exists.
    pub fn contains(&self, key: &[u8]) -> StorageResult<bool> {
        self.store
            .db
            .get_pinned(row_key(self.table_id, key))
            .map(|v| v.is_some())
            .map_err(|e| rocks_error(&self.store.path, e))
    }

    /// The stored value of the row at `key`.
    pub fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.store
            .db
            .get(row_key(self.table_id, key))
            .map_err(|e| rocks_error(&self.store.path, e))
    }

    /// The greatest row key in the table, if any.
    pub fn last_key(&self) -> StorageResult<Option<Vec<u8>>> {
        let end = table_prefix(self.table_id + 1);
        let prefix = table_prefix(self.table_id);
        let mut iter = self
            .store
            .db
            .iterator(IteratorMode::From(&end, Direction::Reverse));
        // `From(end, Reverse)` positions at the last key <= end; skip `end`
        // itself if it exists (it belongs to the next table).
        for item in iter.by_ref() {
            let (key, _) = item.map_err(|e| rocks_error(&self.store.path, e))?;
            if key.as_ref() >= end.as_slice() {
                continue;
            }
            return Ok(key
                .starts_with(&prefix)
                .then(|| key[prefix.len()..].to_vec()));
        }
        Ok(None)
    }

    /// Calls `visit(key, encoded value)` for the rows from key `from` on,
    /// in key order, until it returns false. Blocking.
    fn visit_raw(
        &self,
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> StorageResult<()> {
        let prefix = table_prefix(self.table_id);
        let start = row_key(self.table_id, from);
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(table_prefix(self.table_id + 1));
        let iter = self
            .store
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), read_options);
        for item in iter {
            let (key, value) = item.map_err(|e| rocks_error(&self.store.path, e))?;
            if !visit(&key[prefix.len()..], &value) {
                break;
            }
        }
        Ok(())
    }

    /// Every stored row as (key, encoded value), in key order, on a
    /// consistent snapshot. Blocking: call it from a blocking thread.
    pub fn raw_rows(&self) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        self.visit_raw(&[], |key, value| {
            out.push((key.to_vec(), value.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// The keys of the rows whose keys start with `prefix` (index entries
    /// of one indexed value), in order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> StorageResult<Vec<Vec<u8>>> {
        let mut out = vec![];
        self.visit_raw(prefix, |key, _| {
            let within = key.starts_with(prefix);
            if within {
                out.push(key.to_vec());
            }
            within
        })?;
        Ok(out)
    }

    /// A hash of every stored row, keys and values, fed to `hasher`: it
    /// differs (barring a collision of `hasher`) once any row changed.
    /// Blocking: call it from a blocking thread.
    pub fn digest(&self, mut hasher: impl std::hash::Hasher) -> StorageResult<u64> {
        self.visit_raw(&[], |key, value| {
            hasher.write_usize(key.len());
            hasher.write(key);
            hasher.write_usize(value.len());
            hasher.write(value);
            true
        })?;
        Ok(hasher.finish())
    }

    /// Scans the table in key order on a consistent snapshot, calling
    /// `emit(row_keys, batch)` for each batch; stops early when `emit`
    /// returns false. Blocking: call it from a blocking thread.
    pub fn scan(
        &self,
        spec: &ScanSpec,
        emit: impl FnMut(Vec<Vec<u8>>, RecordBatch) -> bool,
    ) -> StorageResult<()> {
        self.scan_after_snapshot(spec, || {}, emit)
    }

    /// Like [`TableStore::scan`], calling `on_snapshot` right after the
    /// snapshot is taken (so a caller can release a lock that kept writers
    /// out until the snapshot existed).
    pub fn scan_after_snapshot(
        &self,
        spec: &ScanSpec,
        on_snapshot: impl FnOnce(),
        emit: impl FnMut(Vec<Vec<u8>>, RecordBatch) -> bool,
    ) -> StorageResult<()> {
        self.scan_skipping(spec, on_snapshot, |_| false, emit)
    }

    /// Like [`TableStore::scan_after_snapshot`], leaving out (undecoded)
    /// the rows whose keys `skip` names: rows a transaction block replaced,
    /// which may be stored in an older layout than `spec`'s.
    pub fn scan_skipping(
        &self,
        spec: &ScanSpec,
        on_snapshot: impl FnOnce(),
        skip: impl Fn(&[u8]) -> bool,
        mut emit: impl FnMut(Vec<Vec<u8>>, RecordBatch) -> bool,
    ) -> StorageResult<()> {
        let prefix = table_prefix(self.table_id);
        let mut read_options = ReadOptions::default();
        read_options.set_iterate_upper_bound(table_prefix(self.table_id + 1));
        let snapshot = self.store.db.snapshot();
        on_snapshot();
        read_options.set_snapshot(&snapshot);
        let iter = self.store.db.iterator_opt(
            IteratorMode::From(&prefix, Direction::Forward),
            read_options,
        );
        let mut decoder = RowDecoder::new(&spec.table_schema, spec.projection.as_deref())?;
        let mut keys = Vec::with_capacity(spec.batch_size);
        let mut remaining = spec.limit.unwrap_or(usize::MAX);
        for item in iter {
            if remaining == 0 {
                break;
            }
            let (key, value) = item.map_err(|e| rocks_error(&self.store.path, e))?;
            if skip(&key[prefix.len()..]) {
                continue;
            }
            decoder.push(&value)?;
            keys.push(key[prefix.len()..].to_vec());
            remaining -= 1;
            if decoder.len() >= spec.batch_size {
                let batch = decoder.finish()?;
                if !emit(std::mem::take(&mut keys), batch) {
                    return Ok(());
                }
            }
        }
        if !decoder.is_empty() {
            let batch = decoder.finish()?;
            emit(keys, batch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_codec::encode_row;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn write_rows(store: &Store, table: u64, batch: &RecordBatch) {
        let mut writes = WriteSet::new();
        for row in 0..batch.num_rows() {
            let mut value = vec![];
            encode_row(batch.columns(), row, &mut value).unwrap();
            writes.put_row(table, &(row as u64).to_be_bytes(), &value);
        }
        store.write(writes).unwrap();
    }

    fn scan_all(store: &Store, table: u64, schema: SchemaRef) -> Vec<RecordBatch> {
        let spec = ScanSpec {
            table_schema: schema,
            projection: None,
            batch_size: 2,
            limit: None,
        };
        let mut out = vec![];
        store
            .table(table)
            .scan(&spec, |_, b| {
                out.push(b);
                true
            })
            .unwrap();
        out
    }

    #[test]
    fn tables_are_kept_apart_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = batch();
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            write_rows(&store, 7, &data);
            write_rows(&store, 8, &data.slice(0, 1));
            let mut writes = WriteSet::new();
            writes.put_meta(b"table/7", b"{}");
            store.write(writes).unwrap();
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let batches = scan_all(&store, 7, data.schema());
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        assert_eq!(batches[0], data.slice(0, 2));
        assert_eq!(scan_all(&store, 8, data.schema())[0], data.slice(0, 1));
        assert_eq!(
            store.table(7).last_key().unwrap(),
            Some(2u64.to_be_bytes().to_vec())
        );
        assert_eq!(store.table(9).last_key().unwrap(), None);
        assert_eq!(store.meta_scan(b"table/").unwrap().len(), 1);

        let mut writes = WriteSet::new();
        writes.delete_all_rows(7);
        store.write(writes).unwrap();
        assert!(scan_all(&store, 7, data.schema()).is_empty());
        assert_eq!(scan_all(&store, 8, data.schema()).len(), 1);
    }
}
