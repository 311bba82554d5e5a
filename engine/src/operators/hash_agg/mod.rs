//! Grouped aggregation with retractions: every change of a group's result
//! is emitted at the barrier as an insert, an update pair or a delete.
//!
//! `count`, `sum` and `avg` keep DataFusion's retractable ("sliding")
//! accumulators, whose state is stored per group. Over an input that only
//! inserts, `min` and `max` keep DataFusion's plain accumulator (a running
//! value) the same way. Every other aggregate (min and max under
//! retraction, DISTINCT aggregates, bool_and/or, string_agg, array_agg, …)
//! keeps its input values per group as a multiset in a state table and is
//! recomputed with DataFusion's own accumulator when its group changed, so
//! its result is exactly what a batch query gives.
//!
//! Groups are decoded once: after a barrier writes them, they stay in the
//! operator's [`StateCache`] (bounded by `state.cache-mb`), so a group
//! touched in every epoch costs no state read nor decoding.
//!
//! A windowed aggregation (one group column carries a watermark: a window
//! bound or a time bucket) drops rows behind the watermark as late, counting
//! them, and deletes a group's state once the watermark passes it. With
//! `EMIT ON WINDOW CLOSE` it emits nothing at barriers: each group's final
//! row is emitted once, when the watermark closes it.

use datafusion::common::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::epoch_buffer::ENTRY_OVERHEAD;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::scalar_codec::encode_scalars;
use runnel_storage::state_table::key_group;
use runnel_storage::{BufferCharge, StateCache, StateTable, Store};

use crate::graph::AggregateCall;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, Op, StreamChunk, Watermark};

mod chunk_groups;
mod multiset;
mod record;
#[cfg(test)]
mod tests;
mod window;

use super::window_state::{KeptWatermark, OpenWindows};
use crate::watermarks::order_key;
use chunk_groups::{ChunkGroups, slices, take_in_order};
use multiset::Multiset;
use window::Window;
pub use window::WindowSetup;

/// How an aggregate's result is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// A retractable ("sliding") accumulator per group (count, sum, avg).
    Sliding,
    /// A plain accumulator per group, only ever updated: min and max over
    /// an input that only inserts.
    Running,
    /// Every input value, recomputed when the group changed.
    Recomputed,
}

struct AggSlot {
    call: AggregateCall,
    kept: Kept,
    output_type: DataType,
}

impl AggSlot {
    /// Whether the group keeps an accumulator for it.
    fn incremental(&self) -> bool {
        self.kept != Kept::Recomputed
    }
}

/// A group touched in the running epoch.
struct GroupState {
    group: u16,
    values: Vec<ScalarValue>,
    rows: i64,
    /// The result row emitted last, if the group had one.
    previous: Option<Vec<ScalarValue>>,
    /// One per aggregate; `Some` for incremental ones.
    accumulators: Vec<Option<Box<dyn Accumulator>>>,
    /// Whether the state table has (or will have, once the epoch commits)
    /// a record of the group: a group that goes before any barrier wrote
    /// it needs no delete.
    stored: bool,
}

/// What a touched group costs the epoch buffer: its key, its values (and
/// its previous result's) and its accumulators, roughly.
fn dirty_cost(key_len: usize, state: &GroupState) -> usize {
    const SCALAR: usize = 64;
    key_len + ENTRY_OVERHEAD + SCALAR * (2 * state.values.len() + 2 * state.accumulators.len())
}

/// One parallel instance of a grouped aggregation.
pub struct HashAggOperator {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<AggSlot>,
    schema: SchemaRef,
    /// Group key → the group's record.
    groups: StateTable,
    /// Group key + aggregate index + argument key → count and arguments.
    inputs: StateTable,
    dirty: HashMap<Vec<u8>, GroupState>,
    /// The touched groups' share of the store's epoch buffer.
    dirty_charge: BufferCharge,
    /// Groups written at earlier barriers, decoded, as the store has them.
    cache: StateCache<Vec<u8>, GroupState>,
    /// Recomputed aggregates' inputs by group (input prefix), as `inputs`
    /// holds them.
    multisets: StateCache<Vec<u8>, Multiset>,
    global_checked: bool,
    window: Option<Window>,
}

