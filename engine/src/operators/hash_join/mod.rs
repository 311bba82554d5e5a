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

use datafusion::common::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::{RowDecoder, encode_row};
use runnel_storage::state_table::key_group;
use runnel_storage::{StateCache, StateTable, Store};

use crate::graph::{JoinCleanup, JoinKind, JoinSide};
use crate::operator::{Output, StreamOperator};
use crate::watermarks::order_key_at;
use crate::{Barrier, EngineError, EngineResult, Op, StreamChunk};

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

/// A row of a chunk, encoded, with the other side's rows it meets.
struct Probe {
    state_key: Vec<u8>,
    value: Vec<u8>,
    group: u16,
    insert: bool,
    matches: Vec<Match>,
}

/// A row of the other side found by key.
struct Match {
    state_key: Vec<u8>,
    row: Vec<u8>,
    degree: i64,
}

/// One output row: the op, then the left and right rows (None: padded).
type OutRow = (Op, Option<Vec<u8>>, Option<Vec<u8>>);

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

/// The cache's key of a prefix in key group `group`.
fn cache_key(group: u16, prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 2);
    key.extend_from_slice(&group.to_be_bytes());
    key.extend_from_slice(prefix);
    key
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
}

impl std::fmt::Debug for HashJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashJoinOperator")
            .field("kind", &self.kind)
            .finish()
    }
}

fn encode_value(row: &[u8], degree: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.len() + 8);
    out.extend_from_slice(&degree.to_le_bytes());
    out.extend_from_slice(row);
    out
}

