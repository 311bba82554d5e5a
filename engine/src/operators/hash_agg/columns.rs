//! Aggregate state in columns, one entry per group slot: a chunk updates an
//! aggregate with one call over all its rows (each row naming its slot and
//! whether it adds or retracts), and results come out as one array for
//! many slots. `count`, `sum` and `avg` over numbers keep counts and sums
//! (retractable); `min` and `max` of integers, dates and timestamps over an
//! input that only inserts keep the running value. Every other incremental
//! aggregate keeps one DataFusion accumulator per slot behind the same
//! interface.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, UInt32Array, make_array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float64Type, Int16Type, Int32Type, Int64Type,
};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};

use crate::{EngineError, EngineResult};

/// One aggregate's state for every group slot.
pub(super) trait SlotAccumulator: Send {
    /// Makes room for slots `0..slots`.
    fn resize(&mut self, slots: usize);
    /// Adds row `i` of `args` to slot `slots[i]` when `signs[i]` is
    /// positive, retracts it when negative, skips it when zero.
    fn update(&mut self, args: &[ArrayRef], slots: &[u32], signs: &[i8]) -> EngineResult<()>;
    /// The results of `slots`, in their order.
    fn evaluate(&mut self, slots: &[u32]) -> EngineResult<ArrayRef>;
    /// Forgets a slot's state (the slot is free or taken by a new group).
    fn reset(&mut self, slot: u32);
    /// Appends a slot's state to `out`.
    fn encode(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()>;
    /// Sets a slot's state from what [`SlotAccumulator::encode`] wrote.
    fn decode(&mut self, slot: u32, bytes: &[u8]) -> EngineResult<()>;
    /// Heap bytes one slot's state costs, roughly.
    fn slot_cost(&self) -> usize;
}

/// How an incremental aggregate keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Updates {
    /// Inserts and deletes (count, sum, avg).
    Retractable,
    /// Inserts only (min, max over an append-only input).
    InsertOnly,
}

/// The column state for `function` producing `output`: a typed column where
/// one exists, DataFusion accumulators per slot otherwise.
pub(super) fn slot_accumulator(
    function: &Arc<AggregateFunctionExpr>,
    updates: Updates,
    output: &DataType,
) -> Box<dyn SlotAccumulator> {
    let name = function.fun().name();
    match (updates, name, output) {
        (Updates::Retractable, "count", DataType::Int64) => Box::new(CountColumn::default()),
        (Updates::Retractable, "sum", DataType::Int64) => {
            Box::new(SumColumn::<Int64Type>::new(output.clone()))
        }
        (Updates::Retractable, "sum", DataType::Float64)
        | (Updates::Retractable, "avg", DataType::Float64) => {
            let mut sum = SumColumn::<Float64Type>::new(output.clone());
            sum.average = name == "avg";
            Box::new(sum)
        }
        (Updates::InsertOnly, "min" | "max", DataType::Int16) => Box::new(
            ExtremeColumn::<Int16Type>::new(name == "max", output.clone()),
        ),
        (Updates::InsertOnly, "min" | "max", DataType::Int32 | DataType::Date32) => Box::new(
            ExtremeColumn::<Int32Type>::new(name == "max", output.clone()),
        ),
        (Updates::InsertOnly, "min" | "max", DataType::Int64 | DataType::Timestamp(_, _)) => {
            Box::new(ExtremeColumn::<Int64Type>::new(
                name == "max",
                output.clone(),
            ))
        }
        _ => Box::new(BoxedColumn {
            function: Arc::clone(function),
            updates,
            output: output.clone(),
            slots: vec![],
        }),
    }
}

/// Whether row `row` of every argument is non-null (what `count` counts).
fn all_valid(args: &[ArrayRef], row: usize) -> bool {
    args.iter().all(|a| a.is_valid(row))
}

fn no_nulls(args: &[ArrayRef]) -> bool {
    args.iter().all(|a| a.null_count() == 0)
}

fn read<const N: usize>(bytes: &mut &[u8]) -> EngineResult<[u8; N]> {
    if bytes.len() < N {
        return Err(EngineError::Internal(
            "an aggregate's stored state is cut short".into(),
        ));
    }
    let (head, rest) = bytes.split_at(N);
    *bytes = rest;
    Ok(head.try_into().expect("split at N"))
}

