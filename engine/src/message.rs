//! What travels on an edge of a stream graph besides data: watermarks and
//! barriers, in band with the chunks (see DESIGN.md, "Messages").

use datafusion::scalar::ScalarValue;

use crate::StreamChunk;

/// A checkpoint epoch. Epochs rise by one per barrier injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Self {
        Epoch(self.0 + 1)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a barrier was injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierKind {
    /// Operators persist their state for the epoch; a checkpoint completes
    /// when every sink has seen it.
    Checkpoint,
    /// Operators make their results for the epoch visible without a
    /// checkpoint (e.g. `FLUSH`).
    Flush,
    /// The job stops after this barrier.
    Stop,
}

/// The boundary between two epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The epoch the rows before this barrier belong to.
    pub epoch: Epoch,
    pub kind: BarrierKind,
}

/// No row with a smaller value in `column` will follow on this edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    /// Index of the event-time column in the edge's schema.
    pub column: usize,
    pub value: ScalarValue,
}

/// One item on an edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Chunk(StreamChunk),
    Watermark(Watermark),
    Barrier(Barrier),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_rise() {
        assert_eq!(Epoch(7).next(), Epoch(8));
        assert!(Epoch(7) < Epoch(8));
        assert_eq!(Epoch(3).to_string(), "3");
    }
}