impl std::fmt::Debug for HashAggOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashAggOperator")
            .field("groups", &self.groups.id())
            .finish()
    }
}

fn input_key(group_key: &[u8], agg: usize, arg_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(group_key.len() + arg_key.len() + 4);
    key.extend_from_slice(&(group_key.len() as u32).to_be_bytes());
    key.extend_from_slice(group_key);
    key.extend_from_slice(&(agg as u16).to_be_bytes());
    key.extend_from_slice(arg_key);
    key
}

fn input_prefix(group_key: &[u8], agg: usize) -> Vec<u8> {
    input_key(group_key, agg, &[])
}

impl HashAggOperator {
    /// Groups by `group_by`, computing `aggregates` into `schema` (group
    /// columns, then aggregates); state in tables `state_id` and
    /// `state_id + 1`, and `state_id + 2` when windowed.
    pub fn new(
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<AggregateCall>,
        schema: SchemaRef,
        store: Store,
        state_id: u64,
        window: Option<WindowSetup>,
    ) -> EngineResult<Self> {
        let aggs = aggregates
            .into_iter()
            .enumerate()
            .map(|(i, call)| {
                let f = &call.function;
                let sliding = matches!(f.fun().name(), "count" | "sum" | "avg")
                    && !f.is_distinct()
                    && f.create_sliding_accumulator()
                        .is_ok_and(|a| a.supports_retract_batch());
                let output_type = schema.field(group_by.len() + i).data_type().clone();
                AggSlot {
                    call,
                    kept: if sliding {
                        Kept::Sliding
                    } else {
                        Kept::Recomputed
                    },
                    output_type,
                }
            })
            .collect();
        let groups = StateTable::new(store.clone(), state_id);
        let inputs = StateTable::new(store.clone(), state_id + 1);
        let mut cache = StateCache::new(Arc::clone(store.cache_budget()));
        let mut multisets = StateCache::new(Arc::clone(store.cache_budget()));
        // Started on empty state (not a restart), every group and input
        // set is cached as it is written: a miss is a new group, with no
        // state read, until something is evicted.
        if groups.is_empty()? && inputs.is_empty()? {
            cache.assume_complete();
            multisets.assume_complete();
        }
        Ok(Self {
            group_by,
            aggs,
            schema,
            groups,
            inputs,
            dirty: HashMap::default(),
            dirty_charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
            cache,
            multisets,
            global_checked: false,
            window: window.map(|setup| Window {
                watermark: KeptWatermark::new(store, state_id + 2, &setup.key_groups),
                setup,
                open: OpenWindows::default(),
                loaded: false,
            }),
        })
    }

    /// Says that the input only ever inserts rows: min and max then keep a
    /// running accumulator instead of their inputs. Call before the first
    /// chunk; the planner says the same for the same query every time, so
    /// stored state keeps its layout.
    pub fn with_append_only_input(mut self, append_only: bool) -> EngineResult<Self> {
        if append_only {
            for slot in &mut self.aggs {
                let f = &slot.call.function;
                if slot.kept == Kept::Recomputed
                    && matches!(f.fun().name(), "min" | "max")
                    && !f.is_distinct()
                    && slot.call.filter.is_none()
                {
                    slot.kept = Kept::Running;
                }
            }
        }
        Ok(self)
    }

