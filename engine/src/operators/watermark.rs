//! Watermark generation for a source with `WATERMARK FOR col AS expr`: rows
//! pass unchanged; after each chunk the watermark on `col` rises to the
//! largest `expr` seen so far. The value is kept in state at every barrier,
//! so a restarted job continues from where the committed epoch left it
//! rather than from the first rows it reads again.
//!
//! Behind a reader of splits (Kafka partitions) the watermark is per split
//! (see `SplitMaxima`): the least, over the splits that still hold unread
//! rows, of each one's largest `expr`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::functions_aggregate::min_max::MaxAccumulator;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{StateTable, Store};

use crate::operator::{Output, StreamOperator};
use crate::runtime::connector::{PendingSplits, split_of_row_key};
use crate::{Barrier, EngineError, EngineResult, StreamChunk, Watermark};

const WATERMARK_KEY: &[u8] = b"watermark";
const SPLITS_KEY: &[u8] = b"splits";

/// Emits the watermark of one event-time column.
#[derive(Debug)]
pub struct WatermarkOperator {
    column: usize,
    expr: Arc<dyn PhysicalExpr>,
    current: Option<ScalarValue>,
    state: StateTable,
    /// Behind a reader of splits: the largest value per split.
    splits: Option<SplitMaxima>,
}

impl WatermarkOperator {
    /// The watermark on `column`, the largest `expr` (over the input rows)
    /// seen; its last committed value is read from state table `state_id`.
    /// With `splits` (the source's reader has splits), the least over the
    /// pending splits of each one's largest; a split whose largest has not
    /// risen for `idle_timeout` stops holding the others back.
    pub fn new(
        column: usize,
        expr: Arc<dyn PhysicalExpr>,
        store: Store,
        state_id: u64,
        splits: Option<PendingSplits>,
        idle_timeout: Option<Duration>,
    ) -> EngineResult<Self> {
        let state = StateTable::new(store, state_id);
        let current = match state.get(0, WATERMARK_KEY)? {
            Some(bytes) => decode_scalars(&bytes)?.into_iter().next(),
            None => None,
        };
        let splits = match splits {
            None => None,
            Some(pending) => Some(SplitMaxima {
                pending,
                largest: match state.get(0, SPLITS_KEY)? {
                    Some(bytes) => SplitMaxima::decode(&bytes)?,
                    None => BTreeMap::new(),
                },
                moved: BTreeMap::new(),
                idle_after: idle_timeout,
            }),
        };
        Ok(Self {
            column,
            expr,
            current,
            state,
            splits,
        })
    }

    fn rise(&mut self, value: ScalarValue, out: &mut Output) {
        if value.is_null() || self.current.as_ref().is_some_and(|c| c >= &value) {
            return;
        }
        self.current = Some(value.clone());
        out.emit_watermark(Watermark {
            column: self.column,
            value,
        });
    }

    /// The watermark the splits allow now, if they have a say.
    fn rise_by_splits(&mut self, out: &mut Output) {
        if let Some(value) = self.splits.as_mut().and_then(|s| s.watermark()) {
            self.rise(value, out);
        }
    }
}

/// The largest event time of each split of a source, and the watermark
/// they allow: the least over the splits the reader says hold unread rows
/// (a pending split of which no row was seen yet holds everything back).
/// With no split pending, nothing can arrive behind any of them: the
/// largest over all goes on.
#[derive(Debug)]
struct SplitMaxima {
    pending: PendingSplits,
    largest: BTreeMap<u32, ScalarValue>,
    /// When each split's largest last rose (or it was first seen pending),
    /// for the idle timeout.
    moved: BTreeMap<u32, Instant>,
    idle_after: Option<Duration>,
}

impl SplitMaxima {
    /// Takes in the `values` of rows with `row_keys`.
    fn observe(&mut self, row_keys: &ArrayRef, values: &ArrayRef) -> EngineResult<()> {
        let keys = row_keys.as_primitive_opt::<Int64Type>().ok_or_else(|| {
            EngineError::Internal("a split reader's row key is not bigint".into())
        })?;
        let splits: Vec<u32> = keys.values().iter().map(|k| split_of_row_key(*k)).collect();
        let mut distinct = splits.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let now = Instant::now();
        for split in distinct {
            let of_split = if splits.iter().all(|s| *s == split) {
                Arc::clone(values)
            } else {
                let mask = BooleanArray::from_iter(splits.iter().map(|s| Some(*s == split)));
                datafusion::arrow::compute::filter(values.as_ref(), &mask)?
            };
            let mut max = MaxAccumulator::try_new(values.data_type())?;
            max.update_batch(&[of_split])?;
            let value = max.evaluate()?;
            if value.is_null() || self.largest.get(&split).is_some_and(|l| l >= &value) {
                continue;
            }
            self.largest.insert(split, value);
            self.moved.insert(split, now);
        }
        Ok(())
    }

    /// The watermark the splits allow, None while a pending split holds
    /// it back before any of its rows was seen.
    fn watermark(&mut self) -> Option<ScalarValue> {
        let all_largest = || {
            self.largest
                .values()
                .fold(None::<&ScalarValue>, |m, v| match m {
                    Some(m) if m >= v => Some(m),
                    _ => Some(v),
                })
                .cloned()
        };
        let Some(pending) = self.pending.get() else {
            return all_largest();
        };
        let now = Instant::now();
        let mut least: Option<&ScalarValue> = None;
        let mut holding = false;
        for split in pending {
            let moved = *self.moved.entry(split).or_insert(now);
            if self
                .idle_after
                .is_some_and(|after| now.duration_since(moved) >= after)
            {
                continue;
            }
            holding = true;
            match self.largest.get(&split) {
                None => return None,
                Some(value) => {
                    if least.is_none_or(|l| value < l) {
                        least = Some(value);
                    }
                }
            }
        }
        match holding {
            true => least.cloned(),
            false => all_largest(),
        }
    }

