//! The input values a recomputed aggregate (min and max under retraction,
//! DISTINCT aggregates, string_agg, …) keeps per group, decoded: argument
//! key → how many times the values are in, and the values. Kept in the
//! operator's state cache in step with the `inputs` state table, so a
//! changed group is recomputed without a state scan; min and max read the
//! smallest or largest argument straight off the ordered keys.

use std::collections::BTreeMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::StateTable;
use runnel_storage::scalar_codec::decode_scalars;

use crate::{EngineError, EngineResult};

/// What one value costs the cache, roughly (a `ScalarValue` and its heap).
const VALUE_COST: usize = 64;
/// What one entry costs beyond its key and values.
const ENTRY_COST: usize = 64;

/// One group's input values of one aggregate.
#[derive(Debug, Default)]
pub(super) struct Multiset {
    entries: BTreeMap<Vec<u8>, (i64, Vec<ScalarValue>)>,
    cost: usize,
}

fn entry_cost(key: &[u8], values: &[ScalarValue]) -> usize {
    key.len() + ENTRY_COST + VALUE_COST * values.len()
}

impl Multiset {
    /// The rows of `inputs` under `prefix` in key group `group`.
    pub fn load(inputs: &StateTable, group: u16, prefix: &[u8]) -> EngineResult<Self> {
        let mut set = Self::default();
        for (key, bytes) in inputs.scan_prefix(group, prefix)? {
            let mut values = decode_scalars(&bytes)?;
            if values.is_empty() {
                return Err(EngineError::Internal(
                    "aggregate input record is empty".into(),
                ));
            }
            let count = match values.remove(0) {
                ScalarValue::Int64(Some(count)) => count,
                other => {
                    return Err(EngineError::Internal(format!(
                        "aggregate input record counts with {other:?}"
                    )));
                }
            };
            let arg_key = key[prefix.len()..].to_vec();
            set.cost += entry_cost(&arg_key, &values);
            set.entries.insert(arg_key, (count, values));
        }
        Ok(set)
    }

    /// What the set costs the cache.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Whether no value is in.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the values of `arg_key` are in.
    pub fn contains(&self, arg_key: &[u8]) -> bool {
        self.entries.contains_key(arg_key)
    }

    /// Adds `sign` occurrences (negative: removes) of `values`, whose
    /// argument key is `arg_key`; returns how many there are now (the
    /// entry is gone at zero).
    pub fn add(&mut self, arg_key: &[u8], values: Vec<ScalarValue>, sign: i64) -> i64 {
        let Some((count, kept)) = self.entries.get_mut(arg_key) else {
            if sign > 0 {
                self.cost += entry_cost(arg_key, &values);
                self.entries.insert(arg_key.to_vec(), (sign, values));
            }
            return sign;
        };
        *count += sign;
        let count = *count;
        // The latest values, as the inputs table keeps them.
        let new_cost = entry_cost(arg_key, &values);
        let old = std::mem::replace(kept, values);
        self.cost = self.cost.saturating_sub(entry_cost(arg_key, &old));
        if count <= 0 {
            self.entries.remove(arg_key);
        } else {
            self.cost += new_cost;
        }
        count
    }

    /// The aggregate's result over the set: min and max of one argument of
    /// an ordered type from the ends of the ordered argument keys (nulls
    /// sort first and are skipped), `count(DISTINCT x)` as the number of
    /// keys but the null one, every other aggregate by feeding its
    /// accumulator every value as many times as it is in.
    pub fn evaluate(&self, function: &AggregateFunctionExpr) -> EngineResult<ScalarValue> {
        let args = function.expressions();
        if args.len() == 1 && function.is_distinct() && function.fun().name() == "count" {
            let null = self
                .entries
                .values()
                .next()
                .is_some_and(|(_, values)| values.first().is_none_or(ScalarValue::is_null));
            let distinct = self.entries.len() - usize::from(null);
            return Ok(ScalarValue::Int64(Some(distinct as i64)));
        }
        if args.len() == 1 && !function.is_distinct() && ordered_by_key(function) {
            let non_null = |(_, values): &(i64, Vec<ScalarValue>)| {
                values.first().filter(|v| !v.is_null()).cloned()
            };
            let found = match function.fun().name() {
                "min" => self.entries.values().find_map(non_null),
                _ => self.entries.values().next_back().and_then(non_null),
            };
            return match found {
                Some(value) => Ok(value),
                None => Ok(function.create_accumulator()?.evaluate()?),
            };
        }
        let mut acc = function.create_accumulator()?;
        let mut columns: Vec<Vec<ScalarValue>> = vec![vec![]; args.len()];
        for (count, values) in self.entries.values() {
            for _ in 0..*count {
                for (column, value) in columns.iter_mut().zip(values) {
                    column.push(value.clone());
                }
            }
        }
        if columns.first().is_some_and(|c| !c.is_empty()) {
            let arrays = columns
                .into_iter()
                .map(ScalarValue::iter_to_array)
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            acc.update_batch(&arrays)?;
        }
        Ok(acc.evaluate()?)
    }
}

/// Whether `function` is min or max over a type whose key encoding sorts
/// as the type does (numbers, text, dates and times); their result has
/// their argument's type.
fn ordered_by_key(function: &AggregateFunctionExpr) -> bool {
    matches!(function.fun().name(), "min" | "max")
        && matches!(
            function.field().data_type(),
            DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Decimal128(..)
                | DataType::Utf8
                | DataType::Date32
                | DataType::Timestamp(..)
        )
}
