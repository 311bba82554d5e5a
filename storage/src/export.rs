//! The whole store as one file, key after key: what a checkpoint of an
//! in-memory store (`state.backend: memory`) uploads, since RocksDB's own
//! checkpoint files would live in its memory environment. Also how a
//! checkpoint of one backend is loaded into the other.
//!
//! Format: the magic `RNLX0001`, then per entry a u32 key length, a u32
//! value length (both little endian), the key and the value.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::store::rocks_error;
use crate::{StorageError, StorageResult, Store};

/// The file name of an exported store inside a checkpoint.
pub const EXPORT_FILE: &str = "store.export";
const MAGIC: &[u8; 8] = b"RNLX0001";
/// Bytes written to the store per batch while importing.
const IMPORT_BATCH: usize = 4 << 20;

impl Store {
    /// Writes every key and value of a consistent snapshot to `path`;
    /// returns how many entries it wrote.
    pub fn export_to(&self, path: &Path) -> StorageResult<u64> {
        let io = |e: std::io::Error| StorageError::io(path, e);
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        out.write_all(MAGIC).map_err(io)?;
        let snapshot = self.db.snapshot();
        let mut entries = 0;
        for item in snapshot.iterator(IteratorMode::Start) {
            let (key, value) = item.map_err(|e| rocks_error(&self.path, e))?;
            let length = |n: usize| {
                u32::try_from(n).map_err(|_| {
                    StorageError::corrupt("store export", format!("an entry of {n} bytes"))
                })
            };
            out.write_all(&length(key.len())?.to_le_bytes())
                .map_err(io)?;
            out.write_all(&length(value.len())?.to_le_bytes())
                .map_err(io)?;
            out.write_all(&key).map_err(io)?;
            out.write_all(&value).map_err(io)?;
            entries += 1;
        }
        out.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_all()
            .map_err(io)?;
        Ok(entries)
    }

    /// Writes every entry of the export at `path` into this store.
    pub fn import_from(&self, path: &Path) -> StorageResult<u64> {
        let io = |e: std::io::Error| StorageError::io(path, e);
        let mut input = BufReader::new(File::open(path).map_err(io)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(io)?;
        if &magic != MAGIC {
            return Err(StorageError::corrupt(
                "store export",
                format!("{} is not an exported store", path.display()),
            ));
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        let mut batch = WriteBatch::default();
        let mut entries = 0;
        let mut lengths = [0u8; 8];
        loop {
            match input.read_exact(&mut lengths) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io(e)),
            }
            let key_len = u32::from_le_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
            let value_len = u32::from_le_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
            let mut key = vec![0u8; key_len as usize];
            let mut value = vec![0u8; value_len as usize];
            input.read_exact(&mut key).map_err(io)?;
            input.read_exact(&mut value).map_err(io)?;
            batch.put(key, value);
            entries += 1;
            if batch.size_in_bytes() >= IMPORT_BATCH {
                self.db
                    .write_opt(std::mem::take(&mut batch), &options)
                    .map_err(|e| rocks_error(&self.path, e))?;
            }
        }
        self.db
            .write_opt(batch, &options)
            .map_err(|e| rocks_error(&self.path, e))?;
        // On disk the import must be durable before the store counts as
        // restored; an in-memory environment has nothing to sync (and
        // refuses to).
        if !self.is_in_memory() {
            self.db
                .flush_wal(true)
                .map_err(|e| rocks_error(&self.path, e))?;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use crate::{StoreOptions, WriteSet};

    use super::*;

    #[test]
    fn an_export_imports_into_a_store_in_memory_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Store::open(&dir.path().join("disk"), &StoreOptions::default()).unwrap();
        let mut writes = WriteSet::new();
        for i in 0..1000u32 {
            writes.put_meta(format!("k{i:04}").as_bytes(), &i.to_le_bytes());
        }
        disk.write(writes).unwrap();
        let file = dir.path().join(EXPORT_FILE);
        assert_eq!(disk.export_to(&file).unwrap(), 1000);

        let memory_options = StoreOptions {
            in_memory: true,
            ..StoreOptions::default()
        };
        let memory = Store::open(&dir.path().join("memory"), &memory_options).unwrap();
        assert!(memory.meta_scan(b"k").unwrap().is_empty());
        assert_eq!(memory.import_from(&file).unwrap(), 1000);
        assert_eq!(
            memory.meta_scan(b"k").unwrap(),
            disk.meta_scan(b"k").unwrap()
        );
        // Nothing of the in-memory store is on disk.
        assert!(!dir.path().join("memory").join("CURRENT").exists());

        std::fs::write(&file, b"RNLX9999").unwrap();
        assert!(memory.import_from(&file).is_err());
    }
}
