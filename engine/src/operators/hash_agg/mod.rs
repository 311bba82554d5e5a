//! Grouped aggregation with retractions: every change of a group's result
//! is emitted at the barrier as an insert, an update pair or a delete.
//!
//! Work is per chunk, not per group: each row's group key is looked up in
//! a table of group slots (see [`slots`]), and each aggregate is updated
//! with one call over the whole chunk, its state held in columns indexed
//! by slot (see [`columns`]): counts and sums for `count`, `sum` and `avg`
//! (retractable), the running value for `min` and `max` over an input that
//! only inserts. Every other aggregate (min and max under retraction,
//! DISTINCT aggregates, bool_and/or, string_agg, array_agg, …) keeps its
//! input values per group as a multiset in a state table and is recomputed
//! with DataFusion's own accumulator when its group changed, so its result
//! is exactly what a batch query gives.
//!
//! Groups stay in memory after a barrier writes them (bounded by
//! `state.cache-mb`), so a group touched in every epoch costs no state read
//! nor decoding.
//!
//! A windowed aggregation (one group column carries a watermark: a window
//! bound or a time bucket) drops rows behind the watermark as late, counting
//! them, and deletes a group's state once the watermark passes it. With
//! `EMIT ON WINDOW CLOSE` it emits nothing at barriers: each group's final
//! row is emitted once, when the watermark closes it.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::state_table::key_group;
use runnel_storage::{BufferCharge, StateCache, StateTable, Store};

use crate::graph::AggregateCall;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineResult, StreamChunk, Watermark};

mod columns;
mod emit;
mod inputs;
mod multiset;
#[cfg(test)]
mod oracle_tests;
mod record;
mod rows;
mod slots;
#[cfg(test)]
mod tests;
mod window;

use super::window_state::{KeptWatermark, OpenWindows};
use crate::watermarks::order_key_at;
use columns::{SlotAccumulator, Updates, slot_accumulator};
use multiset::Multiset;
use rows::RowFormat;
use slots::{Slot, Slots};
use window::Window;
pub use window::WindowSetup;

/// How an aggregate's result is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Retractable state in a column (count, sum, avg).
    Sliding,
    /// A running value in a column, only ever updated: min and max over
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

/// One parallel instance of a grouped aggregation.
pub struct HashAggOperator {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<AggSlot>,
    schema: SchemaRef,
    /// Group key → the group's record.
    groups: StateTable,
    /// Group key + aggregate index + argument key → count and arguments.
    inputs: StateTable,
    /// The groups in memory.
    slots: Slots,
    /// Per aggregate, its state by slot; `None` for recomputed ones.
    columns: Vec<Option<Box<dyn SlotAccumulator>>>,
    /// How group values are encoded.
    values_format: RowFormat,
    /// How output rows (a group's last emitted row) are encoded.
    output_format: RowFormat,
    /// Slots touched in the running epoch (a slot freed and taken again
    /// may be listed twice; its `dirty` flag says whether it still is).
    dirty: Vec<u32>,
    /// The touched groups' share of the store's epoch buffer.
    dirty_charge: BufferCharge,
    /// Recomputed aggregates' inputs by group (input prefix), as `inputs`
    /// holds them.
    multisets: StateCache<Vec<u8>, Multiset>,
    global_checked: bool,
    window: Option<Window>,
    /// A buffer new groups' values are encoded into before they are
    /// copied out at their size.
    scratch: Vec<u8>,
    /// The input only inserts: a DISTINCT aggregate keeps each value once,
    /// with no count to update when it comes again.
    append_only: bool,
}

