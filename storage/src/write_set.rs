//! [`WriteSet`]: the changes one atomic [`Store::write`](crate::Store::write)
//! applies — an epoch's state, the rows of a view or a DML statement and
//! their change-log entries, catalog records.
//!
//! An epoch can hold millions of changes, so they are kept encoded back to
//! back in one buffer rather than as a pair of small allocations each: far
//! less memory per change, and nothing for the allocator to fragment when
//! the epoch is committed and dropped.

use rocksdb::WriteBatch;

use crate::store::{META_PREFIX, change_prefix, state_prefix, table_prefix};

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_RANGE: u8 = 2;

/// A set of changes applied atomically by [`Store::write`](crate::Store::write).
///
/// Each change is a tag byte followed by its key and, for a put or a range
/// delete, a second byte string (value or range end); each byte string is
/// its length (u64, little endian) and its bytes.
#[derive(Default)]
pub struct WriteSet {
    bytes: Vec<u8>,
    count: usize,
}

impl std::fmt::Debug for WriteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteSet")
            .field("changes", &self.count)
            .field("bytes", &self.bytes.len())
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

    fn begin(&mut self, tag: u8) {
        self.bytes.push(tag);
        self.count += 1;
    }

    /// Appends one byte string made of `parts`.
    fn string(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.bytes.extend_from_slice(&(len as u64).to_le_bytes());
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
    }

    fn put(&mut self, key: &[&[u8]], value: &[u8]) {
        self.begin(PUT);
        self.string(key);
        self.string(&[value]);
    }

    fn delete(&mut self, key: &[&[u8]]) {
        self.begin(DELETE);
        self.string(key);
    }

    fn delete_range(&mut self, from: &[&[u8]], to: &[&[u8]]) {
        self.begin(DELETE_RANGE);
        self.string(from);
        self.string(to);
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

    /// Adds every change of `other` after this set's.
    pub fn extend(&mut self, other: WriteSet) {
        if self.count == 0 {
            *self = other;
            return;
        }
        self.bytes.extend_from_slice(&other.bytes);
        self.count += other.count;
    }

    fn changes(&self) -> Changes<'_> {
        Changes { rest: &self.bytes }
    }

    /// The changes as one RocksDB batch.
    pub(crate) fn to_batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::with_capacity_bytes(self.bytes.len() + 12);
        for change in self.changes() {
            match change {
                Change::Put(key, value) => batch.put(key, value),
                Change::Delete(key) => batch.delete(key),
                Change::DeleteRange(from, to) => batch.delete_range(from, to),
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

/// Reads the changes of a [`WriteSet`] in order.
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
        assert_eq!(first.to_batch().len(), 4);
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
