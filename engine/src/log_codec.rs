//! The durable form of a table's change-log entry: one DML statement's
//! changes as ops, row keys and encoded row values, turned back into a
//! [`StreamChunk`] of the table's columns plus its row key.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use runnel_storage::row_codec::RowDecoder;

use crate::{EngineError, EngineResult, Op, StreamChunk};

/// The changes of one statement to one table.
#[derive(Debug, Default, Clone)]
pub struct RowChanges {
    pub ops: Vec<Op>,
    pub keys: Vec<Vec<u8>>,
    /// Row values in the row codec's encoding (for a delete: the old row).
    pub values: Vec<Vec<u8>>,
}

impl RowChanges {
    /// Records one change.
    pub fn push(&mut self, op: Op, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(op);
        self.keys.push(key);
        self.values.push(value);
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The durable encoding: per change, the op code, then key and value
    /// each with a u32 length.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for ((op, key), value) in self.ops.iter().zip(&self.keys).zip(&self.values) {
            out.push(*op as i8 as u8);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// Reads what [`RowChanges::encode`] wrote.
    pub fn decode(mut bytes: &[u8]) -> EngineResult<Self> {
        let mut changes = Self::default();
        let corrupt = || EngineError::Internal("corrupt change-log entry".into());
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if bytes.len() < n {
                return None;
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Some(head)
        }
        while !bytes.is_empty() {
            let op = Op::from_code(take(&mut bytes, 1).ok_or_else(corrupt)?[0] as i8)?;
            let mut parts = [vec![], vec![]];
            for part in &mut parts {
                let len = take(&mut bytes, 4).ok_or_else(corrupt)?;
                let len = u32::from_le_bytes(len.try_into().map_err(|_| corrupt())?) as usize;
                *part = take(&mut bytes, len).ok_or_else(corrupt)?.to_vec();
            }
            let [key, value] = parts;
            changes.push(op, key, value);
        }
        Ok(changes)
    }

    /// The changes as a chunk of `schema`: the table's columns, then a
    /// binary row-key column.
    pub fn to_chunk(&self, schema: &SchemaRef) -> EngineResult<StreamChunk> {
        let columns = schema.fields().len() - 1;
        let table_schema = Arc::new(schema.project(&(0..columns).collect::<Vec<_>>())?);
        let mut decoder = RowDecoder::new(&table_schema, None)?;
        for value in &self.values {
            decoder.push(value)?;
        }
        let decoded = decoder.finish()?;
        let mut arrays: Vec<ArrayRef> = decoded.columns().to_vec();
        arrays.push(Arc::new(BinaryArray::from_iter_values(
            self.keys.iter().map(Vec::as_slice),
        )));
        let batch = RecordBatch::try_new(Arc::clone(schema), arrays)?;
        StreamChunk::new(batch, &self.ops)
    }
}