/// `count`: the rows (with non-null arguments) per slot.
#[derive(Default)]
struct CountColumn {
    counts: Vec<i64>,
}

impl SlotAccumulator for CountColumn {
    fn resize(&mut self, slots: usize) {
        self.counts.resize(slots, 0);
    }

    fn update(&mut self, args: &[ArrayRef], slots: &[u32], signs: &[i8]) -> EngineResult<()> {
        if no_nulls(args) {
            for (&slot, &sign) in slots.iter().zip(signs) {
                self.counts[slot as usize] += i64::from(sign);
            }
        } else {
            for (row, (&slot, &sign)) in slots.iter().zip(signs).enumerate() {
                if all_valid(args, row) {
                    self.counts[slot as usize] += i64::from(sign);
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> EngineResult<ArrayRef> {
        Ok(Arc::new(Int64Array::from_iter_values(
            slots.iter().map(|&s| self.counts[s as usize]),
        )))
    }

    fn reset(&mut self, slot: u32) {
        self.counts[slot as usize] = 0;
    }

    fn encode(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()> {
        out.extend_from_slice(&self.counts[slot as usize].to_le_bytes());
        Ok(())
    }

    fn decode(&mut self, slot: u32, mut bytes: &[u8]) -> EngineResult<()> {
        self.counts[slot as usize] = i64::from_le_bytes(read(&mut bytes)?);
        Ok(())
    }

    fn slot_cost(&self) -> usize {
        8
    }
}

/// A number a sum column adds up, with DataFusion's arithmetic: integers
/// wrap, floats are IEEE.
trait Summand: Copy + Default + Send + 'static {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// The sum as a float, for an average.
    fn as_f64(self) -> f64;
    fn to_bytes(self) -> [u8; 8];
    fn from_bytes(bytes: [u8; 8]) -> Self;
}

impl Summand for i64 {
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn sub(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn to_bytes(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    fn from_bytes(bytes: [u8; 8]) -> Self {
        i64::from_le_bytes(bytes)
    }
}

impl Summand for f64 {
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn sub(self, other: Self) -> Self {
        self - other
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn to_bytes(self) -> [u8; 8] {
        self.to_le_bytes()
    }
    fn from_bytes(bytes: [u8; 8]) -> Self {
        f64::from_le_bytes(bytes)
    }
}

/// `sum` (null over no values) or, with `average`, `avg`: the sum and the
/// count of non-null values per slot.
struct SumColumn<T: ArrowPrimitiveType> {
    sums: Vec<T::Native>,
    counts: Vec<i64>,
    output: DataType,
    average: bool,
}

impl<T: ArrowPrimitiveType> SumColumn<T> {
    fn new(output: DataType) -> Self {
        Self {
            sums: vec![],
            counts: vec![],
            output,
            average: false,
        }
    }
}

impl<T> SlotAccumulator for SumColumn<T>
where
    T: ArrowPrimitiveType,
    T::Native: Summand,
{
    fn resize(&mut self, slots: usize) {
        self.sums.resize(slots, T::Native::default());
        self.counts.resize(slots, 0);
    }

    fn update(&mut self, args: &[ArrayRef], slots: &[u32], signs: &[i8]) -> EngineResult<()> {
        let arg = args
            .first()
            .ok_or_else(|| EngineError::Internal(format!("{} without an argument", self.output)))?;
        let arg = if arg.data_type() == &T::DATA_TYPE {
            Arc::clone(arg)
        } else {
            cast(arg, &T::DATA_TYPE)?
        };
        let values = arg.as_primitive::<T>();
        let has_nulls = values.null_count() > 0;
        for (row, (&slot, &sign)) in slots.iter().zip(signs).enumerate() {
            if sign == 0 || (has_nulls && values.is_null(row)) {
                continue;
            }
            let slot = slot as usize;
            let value = values.value(row);
            if sign > 0 {
                self.sums[slot] = self.sums[slot].add(value);
                self.counts[slot] += 1;
            } else {
                self.sums[slot] = self.sums[slot].sub(value);
                self.counts[slot] -= 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> EngineResult<ArrayRef> {
        let present = |s: u32| self.counts[s as usize] > 0;
        if self.average {
            let array: Float64Array = slots
                .iter()
                .map(|&s| {
                    present(s)
                        .then(|| self.sums[s as usize].as_f64() / self.counts[s as usize] as f64)
                })
                .collect();
            return Ok(Arc::new(array));
        }
        let array: PrimitiveArray<T> = slots
            .iter()
            .map(|&s| present(s).then(|| self.sums[s as usize]))
            .collect();
        Ok(Arc::new(array.with_data_type(self.output.clone())))
    }

    fn reset(&mut self, slot: u32) {
        self.sums[slot as usize] = T::Native::default();
        self.counts[slot as usize] = 0;
    }

    fn encode(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()> {
        out.extend_from_slice(&self.sums[slot as usize].to_bytes());
        out.extend_from_slice(&self.counts[slot as usize].to_le_bytes());
        Ok(())
    }

    fn decode(&mut self, slot: u32, mut bytes: &[u8]) -> EngineResult<()> {
        self.sums[slot as usize] = T::Native::from_bytes(read(&mut bytes)?);
        self.counts[slot as usize] = i64::from_le_bytes(read(&mut bytes)?);
        Ok(())
    }

    fn slot_cost(&self) -> usize {
        16
    }
}

/// An integer-like value a min/max column keeps.
trait Extreme: Copy + Default + Ord + Send + 'static {
    const WIDTH: usize;
    fn write(self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Option<Self>;
}

macro_rules! extreme {
    ($native:ty) => {
        impl Extreme for $native {
            const WIDTH: usize = std::mem::size_of::<$native>();
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read(bytes: &[u8]) -> Option<Self> {
                Some(<$native>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    };
}

extreme!(i16);
extreme!(i32);
extreme!(i64);

/// `min` or `max` over inserts only: the running value per slot. Dates and
/// timestamps are kept as the integers they are stored as.
struct ExtremeColumn<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    present: Vec<bool>,
    max: bool,
    output: DataType,
}

impl<T: ArrowPrimitiveType> ExtremeColumn<T> {
    fn new(max: bool, output: DataType) -> Self {
        Self {
            values: vec![],
            present: vec![],
            max,
            output,
        }
    }
}

/// `array` read as the integers of `T` it stores (a date or timestamp as
/// its days or ticks), without copying.
fn as_integers<T: ArrowPrimitiveType>(array: &ArrayRef) -> EngineResult<ArrayRef> {
    if array.data_type() == &T::DATA_TYPE {
        return Ok(Arc::clone(array));
    }
    let data = array
        .to_data()
        .into_builder()
        .data_type(T::DATA_TYPE)
        .build()?;
    Ok(make_array(data))
}

impl<T> SlotAccumulator for ExtremeColumn<T>
where
    T: ArrowPrimitiveType,
    T::Native: Extreme,
{
    fn resize(&mut self, slots: usize) {
        self.values.resize(slots, T::Native::default());
        self.present.resize(slots, false);
    }

    fn update(&mut self, args: &[ArrayRef], slots: &[u32], signs: &[i8]) -> EngineResult<()> {
        let arg = args
            .first()
            .ok_or_else(|| EngineError::Internal("min or max without an argument".into()))?;
        let arg = as_integers::<T>(arg)?;
        let values = arg.as_primitive::<T>();
        for (row, (&slot, &sign)) in slots.iter().zip(signs).enumerate() {
            if sign < 0 {
                return Err(EngineError::Internal(
                    "a delete reached an aggregation planned for an input that only inserts".into(),
                ));
            }
            if sign == 0 || values.is_null(row) {
                continue;
            }
            let (slot, value) = (slot as usize, values.value(row));
            let better = !self.present[slot]
                || if self.max {
                    value > self.values[slot]
                } else {
                    value < self.values[slot]
                };
            if better {
                self.values[slot] = value;
                self.present[slot] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> EngineResult<ArrayRef> {
        let array: PrimitiveArray<T> = slots
            .iter()
            .map(|&s| self.present[s as usize].then(|| self.values[s as usize]))
            .collect();
        let data = array
            .into_data()
            .into_builder()
            .data_type(self.output.clone())
            .build()?;
        Ok(make_array(data))
    }

    fn reset(&mut self, slot: u32) {
        self.present[slot as usize] = false;
    }

    fn encode(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()> {
        if self.present[slot as usize] {
            self.values[slot as usize].write(out);
        }
        Ok(())
    }

    fn decode(&mut self, slot: u32, bytes: &[u8]) -> EngineResult<()> {
        let slot = slot as usize;
        if bytes.is_empty() {
            self.present[slot] = false;
            return Ok(());
        }
        self.values[slot] = T::Native::read(bytes).ok_or_else(|| {
            EngineError::Internal(format!(
                "a stored min or max holds {} bytes, not {}",
                bytes.len(),
                <T::Native as Extreme>::WIDTH
            ))
        })?;
        self.present[slot] = true;
        Ok(())
    }

    fn slot_cost(&self) -> usize {
        <T::Native as Extreme>::WIDTH + 1
    }
}

/// Any other incremental aggregate: a DataFusion accumulator per slot
/// (sliding when it retracts), its state stored as `ScalarValue`s.
struct BoxedColumn {
    function: Arc<AggregateFunctionExpr>,
    updates: Updates,
    output: DataType,
    slots: Vec<Option<Box<dyn Accumulator>>>,
}

impl BoxedColumn {
    fn fresh(&self) -> EngineResult<Box<dyn Accumulator>> {
        Ok(match self.updates {
            Updates::Retractable => self.function.create_sliding_accumulator()?,
            Updates::InsertOnly => self.function.create_accumulator()?,
        })
    }

    fn slot(&mut self, slot: u32) -> EngineResult<&mut Box<dyn Accumulator>> {
        if self.slots[slot as usize].is_none() {
            self.slots[slot as usize] = Some(self.fresh()?);
        }
        Ok(self.slots[slot as usize]
            .as_mut()
            .expect("filled just above"))
    }
}

impl SlotAccumulator for BoxedColumn {
    fn resize(&mut self, slots: usize) {
        self.slots.resize_with(slots, || None);
    }

    fn update(&mut self, args: &[ArrayRef], slots: &[u32], signs: &[i8]) -> EngineResult<()> {
        // Rows by slot and sign, in chunk order within each.
        let mut rows: Vec<(u32, bool, u32)> = (0..slots.len())
            .filter(|&row| signs[row] != 0)
            .map(|row| (slots[row], signs[row] > 0, row as u32))
            .collect();
        rows.sort_by_key(|&(slot, insert, _)| (slot, !insert));
        let mut start = 0;
        while start < rows.len() {
            let (slot, insert, _) = rows[start];
            let end = start
                + rows[start..]
                    .iter()
                    .take_while(|r| r.0 == slot && r.1 == insert)
                    .count();
            let indices = UInt32Array::from_iter_values(rows[start..end].iter().map(|r| r.2));
            let taken = args
                .iter()
                .map(|a| take(a, &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let retractable = self.updates == Updates::Retractable;
            let acc = self.slot(slot)?;
            if insert {
                acc.update_batch(&taken)?;
            } else if retractable {
                acc.retract_batch(&taken)?;
            } else {
                return Err(EngineError::Internal(
                    "a delete reached an aggregation planned for an input that only inserts".into(),
                ));
            }
            start = end;
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> EngineResult<ArrayRef> {
        let mut values = Vec::with_capacity(slots.len());
        for &slot in slots {
            let value = self.slot(slot)?.evaluate()?;
            values.push(if value.data_type() == self.output {
                value
            } else {
                value.cast_to(&self.output)?
            });
        }
        if values.is_empty() {
            return Ok(datafusion::arrow::array::new_empty_array(&self.output));
        }
        Ok(ScalarValue::iter_to_array(values)?)
    }

    fn reset(&mut self, slot: u32) {
        self.slots[slot as usize] = None;
    }

    fn encode(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()> {
        let state = self.slot(slot)?.state()?;
        encode_scalars(&state, out)?;
        Ok(())
    }

    fn decode(&mut self, slot: u32, bytes: &[u8]) -> EngineResult<()> {
        let state = decode_scalars(bytes)?
            .iter()
            .map(|v| v.to_array())
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let mut acc = self.fresh()?;
        acc.merge_batch(&state)?;
        self.slots[slot as usize] = Some(acc);
        Ok(())
    }

    fn slot_cost(&self) -> usize {
        128
    }
}