    fn emits_on_close(&self) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.setup.spec.emit_on_close)
    }

    fn fresh_accumulators(&self) -> EngineResult<Vec<Option<Box<dyn Accumulator>>>> {
        self.aggs
            .iter()
            .map(|slot| {
                Ok(match slot.kept {
                    Kept::Sliding => Some(slot.call.function.create_sliding_accumulator()?),
                    Kept::Running => Some(slot.call.function.create_accumulator()?),
                    Kept::Recomputed => None,
                })
            })
            .collect()
    }

    /// The group's state, taken out of this epoch's touched groups or read
    /// from the store (`values` gives a new group's values), and whether it
    /// is new; put it back into `dirty` when done.
    fn take_group(
        &mut self,
        key: &[u8],
        values: impl FnOnce() -> EngineResult<Vec<ScalarValue>>,
    ) -> EngineResult<(GroupState, bool)> {
        if let Some(state) = self.take_dirty(key) {
            return Ok((state, false));
        }
        if let Some(state) = self.cache.take(key) {
            return Ok((state, false));
        }
        let group = key_group(key);
        let stored = if self.cache.is_complete() {
            None
        } else {
            self.groups.get(group, key)?
        };
        Ok(match stored {
            Some(bytes) => (self.decode_record(group, &bytes)?, false),
            None => (
                GroupState {
                    group,
                    values: values()?,
                    rows: 0,
                    previous: None,
                    accumulators: self.fresh_accumulators()?,
                    stored: false,
                },
                true,
            ),
        })
    }

    /// Runs `work` on the multiset of aggregate inputs at `prefix` in key
    /// group `group`: the cached one, or one read from state (and cached,
    /// when the budget allows).
    fn with_multiset<R>(
        &mut self,
        group: u16,
        prefix: &[u8],
        work: impl FnOnce(&mut Multiset) -> EngineResult<R>,
    ) -> EngineResult<R> {
        let (result, emptied) = match self.multisets.get_mut(prefix) {
            Some(set) => {
                let result = work(set)?;
                let cost = set.cost();
                let emptied = set.is_empty();
                self.multisets.recharge(prefix, cost);
                (result, emptied)
            }
            None => {
                let mut set = if self.multisets.is_complete() {
                    Multiset::default()
                } else {
                    Multiset::load(&self.inputs, group, prefix)?
                };
                let result = work(&mut set)?;
                if set.is_empty() {
                    return Ok(result);
                }
                let cost = set.cost();
                self.multisets.insert(prefix.to_vec(), set, cost);
                (result, false)
            }
        };
        if emptied {
            // An empty set is what a complete cache answers for a missing
            // one: the cache holds only sets with values.
            self.multisets.remove(prefix);
        }
        Ok(result)
    }

    /// Recomputes aggregate `agg` of a group from its kept inputs.
    fn recompute(&mut self, group: u16, group_key: &[u8], agg: usize) -> EngineResult<ScalarValue> {
        let function = Arc::clone(&self.aggs[agg].call.function);
        self.with_multiset(group, &input_prefix(group_key, agg), |set| {
            set.evaluate(&function)
        })
    }

    fn emit_row(rows: &mut Vec<(Op, Vec<ScalarValue>)>, op: Op, values: Vec<ScalarValue>) {
        rows.push((op, values));
    }

    fn build_chunk(&self, rows: Vec<(Op, Vec<ScalarValue>)>) -> EngineResult<Option<StreamChunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            // Values have their column's type (group values come from the
            // input, results are cast as computed): one array, cast only
            // if it came out otherwise.
            let column = ScalarValue::iter_to_array(rows.iter().map(|(_, v)| v[i].clone()));
            let column = match column {
                Ok(array) if array.data_type() == field.data_type() => array,
                Ok(array) => datafusion::arrow::compute::cast(&array, field.data_type())?,
                Err(_) => ScalarValue::iter_to_array(
                    rows.iter()
                        .map(|(_, values)| cast_scalar(&values[i], field.data_type()))
                        .collect::<EngineResult<Vec<_>>>()?,
                )?,
            };
            columns.push(column);
        }
        let ops: Vec<Op> = rows.iter().map(|(op, _)| *op).collect();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        Ok(Some(StreamChunk::new(batch, &ops)?))
    }
}

fn cast_scalar(value: &ScalarValue, to: &DataType) -> EngineResult<ScalarValue> {
    if &value.data_type() == to {
        Ok(value.clone())
    } else {
        Ok(value.cast_to(to)?)
    }
}

