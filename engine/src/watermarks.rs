//! Merging watermarks of several inputs: per column, the minimum over the
//! inputs once every input delivered one (as in Flink), and only rising.

use std::collections::HashMap;

use datafusion::scalar::ScalarValue;

use crate::Watermark;

/// The watermarks of several inputs, per column.
#[derive(Debug, Default)]
pub struct WatermarkMerge {
    /// Column → the latest watermark of each input.
    inputs: HashMap<usize, Vec<Option<ScalarValue>>>,
    /// Column → the combined watermark passed on last.
    combined: HashMap<usize, ScalarValue>,
}

impl WatermarkMerge {
    /// Records `watermark` from input `index` of `inputs`; returns the
    /// combined watermark when it rose.
    pub fn update(
        &mut self,
        index: usize,
        inputs: usize,
        watermark: Watermark,
    ) -> Option<Watermark> {
        let latest = self
            .inputs
            .entry(watermark.column)
            .or_insert_with(|| vec![None; inputs]);
        match &latest[index] {
            Some(previous) if previous >= &watermark.value => return None,
            _ => latest[index] = Some(watermark.value),
        }
        let mut min: Option<&ScalarValue> = None;
        for value in latest.iter() {
            let value = value.as_ref()?;
            if min.is_none_or(|m| value < m) {
                min = Some(value);
            }
        }
        let min = min?.clone();
        if self
            .combined
            .get(&watermark.column)
            .is_some_and(|c| c >= &min)
        {
            return None;
        }
        self.combined.insert(watermark.column, min.clone());
        Some(Watermark {
            column: watermark.column,
            value: min,
        })
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
}
