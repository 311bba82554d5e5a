//! What windowed operators keep beside their rows: the watermark they last
//! acted on, persisted per epoch so a restart neither re-opens nor re-emits
//! closed windows (aggregations, Top-N per window, session aggregations),
//! and an index of open windows to find what a rising watermark closes
//! (those and window/interval joins).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::{StateTable, Store, WriteSet};

use crate::EngineResult;
use crate::watermarks::order_key;

const WATERMARK_KEY: &[u8] = b"watermark";

/// The watermark an operator instance last acted on, in a state table of
/// its own (under the first key group the instance owns).
#[derive(Debug)]
pub(crate) struct KeptWatermark {
    table: StateTable,
    group: Option<u16>,
    value: Option<ScalarValue>,
}

impl KeptWatermark {
    /// The watermark kept in state table `id` by the instance owning
    /// `key_groups`; read it with [`KeptWatermark::load`].
    pub(crate) fn new(store: Store, id: u64, key_groups: &[u16]) -> Self {
        Self {
            table: StateTable::new(store, id),
            group: key_groups.first().copied(),
            value: None,
        }
    }

    /// Reads the watermark of the last committed epoch.
    pub(crate) fn load(&mut self) -> EngineResult<()> {
        if let Some(group) = self.group
            && let Some(bytes) = self.table.get(group, WATERMARK_KEY)?
        {
            self.value = decode_scalars(&bytes)?.into_iter().next();
        }
        Ok(())
    }

    /// The watermark, once one arrived.
    pub(crate) fn value(&self) -> Option<&ScalarValue> {
        self.value.as_ref()
    }

    /// Takes `value` if it is above the watermark; false (and nothing
    /// changes) if it is not.
    pub(crate) fn advance(&mut self, value: &ScalarValue) -> bool {
        if self.value.as_ref().is_some_and(|w| w >= value) {
            return false;
        }
        self.value = Some(value.clone());
        true
    }

    /// Adds the watermark to epoch `epoch`'s writes.
    pub(crate) fn seal(&mut self, epoch: u64, writes: &mut WriteSet) -> EngineResult<()> {
        if let (Some(value), Some(group)) = (&self.value, self.group) {
            let mut bytes = vec![];
            encode_scalars(std::slice::from_ref(value), &mut bytes)?;
            self.table.put(group, WATERMARK_KEY, bytes);
        }
        self.table.seal_epoch(epoch, writes);
        Ok(())
    }
}

/// The keys of one window: a set, or a list where each key is recorded
/// once anyway (an aggregation records a group when it is new), which
/// costs no ordering.
pub(crate) trait WindowKeys<K>: Default + IntoIterator<Item = K> {
    fn add(&mut self, key: K);
}

impl<K: Ord> WindowKeys<K> for BTreeSet<K> {
    fn add(&mut self, key: K) {
        self.insert(key);
    }
}

impl<K> WindowKeys<K> for Vec<K> {
    fn add(&mut self, key: K) {
        self.push(key);
    }
}

/// What holds state, by the value of its window (memcomparable, as
/// [`order_key`] makes it).
#[derive(Debug)]
pub(crate) struct OpenWindows<K, S = BTreeSet<K>> {
    by_window: BTreeMap<Vec<u8>, S>,
    _keys: std::marker::PhantomData<K>,
}

impl<K, S> Default for OpenWindows<K, S> {
    fn default() -> Self {
        Self {
            by_window: BTreeMap::new(),
            _keys: std::marker::PhantomData,
        }
    }
}

impl<K, S: WindowKeys<K>> OpenWindows<K, S> {
    /// Records that `key` holds state in the window whose order key is
    /// `window`.
    pub(crate) fn insert(&mut self, window: Vec<u8>, key: K) {
        self.by_window.entry(window).or_default().add(key);
    }

    /// Takes out every key whose window is below `watermark`.
    pub(crate) fn close_below(&mut self, watermark: &ScalarValue) -> EngineResult<Vec<K>> {
        let Some(bound) = order_key(watermark)? else {
            return Ok(vec![]);
        };
        let open = self.by_window.split_off(&bound);
        Ok(std::mem::replace(&mut self.by_window, open)
            .into_values()
            .flatten()
            .collect())
    }
}
