//! Per-split watermarks of a connector source whose reader has splits
//! (Kafka partitions), computed in the source's task, in line with what it
//! reads: the largest event time of each split, and as the source's
//! watermark the least of those over the splits that still hold unread
//! rows (as Flink's per-split watermarks). A pending split of which no row
//! was read yet holds everything back; with no split pending nothing can
//! come behind any of them, and the largest over all goes on. A split
//! whose largest did not rise for the idle timeout stops holding back.
//!
//! The watermark operator after the source then only passes these on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::functions_aggregate::min_max::MaxAccumulator;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};

use super::connector::split_of_row_key;
use crate::{EngineError, EngineResult, StreamChunk, Watermark};

/// The state key the source keeps its splits' largest event times under.
pub(crate) const SPLIT_WATERMARKS: &[u8] = b"split_watermarks";

/// The event times of a source's splits.
#[derive(Debug)]
pub(crate) struct SplitWatermarks {
    /// The event-time column and the expression of its watermark.
    column: usize,
    expr: Arc<dyn PhysicalExpr>,
    largest: BTreeMap<u32, ScalarValue>,
    /// When each split's largest last rose (or it was first seen pending).
    moved: BTreeMap<u32, Instant>,
    idle_after: Option<Duration>,
    /// The watermark sent last.
    sent: Option<ScalarValue>,
}

impl SplitWatermarks {
    /// `WATERMARK FOR` column `column` AS `expr`, continuing from what
    /// [`SplitWatermarks::encode`] stored, if anything.
    pub(crate) fn new(
        column: usize,
        expr: Arc<dyn PhysicalExpr>,
        idle_after: Option<Duration>,
        stored: Option<&[u8]>,
    ) -> EngineResult<Self> {
        Ok(Self {
            column,
            expr,
            largest: match stored {
                Some(bytes) => decode(bytes)?,
                None => BTreeMap::new(),
            },
            moved: BTreeMap::new(),
            idle_after,
            sent: None,
        })
    }

    /// Takes in the rows of `chunk` (the source's schema: the row key,
    /// which holds the split, last).
    pub(crate) fn observe(&mut self, chunk: &StreamChunk) -> EngineResult<()> {
        let data = chunk.data();
        let values = self.expr.evaluate(data)?.into_array(data.num_rows())?;
        let keys = data
            .column(data.num_columns() - 1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| {
                EngineError::Internal("a split reader's row key is not bigint".into())
            })?;
        let splits: Vec<u32> = keys.values().iter().map(|k| split_of_row_key(*k)).collect();
        // A chunk holds rows of a few splits: a short list, no sort.
        let mut distinct: Vec<u32> = vec![];
        for split in &splits {
            if !distinct.contains(split) {
                distinct.push(*split);
            }
        }
        let now = Instant::now();
        for split in distinct {
            let of_split = if splits.iter().all(|s| *s == split) {
                Arc::clone(&values)
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

    /// The watermark to send now that `pending` splits hold unread rows,
    /// when it rose above the last one sent.
    pub(crate) fn rise(&mut self, pending: Option<Vec<u32>>) -> Option<Watermark> {
        let value = self.allowed(pending)?;
        if self.sent.as_ref().is_some_and(|s| s >= &value) {
            return None;
        }
        self.sent = Some(value.clone());
        Some(Watermark {
            column: self.column,
            value,
        })
    }

    fn allowed(&mut self, pending: Option<Vec<u32>>) -> Option<ScalarValue> {
        let now = Instant::now();
        let mut least: Option<&ScalarValue> = None;
        let mut holding = false;
        for split in pending.unwrap_or_default() {
            let moved = *self.moved.entry(split).or_insert(now);
            if self
                .idle_after
                .is_some_and(|after| now.duration_since(moved) >= after)
            {
                continue;
            }
            holding = true;
            let value = self.largest.get(&split)?;
            if least.is_none_or(|l| value < l) {
                least = Some(value);
            }
        }
        if holding {
            return least.cloned();
        }
        self.largest
            .values()
            .fold(None::<&ScalarValue>, |m, v| match m {
                Some(m) if m >= v => Some(m),
                _ => Some(v),
            })
            .cloned()
    }

    /// As stored: split number and largest value, in turn.
    pub(crate) fn encode(&self) -> EngineResult<Vec<u8>> {
        let values: Vec<ScalarValue> = self
            .largest
            .iter()
            .flat_map(|(split, value)| [ScalarValue::UInt32(Some(*split)), value.clone()])
            .collect();
        let mut bytes = vec![];
        encode_scalars(&values, &mut bytes)?;
        Ok(bytes)
    }
}

fn decode(bytes: &[u8]) -> EngineResult<BTreeMap<u32, ScalarValue>> {
    let values = decode_scalars(bytes)?;
    let mut largest = BTreeMap::new();
    for pair in values.chunks(2) {
        match pair {
            [ScalarValue::UInt32(Some(split)), value] => {
                largest.insert(*split, value.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn watermarks() -> SplitWatermarks {
        SplitWatermarks::new(0, Arc::new(Column::new("ts", 0)), None, None).unwrap()
    }

    /// Rows of (split, event time).
    fn chunk(rows: &[(i64, i64)]) -> StreamChunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("_row", DataType::Int64, false),
        ]));
        let times: Int64Array = rows.iter().map(|(_, t)| Some(*t)).collect();
        let keys: Int64Array = rows
            .iter()
            .enumerate()
            .map(|(i, (split, _))| Some((split << 48) | i as i64))
            .collect();
        StreamChunk::inserts(
            RecordBatch::try_new(schema, vec![Arc::new(times), Arc::new(keys)]).unwrap(),
        )
    }

    fn value(w: Option<Watermark>) -> Option<i64> {
        w.map(|w| match w.value {
            ScalarValue::Int64(Some(v)) => v,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn a_pending_split_without_rows_holds_the_watermark_back() {
        let mut w = watermarks();
        w.observe(&chunk(&[(0, 10), (0, 30), (0, 20)])).unwrap();
        assert_eq!(value(w.rise(Some(vec![0, 1]))), None);
        w.observe(&chunk(&[(1, 5), (0, 40), (1, 7)])).unwrap();
        assert_eq!(value(w.rise(Some(vec![0, 1]))), Some(7));
        // Unchanged: nothing new to send.
        assert_eq!(value(w.rise(Some(vec![0, 1]))), None);
        // Split 1 read to its end: only split 0 is pending.
        assert_eq!(value(w.rise(Some(vec![0]))), Some(40));
        w.observe(&chunk(&[(1, 50)])).unwrap();
        // Nothing pending: the largest of all.
        assert_eq!(value(w.rise(Some(vec![]))), Some(50));
        let stored = w.encode().unwrap();
        let back = SplitWatermarks::new(0, Arc::new(Column::new("ts", 0)), None, Some(&stored));
        assert_eq!(back.unwrap().largest, w.largest);
    }

    #[test]
    fn an_idle_split_stops_holding_back() {
        let mut w = watermarks();
        w.idle_after = Some(Duration::ZERO);
        w.observe(&chunk(&[(0, 10)])).unwrap();
        assert_eq!(value(w.rise(Some(vec![0, 1]))), Some(10));
    }
}
