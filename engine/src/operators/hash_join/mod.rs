//! Joins with retractions: inner, left/right/full outer, semi and anti.
//!
//! Both inputs' rows are kept in state, keyed by join key then stream key.
//! A row arriving on one side is matched against the other side's rows with
//! the same key (and the extra condition, if any). Outer and semi/anti
//! joins also keep, per row of a preserved or kept side, its number of
//! matches ("degree"), so a row's null-padded result or its membership is
//! retracted exactly when the degree moves between zero and one.
//!
//! A state key is the matchable tag, the join key's length (u32, big
//! endian) and the join key — the prefix that finds a key's rows — then
//! the row's stream key. The rows of a join key read from state stay in
//! the side's [`StateCache`] (bounded by `state.cache-mb`) and are kept in
//! step with every write, so a key probed again costs no state scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::{StateCache, StateTable, Store};

use crate::graph::{JoinCleanup, JoinKind, JoinSide};
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, StreamChunk};

mod chunk;
#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod tests;
mod window;

use window::JoinWindow;

/// Prefix of rows whose key can match (no null, or nulls compare equal).
const MATCHABLE: u8 = 1;
/// Prefix of rows whose key holds a null: kept, never matched.
const UNMATCHABLE: u8 = 0;

/// A row of a cached join key: its value (degree and row) and whether the
/// state table has it (or has it pending). A row inserted in the running
/// epoch stays only here until the barrier writes it, so a row gone within
/// its epoch costs the state table nothing.
struct KeptRow {
    value: Vec<u8>,
    written: bool,
}

/// The rows of one join key of one side: state key → row, and what they
/// cost the cache. Together with the state table they are the side's
/// state: rows not yet written live only here.
#[derive(Default)]
struct KeyRows {
    rows: std::collections::BTreeMap<Vec<u8>, KeptRow>,
    cost: usize,
    /// Whether the key is listed for the barrier to write its new rows.
    listed: bool,
}

impl KeyRows {
    fn entry_cost(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + ENTRY_OVERHEAD
    }

    /// Sets (or, with None, removes) the row at `key`, keeping the cost;
    /// returns the row that was there.
    fn set(&mut self, key: &[u8], row: Option<KeptRow>) -> Option<KeptRow> {
        let old = match row {
            Some(row) => {
                self.cost += Self::entry_cost(key, &row.value);
                self.rows.insert(key.to_vec(), row)
            }
            None => self.rows.remove(key),
        };
        if let Some(old) = &old {
            self.cost = self.cost.saturating_sub(Self::entry_cost(key, &old.value));
        }
        old
    }
}

/// Writes the rows of a cached key (cache key `cache_key`) that `state`
/// lacks.
fn write_unwritten(state: &mut StateTable, cache_key: &[u8], rows: &mut KeyRows) {
    let group = u16::from_be_bytes([cache_key[0], cache_key[1]]);
    for (state_key, row) in rows.rows.iter_mut() {
        if !row.written {
            state.insert_new(group, state_key, row.value.clone());
            row.written = true;
        }
    }
}

/// The prefix of a state key that every row of its join key shares: the
/// tag, the join key's length and the join key.
fn key_prefix(state_key: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(state_key.get(1..5)?.try_into().ok()?) as usize;
    state_key.get(..5 + len)
}

/// What writing a row into a cached key did, for the state table.
enum Written {
    /// Held in the cache until the barrier; true when the key must be
    /// listed for it.
    Held(bool),
    /// Changed in place: the table takes the new value now.
    Put(Vec<u8>),
    /// Removed: `unwritten` when the table never had it, `emptied` when
    /// the key has no row left.
    Deleted { unwritten: bool, emptied: bool },
}

/// One parallel instance of a join.
pub struct HashJoinOperator {
    kind: JoinKind,
    sides: [JoinSide; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    nulls_equal: bool,
    schema: SchemaRef,
    states: [StateTable; 2],
    /// Per side, the rows of join keys read lately (cache key → rows).
    caches: [StateCache<Vec<u8>, KeyRows>; 2],
    /// Per side, the cache keys holding rows the state table does not
    /// have yet, for the barrier to write.
    unwritten: [Vec<Vec<u8>>; 2],
    /// Set for window and interval joins.
    window: Option<JoinWindow>,
    /// A buffer rows are encoded into before they are copied out at their
    /// size.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for HashJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashJoinOperator")
            .field("kind", &self.kind)
            .finish()
    }
}

