//! The batch half of `SESSION` windows: two window functions,
//! `session_window_start(ts, gap_nanos)` and `session_window_end(ts,
//! gap_nanos)`, evaluated `OVER (PARTITION BY keys ORDER BY ts)`. Within a
//! partition, rows sorted by time form one session while each is at most
//! `gap` after the one before (Flink's rule: a row's window `[ts, ts +
//! gap]` merges with every session it touches); a session spans from its
//! first row's time to its last row's time plus the gap.
//!
//! The streaming half is `runnel_engine`'s session aggregation, which the
//! stream planner builds when an aggregation groups these columns; both
//! follow the same rule, so a view equals its batch query.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use runnel_engine::operators::nanos_per_unit;

/// Name of the window function giving a row's session start.
pub const SESSION_START: &str = "session_window_start";
/// Name of the window function giving a row's session end.
pub const SESSION_END: &str = "session_window_end";

/// `session_window_start` or `session_window_end`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SessionBound {
    end: bool,
    signature: Signature,
}

impl SessionBound {
    fn new(end: bool) -> Self {
        Self {
            end,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// Both session window functions, to register in a `SessionContext`.
pub fn session_window_functions() -> Vec<Arc<WindowUDF>> {
    [false, true]
        .into_iter()
        .map(|end| Arc::new(WindowUDF::from(SessionBound::new(end))))
        .collect()
}

impl WindowUDFImpl for SessionBound {
    fn name(&self) -> &str {
        if self.end { SESSION_END } else { SESSION_START }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(SessionEvaluator { end: self.end }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let Some(time) = args.get_input_field(0) else {
            return plan_err!("{} takes (time column, gap in nanoseconds)", self.name());
        };
        if !matches!(time.data_type(), DataType::Timestamp(..)) {
            return plan_err!(
                "{}: the time column must be a timestamp, not {}",
                self.name(),
                time.data_type()
            );
        }
        Ok(Arc::new(Field::new(
            args.name(),
            time.data_type().clone(),
            true,
        )))
    }
}

#[derive(Debug)]
struct SessionEvaluator {
    end: bool,
}

impl PartitionEvaluator for SessionEvaluator {
    /// `values` are the time column and the gap, the rows sorted by time.
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let [time, gap] = values else {
            return exec_err!("session window functions take (time column, gap in nanoseconds)");
        };
        let DataType::Timestamp(unit, _) = time.data_type() else {
            return exec_err!("the session time column must be a timestamp");
        };
        let gap = cast(gap, &DataType::Int64)?;
        let gap = gap.as_primitive::<Int64Type>();
        if gap.is_empty() || gap.is_null(0) || gap.value(0) <= 0 {
            return exec_err!("the session gap must be a positive number of nanoseconds");
        }
        let gap = gap.value(0) / nanos_per_unit(unit);
        let times = cast(time, &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let bounds = session_bounds(times, gap, self.end);
        debug_assert_eq!(bounds.len(), num_rows);
        Ok(cast(&(Arc::new(bounds) as ArrayRef), time.data_type())?)
    }
}

/// Each row's session start (or end), for times sorted ascending; null
/// times belong to no session.
fn session_bounds(times: &Int64Array, gap: i64, end: bool) -> Int64Array {
    let mut out: Vec<Option<i64>> = vec![None; times.len()];
    let mut session: Vec<usize> = vec![];
    let mut flush = |session: &mut Vec<usize>| {
        if let (Some(&first), Some(&last)) = (session.first(), session.last()) {
            let value = if end {
                times.value(last).saturating_add(gap)
            } else {
                times.value(first)
            };
            for &row in session.iter() {
                out[row] = Some(value);
            }
        }
        session.clear();
    };
    for row in 0..times.len() {
        if times.is_null(row) {
            continue;
        }
        if let Some(&last) = session.last()
            && times.value(row).saturating_sub(times.value(last)) > gap
        {
            flush(&mut session);
        }
        session.push(row);
    }
    flush(&mut session);
    Int64Array::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_within_the_gap_share_a_session() {
        let times = Int64Array::from(vec![Some(0), Some(3), None, Some(5), Some(9), Some(20)]);
        let starts = session_bounds(&times, 4, false);
        let ends = session_bounds(&times, 4, true);
        // 0, 3, 5 and 9 chain (each at most 4 after the last); 20 is alone.
        assert_eq!(
            starts.iter().collect::<Vec<_>>(),
            vec![Some(0), Some(0), None, Some(0), Some(0), Some(20)]
        );
        assert_eq!(
            ends.iter().collect::<Vec<_>>(),
            vec![Some(13), Some(13), None, Some(13), Some(13), Some(24)]
        );
        // Exactly the gap apart still merges (windows [ts, ts + gap] touch).
        let touching = session_bounds(&Int64Array::from(vec![0, 4, 9]), 4, false);
        assert_eq!(touching.values().to_vec(), vec![0, 0, 9]);
    }
}
