//! Freeing a join's state by watermark, for joins whose matches bound one
//! column of each side by the other (see [`JoinCleanup`]): window joins
//! (`a.window_start = b.window_start`) and interval joins (`a.ts BETWEEN
//! b.ts - INTERVAL '5' SECOND AND b.ts`).
//!
//! With `left >= right + lower` for every match, a future right row (its
//! column at least the right watermark `wr`) only matches left rows at or
//! above `wr + lower`; a left row below that, and below the left watermark
//! `wl` (so it never changes again), is deleted. Symmetrically, with `left
//! <= right + upper`, right rows below `min(wr, wl - upper)` go. The same
//! bounds are the watermarks of the output's copies of those columns.

use datafusion::arrow::compute::kernels::numeric::{add, sub};
use datafusion::scalar::ScalarValue;
use runnel_storage::row_codec::RowDecoder;

use super::{HashJoinOperator, key_prefix, split_value};
use crate::graph::{JoinCleanup, JoinOffset};
use crate::operators::window_state::OpenWindows;
use crate::watermarks::order_key;
use crate::{EngineError, EngineResult, Watermark};

/// One side's stored rows, each as its key group (big endian) and state
/// key, by the value of its bounded column (memcomparable). A row is
/// listed when inserted; one deleted and inserted again may be listed
/// twice, and deleting it twice is harmless.
type WindowIndex = OpenWindows<Vec<u8>, Vec<Vec<u8>>>;

/// The cleanup state of a join.
#[derive(Debug)]
pub(super) struct JoinWindow {
    pub(super) spec: JoinCleanup,
    /// The key groups this subtask owns.
    pub(super) key_groups: Vec<u16>,
    /// Per side, the watermark of its bounded column.
    watermarks: [Option<ScalarValue>; 2],
    /// Per side, the bound below which its rows are gone.
    bounds: [Option<ScalarValue>; 2],
    /// Per side, its rows by bounded value, rebuilt from state on first use.
    open: [WindowIndex; 2],
    loaded: bool,
}

/// `value + offset` (or minus), None when it cannot be computed (an
/// overflow); an end-of-input watermark stays one.
fn shifted(value: &ScalarValue, offset: &JoinOffset, minus: bool) -> Option<ScalarValue> {
    let JoinOffset::By(offset) = offset else {
        return Some(value.clone());
    };
    let end = Watermark {
        column: 0,
        value: value.clone(),
    };
    if end.is_end_of_input() {
        return Some(value.clone());
    }
    let (a, b) = (value.to_scalar().ok()?, offset.to_scalar().ok()?);
    let result = if minus { sub(&a, &b) } else { add(&a, &b) }.ok()?;
    ScalarValue::try_from_array(&result, 0).ok()
}

fn smaller(a: &ScalarValue, b: Option<ScalarValue>) -> Option<ScalarValue> {
    let b = b?;
    Some(if a < &b { a.clone() } else { b })
}

impl JoinWindow {
    pub(super) fn new(spec: JoinCleanup, key_groups: Vec<u16>) -> Self {
        Self {
            spec,
            key_groups,
            watermarks: [None, None],
            bounds: [None, None],
            open: [OpenWindows::default(), OpenWindows::default()],
            loaded: false,
        }
    }

    /// Notes that the row of `side` at `keyed` (key group and state key)
    /// has the value of order key `key` in its bounded column.
    pub(super) fn register(&mut self, side: usize, key: Vec<u8>, keyed: &[u8]) {
        self.open[side].insert(key, keyed.to_vec());
    }

    /// The bound of each side given both watermarks.
    fn new_bounds(&self) -> [Option<ScalarValue>; 2] {
        let [Some(left), Some(right)] = &self.watermarks else {
            return [None, None];
        };
        let left_bound = self
            .spec
            .lower
            .as_ref()
            .and_then(|lower| smaller(left, shifted(right, lower, false)));
        let right_bound = self
            .spec
            .upper
            .as_ref()
            .and_then(|upper| smaller(right, shifted(left, upper, true)));
        [left_bound, right_bound]
    }
}

impl HashJoinOperator {
    /// Rebuilds the index from state, once. The watermarks are not kept:
    /// after a restart state is freed from the first pair of watermarks on.
    pub(super) fn load_window(&mut self) -> EngineResult<()> {
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if window.loaded {
            return Ok(());
        }
        let mut open: [WindowIndex; 2] = [OpenWindows::default(), OpenWindows::default()];
        for (side, index) in open.iter_mut().enumerate() {
            let column = window.spec.columns[side];
            for &group in &window.key_groups {
                // One decoder per key group: the bounded column of every row.
                let mut decoder = RowDecoder::new(&self.sides[side].schema, Some(&[column]))?;
                let mut keys = vec![];
                for (state_key, bytes) in self.states[side].scan_prefix(group, b"")? {
                    decoder.push(split_value(&bytes)?.1)?;
                    keys.push(state_key);
                }
                let values = decoder.finish()?;
                for (row, state_key) in keys.into_iter().enumerate() {
                    let value = ScalarValue::try_from_array(values.column(0), row)?;
                    if let Some(key) = order_key(&value)? {
                        let mut keyed = group.to_be_bytes().to_vec();
                        keyed.extend_from_slice(&state_key);
                        index.insert(key, keyed);
                    }
                }
            }
        }
        let window = self.window.as_mut().expect("checked above");
        window.open = open;
        window.loaded = true;
        Ok(())
    }

    /// Takes in `watermark` of input `side`; deletes the rows whose bound
    /// rose past them and returns the output's watermarks.
    pub(super) fn window_watermark(
        &mut self,
        side: usize,
        watermark: Watermark,
    ) -> EngineResult<Vec<Watermark>> {
        let Some(window) = self.window.as_ref() else {
            return Ok(vec![]);
        };
        if watermark.column != window.spec.columns[side] {
            return Ok(vec![]);
        }
        self.load_window()?;
        let window = self.window.as_mut().expect("checked above");
        if window.watermarks[side]
            .as_ref()
            .is_some_and(|w| w >= &watermark.value)
        {
            return Ok(vec![]);
        }
        window.watermarks[side] = Some(watermark.value);
        let mut closed = vec![];
        let mut forwarded = vec![];
        for (side, bound) in window.new_bounds().into_iter().enumerate() {
            let Some(bound) = bound else { continue };
            if window.bounds[side].as_ref().is_some_and(|b| b >= &bound) {
                continue;
            }
            window.bounds[side] = Some(bound.clone());
            let gone = window.open[side].close_below(&bound)?;
            closed.extend(gone.into_iter().map(|keyed| (side, keyed)));
            forwarded.extend(window.spec.outputs[side].iter().map(|&column| Watermark {
                column,
                value: bound.clone(),
            }));
        }
        for (side, keyed) in closed {
            let Some(prefix) = key_prefix(&keyed[2..]) else {
                return Err(EngineError::Internal("join state key cut short".into()));
            };
            let cache_key_len = 2 + prefix.len();
            self.write_row(side, &keyed[..cache_key_len], &keyed[2..], None, false);
        }
        Ok(forwarded)
    }
}
