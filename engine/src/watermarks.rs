//! Merging watermarks of several inputs: per column, the minimum over the
//! inputs once every input delivered one (as in Flink), and only rising.
//! With an idle timeout, an input whose watermark has not moved for that
//! long stops holding the others back until it moves again (Flink's
//! `table.exec.source.idle-timeout`); its rows behind the merged watermark
//! are then late.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datafusion::scalar::ScalarValue;

use crate::Watermark;

/// The memcomparable form of a value, so values compare with a watermark
/// as bytes (in ordered indexes of windows); None for null, which no
/// watermark ever passes.
pub fn order_key(value: &ScalarValue) -> crate::EngineResult<Option<Vec<u8>>> {
    if value.is_null() {
        return Ok(None);
    }
    let array = value.to_array()?;
    let mut key = vec![];
    runnel_storage::key_codec::encode_nullable_key(&[&array], 0, &mut key)?;
    Ok(Some(key))
}

/// The order key of row `row` of `array`: what [`order_key`] gives for its
/// value, without making a `ScalarValue` of it (None for null).
pub fn order_key_at(
    array: &datafusion::arrow::array::ArrayRef,
    row: usize,
) -> crate::EngineResult<Option<Vec<u8>>> {
    use datafusion::arrow::array::Array;
    if array.is_null(row) {
        return Ok(None);
    }
    let mut key = vec![];
    runnel_storage::key_codec::encode_nullable_key(&[array], row, &mut key)?;
    Ok(Some(key))
}

/// `chunk` without its rows whose `values` are behind `watermark` (late
/// for a window the watermark closed), adding how many to `late_rows`. A
/// null value is never late: it never closes.
pub fn drop_late(
    chunk: crate::StreamChunk,
    values: &datafusion::arrow::array::ArrayRef,
    watermark: &ScalarValue,
    late_rows: &std::sync::atomic::AtomicU64,
) -> crate::EngineResult<crate::StreamChunk> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::compute::kernels::cmp::lt;
    use datafusion::arrow::compute::{not, prep_null_mask_filter};
    let late = lt(values, &watermark.to_scalar()?)?;
    let late = if late.null_count() > 0 {
        prep_null_mask_filter(&late)
    } else {
        late
    };
    let count = late.true_count();
    if count == 0 {
        return Ok(chunk);
    }
    late_rows.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
    chunk.filter(&not(&late)?)
}

/// The watermarks of several inputs, per column.
#[derive(Debug)]
pub struct WatermarkMerge {
    /// Column → the latest watermark of each input and when it rose.
    inputs: HashMap<usize, Vec<Option<(ScalarValue, Instant)>>>,
    /// Column → the combined watermark passed on last.
    combined: HashMap<usize, ScalarValue>,
    idle_after: Option<Duration>,
    /// Inputs that never sent a watermark count as idle this long after.
    created: Instant,
}

impl Default for WatermarkMerge {
    fn default() -> Self {
        Self::with_idle_timeout(None)
    }
}

impl WatermarkMerge {
    /// A merge in which an input whose watermark stood still for
    /// `idle_after` is left out (None: every input always counts).
    pub fn with_idle_timeout(idle_after: Option<Duration>) -> Self {
        Self {
            inputs: HashMap::new(),
            combined: HashMap::new(),
            idle_after,
            created: Instant::now(),
        }
    }

    /// Records `watermark` from input `index` of `inputs`; returns the
    /// combined watermark when it rose.
    pub fn update(
        &mut self,
        index: usize,
        inputs: usize,
        watermark: Watermark,
    ) -> Option<Watermark> {
        let now = Instant::now();
        let latest = self
            .inputs
            .entry(watermark.column)
            .or_insert_with(|| vec![None; inputs]);
        match &latest[index] {
            Some((previous, _)) if previous >= &watermark.value => return None,
            _ => latest[index] = Some((watermark.value, now)),
        }
        self.rise(watermark.column, now, Some(index))
    }

    /// The combined watermarks that rose because inputs went idle since
    /// the last update: an input that stopped sending watermarks sends
    /// nothing that would trigger [`WatermarkMerge::update`], so the task
    /// polls at every barrier.
    pub fn poll(&mut self) -> Vec<Watermark> {
        if self.idle_after.is_none() {
            return vec![];
        }
        let now = Instant::now();
        let columns: Vec<usize> = self.inputs.keys().copied().collect();
        columns
            .into_iter()
            .filter_map(|column| self.rise(column, now, None))
            .collect()
    }

