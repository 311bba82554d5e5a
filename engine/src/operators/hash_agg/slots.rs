//! The groups an aggregation holds in memory, each in a numbered slot: a
//! hash table from encoded group key to slot, the slots' bookkeeping (row
//! count, encoded group values, last emitted row, whether the store has
//! the group and whether the running epoch touched it), and their cost
//! charged to the process's state cache budget. Aggregate states live in
//! columns indexed by slot (see `columns`), so a group costs no allocation
//! of its own beyond its key and values.
//!
//! Groups stay after the barrier that wrote them; when the process's
//! caches are over budget, the least recently touched clean groups leave
//! (and are read back from the state table when touched again).

use datafusion::common::HashMap;
use std::sync::Arc;

use runnel_storage::completeness::Completeness;
use runnel_storage::{CacheBudget, CacheCharge};

/// What a slot costs beyond its bytes: the table entry, the slot, the
/// allocation headers.
const SLOT_OVERHEAD: usize = 112;

/// The counts in front of a key shared by its slot and the index.
const ARC_HEADER: usize = 16;

/// One group in memory.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Encoded group key (the state table's key).
    pub key: Arc<[u8]>,
    /// The key's key group.
    pub group: u16,
    /// Rows the group holds.
    pub rows: i64,
    /// Group values, encoded (see `rows`).
    pub values: Box<[u8]>,
    /// The output row emitted last, encoded, if any.
    pub previous: Option<Box<[u8]>>,
    /// Whether the state table has (or will have once the epoch commits) a
    /// record of the group.
    pub stored: bool,
    /// Whether the running epoch touched the group.
    pub dirty: bool,
    /// The epoch count when it was last touched, for eviction (kept by
    /// [`Slots`]).
    pub(super) used: u64,
    /// What the slot is charged (kept by [`Slots`]).
    pub(super) cost: usize,
}

/// The groups in memory, by slot.
pub(super) struct Slots {
    index: HashMap<Arc<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    charge: CacheCharge,
    /// Heap bytes each slot's aggregate states cost.
    state_cost: usize,
    /// Whether every group the state table holds is here (started on empty
    /// state) but those evicted since: a miss on another is a new group.
    complete: Completeness,
    clock: u64,
    /// Look-ups since the last tick that missed and that hit.
    lookups: [u64; 2],
}

impl Slots {
    /// No groups, charging `budget`; each slot's aggregate states cost
    /// `state_cost` bytes.
    pub fn new(budget: Arc<CacheBudget>, state_cost: usize) -> Self {
        Self {
            index: HashMap::default(),
            slots: vec![],
            free: vec![],
            charge: CacheCharge::new(budget),
            state_cost,
            complete: Completeness::default(),
            clock: 0,
            lookups: [0, 0],
        }
    }

    /// Says the state table is empty: misses are new groups until the
    /// first eviction.
    pub fn assume_complete(&mut self) {
        if self.charge.limit() > 0 {
            self.complete.assume();
        }
    }

    /// Sets what each slot's aggregate states cost (before any group is
    /// added).
    pub fn set_state_cost(&mut self, cost: usize) {
        self.state_cost = cost;
    }

    /// Whether a miss on `key` means a new group.
    pub fn knows_absent(&self, key: &[u8]) -> bool {
        self.complete.knows_absent(key)
    }

    /// Slots allocated (live or free): the length aggregate columns need.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the group at `key`, if in memory.
    pub fn find(&mut self, key: &[u8]) -> Option<u32> {
        let found = self.index.get(key).copied();
        self.lookups[usize::from(found.is_some())] += 1;
        found
    }

    /// Puts a group into a free slot and returns it; the caller has reset
    /// the slot's aggregate states when it was freed.
    pub fn add(&mut self, slot: Slot) -> u32 {
        let index = match self.free.pop() {
            Some(free) => free,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(Arc::clone(&slot.key), index);
        self.slots[index as usize] = slot;
        self.recharge(index);
        index
    }

    /// The group in slot `slot`.
    pub fn get(&self, slot: u32) -> &Slot {
        &self.slots[slot as usize]
    }

    /// The group in slot `slot`, to change (call [`Slots::recharge`] after
    /// changing its values or previous row).
    pub fn get_mut(&mut self, slot: u32) -> &mut Slot {
        &mut self.slots[slot as usize]
    }

    /// Marks the group touched in this epoch; true if it was not yet.
    pub fn touch(&mut self, slot: u32) -> bool {
        let clock = self.clock;
        let entry = &mut self.slots[slot as usize];
        entry.used = clock;
        !std::mem::replace(&mut entry.dirty, true)
    }

    /// What the group in `slot` costs.
    pub fn cost(&self, slot: u32) -> usize {
        self.slots[slot as usize].cost
    }

    /// Charges the group in `slot` for what it holds now.
    pub fn recharge(&mut self, slot: u32) {
        let entry = &mut self.slots[slot as usize];
        let cost = SLOT_OVERHEAD
            + entry.key.len()
            + ARC_HEADER
            + entry.values.len()
            + entry.previous.as_ref().map_or(0, |p| p.len())
            + self.state_cost;
        let old = std::mem::replace(&mut entry.cost, cost);
        self.charge.sub(old);
        self.charge.add(cost);
    }

    /// Frees slot `slot` (its group leaves memory); the caller resets its
    /// aggregate states.
    pub fn free(&mut self, slot: u32) {
        let entry = std::mem::take(&mut self.slots[slot as usize]);
        self.index.remove(&entry.key);
        self.charge.sub(entry.cost);
        self.free.push(slot);
    }

    /// Ends an epoch's touches (groups touched later count as more
    /// recent) and reports its look-ups to the process's counters.
    pub fn tick(&mut self) {
        self.clock += 1;
        let [misses, hits] = std::mem::take(&mut self.lookups);
        self.charge.count_lookups(hits, misses);
    }

    /// The clean groups to evict, least recently touched first, to bring
    /// the process back under its budget (none when it is under). Their
    /// keys are no longer known absent.
    pub fn pick_evictions(&mut self) -> Vec<u32> {
        let mut excess = self.charge.excess();
        if excess == 0 {
            return vec![];
        }
        // Evict a sixteenth of what the groups hold beyond what is needed,
        // so the next barriers do not sort the slots again for a few bytes.
        excess += self.charge.bytes() / 16;
        let mut candidates: Vec<(u64, u32)> = self
            .index
            .values()
            .map(|&slot| (self.slots[slot as usize].used, slot))
            .filter(|&(_, slot)| !self.slots[slot as usize].dirty)
            .collect();
        candidates.sort_unstable();
        let mut evicted = vec![];
        for (_, slot) in candidates {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(self.slots[slot as usize].cost);
            evicted.push(slot);
        }
        let (limit, before) = (self.charge.limit() / 4, self.complete.bytes());
        for &slot in &evicted {
            self.complete
                .evict(&self.slots[slot as usize].key[..], limit);
        }
        self.charge.add(self.complete.bytes());
        self.charge.sub(before);
        evicted
    }
}
