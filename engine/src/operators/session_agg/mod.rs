//! Aggregation over session windows: per key, rows at most `gap` apart in
//! event time form one session; a row that touches two sessions merges
//! them. Each session keeps DataFusion accumulators, merged through their
//! partial states (`state()` into `merge_batch`), so every aggregate that
//! DataFusion can run in two phases works here.
//!
//! The input must be append-only (a source, or a table that only takes
//! INSERT): a deleted row could split a session, which partial states
//! cannot undo. At a barrier every changed session's row is emitted (the
//! old one retracted: its bounds are part of its key); with `EMIT ON
//! WINDOW CLOSE` only closed sessions are, once. A session whose last row
//! plus the gap is behind the watermark is closed and its state deleted;
//! rows behind the watermark are late, dropped and counted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::{StateTable, Store};

use super::window_state::KeptWatermark;
use crate::graph::{AggregateCall, SessionColumn, SessionWindow};
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, Op, StreamChunk, Watermark};

mod state;
#[cfg(test)]
mod tests;

/// Nanoseconds in one unit of a timestamp.
pub fn nanos_per_unit(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// What a session aggregation needs from the runtime.
#[derive(Debug)]
pub struct SessionSetup {
    pub window: SessionWindow,
    /// The key groups this subtask owns.
    pub key_groups: Vec<u16>,
    /// The job's counter of late rows dropped.
    pub late_rows: Arc<AtomicU64>,
}

/// One session of one key.
struct Session {
    /// First and last event time, in the time column's units.
    start: i64,
    last: i64,
    rows: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The row emitted for it last, if any.
    previous: Option<Vec<ScalarValue>>,
    /// Rows of the current chunk not yet fed to the accumulators.
    pending: Vec<u32>,
    /// Changed since it was read from state.
    changed: bool,
}

/// The sessions of one key touched since the last barrier.
struct KeySessions {
    group: u16,
    values: Vec<ScalarValue>,
    /// Sorted by start, never overlapping.
    sessions: Vec<Session>,
    /// Rows emitted for sessions that merged into others or closed.
    retract: Vec<Vec<ScalarValue>>,
    /// Starts of stored records to delete.
    removed: Vec<i64>,
    /// Starts of the records stored now (as of the last barrier).
    stored: BTreeSet<i64>,
}

/// One parallel instance of a session aggregation.
pub struct SessionAggOperator {
    setup: SessionSetup,
    aggs: Vec<AggregateCall>,
    schema: SchemaRef,
    /// The time column's type, and the gap in its units.
    time_type: DataType,
    gap: i64,
    /// Key bytes, then the session start → the session's record.
    sessions: StateTable,
    /// The watermark as of the last barrier.
    watermark: KeptWatermark,
    dirty: HashMap<Vec<u8>, KeySessions>,
    /// Open sessions by close time (last + gap): (close, key, start).
    closing: BTreeSet<(i64, Vec<u8>, i64)>,
    loaded: bool,
}

impl std::fmt::Debug for SessionAggOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAggOperator")
            .field("sessions", &self.sessions.id())
            .finish()
    }
}

impl SessionAggOperator {
    /// Aggregates `aggregates` per session of `setup.window` over rows of
    /// `input`, into `schema`; state in tables `state_id` and `state_id + 1`.
    pub fn new(
        setup: SessionSetup,
        aggregates: Vec<AggregateCall>,
        input: &SchemaRef,
        schema: SchemaRef,
        store: Store,
        state_id: u64,
    ) -> EngineResult<Self> {
        let time_type = input.field(setup.window.time).data_type().clone();
        let gap = match &time_type {
            DataType::Timestamp(unit, _) => setup.window.gap_nanos / nanos_per_unit(unit),
            DataType::Int64 => setup.window.gap_nanos,
            other => {
                return Err(EngineError::Internal(format!(
                    "a session window over a {other} column"
                )));
            }
        };
        let watermark = KeptWatermark::new(store.clone(), state_id + 1, &setup.key_groups);
        Ok(Self {
            setup,
            aggs: aggregates,
            schema,
            time_type,
            gap,
            sessions: StateTable::new(store.clone(), state_id),
            watermark,
            dirty: HashMap::new(),
            closing: BTreeSet::new(),
            loaded: false,
        })
    }

    fn fresh_accumulators(&self) -> EngineResult<Vec<Box<dyn Accumulator>>> {
        self.aggs
            .iter()
            .map(|a| Ok(a.function.create_accumulator()?))
            .collect()
    }

    /// A time of the time column's type.
    fn time_value(&self, value: i64) -> EngineResult<ScalarValue> {
        Ok(ScalarValue::Int64(Some(value)).cast_to(&self.time_type)?)
    }