/// A stored row's value: its degree (a little-endian `i64`), then the
/// row as the row codec encodes it. Starts one in `out` with `degree`;
/// the caller appends the row.
fn start_value(out: &mut Vec<u8>, degree: i64) {
    out.extend_from_slice(&degree.to_le_bytes());
}

/// A stored row's degree and encoded row (see [`start_value`]).
fn split_value(bytes: &[u8]) -> EngineResult<(i64, &[u8])> {
    let (degree, row) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| EngineError::Internal("join state row cut short".into()))?;
    Ok((i64::from_le_bytes(*degree), row))
}

impl HashJoinOperator {
    /// A join of `left` (port 0) and `right` (port 1) into `schema`, state in
    /// tables `state_id` (left) and `state_id + 1` (right). With `cleanup`
    /// (and the key groups this subtask owns), rows no future row can match
    /// are deleted as the watermarks pass.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        left: JoinSide,
        right: JoinSide,
        filter: Option<Arc<dyn PhysicalExpr>>,
        nulls_equal: bool,
        schema: SchemaRef,
        store: Store,
        state_id: u64,
        cleanup: Option<(JoinCleanup, Vec<u16>)>,
    ) -> EngineResult<Self> {
        let states = [
            StateTable::new(store.clone(), state_id),
            StateTable::new(store.clone(), state_id + 1),
        ];
        let mut caches = [
            StateCache::new(Arc::clone(store.cache_budget())),
            StateCache::new(Arc::clone(store.cache_budget())),
        ];
        // Started on empty state, every key written is cached: a miss
        // means no row, with no state scan, until something is evicted.
        for (cache, state) in caches.iter_mut().zip(&states) {
            if state.is_empty()? {
                cache.assume_complete();
            }
        }
        Ok(Self {
            kind,
            sides: [left, right],
            filter,
            nulls_equal,
            schema,
            caches,
            states,
            unwritten: [vec![], vec![]],
            window: cleanup.map(|(spec, key_groups)| JoinWindow::new(spec, key_groups)),
            scratch: Vec::with_capacity(256),
        })
    }

    /// Caches the rows of a key; rows of keys evicted to make room that
    /// the state table lacks are written to it now.
    fn cache_rows(&mut self, side: usize, key: Vec<u8>, rows: KeyRows) {
        let cost = rows.cost;
        for (key, mut rows) in self.caches[side].insert_evicting(key, rows, cost) {
            write_unwritten(&mut self.states[side], &key, &mut rows);
        }
    }

    /// Writes a row of side `side` (None deletes it) at `state_key`, in
    /// the cached key `cache_key` (key group, tag and join key). `new`
    /// says the row was just inserted: its key holds nothing in the store
    /// (a stream key is inserted again only after its delete). A row of a
    /// cached key that is new, or was new this epoch and is not written
    /// yet, stays only in the cache until the barrier (or its eviction);
    /// so a row deleted within its epoch leaves no trace. Rows of keys not
    /// cached go to the state table at once.
    fn write_row(
        &mut self,
        side: usize,
        cache_key: &[u8],
        state_key: &[u8],
        value: Option<Vec<u8>>,
        new: bool,
    ) {
        let group = u16::from_be_bytes([cache_key[0], cache_key[1]]);
        // Taken by the change if the key is cached.
        let mut value = Some(value);
        let cached = self.caches[side].update(cache_key, |rows| {
            let write = match value.take().flatten() {
                Some(value) if new || rows.rows.get(state_key).is_some_and(|r| !r.written) => {
                    rows.set(
                        state_key,
                        Some(KeptRow {
                            value,
                            written: false,
                        }),
                    );
                    Written::Held(!std::mem::replace(&mut rows.listed, true))
                }
                Some(value) => {
                    rows.set(
                        state_key,
                        Some(KeptRow {
                            value: value.clone(),
                            written: true,
                        }),
                    );
                    Written::Put(value)
                }
                None => {
                    let old = rows.set(state_key, None);
                    Written::Deleted {
                        unwritten: old.is_some_and(|r| !r.written),
                        emptied: rows.rows.is_empty(),
                    }
                }
            };
            (write, rows.cost)
        });
        match cached {
            Some(Written::Held(list)) => {
                if list {
                    self.unwritten[side].push(cache_key.to_vec());
                }
            }
            Some(Written::Put(value)) => self.states[side].put(group, state_key, value),
            Some(Written::Deleted { unwritten, emptied }) => {
                if emptied {
                    // A key whose rows are all gone (cleaned up behind the
                    // watermark) leaves the cache: a complete cache still
                    // answers "absent" for it, and it holds only live keys.
                    self.caches[side].remove(cache_key);
                }
                if !unwritten {
                    self.states[side].delete(group, state_key);
                }
            }
            None => match value.flatten() {
                Some(value) if self.caches[side].knows_absent(cache_key) => {
                    // A complete cache must hold every key written.
                    let mut rows = KeyRows::default();
                    rows.set(
                        state_key,
                        Some(KeptRow {
                            value,
                            written: false,
                        }),
                    );
                    rows.listed = true;
                    self.unwritten[side].push(cache_key.to_vec());
                    self.cache_rows(side, cache_key.to_vec(), rows);
                }
                value => self.write_state(side, group, state_key, value, new),
            },
        }
    }

    fn write_state(
        &mut self,
        side: usize,
        group: u16,
        state_key: &[u8],
        value: Option<Vec<u8>>,
        new: bool,
    ) {
        match value {
            Some(value) if new => self.states[side].insert_new(group, state_key, value),
            Some(value) => self.states[side].put(group, state_key, value),
            None => self.states[side].delete(group, state_key),
        }
    }

    /// Writes every cached row the state table lacks (at a barrier).
    fn write_new_rows(&mut self) {
        for side in 0..2 {
            for key in std::mem::take(&mut self.unwritten[side]) {
                // A key evicted or emptied since it was listed has nothing
                // left to write.
                if let Some(rows) = self.caches[side].peek_mut(&key) {
                    rows.listed = false;
                    write_unwritten(&mut self.states[side], &key, rows);
                }
            }
        }
    }

    /// Side `side` keeps its unmatched rows, null-padded.
    fn preserved(&self, side: usize) -> bool {
        matches!(
            (self.kind, side),
            (JoinKind::Left | JoinKind::Full, 0) | (JoinKind::Right | JoinKind::Full, 1)
        )
    }

    /// The side a semi or anti join emits, if this is one.
    fn kept(&self) -> Option<(usize, bool)> {
        match self.kind {
            JoinKind::LeftSemi => Some((0, true)),
            JoinKind::LeftAnti => Some((0, false)),
            JoinKind::RightSemi => Some((1, true)),
            JoinKind::RightAnti => Some((1, false)),
            _ => None,
        }
    }

    fn tracks_degree(&self, side: usize) -> bool {
        self.preserved(side) || self.kept().is_some_and(|(kept, _)| kept == side)
    }
}

#[async_trait]
impl StreamOperator for HashJoinOperator {
    fn name(&self) -> &'static str {
        "hash_join"
    }

    fn preserves_append_only(&self) -> bool {
        false
    }

    async fn process_chunk(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()> {
        self.load_window()?;
        if let Some(joined) = self.join_chunk(input, &chunk)? {
            out.emit(joined);
        }
        Ok(())
    }

    /// Only a window or interval join passes watermarks on, on its bounded
    /// columns. Otherwise a row stored on one side can meet a later row of
    /// the other and be emitted long after the watermark passed it.
    async fn on_watermark(
        &mut self,
        input: usize,
        watermark: crate::Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        for derived in self.window_watermark(input, watermark)? {
            out.emit_watermark(derived);
        }
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        self.write_new_rows();
        for state in &mut self.states {
            state.seal_epoch(barrier.epoch.0, out.writes());
        }
        Ok(())
    }
}
