//! Durable storage of Runnel: one RocksDB instance per process holding the
//! catalog's records and the rows of every table, with the codecs that turn
//! Arrow rows into keys and values and back.
//!
//! Entry point: [`Store::open`]. Writes go through a [`WriteSet`], applied
//! atomically (and synced when configured) by [`Store::write`]; reads of a
//! table go through [`TableStore`], which scans a RocksDB snapshot into Arrow
//! `RecordBatch`es.
//!
//! Key space (one column family, prefixes keep the areas apart):
//! - `m` + name: catalog records, owned and encoded by the server;
//! - `r` + table id (u64, big endian) + row key: one row of a table. The row
//!   key is the memcomparable encoding of the primary key ([`key_codec`]), or
//!   an 8-byte big-endian row id for tables without one. Materialized views
//!   keep their rows here too, keyed by their stream key;
//! - `s` + state table id (u64) + key group (u16) + key: operator state
//!   ([`StateTable`]), written once per epoch;
//! - `l` + table id (u64) + sequence number (u64): the change log of a
//!   table that materialized views read, trimmed as they consume it.

pub mod checkpoint;
pub mod completeness;
pub mod epoch_buffer;
mod error;
pub mod export;
pub mod key_codec;
mod lagging;
pub mod row_codec;
pub mod scalar_codec;
pub mod state_cache;
pub mod state_table;
mod store;
mod write_set;

pub use epoch_buffer::{BufferCharge, EpochBuffer};
pub use error::{StorageError, StorageResult};
pub use state_cache::{CacheBudget, CacheCharge, StateCache};
pub use state_table::StateTable;
pub use store::{MemoryReport, ScanSpec, Store, StoreOptions, TableStore};
pub use write_set::WriteSet;
