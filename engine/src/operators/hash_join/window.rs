//! A join on a window bound: when one pair of join keys carries a watermark
//! on both sides (two windowed aggregations joined on `window_start`, say),
//! rows of windows both watermarks passed can meet nothing new and never
//! change, so their state is deleted, and the output carries the smaller
//! watermark on those key columns.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::scalar::ScalarValue;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::row_codec::RowDecoder;

use super::{HashJoinOperator, decode_value};
use crate::graph::WindowedJoinKey;
use crate::{EngineResult, Watermark};

/// One side's stored rows, as (key group, state key), by window value
/// (memcomparable).
type WindowIndex = BTreeMap<Vec<u8>, BTreeSet<(u16, Vec<u8>)>>;

/// The window state of a join.
#[derive(Debug)]
pub(super) struct JoinWindow {
    pub(super) spec: WindowedJoinKey,
    /// The key groups this subtask owns.
    pub(super) key_groups: Vec<u16>,
    /// Per side, the watermark of its key column.
    watermarks: [Option<ScalarValue>; 2],
    /// The smaller of the two, once both arrived: rows below it are gone.
    bound: Option<ScalarValue>,
    /// Per side, its rows by window, rebuilt from state on first use.
    open: [WindowIndex; 2],
    loaded: bool,
}

/// The memcomparable form of a window value; None for null.
pub(super) fn window_key(value: &ScalarValue) -> EngineResult<Option<Vec<u8>>> {
    if value.is_null() {
        return Ok(None);
    }
    let array = value.to_array()?;
    let mut key = vec![];
    encode_nullable_key(&[&array], 0, &mut key)?;
    Ok(Some(key))
}

impl JoinWindow {
    pub(super) fn new(spec: WindowedJoinKey, key_groups: Vec<u16>) -> Self {
        Self {
            spec,
            key_groups,
            watermarks: [None, None],
            bound: None,
            open: [BTreeMap::new(), BTreeMap::new()],
            loaded: false,
        }
    }

    /// Notes that row `state_key` of `side` (in key group `group`) has
    /// window value `value`.
    pub(super) fn register(
        &mut self,
        side: usize,
        value: &ScalarValue,
        group: u16,
        state_key: &[u8],
    ) -> EngineResult<()> {
        if let Some(window) = window_key(value)? {
            self.open[side]
                .entry(window)
                .or_default()
                .insert((group, state_key.to_vec()));
        }
        Ok(())
    }
}

impl HashJoinOperator {
    /// Rebuilds the window index from state, once. The watermarks are not
    /// kept: after a restart state is freed from the first pair of
    /// watermarks on.
    pub(super) fn load_window(&mut self) -> EngineResult<()> {
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if window.loaded {
            return Ok(());
        }
        let mut open: [WindowIndex; 2] = [BTreeMap::new(), BTreeMap::new()];
        for (side, index) in open.iter_mut().enumerate() {
            let column = self.sides[side].keys[window.spec.key];
            for &group in &window.key_groups {
                for (state_key, bytes) in self.states[side].scan_prefix(group, b"")? {
                    let (row, _) = decode_value(&bytes)?;
                    let mut decoder = RowDecoder::new(&self.sides[side].schema, Some(&[column]))?;
                    decoder.push(&row)?;
                    let batch = decoder.finish()?;
                    let value = ScalarValue::try_from_array(batch.column(0), 0)?;
                    if let Some(key) = window_key(&value)? {
                        index.entry(key).or_default().insert((group, state_key));
                    }
                }
            }
        }
        let window = self.window.as_mut().expect("checked above");
        window.open = open;
        window.loaded = true;
        Ok(())
    }

    /// Takes in `watermark` of input `side`; when the smaller of the two
    /// sides' watermarks rose, deletes the rows below it and returns the
    /// watermarks of the output.
    pub(super) fn window_watermark(
        &mut self,
        side: usize,
        watermark: Watermark,
    ) -> EngineResult<Vec<Watermark>> {
        let Some(window) = self.window.as_ref() else {
            return Ok(vec![]);
        };
        if watermark.column != self.sides[side].keys[window.spec.key] {
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
        let [Some(a), Some(b)] = &window.watermarks else {
            return Ok(vec![]);
        };
        let bound = if a < b { a.clone() } else { b.clone() };
        if window.bound.as_ref().is_some_and(|w| w >= &bound) {
            return Ok(vec![]);
        }
        window.bound = Some(bound.clone());
        let Some(limit) = window_key(&bound)? else {
            return Ok(vec![]);
        };
        let mut closed = vec![];
        for (side, index) in window.open.iter_mut().enumerate() {
            let still_open = index.split_off(&limit);
            let gone = std::mem::replace(index, still_open);
            closed.extend(
                gone.into_values()
                    .flatten()
                    .map(|(group, key)| (side, group, key)),
            );
        }
        let outputs = window.spec.outputs.clone();
        for (side, group, key) in closed {
            self.states[side].delete(group, &key);
        }
        Ok(outputs
            .into_iter()
            .map(|column| Watermark {
                column,
                value: bound.clone(),
            })
            .collect())
    }
}
