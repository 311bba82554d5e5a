//! A holder's share of a counter every thread updates (the epoch buffer,
//! the state cache budget), kept locally and settled with the shared
//! counter only once it is off by more than a slack, so that most writes
//! touch no memory another core is writing.

/// A counter of bytes shared by the process.
pub(crate) trait SharedBytes {
    fn charge(&self, bytes: usize);
    fn release(&self, bytes: usize);
}

/// Bytes a holder has, and what the shared counter holds for it.
#[derive(Debug, Default)]
pub(crate) struct LaggingBytes {
    /// The holder's own count, always exact.
    pub(crate) bytes: usize,
    settled: usize,
}

impl LaggingBytes {
    /// Brings `shared` to the holder's bytes if the two differ by more
    /// than `slack`.
    pub(crate) fn settle_beyond(&mut self, shared: &impl SharedBytes, slack: usize) {
        if self.bytes > self.settled + slack {
            shared.charge(self.bytes - self.settled);
            self.settled = self.bytes;
        } else if self.settled > self.bytes + slack {
            shared.release(self.settled - self.bytes);
            self.settled = self.bytes;
        }
    }
}