/// Fails on a group with fewer than no rows.
fn check_rows(state: &GroupState) -> EngineResult<()> {
    if state.rows < 0 {
        return Err(EngineError::Internal(format!(
            "group has {} rows: a delete arrived for a row never inserted",
            state.rows
        )));
    }
    Ok(())
}

fn rows_array(rows: &[u32]) -> UInt32Array {
    UInt32Array::from(rows.to_vec())
}

#[async_trait]
impl StreamOperator for HashAggOperator {
    fn name(&self) -> &'static str {
        "hash_aggregate"
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
        self.load_window()?;
        let chunk = self.drop_late(chunk)?;
        let batch = chunk.data();
        let group_arrays = self
            .group_by
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let groups = ChunkGroups::new(&chunk, &group_arrays)?;
        // Arguments and filters of every aggregate, over the whole chunk.
        let mut args: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        let mut filters: Vec<Option<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        for slot in &self.aggs {
            args.push(
                slot.call
                    .function
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            filters.push(match &slot.call.filter {
                Some(f) => Some(f.evaluate(batch)?.into_array(batch.num_rows())?),
                None => None,
            });
        }
        // The arguments of accumulated aggregates without a filter, taken
        // once in group order; each group updates with slices of them.
        let mut grouped: Vec<[Option<Vec<ArrayRef>>; 2]> = Vec::with_capacity(self.aggs.len());
        for (i, slot) in self.aggs.iter().enumerate() {
            grouped.push(if slot.incremental() && filters[i].is_none() {
                [
                    take_in_order(&args[i], &groups.inserts)?,
                    take_in_order(&args[i], &groups.deletes)?,
                ]
            } else {
                [None, None]
            });
        }
        for (group_index, key) in groups.keys.iter().enumerate() {
            let (inserts, insert_range) = groups.inserted(group_index);
            let (deletes, delete_range) = groups.deleted(group_index);
            let first = inserts.first().or(deletes.first()).copied().unwrap_or(0) as usize;
            let (mut state, new) = self.take_group(key, || {
                group_arrays
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, first).map_err(EngineError::from))
                    .collect()
            })?;
            state.rows += inserts.len() as i64 - deletes.len() as i64;
            let group = state.group;
            let mut input_changes: Vec<(usize, Vec<u8>, Vec<ScalarValue>, i64)> = vec![];
            for (i, slot) in self.aggs.iter().enumerate() {
                if slot.kept == Kept::Running && !deletes.is_empty() {
                    return Err(EngineError::Internal(
                        "a delete reached an aggregation planned for an input that only \
                         inserts"
                            .into(),
                    ));
                }
                if let [Some(_), _] | [_, Some(_)] = &grouped[i] {
                    let acc = state.accumulators[i]
                        .as_mut()
                        .expect("incremental aggregates have accumulators");
                    if let Some(taken) = &grouped[i][0]
                        && !insert_range.is_empty()
                    {
                        acc.update_batch(&slices(taken, &insert_range))?;
                    }
                    if let Some(taken) = &grouped[i][1]
                        && !delete_range.is_empty()
                    {
                        acc.retract_batch(&slices(taken, &delete_range))?;
                    }
                    continue;
                }
                let keep = |rows: &[u32]| super::rows_passing(rows, filters[i].as_ref());
                let (ins, del) = (keep(inserts), keep(deletes));
                if slot.incremental() {
                    let acc = state.accumulators[i]
                        .as_mut()
                        .expect("incremental aggregates have accumulators");
                    if !ins.is_empty() {
                        let taken = args[i]
                            .iter()
                            .map(|a| take(a, &rows_array(&ins), None))
                            .collect::<Result<Vec<_>, _>>()?;
                        acc.update_batch(&taken)?;
                    }
                    if !del.is_empty() {
                        let taken = args[i]
                            .iter()
                            .map(|a| take(a, &rows_array(&del), None))
                            .collect::<Result<Vec<_>, _>>()?;
                        acc.retract_batch(&taken)?;
                    }
                } else {
                    let arg_refs: Vec<&ArrayRef> = args[i].iter().collect();
                    for (rows, sign) in [(&ins, 1i64), (&del, -1i64)] {
                        for &row in rows.iter() {
                            let mut arg_key = vec![];
                            encode_nullable_key(&arg_refs, row as usize, &mut arg_key)?;
                            let values = args[i]
                                .iter()
                                .map(|a| ScalarValue::try_from_array(a, row as usize))
                                .collect::<Result<Vec<_>, _>>()?;
                            input_changes.push((i, arg_key, values, sign));
                        }
                    }
                }
            }
            for (agg, arg_key, values, sign) in input_changes {
                let prefix = input_prefix(key, agg);
                let count = self.with_multiset(group, &prefix, |set| {
                    Ok(set.add(&arg_key, values.clone(), sign))
                })?;
                let input = input_key(key, agg, &arg_key);
                if count <= 0 {
                    self.inputs.delete(group, &input);
                } else {
                    let mut record = vec![ScalarValue::Int64(Some(count))];
                    record.extend(values);
                    let mut bytes = vec![];
                    encode_scalars(&record, &mut bytes)?;
                    self.inputs.put(group, &input, bytes);
                }
            }
            // A group with state is in the index of open windows from the
            // time it was new (or the index was read back from state).
            if new
                && let Some(window) = self.window.as_mut()
                && let Some(value) = state.values.get(window.setup.spec.group_column)
                && let Some(window_value) = order_key(value)?
            {
                window.open.insert(window_value, key.clone());
            }
            self.put_dirty(key.clone(), state);
        }
        Ok(())
    }

    /// Closes the groups the watermark passed: emits their final rows (on
    /// window close) or their pending changes, then deletes their state.
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        // Without a window no column of the output is bounded.
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if watermark.column != window.setup.spec.input_column {
            return Ok(());
        }
        self.load_window()?;
        let window = self.window.as_mut().expect("checked above");
        if !window.watermark.advance(&watermark.value) {
            return Ok(());
        }
        let output_column = window.setup.spec.group_column;
        let closed = window.open.close_below(&watermark.value)?;
        let mut emitted = vec![];
        let on_close = self.emits_on_close();
        for key in closed {
            // Only a group touched since the last barrier has a change to
            // emit before it goes; the others stay dirty until the barrier.
            let touched = self.dirty.contains_key(&key);
            let Some(mut state) = self.existing_group(&key)? else {
                continue;
            };
            if on_close {
                if state.rows > 0 {
                    let result = self.result_row(&key, &mut state)?;
                    Self::emit_row(&mut emitted, Op::Insert, result);
                }
            } else if touched {
                self.emit_change(&key, &mut state, &mut emitted)?;
            }
            self.delete_group(&key, &state)?;
        }
        if let Some(chunk) = self.build_chunk(emitted)? {
            out.emit(chunk);
        }
        out.emit_watermark(Watermark {
            column: output_column,
            value: watermark.value,
        });
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        if self.group_by.is_empty() && !self.global_checked {
            // Without GROUP BY there is always exactly one row, even over
            // no input (count 0, sum null).
            self.global_checked = true;
            let (state, _) = self.take_group(&[], || Ok(vec![]))?;
            self.put_dirty(vec![], state);
        }
        let mut emitted = vec![];
        let emit = !self.emits_on_close();
        self.flush_dirty(emit, &mut emitted)?;
        if let Some(chunk) = self.build_chunk(emitted)? {
            out.emit(chunk);
        }
        self.groups.seal_epoch(barrier.epoch.0, out.writes());
        self.inputs.seal_epoch(barrier.epoch.0, out.writes());
        if let Some(window) = self.window.as_mut() {
            window.watermark.seal(barrier.epoch.0, out.writes())?;
        }
        Ok(())
    }
}

