//! Settings of the process's memory allocator, applied once at start,
//! before any thread exists.
//!
//! glibc's malloc gives threads arenas of their own, up to eight per core,
//! and raises its mmap threshold each time a large block is freed, so that
//! later large blocks (an epoch's write batch, a RocksDB block read)
//! come from the arenas instead of fresh mappings. Operators run on the
//! runtime's workers, epoch commits on blocking threads and RocksDB's reads,
//! flushes and compactions on threads of its own; every arena ends up
//! holding long-lived blocks (RocksDB's cache, state being built) between
//! the holes that freed large blocks leave, and a long run touches more and
//! more of every arena. With few arenas and a fixed threshold (large blocks
//! always mapped, and unmapped when freed) the resident size of a ten times
//! longer Nexmark run stays near the short run's (`bench/README.md`,
//! "Soak"). A thread of its own also hands the free pages inside the
//! arenas back to the system now and then (`malloc_trim`), which glibc
//! otherwise does only for the free space at an arena's top.

use std::time::Duration;

/// Blocks from this size up are mapped on their own and returned to the
/// system when freed (glibc's initial threshold, kept fixed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Caps glibc's malloc at `arenas` arenas and fixes its mmap and trim
/// thresholds; 0 leaves every glibc default. Call before starting any
/// thread: arenas that exist stay.
pub fn tune_malloc(arenas: u32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if arenas > 0 {
        let arenas = libc::c_int::try_from(arenas).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets malloc parameters, each to a value in
        // its documented range (positive counts and byte sizes).
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Starts a thread that calls glibc's `malloc_trim(0)` every `every_ms`
/// milliseconds, returning the free pages in the middle of every arena to
/// the system; 0 (or a platform without glibc) starts nothing. Trimming walks the
/// arenas under their locks, so it is not free: once a second costs
/// little against a streaming job's allocation rate.
pub fn start_trimming(every_ms: u64) {
    if every_ms == 0 {
        return;
    }
    let every = Duration::from_millis(every_ms);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    // SAFETY: malloc_trim takes no pointers and only releases
                    // free memory; it is safe to call from any thread.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the malloc-trim thread; memory is not trimmed");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = every;
}