    /// The output row of a session of a key.
    fn result_row(
        &self,
        values: &[ScalarValue],
        session: &mut Session,
    ) -> EngineResult<Vec<ScalarValue>> {
        let mut row = Vec::with_capacity(self.schema.fields().len());
        for column in &self.setup.window.groups {
            row.push(match column {
                SessionColumn::Key(i) => values[*i].clone(),
                SessionColumn::Start => self.time_value(session.start)?,
                SessionColumn::End => self.time_value(session.last.saturating_add(self.gap))?,
            });
        }
        for acc in session.accumulators.iter_mut() {
            row.push(acc.evaluate()?);
        }
        for (value, field) in row.iter_mut().zip(self.schema.fields()) {
            if &value.data_type() != field.data_type() {
                *value = value.cast_to(field.data_type())?;
            }
        }
        Ok(row)
    }

    /// Replaces the close-time index entries of `key`'s open sessions
    /// (start, last): `before` out, `after` in.
    fn reindex(&mut self, key: &[u8], before: &[(i64, i64)], after: &[(i64, i64)]) {
        if !self.setup.window.watermarked || before == after {
            return;
        }
        for &(start, last) in before {
            self.closing
                .remove(&(last.saturating_add(self.gap), key.to_vec(), start));
        }
        for &(start, last) in after {
            self.closing
                .insert((last.saturating_add(self.gap), key.to_vec(), start));
        }
    }

    /// Places row `row` at time `time` into `entry`'s sessions, merging
    /// every session its window `[time, time + gap]` touches.
    fn place(&self, entry: &mut KeySessions, row: u32, time: i64) -> EngineResult<()> {
        let gap = self.gap;
        let touches =
            |s: &Session| time <= s.last.saturating_add(gap) && s.start <= time.saturating_add(gap);
        let Some(first) = entry.sessions.iter().position(touches) else {
            let at = entry.sessions.partition_point(|s| s.start < time);
            entry.sessions.insert(
                at,
                Session {
                    start: time,
                    last: time,
                    rows: 1,
                    accumulators: self.fresh_accumulators()?,
                    previous: None,
                    pending: vec![row],
                    changed: true,
                },
            );
            return Ok(());
        };
        let mut end = first + 1;
        while end < entry.sessions.len() && touches(&entry.sessions[end]) {
            end += 1;
        }
        let mut merged: Vec<Session> = entry.sessions.drain(first + 1..end).collect();
        let target = &mut entry.sessions[first];
        for other in merged.iter_mut() {
            if entry.stored.remove(&other.start) {
                entry.removed.push(other.start);
            }
            for (into, from) in target.accumulators.iter_mut().zip(&mut other.accumulators) {
                let partial = from
                    .state()?
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<ArrayRef>, _>>()?;
                into.merge_batch(&partial)?;
            }
            target.last = target.last.max(other.last);
            target.rows += other.rows;
            target.pending.append(&mut other.pending);
            if let Some(previous) = other.previous.take() {
                entry.retract.push(previous);
            }
        }
        if time < target.start && entry.stored.remove(&target.start) {
            entry.removed.push(target.start);
        }
        target.start = target.start.min(time);
        target.last = target.last.max(time);
        target.rows += 1;
        target.pending.push(row);
        target.changed = true;
        Ok(())
    }

    /// Feeds the rows each session of `entry` collected to its accumulators.
    fn feed(
        entry: &mut KeySessions,
        args: &[Vec<ArrayRef>],
        filters: &[Option<ArrayRef>],
    ) -> EngineResult<()> {
        for session in entry.sessions.iter_mut().filter(|s| !s.pending.is_empty()) {
            let rows = std::mem::take(&mut session.pending);
            for (i, acc) in session.accumulators.iter_mut().enumerate() {
                let kept = super::rows_passing(&rows, filters[i].as_ref());
                if kept.is_empty() {
                    continue;
                }
                let indices = UInt32Array::from(kept);
                let taken = args[i]
                    .iter()
                    .map(|a| take(a, &indices, None))
                    .collect::<Result<Vec<_>, _>>()?;
                acc.update_batch(&taken)?;
            }
        }
        Ok(())
    }

    /// Writes every touched key's sessions to state and forgets them from
    /// memory; with `emit`, adds the changes of their rows to `emitted`.
    fn flush(&mut self, emit: bool, emitted: &mut Vec<(Op, Vec<ScalarValue>)>) -> EngineResult<()> {
        for (key, mut entry) in std::mem::take(&mut self.dirty) {
            if emit {
                for row in entry.retract.drain(..) {
                    emitted.push((Op::Delete, row));
                }
            }
            for start in entry.removed.drain(..) {
                self.sessions
                    .delete(entry.group, &state::record_key(&key, start));
            }
            for session in entry.sessions.iter_mut().filter(|s| s.changed) {
                if emit {
                    let row = self.result_row(&entry.values, session)?;
                    if session.previous.as_ref() != Some(&row) {
                        if let Some(previous) = session.previous.take() {
                            emitted.push((Op::Delete, previous));
                        }
                        emitted.push((Op::Insert, row.clone()));
                    }
                    session.previous = Some(row);
                }
                let record = self.encode_session(&entry.values, session)?;
                self.sessions
                    .put(entry.group, &state::record_key(&key, session.start), record);
            }
        }
        Ok(())
    }

