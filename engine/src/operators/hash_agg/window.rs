//! The window part of a grouped aggregation: the watermark of its window
//! column, the index of open groups by window, late rows, and reading both
//! back from state after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::scalar::ScalarValue;
use runnel_storage::StateTable;
use runnel_storage::scalar_codec::decode_scalars;

use super::HashAggOperator;
use crate::graph::WindowedGroups;
use crate::watermarks::order_key;
use crate::{EngineResult, StreamChunk};

pub(super) const WATERMARK_KEY: &[u8] = b"watermark";

/// What a windowed aggregation needs from the runtime.
#[derive(Debug)]
pub struct WindowSetup {
    pub spec: WindowedGroups,
    /// The key groups this subtask owns (its groups' state).
    pub key_groups: Vec<u16>,
    /// The job's counter of late rows dropped.
    pub late_rows: Arc<AtomicU64>,
}

/// What a windowed aggregation keeps beside its groups.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) setup: WindowSetup,
    /// The watermark of the window column, once one arrived.
    pub(super) watermark: Option<ScalarValue>,
    /// Keys of the groups that may hold state, by window value
    /// (memcomparable), rebuilt from state on first use.
    pub(super) open: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    pub(super) loaded: bool,
    /// Table `state_id + 2`: the watermark as of the last barrier.
    pub(super) meta: StateTable,
}

impl HashAggOperator {
    /// Reads a windowed aggregation's watermark and open groups from state,
    /// once.
    pub(super) fn load_window(&mut self) -> EngineResult<()> {
        let Some(window) = self.window.as_ref() else {
            return Ok(());
        };
        if window.loaded {
            return Ok(());
        }
        let column = window.setup.spec.group_column;
        let mut open: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
        let mut watermark = None;
        for &group in &window.setup.key_groups {
            for (key, bytes) in self.groups.scan_prefix(group, b"")? {
                let state = self.decode_record(group, &bytes)?;
                if let Some(value) = state.values.get(column)
                    && let Some(window_value) = order_key(value)?
                {
                    open.entry(window_value).or_default().insert(key);
                }
            }
        }
        if let Some(&first) = window.setup.key_groups.first()
            && let Some(bytes) = window.meta.get(first, WATERMARK_KEY)?
        {
            watermark = decode_scalars(&bytes)?.into_iter().next();
        }
        let window = self.window.as_mut().expect("checked above");
        window.open = open;
        window.watermark = watermark;
        window.loaded = true;
        Ok(())
    }

    /// Drops the rows of `chunk` whose window the watermark already passed,
    /// counting them.
    pub(super) fn drop_late(&self, chunk: StreamChunk) -> EngineResult<StreamChunk> {
        let Some(window) = &self.window else {
            return Ok(chunk);
        };
        let Some(watermark) = &window.watermark else {
            return Ok(chunk);
        };
        let values = self.group_by[window.setup.spec.group_column]
            .evaluate(chunk.data())?
            .into_array(chunk.num_rows())?;
        crate::watermarks::drop_late(chunk, &values, watermark, &window.setup.late_rows)
    }
}