impl HashAggOperator {
    /// Keeps a touched group in memory until the barrier.
    fn put_dirty(&mut self, key: Vec<u8>, state: GroupState) {
        let key_len = key.len();
        self.dirty_charge.add(dirty_cost(key_len, &state));
        if let Some(old) = self.dirty.insert(key, state) {
            self.dirty_charge.sub(dirty_cost(key_len, &old));
        }
    }

    /// Takes a touched group back out.
    fn take_dirty(&mut self, key: &[u8]) -> Option<GroupState> {
        let state = self.dirty.remove(key)?;
        self.dirty_charge.sub(dirty_cost(key.len(), &state));
        Some(state)
    }

    /// Writes every group touched since the last flush to state; with
    /// `emit`, adds the changes of their result rows to `emitted`.
    fn flush_dirty(
        &mut self,
        emit: bool,
        emitted: &mut Vec<(Op, Vec<ScalarValue>)>,
    ) -> EngineResult<()> {
        let dirty = std::mem::take(&mut self.dirty);
        self.dirty_charge.clear();
        for (key, mut state) in dirty {
            if emit {
                self.emit_change(&key, &mut state, emitted)?;
            } else {
                check_rows(&state)?;
            }
            if state.rows == 0 && !self.group_by.is_empty() {
                if state.stored {
                    self.groups.delete(state.group, &key);
                }
                continue;
            }
            let cost = dirty_cost(key.len(), &state);
            let mut bytes = vec![];
            self.encode_record(&mut state, &mut bytes)?;
            self.groups.put(state.group, &key, bytes);
            state.stored = true;
            self.cache.insert(key, state, cost);
        }
        Ok(())
    }

