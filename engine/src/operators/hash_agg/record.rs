//! A group's record in the state table: its row count, its encoded group
//! values, its last emitted row and the state of each incremental
//! aggregate.
//!
//! Layout: `rows` as a little-endian `i64`; the values as a `u32` length
//! and bytes; the last emitted row likewise (length `u32::MAX`: none); then
//! per incremental aggregate, in order, a `u32` length and its state.

use super::HashAggOperator;
use super::slots::Slot;
use crate::{EngineError, EngineResult};

const NONE: u32 = u32::MAX;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> EngineResult<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l != NONE)
        .ok_or_else(|| EngineError::Internal("an aggregation's group is over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn cut_short() -> EngineError {
    EngineError::Internal("an aggregation's group record is cut short".into())
}

/// The next length-prefixed part of `bytes` (`None` for an absent one).
fn take_bytes<'a>(bytes: &mut &'a [u8]) -> EngineResult<Option<&'a [u8]>> {
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(cut_short)?;
    let len = u32::from_le_bytes(*len);
    if len == NONE {
        *bytes = rest;
        return Ok(None);
    }
    let len = len as usize;
    if rest.len() < len {
        return Err(cut_short());
    }
    let (part, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(Some(part))
}

/// A record's row count, group values and last emitted row, and the rest
/// (the aggregate states).
struct Header<'a> {
    rows: i64,
    values: &'a [u8],
    previous: Option<&'a [u8]>,
    states: &'a [u8],
}

fn header(bytes: &[u8]) -> EngineResult<Header<'_>> {
    let (rows, mut rest) = bytes.split_first_chunk::<8>().ok_or_else(cut_short)?;
    let values = take_bytes(&mut rest)?.ok_or_else(cut_short)?;
    let previous = take_bytes(&mut rest)?;
    Ok(Header {
        rows: i64::from_le_bytes(*rows),
        values,
        previous,
        states: rest,
    })
}

/// The encoded group values of a stored record.
pub(super) fn record_values(bytes: &[u8]) -> EngineResult<&[u8]> {
    Ok(header(bytes)?.values)
}

impl HashAggOperator {
    /// Appends the record of the group in `slot` to `out`.
    pub(super) fn encode_record(&mut self, slot: u32, out: &mut Vec<u8>) -> EngineResult<()> {
        let entry = self.slots.get(slot);
        out.extend_from_slice(&entry.rows.to_le_bytes());
        put_bytes(out, &entry.values)?;
        match &entry.previous {
            Some(previous) => put_bytes(out, previous)?,
            None => out.extend_from_slice(&NONE.to_le_bytes()),
        }
        for column in self.columns.iter_mut().flatten() {
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            column.encode(slot, out)?;
            let len = u32::try_from(out.len() - at - 4)
                .map_err(|_| EngineError::Internal("an aggregate's state is over 4 GiB".into()))?;
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        Ok(())
    }

    /// Puts the group stored at `key` (in key group `group`) as `bytes`
    /// into a slot.
    pub(super) fn decode_record(
        &mut self,
        key: &[u8],
        group: u16,
        bytes: &[u8],
    ) -> EngineResult<u32> {
        let header = header(bytes)?;
        let slot = self.slots.add(Slot {
            key: key.into(),
            group,
            rows: header.rows,
            values: header.values.into(),
            previous: header.previous.map(Into::into),
            stored: true,
            ..Slot::default()
        });
        self.grow_columns();
        let mut states = header.states;
        for column in self.columns.iter_mut().flatten() {
            let state = take_bytes(&mut states)?.ok_or_else(cut_short)?;
            column.decode(slot, state)?;
        }
        Ok(slot)
    }
}
