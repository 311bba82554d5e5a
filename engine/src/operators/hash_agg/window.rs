//! The window part of a grouped aggregation: the watermark of its window
//! column, the index of open groups by window, late rows, and reading both
//! back from state after a restart.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::HashAggOperator;
use super::record::record_values;
use crate::graph::WindowedGroups;
use crate::operators::window_state::{KeptWatermark, OpenWindows};
use crate::watermarks::order_key;
use crate::{EngineResult, StreamChunk};

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
    /// The watermark of the window column (table `state_id + 2`).
    pub(super) watermark: KeptWatermark,
    /// Keys of the groups that may hold state (shared with their slots),
    /// rebuilt from state on first use; each recorded once, when its group
    /// is new (a group emptied and filled again may be listed twice:
    /// closing finds it gone).
    pub(super) open: OpenWindows<Arc<[u8]>, Vec<Arc<[u8]>>>,
    pub(super) loaded: bool,
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
        let mut open = OpenWindows::default();
        for &group in &window.setup.key_groups {
            for (key, bytes) in self.groups.scan_prefix(group, b"")? {
                let value = self.values_format.value(record_values(&bytes)?, column)?;
                if let Some(window_value) = order_key(&value)? {
                    open.insert(window_value, key.into());
                }
            }
        }
        let window = self.window.as_mut().expect("checked above");
        window.open = open;
        window.watermark.load()?;
        window.loaded = true;
        Ok(())
    }

    /// Drops the rows of `chunk` whose window the watermark already passed,
    /// counting them (unless late rows are kept: their groups, below the
    /// watermark, close at the next one).
    pub(super) fn drop_late(&self, chunk: StreamChunk) -> EngineResult<StreamChunk> {
        let Some(window) = &self.window else {
            return Ok(chunk);
        };
        if window.setup.spec.keep_late {
            return Ok(chunk);
        }
        let Some(watermark) = window.watermark.value() else {
            return Ok(chunk);
        };
        let values = self.group_by[window.setup.spec.group_column]
            .evaluate(chunk.data())?
            .into_array(chunk.num_rows())?;
        crate::watermarks::drop_late(chunk, &values, watermark, &window.setup.late_rows)
    }
}
