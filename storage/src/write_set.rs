//! [`WriteSet`]: the changes one atomic [`Store::write`](crate::Store::write)
//! applies — an epoch's state, the rows of a view or a DML statement and
//! their change-log entries, catalog records.
//!
//! An epoch can hold millions of changes, so they are kept encoded back to
//! back in blocks of up to a MiB rather than as a pair of small allocations
//! each: far less memory per change, and nothing for the allocator to
//! fragment when the epoch is committed and dropped. Sets from several
//! subtasks join by moving their blocks, and the RocksDB batch is built
//! block by block, each freed once copied, so a commit holds the epoch's
//! changes about once (set or batch) rather than twice.

use rocksdb::WriteBatch;

use crate::store::{META_PREFIX, change_prefix, state_prefix, table_prefix};

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_RANGE: u8 = 2;

/// A set of changes applied atomically by [`Store::write`](crate::Store::write).
///
/// Each change is a tag byte followed by its key and, for a put or a range
/// delete, a second byte string (value or range end); each byte string is
/// its length (u64, little endian) and its bytes. A change lies within one
/// block.
#[derive(Default, Clone)]
pub struct WriteSet {
    blocks: Vec<Vec<u8>>,
    count: usize,
}

/// The size a block is filled to before the next begins (a larger change
/// gets a block of its own size).
const BLOCK_BYTES: usize = 1 << 20;

/// Encoded size of a byte string made of `parts`.
fn string_len(parts: &[&[u8]]) -> usize {
    8 + parts.iter().map(|p| p.len()).sum::<usize>()
}

impl std::fmt::Debug for WriteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSet")
            .field("changes", &self.count)
            .field("bytes", &self.byte_len())
            .finish()
    }
}

/// One change, borrowed from a [`WriteSet`].
#[derive(Debug, PartialEq, Eq)]
enum Change<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
    DeleteRange(&'a [u8], &'a [u8]),
}

impl WriteSet {
    /// An empty set of changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of the encoded changes.
    fn byte_len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    /// Starts a change of `len` encoded bytes (tag included) in a block
    /// with room for it, and returns that block.
    fn begin(&mut self, tag: u8, len: usize) -> &mut Vec<u8> {
        let full = self
            .blocks
            .last()
            .is_none_or(|b| !b.is_empty() && b.len() + len > BLOCK_BYTES);
        if full {
            // The first block grows as needed (most sets are small).
            let capacity = if self.blocks.is_empty() {
                0
            } else {
                BLOCK_BYTES.max(len)
            };
            self.blocks.push(Vec::with_capacity(capacity));
        }
        self.count += 1;
        let block = self.blocks.last_mut().expect("a block was just ensured");
        block.push(tag);
        block
    }

    fn put(&mut self, key: &[&[u8]], value: &[u8]) {
        let block = self.begin(PUT, 1 + string_len(key) + string_len(&[value]));
        append_string(block, key);
        append_string(block, &[value]);
    }

    fn delete(&mut self, key: &[&[u8]]) {
        let block = self.begin(DELETE, 1 + string_len(key));
        append_string(block, key);
    }

    fn delete_range(&mut self, from: &[&[u8]], to: &[&[u8]]) {
        let block = self.begin(DELETE_RANGE, 1 + string_len(from) + string_len(to));
        append_string(block, from);
        append_string(block, to);
    }

    /// Writes catalog record `name`.
    pub fn put_meta(&mut self, name: &[u8], value: &[u8]) {
        self.put(&[&[META_PREFIX], name], value);
    }

    /// Deletes catalog record `name`.
    pub fn delete_meta(&mut self, name: &[u8]) {
        self.delete(&[&[META_PREFIX], name]);
    }

    /// Writes row `key` of table `table_id`.
    pub fn put_row(&mut self, table_id: u64, key: &[u8], value: &[u8]) {
        self.put(&[&table_prefix(table_id), key], value);
    }

    /// Deletes row `key` of table `table_id`.
    pub fn delete_row(&mut self, table_id: u64, key: &[u8]) {
        self.delete(&[&table_prefix(table_id), key]);
    }

    /// Deletes every row of table `table_id`.
    pub fn delete_all_rows(&mut self, table_id: u64) {
        self.delete_range(&[&table_prefix(table_id)], &[&table_prefix(table_id + 1)]);
    }

    /// Writes a row of state table `id` (`key` includes the key group).
    pub(crate) fn put_state(&mut self, id: u64, key: &[u8], value: &[u8]) {
        self.put(&[&state_prefix(id), key], value);
    }

    /// Deletes a row of state table `id`.
    pub(crate) fn delete_state(&mut self, id: u64, key: &[u8]) {
        self.delete(&[&state_prefix(id), key]);
    }

    /// Deletes the state rows of the tables `from..to`.
    pub(crate) fn delete_state_tables(&mut self, from: u64, to: u64) {
        self.delete_range(&[&state_prefix(from)], &[&state_prefix(to)]);
    }

    /// Appends entry `seq` to the change log of table `table_id`.
    pub fn put_change(&mut self, table_id: u64, seq: u64, entry: &[u8]) {
        self.put(&[&change_prefix(table_id), &seq.to_be_bytes()], entry);
    }

