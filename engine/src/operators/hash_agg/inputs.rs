//! The kept inputs of recomputed aggregates: per group and aggregate, a
//! multiset of argument values in the inputs table (and cached), from which
//! the aggregate is computed again when its group changed.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::scalar_codec::encode_scalars;

use super::{HashAggOperator, Kept, Multiset};
use crate::EngineResult;

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
    /// Adds (positive sign) or removes (negative) the arguments of each
    /// row of a chunk to the multiset of aggregate `agg` of its slot's
    /// group; inserts go first, so a value is never counted below zero.
    pub(super) fn update_inputs(
        &mut self,
        agg: usize,
        args: &[ArrayRef],
        slots: &[u32],
        signs: &[i8],
    ) -> EngineResult<()> {
        let arg_refs: Vec<&ArrayRef> = args.iter().collect();
        // Over an input that only inserts, a DISTINCT aggregate only needs
        // to know that a value is in: one that comes again changes nothing.
        let presence_only = self.append_only && self.aggs[agg].call.function.is_distinct();
        for inserts in [true, false] {
            for (row, (&slot, &sign)) in slots.iter().zip(signs).enumerate() {
                if sign == 0 || (sign > 0) != inserts {
                    continue;
                }
                let mut arg_key = vec![];
                encode_nullable_key(&arg_refs, row, &mut arg_key)?;
                if presence_only {
                    let entry = self.slots.get(slot);
                    let (group, key) = (entry.group, Arc::clone(&entry.key));
                    let prefix = input_prefix(&key, agg);
                    if self.with_multiset(group, &prefix, |set| Ok(set.contains(&arg_key)))? {
                        continue;
                    }
                }
                let values = args
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, row))
                    .collect::<Result<Vec<_>, _>>()?;
                let entry = self.slots.get(slot);
                let (group, key) = (entry.group, Arc::clone(&entry.key));
                let prefix = input_prefix(&key, agg);
                let count = self.with_multiset(group, &prefix, |set| {
                    Ok(set.add(&arg_key, values.clone(), i64::from(sign)))
                })?;
                let input = input_key(&key, agg, &arg_key);
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
        }
        Ok(())
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
                let mut set = if self.multisets.knows_absent(prefix) {
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
    pub(super) fn recompute(
        &mut self,
        group: u16,
        group_key: &[u8],
        agg: usize,
    ) -> EngineResult<ScalarValue> {
        let function = std::sync::Arc::clone(&self.aggs[agg].call.function);
        self.with_multiset(group, &input_prefix(group_key, agg), |set| {
            set.evaluate(&function)
        })
    }

    /// Deletes every kept input of a group.
    pub(super) fn delete_inputs(&mut self, group: u16, key: &[u8]) -> EngineResult<()> {
        for agg in 0..self.aggs.len() {
            if self.aggs[agg].kept != Kept::Recomputed {
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
