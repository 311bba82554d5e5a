//! The process's memory allocator: jemalloc (as TiKV, RisingWave and
//! Materialize use), for every binary that links this crate — the server,
//! the bench, the tests.
//!
//! It replaces `malloc` itself (`unprefixed_malloc_on_supported_platforms`),
//! so RocksDB's and librdkafka's C and C++ allocations come from it too.
//! glibc's malloc, under a streaming job's mix of long-lived state and
//! short-lived batches on many threads, kept growing arenas it could not
//! give back (it took capping arenas and a `malloc_trim` thread to hold a
//! long run near a short one's size); jemalloc's size classes and its
//! background threads, which purge unused dirty pages after a delay, keep
//! resident memory near what is allocated without either.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the allocator holds, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    /// Bytes the process's live allocations take.
    pub allocated: u64,
    /// Bytes of physical memory the allocator has mapped and touched
    /// (allocated plus its caches and fragmentation).
    pub resident: u64,
}

/// The allocator's figures now, when it keeps statistics (None on a
/// platform without jemalloc or when reading them fails).
pub fn memory_stats() -> Option<MemoryStats> {
    #[cfg(not(target_env = "msvc"))]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        Some(MemoryStats {
            allocated: stats::allocated::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
        })
    }
    #[cfg(target_env = "msvc")]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_see_an_allocation() {
        let before = memory_stats().expect("jemalloc statistics");
        let block = vec![1u8; 64 << 20];
        let during = memory_stats().expect("jemalloc statistics");
        assert!(
            during.allocated >= before.allocated + (60 << 20),
            "{before:?} then {during:?}"
        );
        assert!(during.resident >= during.allocated, "{during:?}");
        drop(block);
    }
}
