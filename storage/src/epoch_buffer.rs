//! The process's budget for uncommitted writes held in memory.
//!
//! Every [`StateTable`](crate::StateTable) keeps the writes of the running
//! epoch (and of the sealed one, until its commit has surely landed) in
//! memory, and a view's writer keeps its epoch's rows; all of them are
//! charged here. Sources look at [`EpochBuffer::is_full`] and, when it is,
//! ask for an early barrier and wait for it instead of producing more rows,
//! so an epoch's size is bounded by memory rather than by how much a source
//! can produce in one barrier interval (a slow commit otherwise makes the
//! next epoch larger, and so on). RisingWave bounds its shared buffer the
//! same way.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lagging::{LaggingBytes, SharedBytes};

/// What one buffered entry costs beyond its key and value bytes: the map
/// node's share, the two allocations' headers, the entry's bookkeeping.
pub const ENTRY_OVERHEAD: usize = 96;

/// Bytes of uncommitted writes, against a limit.
#[derive(Debug)]
pub struct EpochBuffer {
    held: AtomicUsize,
    limit: usize,
}

impl EpochBuffer {
    /// A budget of `limit` bytes (0: unbounded).
    pub fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
        }
    }

    /// Counts `bytes` more as held.
    pub fn charge(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` fewer as held.
    pub fn release(&self, bytes: usize) {
        // Saturating: a release never exceeds what its holder charged, but
        // a wrapped counter would stall every source for good.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The configured limit in bytes (0: unbounded).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the held bytes reached the limit.
    pub fn is_full(&self) -> bool {
        self.limit > 0 && self.held() >= self.limit
    }
}

/// What a holder charged, released when it is dropped or cleared: keeps a
/// holder's share of the budget right whatever path ends it. The shared
/// counter follows the holder's bytes within a slack (64 KiB unless set),
/// so a state write costs no update of a counter every thread shares.
#[derive(Debug)]
pub struct BufferCharge {
    buffer: std::sync::Arc<EpochBuffer>,
    bytes: LaggingBytes,
    slack: usize,
}

impl BufferCharge {
    /// A charge of nothing yet against `buffer`.
    pub fn new(buffer: std::sync::Arc<EpochBuffer>) -> Self {
        Self::with_slack(buffer, 64 << 10)
    }

    /// A charge whose shared counter may lag its bytes by `slack`.
    pub fn with_slack(buffer: std::sync::Arc<EpochBuffer>, slack: usize) -> Self {
        Self {
            buffer,
            bytes: LaggingBytes::default(),
            slack,
        }
    }

    /// Charges `bytes` more.
    pub fn add(&mut self, bytes: usize) {
        self.bytes.bytes += bytes;
        self.bytes.settle_beyond(&*self.buffer, self.slack);
    }

    /// Releases up to `bytes` (never more than charged).
    pub fn sub(&mut self, bytes: usize) {
        self.bytes.bytes -= bytes.min(self.bytes.bytes);
        self.bytes.settle_beyond(&*self.buffer, self.slack);
    }

    /// Releases everything.
    pub fn clear(&mut self) {
        self.bytes.bytes = 0;
        self.bytes.settle_beyond(&*self.buffer, 0);
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes.bytes
    }
}

impl SharedBytes for EpochBuffer {
    fn charge(&self, bytes: usize) {
        EpochBuffer::charge(self, bytes);
    }

    fn release(&self, bytes: usize) {
        EpochBuffer::release(self, bytes);
    }
}

impl Drop for BufferCharge {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn charges_count_until_released_or_dropped() {
        let buffer = Arc::new(EpochBuffer::new(100));
        let mut a = BufferCharge::with_slack(Arc::clone(&buffer), 0);
        let mut b = BufferCharge::with_slack(Arc::clone(&buffer), 0);
        a.add(60);
        assert!(!buffer.is_full());
        b.add(40);
        assert!(buffer.is_full());
        a.sub(30);
        assert_eq!(buffer.held(), 70);
        assert!(!buffer.is_full());
        drop(b);
        assert_eq!(buffer.held(), 30);
        a.sub(1000);
        assert_eq!(buffer.held(), 0);
    }

    #[test]
    fn a_charge_settles_beyond_its_slack_and_when_cleared() {
        let buffer = Arc::new(EpochBuffer::new(1000));
        let mut a = BufferCharge::with_slack(Arc::clone(&buffer), 100);
        a.add(80);
        assert_eq!(buffer.held(), 0);
        a.add(80);
        assert_eq!(buffer.held(), 160);
        a.sub(150);
        assert_eq!((a.bytes(), buffer.held()), (10, 10));
        a.add(50);
        drop(a);
        assert_eq!(buffer.held(), 0);
    }

    #[test]
    fn zero_limit_is_never_full() {
        let buffer = EpochBuffer::new(0);
        buffer.charge(usize::MAX / 2);
        assert!(!buffer.is_full());
        buffer.release(usize::MAX);
        assert_eq!(buffer.held(), 0);
    }
}
