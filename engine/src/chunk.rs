//! Changelog chunks: the data that flows between streaming operators.
//!
//! A [`StreamChunk`] is an Arrow `RecordBatch` plus, optionally, one [`Op`]
//! per row. A chunk without ops is append-only (every row an insert) and
//! takes the fast path; operators that retract results emit ops. Updates are
//! written as an adjacent `UpdateDelete`/`UpdateInsert` pair, so a consumer
//! that only counts can treat them as a delete and an insert.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int8Array, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::filter::filter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{EngineError, EngineResult};

/// The change one row of a chunk makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum Op {
    Insert = 1,
    Delete = 2,
    /// The old value of an updated row; the next row is its new value.
    UpdateDelete = 3,
    /// The new value of an updated row; the previous row is its old value.
    UpdateInsert = 4,
}

impl Op {
    /// The op a stored code stands for.
    pub fn from_code(code: i8) -> EngineResult<Self> {
        Ok(match code {
            1 => Op::Insert,
            2 => Op::Delete,
            3 => Op::UpdateDelete,
            4 => Op::UpdateInsert,
            other => {
                return Err(EngineError::InvalidChunk(format!(
                    "unknown op code {other}"
                )));
            }
        })
    }

    /// +1 for rows that add to a result, -1 for rows that take away.
    pub fn sign(self) -> i64 {
        match self {
            Op::Insert | Op::UpdateInsert => 1,
            Op::Delete | Op::UpdateDelete => -1,
        }
    }

    /// The opposite change (what undoes this one).
    pub fn inverse(self) -> Self {
        match self {
            Op::Insert => Op::Delete,
            Op::Delete => Op::Insert,
            Op::UpdateDelete => Op::UpdateInsert,
            Op::UpdateInsert => Op::UpdateDelete,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Insert => "+",
            Op::Delete => "-",
            Op::UpdateDelete => "U-",
            Op::UpdateInsert => "U+",
        }
    }
}

/// Rows of a stream with the change each makes.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamChunk {
    data: RecordBatch,
    /// One op code per row; None means every row is an insert.
    ops: Option<Arc<Int8Array>>,
}

impl StreamChunk {
    /// A chunk of inserts only.
    pub fn inserts(data: RecordBatch) -> Self {
        Self { data, ops: None }
    }

    /// A chunk with an op per row.
    pub fn new(data: RecordBatch, ops: &[Op]) -> EngineResult<Self> {
        if ops.len() != data.num_rows() {
            return Err(EngineError::InvalidChunk(format!(
                "{} ops for {} rows",
                ops.len(),
                data.num_rows()
            )));
        }
        let codes = Int8Array::from_iter_values(ops.iter().map(|op| *op as i8));
        Ok(Self {
            data,
            ops: Some(Arc::new(codes)),
        })
    }

    /// The rows.
    pub fn data(&self) -> &RecordBatch {
        &self.data
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// True when every row is an insert.
    pub fn is_append_only(&self) -> bool {
        match &self.ops {
            None => true,
            Some(codes) => codes.values().iter().all(|c| *c == Op::Insert as i8),
        }
    }

    /// The op of row `row`.
    pub fn op(&self, row: usize) -> EngineResult<Op> {
        match &self.ops {
            None => Ok(Op::Insert),
            Some(codes) => Op::from_code(codes.value(row)),
        }
    }

    /// Every row's op, in order.
    pub fn ops(&self) -> EngineResult<Vec<Op>> {
        (0..self.num_rows()).map(|row| self.op(row)).collect()
    }

    /// The same rows with the opposite changes.
    pub fn inverse(&self) -> EngineResult<Self> {
        let ops: Vec<Op> = self.ops()?.into_iter().map(Op::inverse).collect();
        Self::new(self.data.clone(), &ops)
    }

    /// The same ops over other columns with as many rows (a projection).
    pub fn with_data(&self, data: RecordBatch) -> EngineResult<Self> {
        if data.num_rows() != self.num_rows() {
            return Err(EngineError::InvalidChunk(format!(
                "{} rows replace {}",
                data.num_rows(),
                self.num_rows()
            )));
        }
        Ok(Self {
            data,
            ops: self.ops.clone(),
        })
    }

    /// Only the columns at `indices`, ops kept.
    pub fn project(&self, indices: &[usize]) -> EngineResult<Self> {
        Ok(Self {
            data: self.data.project(indices)?,
            ops: self.ops.clone(),
        })
    }

    /// Only the rows where `mask` is true, ops kept.
    pub fn filter(&self, mask: &BooleanArray) -> EngineResult<Self> {
        let data = filter_record_batch(&self.data, mask)?;
        let ops = match &self.ops {
            None => None,
            Some(codes) => {
                let kept = filter(codes.as_ref(), mask)?;
                let kept = kept
                    .as_any()
                    .downcast_ref::<Int8Array>()
                    .cloned()
                    .ok_or_else(|| EngineError::InvalidChunk("op column is not int8".into()))?;
                Some(Arc::new(kept))
            }
        };
        Ok(Self { data, ops })
    }

    /// A table, one row per line, the op first (`+`, `-`, `U-`, `U+`), for
    /// tests and debugging.
    pub fn to_pretty_string(&self) -> EngineResult<String> {
        let options = FormatOptions::default().with_null("NULL");
        let formatters = self
            .data
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = String::new();
        for row in 0..self.num_rows() {
            let _ = write!(out, "{}", self.op(row)?.symbol());
            for formatter in &formatters {
                let _ = write!(out, " {}", formatter.value(row));
            }
            out.push('\n');
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    Some("b"),
                    None,
                    Some("c"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn ops_and_their_inverse() {
        let chunk = StreamChunk::new(
            rows(),
            &[Op::Insert, Op::Delete, Op::UpdateDelete, Op::UpdateInsert],
        )
        .unwrap();
        assert!(!chunk.is_append_only());
        assert_eq!(
            chunk.to_pretty_string().unwrap(),
            "+ a 1\n- b 2\nU- NULL 3\nU+ c 4\n"
        );
        assert_eq!(
            chunk.inverse().unwrap().to_pretty_string().unwrap(),
            "- a 1\n+ b 2\nU+ NULL 3\nU- c 4\n"
        );
        assert_eq!(
            chunk.ops().unwrap().iter().map(|o| o.sign()).sum::<i64>(),
            0
        );
    }

    #[test]
    fn inserts_take_the_fast_path() {
        let chunk = StreamChunk::inserts(rows());
        assert!(chunk.is_append_only());
        assert_eq!(chunk.op(3).unwrap(), Op::Insert);
        assert!(
            StreamChunk::new(rows(), &[Op::Insert; 4])
                .unwrap()
                .is_append_only()
        );
    }

    #[test]
    fn filter_and_project_keep_ops_aligned() {
        let chunk =
            StreamChunk::new(rows(), &[Op::Insert, Op::Delete, Op::Insert, Op::Delete]).unwrap();
        let mask = BooleanArray::from(vec![false, true, false, true]);
        let kept = chunk.filter(&mask).unwrap().project(&[1]).unwrap();
        assert_eq!(kept.to_pretty_string().unwrap(), "- 2\n- 4\n");
    }

    #[test]
    fn mismatched_ops_are_refused() {
        assert!(StreamChunk::new(rows(), &[Op::Insert]).is_err());
        assert!(Op::from_code(9).is_err());
    }
}