    /// Adds the change of a touched group's result row since it was last
    /// emitted to `emitted` (an insert, an update pair or nothing; a
    /// delete when it has no rows left) and remembers the new row.
    fn emit_change(
        &mut self,
        key: &[u8],
        state: &mut GroupState,
        emitted: &mut Vec<(Op, Vec<ScalarValue>)>,
    ) -> EngineResult<()> {
        check_rows(state)?;
        if state.rows == 0 && !self.group_by.is_empty() {
            if let Some(previous) = state.previous.take() {
                Self::emit_row(emitted, Op::Delete, previous);
            }
            return Ok(());
        }
        let result = self.result_row(key, state)?;
        match state.previous.take() {
            None => Self::emit_row(emitted, Op::Insert, result.clone()),
            Some(previous) if previous != result => {
                Self::emit_row(emitted, Op::UpdateDelete, previous);
                Self::emit_row(emitted, Op::UpdateInsert, result.clone());
            }
            Some(_) => {}
        }
        state.previous = Some(result);
        Ok(())
    }

    /// The group's values followed by its aggregates' results.
    fn result_row(&mut self, key: &[u8], state: &mut GroupState) -> EngineResult<Vec<ScalarValue>> {
        let mut result = state.values.clone();
        for i in 0..self.aggs.len() {
            let value = match state.accumulators[i].as_mut() {
                Some(acc) => acc.evaluate()?,
                None => self.recompute(state.group, key, i)?,
            };
            result.push(cast_scalar(&value, &self.aggs[i].output_type)?);
        }
        Ok(result)
    }

    /// The group at `key` if it has state (touched or stored).
    fn existing_group(&mut self, key: &[u8]) -> EngineResult<Option<GroupState>> {
        if let Some(state) = self.take_dirty(key) {
            return Ok(Some(state));
        }
        if let Some(state) = self.cache.take(key) {
            return Ok(Some(state));
        }
        if self.cache.is_complete() {
            return Ok(None);
        }
        let group = key_group(key);
        match self.groups.get(group, key)? {
            Some(bytes) => Ok(Some(self.decode_record(group, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Deletes a group's record and its kept inputs.
    fn delete_group(&mut self, key: &[u8], state: &GroupState) -> EngineResult<()> {
        let group = state.group;
        if state.stored {
            self.groups.delete(group, key);
        }
        self.cache.remove(key);
        for agg in 0..self.aggs.len() {
            if self.aggs[agg].incremental() {
                continue;
            }
            let prefix = input_prefix(key, agg);
            self.multisets.remove(prefix.as_slice());
            for (input, _) in self.inputs.scan_prefix(group, &prefix)? {
                self.inputs.delete(group, &input);
            }
        }
        Ok(())
    }
}
