//! A chunk's rows by group, for the aggregation to touch each group once
//! per chunk and each aggregate's arguments once: per group its key and
//! the ranges its inserted and deleted rows take in two permutations of the
//! chunk's rows, so an argument column is taken once per chunk (in group
//! order) and cut per group with zero-copy slices.

use datafusion::common::HashMap;
use std::ops::Range;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use runnel_storage::key_codec::encode_nullable_key;

use crate::{EngineResult, StreamChunk};

/// The rows of one chunk by group.
pub(super) struct ChunkGroups {
    /// Group keys in order of first appearance.
    pub keys: Vec<Vec<u8>>,
    /// Inserted rows, group after group (in chunk order within a group).
    pub inserts: Vec<u32>,
    /// Deleted rows, likewise.
    pub deletes: Vec<u32>,
    insert_ranges: Vec<Range<usize>>,
    delete_ranges: Vec<Range<usize>>,
}

impl ChunkGroups {
    /// Groups `chunk`'s rows by the encoded key of `group_columns`.
    pub fn new(chunk: &StreamChunk, group_columns: &[ArrayRef]) -> EngineResult<Self> {
        let refs: Vec<&ArrayRef> = group_columns.iter().collect();
        let rows = chunk.num_rows();
        let mut keys: Vec<Vec<u8>> = vec![];
        let mut index: HashMap<Vec<u8>, u32> = HashMap::default();
        let mut group_of = Vec::with_capacity(rows);
        let mut inserted = Vec::with_capacity(rows);
        let mut key = vec![];
        for row in 0..rows {
            key.clear();
            encode_nullable_key(&refs, row, &mut key)?;
            let group = match index.get(key.as_slice()) {
                Some(&group) => group,
                None => {
                    let group = keys.len() as u32;
                    index.insert(key.clone(), group);
                    keys.push(key.clone());
                    group
                }
            };
            group_of.push(group);
            inserted.push(chunk.op(row)?.sign() > 0);
        }
        let (inserts, insert_ranges) = permutation(&group_of, keys.len(), |row| inserted[row]);
        let (deletes, delete_ranges) = permutation(&group_of, keys.len(), |row| !inserted[row]);
        Ok(Self {
            keys,
            inserts,
            deletes,
            insert_ranges,
            delete_ranges,
        })
    }

    /// Group `group`'s inserted rows, and where they stand in `inserts`.
    pub fn inserted(&self, group: usize) -> (&[u32], Range<usize>) {
        let range = self.insert_ranges[group].clone();
        (&self.inserts[range.clone()], range)
    }

    /// Group `group`'s deleted rows, and where they stand in `deletes`.
    pub fn deleted(&self, group: usize) -> (&[u32], Range<usize>) {
        let range = self.delete_ranges[group].clone();
        (&self.deletes[range.clone()], range)
    }
}

/// The rows `keep` accepts, ordered by group (stably), and each group's
/// range in that order: a counting sort.
fn permutation(
    group_of: &[u32],
    groups: usize,
    keep: impl Fn(usize) -> bool,
) -> (Vec<u32>, Vec<Range<usize>>) {
    let mut counts = vec![0usize; groups];
    for (row, &group) in group_of.iter().enumerate() {
        if keep(row) {
            counts[group as usize] += 1;
        }
    }
    let mut ranges = Vec::with_capacity(groups);
    let mut start = 0;
    for count in &counts {
        ranges.push(start..start + count);
        start += count;
    }
    let mut next: Vec<usize> = ranges.iter().map(|r| r.start).collect();
    let mut order = vec![0u32; start];
    for (row, &group) in group_of.iter().enumerate() {
        if keep(row) {
            order[next[group as usize]] = row as u32;
            next[group as usize] += 1;
        }
    }
    (order, ranges)
}

/// `columns` taken in the order of `rows` (None when there are none).
pub(super) fn take_in_order(
    columns: &[ArrayRef],
    rows: &[u32],
) -> EngineResult<Option<Vec<ArrayRef>>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let indices = UInt32Array::from(rows.to_vec());
    Ok(Some(
        columns
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

/// Zero-copy slices of taken `columns` for one group's `range`.
pub(super) fn slices(columns: &[ArrayRef], range: &Range<usize>) -> Vec<ArrayRef> {
    columns
        .iter()
        .map(|c| c.slice(range.start, range.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::operators::harness::chunk;

    #[test]
    fn rows_are_grouped_by_key_and_sign_in_chunk_order() {
        let chunk = chunk(&[
            (Op::Insert, "a", 1),
            (Op::Insert, "b", 2),
            (Op::Delete, "a", 3),
            (Op::Insert, "a", 4),
            (Op::UpdateDelete, "b", 5),
            (Op::UpdateInsert, "c", 6),
        ]);
        let keys = [std::sync::Arc::clone(chunk.data().column(0))];
        let groups = ChunkGroups::new(&chunk, &keys).unwrap();
        assert_eq!(groups.keys.len(), 3);
        assert_eq!(groups.inserted(0).0, &[0, 3]);
        assert_eq!(groups.deleted(0).0, &[2]);
        assert_eq!(groups.inserted(1).0, &[1]);
        assert_eq!(groups.deleted(1).0, &[4]);
        assert_eq!(groups.inserted(2).0, &[5]);
        assert!(groups.deleted(2).0.is_empty());
        assert_eq!(groups.inserted(2).1, 3..4);
    }
}
