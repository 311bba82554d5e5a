//! Result rows of many groups at once: group values decoded from their
//! slots, aggregate results evaluated column by column, and the changes
//! since each group's last emitted row (inserts, update pairs, deletes)
//! put together with `interleave`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::scalar::ScalarValue;

use super::HashAggOperator;
use crate::{EngineError, EngineResult, Op, StreamChunk};

/// Fails on a group with fewer than no rows.
fn check_rows(rows: i64) -> EngineResult<()> {
    if rows < 0 {
        return Err(EngineError::Internal(format!(
            "group has {rows} rows: a delete arrived for a row never inserted"
        )));
    }
    Ok(())
}

impl HashAggOperator {
    /// Whether the group in `slot` has a result row (a global aggregation
    /// always has one).
    fn has_row(&self, slot: u32) -> bool {
        self.slots.get(slot).rows > 0 || self.group_by.is_empty()
    }

    /// The output columns of `slots`: group values, then each aggregate's
    /// result.
    fn result_columns(&mut self, slots: &[u32]) -> EngineResult<Vec<ArrayRef>> {
        let mut columns = self
            .values_format
            .decode(slots.iter().map(|&s| &*self.slots.get(s).values))?;
        for i in 0..self.aggs.len() {
            let array = match self.columns[i].as_mut() {
                Some(column) => column.evaluate(slots)?,
                None => {
                    let mut values = Vec::with_capacity(slots.len());
                    for &slot in slots {
                        let entry = self.slots.get(slot);
                        let (group, key) = (entry.group, Arc::clone(&entry.key));
                        values.push(self.recompute(group, &key, i)?);
                    }
                    scalars_to_array(values, &self.aggs[i].output_type)?
                }
            };
            let output_type = &self.aggs[i].output_type;
            columns.push(if array.data_type() == output_type {
                array
            } else {
                cast(&array, output_type)?
            });
        }
        Ok(columns)
    }

    fn chunk(&self, columns: Vec<ArrayRef>, ops: &[Op]) -> EngineResult<StreamChunk> {
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        StreamChunk::new(batch, ops)
    }

    /// The final rows of `slots`, as inserts (a window closing).
    pub(super) fn final_rows(&mut self, slots: &[u32]) -> EngineResult<Option<StreamChunk>> {
        if slots.is_empty() {
            return Ok(None);
        }
        let columns = self.result_columns(slots)?;
        Ok(Some(self.chunk(columns, &vec![Op::Insert; slots.len()])?))
    }

    /// The changes of the groups in `slots` since their rows were last
    /// emitted (an insert, an update pair or nothing; a delete when a group
    /// has no rows left); each group's new row becomes its last emitted.
    pub(super) fn changes(&mut self, slots: &[u32]) -> EngineResult<Option<StreamChunk>> {
        for &slot in slots {
            check_rows(self.slots.get(slot).rows)?;
        }
        let live: Vec<u32> = slots.iter().copied().filter(|&s| self.has_row(s)).collect();
        let current = self.result_columns(&live)?;
        // (array, row) per output row: array 0 is `current`, 1 the
        // previous rows decoded.
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(slots.len());
        let mut ops = Vec::with_capacity(slots.len());
        let mut previous: Vec<Box<[u8]>> = vec![];
        let mut at = 0;
        let mut encoded = vec![];
        for &slot in slots {
            let live_row = self.has_row(slot);
            let last = self.slots.get_mut(slot).previous.take();
            if !live_row {
                if let Some(last) = last {
                    picks.push((1, previous.len()));
                    ops.push(Op::Delete);
                    previous.push(last);
                }
                self.slots.recharge(slot);
                continue;
            }
            encoded.clear();
            self.output_format.encode(&current, at, &mut encoded)?;
            match last {
                None => {
                    picks.push((0, at));
                    ops.push(Op::Insert);
                }
                Some(last) if *last != *encoded => {
                    picks.push((1, previous.len()));
                    ops.push(Op::UpdateDelete);
                    previous.push(last);
                    picks.push((0, at));
                    ops.push(Op::UpdateInsert);
                }
                Some(_) => {}
            }
            self.slots.get_mut(slot).previous = Some(encoded.as_slice().into());
            self.slots.recharge(slot);
            at += 1;
        }
        if picks.is_empty() {
            return Ok(None);
        }
        if previous.is_empty() && picks.len() == live.len() {
            // Every live group is new: its rows are `current` as it is.
            return Ok(Some(self.chunk(current, &ops)?));
        }
        let previous = self.output_format.decode(previous.iter().map(|p| &**p))?;
        let columns = current
            .iter()
            .zip(&previous)
            .map(|(now, before)| interleave(&[now.as_ref(), before.as_ref()], &picks))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(self.chunk(columns, &ops)?))
    }

    /// Writes every group touched since the last barrier to state (and, but
    /// for `EMIT ON WINDOW CLOSE`, returns the changes of their rows);
    /// frees emptied groups and, over the cache budget, the least recently
    /// touched ones.
    pub(super) fn flush_dirty(&mut self) -> EngineResult<Option<StreamChunk>> {
        let listed = std::mem::take(&mut self.dirty);
        self.dirty_charge.clear();
        let mut dirty = Vec::with_capacity(listed.len());
        for slot in listed {
            let entry = self.slots.get_mut(slot);
            if std::mem::replace(&mut entry.dirty, false) {
                dirty.push(slot);
            }
        }
        let chunk = if self.emits_on_close() {
            for &slot in &dirty {
                check_rows(self.slots.get(slot).rows)?;
            }
            None
        } else {
            self.changes(&dirty)?
        };
        let mut scratch = Vec::with_capacity(256);
        for slot in dirty {
            let entry = self.slots.get(slot);
            if entry.rows == 0 && !self.group_by.is_empty() {
                if entry.stored {
                    let (group, key) = (entry.group, Arc::clone(&entry.key));
                    self.groups.delete(group, &key);
                }
                self.free_slot(slot);
                continue;
            }
            // Encoded into one buffer, then copied out at its size: no
            // growing allocation per group.
            scratch.clear();
            self.encode_record(slot, &mut scratch)?;
            let entry = self.slots.get_mut(slot);
            entry.stored = true;
            let (group, key) = (entry.group, Arc::clone(&entry.key));
            self.groups.put(group, &key, scratch.as_slice().to_vec());
        }
        self.slots.tick();
        for slot in self.slots.pick_evictions() {
            self.free_slot(slot);
        }
        Ok(chunk)
    }
}

/// An array of `values` of type `data_type` (empty when there are none),
/// each cast to it if it came out otherwise.
fn scalars_to_array(
    values: Vec<ScalarValue>,
    data_type: &datafusion::arrow::datatypes::DataType,
) -> EngineResult<ArrayRef> {
    if values.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(data_type));
    }
    let values = values
        .into_iter()
        .map(|v| {
            if &v.data_type() == data_type {
                Ok(v)
            } else {
                v.cast_to(data_type)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ScalarValue::iter_to_array(values)?)
}