impl std::fmt::Debug for HashAggOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashAggOperator")
            .field("groups", &self.groups.id())
            .finish()
    }
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
        let aggs: Vec<AggSlot> = aggregates
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
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let groups = StateTable::new(store.clone(), state_id);
        let inputs = StateTable::new(store.clone(), state_id + 1);
        let mut multisets = StateCache::new(Arc::clone(store.cache_budget()));
        let mut slots = Slots::new(Arc::clone(store.cache_budget()), 0);
        // Started on empty state (not a restart), every group and input
        // set is kept as it is written: a miss is a new group, with no
        // state read, until something is evicted.
        if groups.is_empty()? && inputs.is_empty()? {
            slots.assume_complete();
            multisets.assume_complete();
        }
        let mut operator = Self {
            values_format: RowFormat::new(&types[..group_by.len()]),
            output_format: RowFormat::new(&types),
            group_by,
            aggs,
            schema,
            groups,
            inputs,
            slots,
            columns: vec![],
            dirty: vec![],
            dirty_charge: BufferCharge::new(Arc::clone(store.epoch_buffer())),
            multisets,
            global_checked: false,
            scratch: Vec::with_capacity(256),
            append_only: false,
            window: window.map(|setup| Window {
                watermark: KeptWatermark::new(store, state_id + 2, &setup.key_groups),
                setup,
                open: OpenWindows::default(),
                loaded: false,
            }),
        };
        operator.build_columns();
        Ok(operator)
    }

    /// Says that the input only ever inserts rows: min and max then keep a
    /// running value instead of their inputs. Call before the first
    /// chunk; the planner says the same for the same query every time, so
    /// stored state keeps its layout.
    pub fn with_append_only_input(mut self, append_only: bool) -> EngineResult<Self> {
        self.append_only = append_only;
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
            self.build_columns();
        }
        Ok(self)
    }

    /// The aggregates' column states, for the kinds chosen.
    fn build_columns(&mut self) {
        self.columns = self
            .aggs
            .iter()
            .map(|slot| {
                let updates = match slot.kept {
                    Kept::Sliding => Updates::Retractable,
                    Kept::Running => Updates::InsertOnly,
                    Kept::Recomputed => return None,
                };
                Some(slot_accumulator(
                    &slot.call.function,
                    updates,
                    &slot.output_type,
                ))
            })
            .collect();
        let cost = self.columns.iter().flatten().map(|c| c.slot_cost()).sum();
        self.slots.set_state_cost(cost);
    }

    fn emits_on_close(&self) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.setup.spec.emit_on_close)
    }

    /// Makes every aggregate column as long as the slot table.
    fn grow_columns(&mut self) {
        let capacity = self.slots.capacity();
        for column in self.columns.iter_mut().flatten() {
            column.resize(capacity);
        }
    }

    /// The slot of the group at `key`: in memory, read from the store, or
    /// new (with the values of row `row` of `group_arrays`, encoded from
    /// `value_arrays`, the same in the output's types).
    fn slot_for(
        &mut self,
        key: &[u8],
        group_arrays: &[ArrayRef],
        value_arrays: &[ArrayRef],
        row: usize,
    ) -> EngineResult<u32> {
        if let Some(slot) = self.slots.find(key) {
            return Ok(slot);
        }
        let group = key_group(key);
        if !self.slots.knows_absent(key)
            && let Some(bytes) = self.groups.get(group, key)?
        {
            return self.decode_record(key, group, &bytes);
        }
        self.scratch.clear();
        self.values_format
            .encode(value_arrays, row, &mut self.scratch)?;
        let slot = self.slots.add(Slot {
            key: key.into(),
            group,
            values: self.scratch.as_slice().into(),
            ..Slot::default()
        });
        self.grow_columns();
        // A group with state is in the index of open windows from the
        // time it was new (or the index was read back from state).
        if let Some(window) = self.window.as_mut() {
            let column = window.setup.spec.group_column;
            if let Some(window_value) = order_key_at(&group_arrays[column], row)? {
                let key = Arc::clone(&self.slots.get(slot).key);
                window.open.insert(window_value, key);
            }
        }
        Ok(slot)
    }

    /// The slot of the group at `key` if it has state (in memory or in the
    /// store).
    fn existing_slot(&mut self, key: &[u8]) -> EngineResult<Option<u32>> {
        if let Some(slot) = self.slots.find(key) {
            return Ok(Some(slot));
        }
        if self.slots.knows_absent(key) {
            return Ok(None);
        }
        let group = key_group(key);
        match self.groups.get(group, key)? {
            Some(bytes) => Ok(Some(self.decode_record(key, group, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Marks a slot touched in this epoch.
    fn touch(&mut self, slot: u32) {
        if self.slots.touch(slot) {
            self.dirty.push(slot);
            self.dirty_charge.add(self.slots.cost(slot));
        }
    }

    /// Frees a slot and its aggregate states.
    fn free_slot(&mut self, slot: u32) {
        for column in self.columns.iter_mut().flatten() {
            column.reset(slot);
        }
        self.slots.free(slot);
    }

    /// Deletes a group's record, its kept inputs and its slot.
    fn delete_group(&mut self, slot: u32) -> EngineResult<()> {
        let entry = self.slots.get(slot);
        let (group, key) = (entry.group, Arc::clone(&entry.key));
        if entry.stored {
            self.groups.delete(group, &key);
        }
        self.delete_inputs(group, &key)?;
        self.free_slot(slot);
        Ok(())
    }
}

/// The signs of rows `signs` that pass `filter` (0 for the others).
fn filtered_signs<'a>(signs: &'a [i8], filter: Option<&ArrayRef>) -> Cow<'a, [i8]> {
    let Some(mask) = filter else {
        return Cow::Borrowed(signs);
    };
    let mask = mask.as_boolean();
    signs
        .iter()
        .enumerate()
        .map(|(row, &sign)| {
            if mask.is_valid(row) && mask.value(row) {
                sign
            } else {
                0
            }
        })
        .collect()
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
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let group_arrays = self
            .group_by
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(rows))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        // Keys (and key groups, which exchanges route by) come from the
        // group columns as they are; values are kept in the output's types.
        let value_arrays = group_arrays
            .iter()
            .zip(self.schema.fields())
            .map(|(array, field)| {
                if array.data_type() == field.data_type() {
                    Ok(Arc::clone(array))
                } else {
                    Ok(datafusion::arrow::compute::cast(array, field.data_type())?)
                }
            })
            .collect::<EngineResult<Vec<ArrayRef>>>()?;
        let refs: Vec<&ArrayRef> = group_arrays.iter().collect();
        let mut row_slots = Vec::with_capacity(rows);
        let mut signs = Vec::with_capacity(rows);
        let mut key = vec![];
        for row in 0..rows {
            key.clear();
            encode_nullable_key(&refs, row, &mut key)?;
            let slot = self.slot_for(&key, &group_arrays, &value_arrays, row)?;
            self.touch(slot);
            let sign = chunk.op(row)?.sign();
            self.slots.get_mut(slot).rows += sign;
            row_slots.push(slot);
            signs.push(sign as i8);
        }
        for i in 0..self.aggs.len() {
            let call = &self.aggs[i].call;
            let args = call
                .function
                .expressions()
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(rows))
                .collect::<Result<Vec<_>, _>>()?;
            let filter = match &call.filter {
                Some(f) => Some(f.evaluate(batch)?.into_array(rows)?),
                None => None,
            };
            let signs = filtered_signs(&signs, filter.as_ref());
            match self.columns[i].as_mut() {
                Some(column) => column.update(&args, &row_slots, &signs)?,
                None => self.update_inputs(i, &args, &row_slots, &signs)?,
            }
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
        let mut closing = Vec::with_capacity(closed.len());
        for key in closed {
            if let Some(slot) = self.existing_slot(&key)? {
                closing.push(slot);
            }
        }
        // A group emptied and filled again is listed twice.
        closing.sort_unstable();
        closing.dedup();
        let chunk = if self.emits_on_close() {
            let live: Vec<u32> = closing
                .iter()
                .copied()
                .filter(|&s| self.slots.get(s).rows > 0)
                .collect();
            self.final_rows(&live)?
        } else {
            // Only a group touched since the last barrier has a change to
            // emit before it goes.
            let touched: Vec<u32> = closing
                .iter()
                .copied()
                .filter(|&s| self.slots.get(s).dirty)
                .collect();
            self.changes(&touched)?
        };
        if let Some(chunk) = chunk {
            out.emit(chunk);
        }
        for slot in closing {
            self.delete_group(slot)?;
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
            let slot = self.slot_for(&[], &[], &[], 0)?;
            self.touch(slot);
        }
        if let Some(chunk) = self.flush_dirty()? {
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