    fn build_chunk(&self, rows: Vec<(Op, Vec<ScalarValue>)>) -> EngineResult<Option<StreamChunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for i in 0..self.schema.fields().len() {
            columns.push(ScalarValue::iter_to_array(
                rows.iter().map(|(_, values)| values[i].clone()),
            )?);
        }
        let ops: Vec<Op> = rows.iter().map(|(op, _)| *op).collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(Some(StreamChunk::new(batch, &ops)?))
    }
}

#[async_trait]
impl StreamOperator for SessionAggOperator {
    fn name(&self) -> &'static str {
        "session_aggregate"
    }

    fn preserves_append_only(&self) -> bool {
        false
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        _out: &mut Output,
    ) -> EngineResult<()> {
        self.load()?;
        if !chunk.is_append_only() {
            return Err(EngineError::Internal(
                "a session window received a delete or update, but it needs an append-only input"
                    .into(),
            ));
        }
        let batch = chunk.data();
        let window = &self.setup.window;
        let times = cast(batch.column(window.time), &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let key_arrays: Vec<&ArrayRef> = window.keys.iter().map(|&k| batch.column(k)).collect();
        let mut args: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        let mut filters: Vec<Option<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        for call in &self.aggs {
            args.push(
                call.function
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            filters.push(match &call.filter {
                Some(f) => Some(f.evaluate(batch)?.into_array(batch.num_rows())?),
                None => None,
            });
        }
        // Rows per key in time order: fewer sessions to merge.
        let mut by_key: HashMap<Vec<u8>, Vec<(i64, u32)>> = HashMap::new();
        let mut late = 0u64;
        let watermark = match self.watermark.value() {
            Some(value) => watermark_value(value)?,
            None => None,
        };
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                continue;
            }
            let time = times.value(row);
            if watermark.is_some_and(|w| time < w) {
                late += 1;
                continue;
            }
            let mut key = vec![];
            encode_nullable_key(&key_arrays, row, &mut key)?;
            by_key.entry(key).or_default().push((time, row as u32));
        }
        if late > 0 {
            self.setup.late_rows.fetch_add(late, Ordering::Relaxed);
        }
        for (key, mut rows) in by_key {
            rows.sort_unstable();
            let first = rows[0].1 as usize;
            self.touch(&key, || {
                key_arrays
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, first).map_err(EngineError::from))
                    .collect()
            })?;
            let mut entry = self.dirty.remove(&key).expect("just touched");
            let bounds = |e: &KeySessions| -> Vec<(i64, i64)> {
                e.sessions.iter().map(|s| (s.start, s.last)).collect()
            };
            let before = bounds(&entry);
            for (time, row) in rows {
                self.place(&mut entry, row, time)?;
            }
            Self::feed(&mut entry, &args, &filters)?;
            self.reindex(&key, &before, &bounds(&entry));
            self.dirty.insert(key, entry);
        }
        Ok(())
    }

    /// Closes the sessions the watermark passed: emits their final rows
    /// (on window close) or their pending changes, then deletes them.
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        if !self.setup.window.watermarked || watermark.column != self.setup.window.time {
            return Ok(());
        }
        self.load()?;
        if !self.watermark.advance(&watermark.value) {
            return Ok(());
        }
        let Some(value) = watermark_value(&watermark.value)? else {
            return Ok(());
        };
        let still_open = self.closing.split_off(&(value, vec![], i64::MIN));
        let closed = std::mem::replace(&mut self.closing, still_open);
        let mut emitted = vec![];
        let on_close = self.setup.window.emit_on_close;
        if !on_close {
            self.flush(true, &mut emitted)?;
        }
        for (_, key, start) in closed {
            self.touch(&key, || {
                Err(EngineError::Internal(
                    "a closing session has no state".into(),
                ))
            })?;
            let mut entry = self.dirty.remove(&key).expect("just touched");
            if let Some(at) = entry.sessions.iter().position(|s| s.start == start) {
                let mut session = entry.sessions.remove(at);
                if on_close {
                    let row = self.result_row(&entry.values, &mut session)?;
                    emitted.push((Op::Insert, row));
                }
                if entry.stored.remove(&start) {
                    entry.removed.push(start);
                }
            }
            self.dirty.insert(key, entry);
        }
        if let Some(chunk) = self.build_chunk(emitted)? {
            out.emit(chunk);
        }
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        let mut emitted = vec![];
        self.flush(!self.setup.window.emit_on_close, &mut emitted)?;
        if let Some(chunk) = self.build_chunk(emitted)? {
            out.emit(chunk);
        }
        self.sessions.seal_epoch(barrier.epoch.0, out.writes());
        self.watermark.seal(barrier.epoch.0, out.writes())?;
        Ok(())
    }
}

/// A watermark value as an integer of the time column's units; None for
/// null.
fn watermark_value(value: &ScalarValue) -> EngineResult<Option<i64>> {
    match value.cast_to(&DataType::Int64)? {
        ScalarValue::Int64(v) => Ok(v),
        other => Err(EngineError::Internal(format!(
            "a session watermark of {other:?}"
        ))),
    }
}