fn decode_value(bytes: &[u8]) -> EngineResult<(Vec<u8>, i64)> {
    if bytes.len() < 8 {
        return Err(EngineError::Internal("join state row cut short".into()));
    }
    let degree = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    Ok((bytes[8..].to_vec(), degree))
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
        })
    }

    /// The rows of side `side` under `prefix` (a tag and join key) in key
    /// group `group`, from the cache or, once, from state.
    fn rows_of_key(&mut self, side: usize, group: u16, prefix: &[u8]) -> EngineResult<Vec<Match>> {
        let key = cache_key(group, prefix);
        if let Some(rows) = self.caches[side].get_mut(&key) {
            return rows
                .rows
                .iter()
                .map(|(state_key, kept)| {
                    let (row, degree) = decode_value(&kept.value)?;
                    Ok(Match {
                        state_key: state_key.clone(),
                        row,
                        degree,
                    })
                })
                .collect();
        }
        // A complete cache holds every key with rows: a miss is none.
        if self.caches[side].is_complete() {
            return Ok(vec![]);
        }
        let mut rows = KeyRows::default();
        let mut found = vec![];
        for (state_key, value) in self.states[side].scan_prefix(group, prefix)? {
            let (row, degree) = decode_value(&value)?;
            rows.set(
                &state_key,
                Some(KeptRow {
                    value,
                    written: true,
                }),
            );
            found.push(Match {
                state_key,
                row,
                degree,
            });
        }
        self.cache_rows(side, key, rows);
        Ok(found)
    }

    /// Caches the rows of a key; rows of keys evicted to make room that
    /// the state table lacks are written to it now.
    fn cache_rows(&mut self, side: usize, key: Vec<u8>, rows: KeyRows) {
        let cost = rows.cost;
        for (key, mut rows) in self.caches[side].insert_evicting(key, rows, cost) {
            write_unwritten(&mut self.states[side], &key, &mut rows);
        }
    }

    /// Writes a row of side `side` (None deletes it). `new` says the row
    /// was just inserted: its key holds nothing in the store (a stream key
    /// is inserted again only after its delete). A row of a cached key
    /// that is new, or was new this epoch and is not written yet, stays
    /// only in the cache until the barrier (or its eviction); so a row
    /// deleted within its epoch leaves no trace. Rows of keys not cached
    /// go to the state table at once.
    fn write_row(
        &mut self,
        side: usize,
        group: u16,
        state_key: &[u8],
        value: Option<Vec<u8>>,
        new: bool,
    ) {
        let Some(prefix) = key_prefix(state_key) else {
            self.write_state(side, group, state_key, value, new);
            return;
        };
        let key = cache_key(group, prefix);
        let complete = self.caches[side].is_complete();
        let Some(rows) = self.caches[side].peek_mut(&key) else {
            if complete && let Some(value) = value {
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
                self.unwritten[side].push(key.clone());
                self.cache_rows(side, key, rows);
            } else {
                self.write_state(side, group, state_key, value, new);
            }
            return;
        };
        let was_unwritten = rows.rows.get(state_key).is_some_and(|r| !r.written);
        match value {
            Some(value) if new || was_unwritten => {
                rows.set(
                    state_key,
                    Some(KeptRow {
                        value,
                        written: false,
                    }),
                );
                if !std::mem::replace(&mut rows.listed, true) {
                    self.unwritten[side].push(key.clone());
                }
                let cost = rows.cost;
                self.caches[side].recharge(&key, cost);
            }
            Some(value) => {
                rows.set(
                    state_key,
                    Some(KeptRow {
                        value: value.clone(),
                        written: true,
                    }),
                );
                let cost = rows.cost;
                self.caches[side].recharge(&key, cost);
                self.states[side].put(group, state_key, value);
            }
            None => {
                rows.set(state_key, None);
                if rows.rows.is_empty() {
                    // A key whose rows are all gone (cleaned up behind the
                    // watermark) leaves the cache: a complete cache still
                    // answers "absent" for it, and it holds only live keys.
                    self.caches[side].remove(&key);
                } else {
                    let cost = rows.cost;
                    self.caches[side].recharge(&key, cost);
                }
                if !was_unwritten {
                    self.states[side].delete(group, state_key);
                }
            }
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

    /// Rows of `side` as a batch; `rows[i]` None gives a null row.
    fn side_columns(&self, side: usize, rows: &[Option<&[u8]>]) -> EngineResult<Vec<ArrayRef>> {
        let schema = &self.sides[side].schema;
        let mut decoder = RowDecoder::new(schema, None)?;
        let mut indices = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Some(bytes) => {
                    indices.push(Some(decoder.len() as u32));
                    decoder.push(bytes)?;
                }
                None => indices.push(None),
            }
        }
        let decoded = decoder.finish()?;
        let indices = UInt32Array::from(indices);
        Ok(decoded
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Joined rows in the output layout.
    fn build(&self, rows: &[OutRow]) -> EngineResult<RecordBatch> {
        if let Some((kept, _)) = self.kept() {
            let side_rows: Vec<Option<&[u8]>> = rows
                .iter()
                .map(|(_, l, r)| if kept == 0 { l } else { r }.as_deref())
                .collect();
            let columns = self.side_columns(kept, &side_rows)?;
            return Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        let left: Vec<Option<&[u8]>> = rows.iter().map(|(_, l, _)| l.as_deref()).collect();
        let right: Vec<Option<&[u8]>> = rows.iter().map(|(_, _, r)| r.as_deref()).collect();
        let left = self.side_columns(0, &left)?;
        let right = self.side_columns(1, &right)?;
        let (lv, rv) = (self.sides[0].visible, self.sides[1].visible);
        let mut columns = Vec::with_capacity(left.len() + right.len());
        columns.extend_from_slice(&left[..lv]);
        columns.extend_from_slice(&right[..rv]);
        columns.extend_from_slice(&left[lv..]);
        columns.extend_from_slice(&right[rv..]);
        let options =
            datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    /// Keeps, of every probe's matches, those that pass the extra
    /// condition: one batch of every (probe, match) pair of the chunk, one
    /// evaluation.
    fn filter_probes(&self, side: usize, probes: &mut [Probe]) -> EngineResult<()> {
        let Some(filter) = &self.filter else {
            return Ok(());
        };
        let mut own: Vec<Option<&[u8]>> = vec![];
        let mut theirs: Vec<Option<&[u8]>> = vec![];
        for probe in probes.iter() {
            for m in &probe.matches {
                own.push(Some(&probe.value));
                theirs.push(Some(&m.row));
            }
        }
        if own.is_empty() {
            return Ok(());
        }
        let (left, right) = if side == 0 {
            (&own, &theirs)
        } else {
            (&theirs, &own)
        };
        // The condition sees both sides' columns even in semi/anti joins.
        let batch = self.build_pairs(left, right)?;
        let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean();
        let mut at = 0;
        for probe in probes.iter_mut() {
            let matches = std::mem::take(&mut probe.matches);
            for m in matches {
                if mask.is_valid(at) && mask.value(at) {
                    probe.matches.push(m);
                }
                at += 1;
            }
        }
        Ok(())
    }

    /// Pairs as left visible, right visible columns (what the condition
    /// reads), whatever the join's output layout.
    fn build_pairs(
        &self,
        left: &[Option<&[u8]>],
        right: &[Option<&[u8]>],
    ) -> EngineResult<RecordBatch> {
        let left = self.side_columns(0, left)?;
        let right = self.side_columns(1, right)?;
        let (lv, rv) = (self.sides[0].visible, self.sides[1].visible);
        let mut fields = Vec::with_capacity(lv + rv);
        fields.extend(self.sides[0].schema.fields()[..lv].iter().cloned());
        fields.extend(self.sides[1].schema.fields()[..rv].iter().cloned());
        let mut columns = left[..lv].to_vec();
        columns.extend_from_slice(&right[..rv]);
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Row `row` of a chunk on `side`: its keys and encoded value, and the
    /// other side's rows with its join key (before the extra condition).
    fn probe(&mut self, side: usize, chunk: &StreamChunk, row: usize) -> EngineResult<Probe> {
        let other = 1 - side;
        let batch = chunk.data();
        let spec = &self.sides[side];
        let key_columns: Vec<&ArrayRef> = spec.keys.iter().map(|&k| batch.column(k)).collect();
        let has_null = key_columns.iter().any(|c| c.is_null(row));
        let mut join_key = vec![];
        encode_nullable_key(&key_columns, row, &mut join_key)?;
        let stream_columns: Vec<&ArrayRef> =
            spec.stream_key.iter().map(|&k| batch.column(k)).collect();
        let mut state_key = vec![if has_null && !self.nulls_equal {
            UNMATCHABLE
        } else {
            MATCHABLE
        }];
        state_key.extend_from_slice(&(join_key.len() as u32).to_be_bytes());
        state_key.extend_from_slice(&join_key);
        encode_nullable_key(&stream_columns, row, &mut state_key)?;
        let mut value = vec![];
        encode_row(batch.columns(), row, &mut value)?;
        let group = key_group(&join_key);
        let insert = chunk.op(row)?.sign() > 0;

        let matches = if state_key[0] == MATCHABLE {
            let prefix = state_key[..5 + join_key.len()].to_vec();
            self.rows_of_key(other, group, &prefix)?
        } else {
            vec![]
        };
        Ok(Probe {
            state_key,
            value,
            group,
            insert,
            matches,
        })
    }

    /// Applies probe `probe` of row `row` on `side`: emits its joined and
    /// padded rows, moves the matched rows' degrees (`degrees` holds those
    /// moved earlier in the chunk, newer than the probe's copies) and
    /// writes the row to state.
    fn apply(
        &mut self,
        side: usize,
        chunk: &StreamChunk,
        row: usize,
        probe: Probe,
        degrees: &mut HashMap<Vec<u8>, i64>,
        out: &mut Vec<OutRow>,
    ) -> EngineResult<()> {
        let other = 1 - side;
        let batch = chunk.data();
        let Probe {
            state_key,
            value,
            group,
            insert,
            matches,
        } = probe;

        let pair = |own: &[u8], theirs: &[u8]| -> (Option<Vec<u8>>, Option<Vec<u8>>) {
            if side == 0 {
                (Some(own.to_vec()), Some(theirs.to_vec()))
            } else {
                (Some(theirs.to_vec()), Some(own.to_vec()))
            }
        };
        let padded_own = |own: &[u8]| -> (Option<Vec<u8>>, Option<Vec<u8>>) {
            if side == 0 {
                (Some(own.to_vec()), None)
            } else {
                (None, Some(own.to_vec()))
            }
        };
        let padded_theirs = |theirs: &[u8]| -> (Option<Vec<u8>>, Option<Vec<u8>>) {
            if side == 0 {
                (None, Some(theirs.to_vec()))
            } else {
                (Some(theirs.to_vec()), None)
            }
        };
        let kept = self.kept();
        let add = if insert { Op::Insert } else { Op::Delete };

        for m in &matches {
            if kept.is_none() {
                let (l, r) = pair(&value, &m.row);
                out.push((add, l, r));
            }
            if self.tracks_degree(other) {
                let before = degrees.get(&m.state_key).copied().unwrap_or(m.degree);
                let after = before + if insert { 1 } else { -1 };
                degrees.insert(m.state_key.clone(), after);
                // The other row's result changes when its degree leaves or
                // reaches zero.
                let transition = (before == 0) != (after == 0);
                if transition {
                    let now_matched = after > 0;
                    if self.preserved(other) {
                        let (l, r) = padded_theirs(&m.row);
                        out.push((if now_matched { Op::Delete } else { Op::Insert }, l, r));
                    } else if let Some((_, semi)) = kept {
                        let show = now_matched == semi;
                        let (l, r) = padded_theirs(&m.row);
                        out.push((if show { Op::Insert } else { Op::Delete }, l, r));
                    }
                }
                self.write_row(
                    other,
                    group,
                    &m.state_key,
                    Some(encode_value(&m.row, after)),
                    false,
                );
            }
        }
        let degree = matches.len() as i64;
        if self.preserved(side) && degree == 0 {
            let (l, r) = padded_own(&value);
            out.push((add, l, r));
        }
        if let Some((kept_side, semi)) = kept
            && kept_side == side
            && (degree > 0) == semi
        {
            let (l, r) = padded_own(&value);
            out.push((add, l, r));
        }
        if insert {
            let degree = if self.tracks_degree(side) { degree } else { 0 };
            self.write_row(
                side,
                group,
                &state_key,
                Some(encode_value(&value, degree)),
                true,
            );
            if let Some(window) = self.window.as_mut() {
                let column = window.spec.columns[side];
                if let Some(key) = order_key_at(batch.column(column), row)? {
                    window.register(side, key, group, &state_key);
                }
            }
        } else {
            self.write_row(side, group, &state_key, None, false);
        }
        Ok(())
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
        let mut probes = Vec::with_capacity(chunk.num_rows());
        for row in 0..chunk.num_rows() {
            probes.push(self.probe(input, &chunk, row)?);
        }
        self.filter_probes(input, &mut probes)?;
        let mut degrees = HashMap::default();
        let mut rows = vec![];
        for (row, probe) in probes.into_iter().enumerate() {
            self.apply(input, &chunk, row, probe, &mut degrees, &mut rows)?;
        }
        if !rows.is_empty() {
            let batch = self.build(&rows)?;
            let ops: Vec<Op> = rows.iter().map(|(op, _, _)| *op).collect();
            out.emit(StreamChunk::new(batch, &ops)?);
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
