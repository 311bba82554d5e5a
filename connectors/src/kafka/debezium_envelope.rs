//! The Debezium change events a `FORMAT DEBEZIUM` Kafka sink writes: one
//! event per change, `{"before": row | null, "after": row | null, "op":
//! "c" | "u" | "d", "ts_ms": …}`, built as an Arrow batch of its own so
//! that either encoding (JSON objects, Avro records with `before` and
//! `after` as nullable records) writes it as it writes plain rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use runnel_engine::Op;
use runnel_engine::runtime::SinkWriteError;

/// One change event: the changed rows (indices into the epoch's rows)
/// before and after, and Debezium's operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub before: Option<u32>,
    pub after: Option<u32>,
    pub op: &'static str,
}

impl Event {
    /// The row whose key the event's message carries.
    pub(crate) fn key_row(&self) -> u32 {
        self.before.or(self.after).unwrap_or(0)
    }
}

/// The events of rows with `ops`: an insert is "c", a delete "d", and an
/// update's old version followed by its new one a single "u".
pub(crate) fn events(ops: &[Op]) -> Vec<Event> {
    let mut events = Vec::with_capacity(ops.len());
    let mut row = 0;
    while row < ops.len() {
        let at = Some(row as u32);
        let event = match ops[row] {
            Op::Insert | Op::UpdateInsert => Event {
                before: None,
                after: at,
                op: "c",
            },
            Op::UpdateDelete if ops.get(row + 1) == Some(&Op::UpdateInsert) => {
                row += 1;
                Event {
                    before: at,
                    after: Some(row as u32),
                    op: "u",
                }
            }
            Op::Delete | Op::UpdateDelete => Event {
                before: at,
                after: None,
                op: "d",
            },
        };
        events.push(event);
        row += 1;
    }
    events
}

/// The envelopes of `events` over `rows`, stamped `ts_ms`: a batch with
/// columns `before` and `after` (nullable structs of the row's columns),
/// `op` and `ts_ms`.
pub(crate) fn envelopes(
    rows: &RecordBatch,
    events: &[Event],
    ts_ms: i64,
) -> Result<RecordBatch, SinkWriteError> {
    let failed = |e: &dyn std::fmt::Display| {
        SinkWriteError::Failed(format!("building Debezium events: {e}"))
    };
    let row_type = DataType::Struct(rows.schema().fields().clone());
    let side = |pick: fn(&Event) -> Option<u32>| -> Result<ArrayRef, SinkWriteError> {
        let indices: UInt32Array = events.iter().map(pick).collect();
        let columns = rows
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?;
        let present = indices.nulls().cloned();
        let side = StructArray::try_new(rows.schema().fields().clone(), columns, present)
            .map_err(|e| failed(&e))?;
        Ok(Arc::new(side))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("before", row_type.clone(), true),
        Field::new("after", row_type, true),
        Field::new("op", DataType::Utf8, false),
        Field::new("ts_ms", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            side(|e| e.before)?,
            side(|e| e.after)?,
            Arc::new(StringArray::from_iter_values(events.iter().map(|e| e.op))),
            Arc::new(Int64Array::from_value(ts_ms, events.len())),
        ],
    )
    .map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;

    #[test]
    fn updates_pair_up_and_lone_halves_stand_alone() {
        let ops = [
            Op::Insert,
            Op::UpdateDelete,
            Op::UpdateInsert,
            Op::Delete,
            Op::UpdateDelete,
            Op::UpdateInsert,
            Op::UpdateDelete,
        ];
        let codes: Vec<(Option<u32>, Option<u32>, &str)> = events(&ops)
            .iter()
            .map(|e| (e.before, e.after, e.op))
            .collect();
        assert_eq!(
            codes,
            vec![
                (None, Some(0), "c"),
                (Some(1), Some(2), "u"),
                (Some(3), None, "d"),
                (Some(4), Some(5), "u"),
                (Some(6), None, "d"),
            ]
        );
    }

    #[test]
    fn envelopes_hold_the_rows_before_and_after() {
        let rows = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![10, 11, 12]))],
        )
        .unwrap();
        let events = events(&[Op::Insert, Op::UpdateDelete, Op::UpdateInsert]);
        let batch = envelopes(&rows, &events, 7).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let before = batch.column(0).as_struct();
        let after = batch.column(1).as_struct();
        assert!(before.is_null(0) && !before.is_null(1));
        let n = |side: &StructArray, i: usize| {
            side.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(i)
        };
        assert_eq!((n(after, 0), n(before, 1), n(after, 1)), (10, 11, 12));
        assert_eq!(batch.column(2).as_string::<i32>().value(1), "u");
    }
}
