//! What travels on an edge of a stream graph besides data: watermarks and
//! barriers, in band with the chunks (see DESIGN.md, "Messages").

use datafusion::arrow::datatypes::{DataType, TimeUnit};
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

impl Watermark {
    /// The largest value of `data_type`: the watermark a source sends when it
    /// has no more rows (every window then closes), and what a derived
    /// watermark saturates to. None for types that bound no event time.
    pub fn end_of_input(data_type: &DataType) -> Option<ScalarValue> {
        Some(match data_type {
            DataType::Timestamp(unit, tz) => {
                let v = Some(i64::MAX);
                match unit {
                    TimeUnit::Second => ScalarValue::TimestampSecond(v, tz.clone()),
                    TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(v, tz.clone()),
                    TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(v, tz.clone()),
                    TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(v, tz.clone()),
                }
            }
            DataType::Date32 => ScalarValue::Date32(Some(i32::MAX)),
            DataType::Date64 => ScalarValue::Date64(Some(i64::MAX)),
            DataType::Int64 => ScalarValue::Int64(Some(i64::MAX)),
            DataType::Int32 => ScalarValue::Int32(Some(i32::MAX)),
            _ => return None,
        })
    }

    /// True when this is an [`end_of_input`](Self::end_of_input) watermark.
    pub fn is_end_of_input(&self) -> bool {
        Self::end_of_input(&self.value.data_type()).is_some_and(|end| end == self.value)
    }
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

    #[test]
    fn end_of_input_is_the_largest_timestamp() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let end = Watermark {
            column: 0,
            value: Watermark::end_of_input(&ts).unwrap(),
        };
        assert!(end.is_end_of_input());
        let early = Watermark {
            column: 0,
            value: ScalarValue::TimestampMicrosecond(Some(5), None),
        };
        assert!(!early.is_end_of_input());
        assert!(early.value < end.value);
        assert_eq!(Watermark::end_of_input(&DataType::Utf8), None);
    }
}