    /// The minimum over `column`'s inputs that are not idle (`fresh` just
    /// sent one, so it is not), when it is above what was passed on.
    fn rise(&mut self, column: usize, now: Instant, fresh: Option<usize>) -> Option<Watermark> {
        let latest = self.inputs.get(&column)?;
        let idle = |since: Instant| {
            self.idle_after
                .is_some_and(|after| now.duration_since(since) >= after)
        };
        let mut min: Option<&ScalarValue> = None;
        // When every input is idle, the largest of theirs goes on (as
        // Flink's valve does): nothing holds it back any more.
        let mut max_idle: Option<&ScalarValue> = None;
        for (i, entry) in latest.iter().enumerate() {
            let value = match entry {
                Some((value, rose)) if Some(i) == fresh || !idle(*rose) => value,
                Some((value, _)) => {
                    if max_idle.is_none_or(|m| value > m) {
                        max_idle = Some(value);
                    }
                    continue;
                }
                None if idle(self.created) => continue,
                None => return None,
            };
            if min.is_none_or(|m| value < m) {
                min = Some(value);
            }
        }
        let min = min.or(max_idle)?.clone();
        if self.combined.get(&column).is_some_and(|c| c >= &min) {
            return None;
        }
        self.combined.insert(column, min.clone());
        Some(Watermark { column, value: min })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wm(column: usize, value: i64) -> Watermark {
        Watermark {
            column,
            value: ScalarValue::Int64(Some(value)),
        }
    }

    #[test]
    fn the_combined_watermark_is_the_minimum_once_every_input_has_one() {
        let mut merge = WatermarkMerge::default();
        assert_eq!(merge.update(0, 2, wm(3, 10)), None);
        assert_eq!(merge.update(1, 2, wm(3, 4)), Some(wm(3, 4)));
        // The slower input decides; a fall on one input is ignored.
        assert_eq!(merge.update(0, 2, wm(3, 2)), None);
        assert_eq!(merge.update(1, 2, wm(3, 12)), Some(wm(3, 10)));
        assert_eq!(merge.update(1, 2, wm(3, 13)), None);
        // Columns are merged apart.
        assert_eq!(merge.update(0, 2, wm(5, 1)), None);
        assert_eq!(merge.update(1, 2, wm(5, 1)), Some(wm(5, 1)));
    }

    #[test]
    fn an_idle_input_stops_holding_the_watermark_back() {
        let mut merge = WatermarkMerge::with_idle_timeout(Some(Duration::from_millis(30)));
        assert_eq!(merge.update(0, 2, wm(1, 5)), None);
        std::thread::sleep(Duration::from_millis(40));
        // Input 1 never sent one and input 0 moves on alone.
        assert_eq!(merge.update(0, 2, wm(1, 8)), Some(wm(1, 8)));
        // Input 1 wakes up behind: the merge does not fall back.
        assert_eq!(merge.update(1, 2, wm(1, 6)), None);
        assert_eq!(merge.update(0, 2, wm(1, 9)), None);
        assert_eq!(merge.update(1, 2, wm(1, 10)), Some(wm(1, 9)));
    }

    #[test]
    fn polling_releases_what_inputs_that_went_quiet_held_back() {
        let mut merge = WatermarkMerge::with_idle_timeout(Some(Duration::from_millis(30)));
        // Input 1 has sent nothing, and is not idle yet.
        assert_eq!(merge.update(0, 2, wm(1, 5)), None);
        assert!(merge.poll().is_empty());
        std::thread::sleep(Duration::from_millis(40));
        // Nothing arrived since; both inputs are idle now, so input 0's
        // watermark goes on, once.
        assert_eq!(merge.poll(), vec![wm(1, 5)]);
        assert!(merge.poll().is_empty());
        // Without an idle timeout, polling never releases anything.
        let mut strict = WatermarkMerge::default();
        assert_eq!(strict.update(0, 2, wm(1, 5)), None);
        assert!(strict.poll().is_empty());
    }
}