    /// As stored: split number and largest value, in turn.
    fn encode(&self) -> EngineResult<Vec<u8>> {
        let values: Vec<ScalarValue> = self
            .largest
            .iter()
            .flat_map(|(split, value)| [ScalarValue::Int64(Some(i64::from(*split))), value.clone()])
            .collect();
        let mut bytes = vec![];
        encode_scalars(&values, &mut bytes)?;
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> EngineResult<BTreeMap<u32, ScalarValue>> {
        let values = decode_scalars(bytes)?;
        let mut largest = BTreeMap::new();
        for pair in values.chunks(2) {
            match pair {
                [ScalarValue::Int64(Some(split)), value] => {
                    largest.insert(*split as u32, value.clone());
                }
                _ => {
                    return Err(EngineError::Internal(
                        "stored split watermarks are not split and value pairs".into(),
                    ));
                }
            }
        }
        Ok(largest)
    }
}

#[async_trait]
impl StreamOperator for WatermarkOperator {
    fn name(&self) -> &'static str {
        "watermark"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()> {
        let values = self
            .expr
            .evaluate(chunk.data())?
            .into_array(chunk.num_rows())?;
        if let Some(splits) = &mut self.splits {
            let data = chunk.data();
            let row_keys = Arc::clone(data.column(data.num_columns() - 1));
            out.emit(chunk);
            splits.observe(&row_keys, &values)?;
            self.rise_by_splits(out);
            return Ok(());
        }
        // DataFusion's max over the chunk; null when every value is.
        let mut max = MaxAccumulator::try_new(values.data_type())?;
        max.update_batch(&[values])?;
        out.emit(chunk);
        self.rise(max.evaluate()?, out);
        Ok(())
    }

    /// A source that ran out sends end-of-input watermarks: they close
    /// everything, this column's included. Others pass on.
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        if watermark.column == self.column {
            self.rise(watermark.value, out);
            return Ok(());
        }
        if watermark.is_end_of_input() {
            // Without a row or a committed watermark there is no window to
            // close, and the column's type is not known yet.
            let end = self.current.as_ref().map(|c| c.data_type());
            if let Some(end) = end.as_ref().and_then(Watermark::end_of_input) {
                self.rise(end, out);
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    async fn on_barrier(&mut self, barrier: &Barrier, out: &mut Output) -> EngineResult<()> {
        // Splits may have been read to their end, or gone idle, since the
        // last chunk.
        self.rise_by_splits(out);
        if let Some(current) = &self.current {
            let mut bytes = vec![];
            encode_scalars(std::slice::from_ref(current), &mut bytes)?;
            self.state.put(0, WATERMARK_KEY, bytes);
        }
        if let Some(splits) = &self.splits {
            self.state.put(0, SPLITS_KEY, splits.encode()?);
        }
        self.state.seal_epoch(barrier.epoch.0, out.writes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn maxima(pending: Option<Vec<u32>>) -> SplitMaxima {
        let splits = PendingSplits::default();
        splits.set(pending);
        SplitMaxima {
            pending: splits,
            largest: BTreeMap::new(),
            moved: BTreeMap::new(),
            idle_after: None,
        }
    }

    fn rows(splits_and_values: &[(i64, i64)]) -> (ArrayRef, ArrayRef) {
        let keys: Int64Array = splits_and_values
            .iter()
            .enumerate()
            .map(|(i, (split, _))| Some((split << 48) | i as i64))
            .collect();
        let values: Int64Array = splits_and_values.iter().map(|(_, v)| Some(*v)).collect();
        (Arc::new(keys), Arc::new(values))
    }

    #[test]
    fn a_pending_split_without_rows_holds_the_watermark_back() {
        let mut m = maxima(Some(vec![0, 1]));
        let (keys, values) = rows(&[(0, 10), (0, 30), (0, 20)]);
        m.observe(&keys, &values).unwrap();
        assert_eq!(m.watermark(), None);
        let (keys, values) = rows(&[(1, 5), (0, 40), (1, 7)]);
        m.observe(&keys, &values).unwrap();
        assert_eq!(m.watermark(), Some(ScalarValue::Int64(Some(7))));
        // Split 1 read to its end: only split 0 is pending.
        m.pending.set(Some(vec![0]));
        assert_eq!(m.watermark(), Some(ScalarValue::Int64(Some(40))));
        // Nothing pending: the largest of all.
        m.pending.set(Some(vec![]));
        assert_eq!(m.watermark(), Some(ScalarValue::Int64(Some(40))));
        let back = SplitMaxima::decode(&m.encode().unwrap()).unwrap();
        assert_eq!(back, m.largest);
    }

    #[test]
    fn an_idle_split_stops_holding_back() {
        let mut m = maxima(Some(vec![0, 1]));
        m.idle_after = Some(Duration::ZERO);
        let (keys, values) = rows(&[(0, 10)]);
        m.observe(&keys, &values).unwrap();
        assert_eq!(m.watermark(), Some(ScalarValue::Int64(Some(10))));
    }
}