    /// Deletes the change-log entries of table `table_id` before `seq`.
    pub fn delete_changes_before(&mut self, table_id: u64, seq: u64) {
        let table = change_prefix(table_id);
        self.delete_range(
            &[&table, &0u64.to_be_bytes()],
            &[&table, &seq.to_be_bytes()],
        );
    }

    /// Deletes the whole change log of table `table_id`.
    pub fn delete_all_changes(&mut self, table_id: u64) {
        self.delete_range(&[&change_prefix(table_id)], &[&change_prefix(table_id + 1)]);
    }

    /// Adds every change of `other` after this set's (its blocks move;
    /// nothing is copied).
    pub fn extend(&mut self, other: WriteSet) {
        if self.count == 0 {
            *self = other;
            return;
        }
        self.blocks.extend(other.blocks);
        self.count += other.count;
    }

    #[cfg(test)]
    fn changes(&self) -> impl Iterator<Item = Change<'_>> {
        self.blocks.iter().flat_map(|block| Changes { rest: block })
    }

    /// The changes as one RocksDB batch; each block is freed once it is
    /// copied into the batch.
    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::with_capacity_bytes(self.byte_len() + 12);
        for block in self.blocks {
            for change in (Changes { rest: &block }) {
                match change {
                    Change::Put(key, value) => batch.put(key, value),
                    Change::Delete(key) => batch.delete(key),
                    Change::DeleteRange(from, to) => batch.delete_range(from, to),
                }
            }
        }
        batch
    }

    /// Number of changes in the set.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the set holds no change.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Appends one byte string made of `parts` to `block`.
fn append_string(block: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    block.extend_from_slice(&(len as u64).to_le_bytes());
    for part in parts {
        block.extend_from_slice(part);
    }
}

/// Reads the changes of one block of a [`WriteSet`] in order.
struct Changes<'a> {
    rest: &'a [u8],
}

/// Splits one length-prefixed byte string off `bytes`.
fn take_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

impl<'a> Iterator for Changes<'a> {
    type Item = Change<'a>;

    fn next(&mut self) -> Option<Change<'a>> {
        // The buffer is only ever written by `WriteSet`'s own methods, so it
        // always holds whole changes; a short read simply ends the set.
        let (&tag, rest) = self.rest.split_first()?;
        let (first, rest) = take_string(rest)?;
        if tag == DELETE {
            self.rest = rest;
            return Some(Change::Delete(first));
        }
        let (second, rest) = take_string(rest)?;
        self.rest = rest;
        Some(if tag == PUT {
            Change::Put(first, second)
        } else {
            Change::DeleteRange(first, second)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_in_order_and_extend_appends() {
        let mut first = WriteSet::new();
        first.put_meta(b"epoch", &7u64.to_be_bytes());
        first.delete_row(3, b"k");
        let mut second = WriteSet::new();
        second.put_state(9, b"\x00\x01key", b"");
        second.delete_state_tables(9, 10);
        first.extend(second);
        assert_eq!(first.len(), 4);
        let changes: Vec<Change<'_>> = first.changes().collect();
        let epoch = 7u64.to_be_bytes();
        assert_eq!(
            changes,
            vec![
                Change::Put(b"mepoch", &epoch),
                Change::Delete(b"r\0\0\0\0\0\0\0\x03k"),
                Change::Put(b"s\0\0\0\0\0\0\0\x09\x00\x01key", b""),
                Change::DeleteRange(b"s\0\0\0\0\0\0\0\x09", b"s\0\0\0\0\0\0\0\x0a"),
            ]
        );
        assert_eq!(first.into_batch().len(), 4);
    }

    #[test]
    fn large_sets_fill_blocks_and_keep_every_change() {
        let mut set = WriteSet::new();
        let value = vec![7u8; 1000];
        for i in 0..5000u64 {
            set.put_row(1, &i.to_be_bytes(), &value);
        }
        // A change larger than a block gets one of its own.
        set.put_meta(b"big", &vec![1u8; BLOCK_BYTES + 10]);
        set.delete_row(1, b"last");
        assert!(set.blocks.len() > 4, "{} blocks", set.blocks.len());
        assert!(
            set.blocks
                .iter()
                .all(|b| b.len() <= BLOCK_BYTES || b.len() > BLOCK_BYTES + 10)
        );
        let changes: Vec<Change<'_>> = set.changes().collect();
        assert_eq!(changes.len(), 5002);
        assert_eq!(set.len(), 5002);
        assert!(matches!(changes[4999], Change::Put(_, v) if v == value.as_slice()));
        assert!(matches!(changes[5000], Change::Put(b"mbig", v) if v.len() == BLOCK_BYTES + 10));
        assert_eq!(changes[5001], Change::Delete(b"r\0\0\0\0\0\0\0\x01last"));
        assert_eq!(set.into_batch().len(), 5002);
    }

    #[test]
    fn extending_an_empty_set_takes_the_other() {
        let mut empty = WriteSet::new();
        let mut other = WriteSet::new();
        other.delete_all_changes(5);
        empty.extend(other);
        assert_eq!(empty.len(), 1);
        assert!(matches!(
            empty.changes().next(),
            Some(Change::DeleteRange(_, _))
        ));
    }
}
