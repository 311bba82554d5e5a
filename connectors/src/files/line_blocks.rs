//! Reading a text file on an object store as complete lines, a block of
//! bytes at a time from any byte offset, so a file source never holds more
//! of a file than one block (and one line that straddles two) and resumes
//! at the byte after the last line an epoch committed.
//!
//! A file can be split between readers: reader `i` of `n` reads the lines
//! that start in its byte range `[size·i/n, size·(i+1)/n)` (the last one
//! maybe reaching past it), as Hadoop's and Flink's line readers do, so
//! every line is read by exactly one reader.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::blocking::run_blocking;

/// Bytes fetched from the store at a time.
const BLOCK_BYTES: u64 = 4 << 20;

/// Where a reader begins in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// At this byte, where a line starts (a committed position).
    At(u64),
    /// At the first line that starts in the reader's range.
    RangeStart,
}

/// A text file read as lines, forwards from an offset.
pub(crate) struct LineBlocks {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// The file's size when it was opened: a file that shrinks under the
    /// reader fails it (a range past the end), one that grows is read to
    /// that size.
    size: u64,
    /// Lines that start at or after this byte belong to the next reader.
    limit: u64,
    /// Fetched bytes; `buffer[start..]` is not consumed yet.
    buffer: Vec<u8>,
    start: usize,
    /// The file offset of `buffer[start]`.
    offset: u64,
    runtime: tokio::runtime::Handle,
}

impl LineBlocks {
    /// Opens `path` for reader `share.0` of `share.1`, from `start`.
    pub(crate) fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        start: Start,
        share: (usize, usize),
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let (head_store, head_path) = (Arc::clone(&store), path.clone());
        let meta = run_blocking(&runtime, async move { head_store.head(&head_path).await })
            .map_err(|e| e.to_string())?;
        let size = meta.size;
        let (reader, readers) = (share.0 as u64, share.1.max(1) as u64);
        let range_start = size * reader / readers;
        let mut lines = Self {
            store,
            path,
            size,
            limit: size * (reader + 1) / readers,
            buffer: vec![],
            start: 0,
            offset: range_start,
            runtime,
        };
        match start {
            Start::At(offset) => lines.offset = offset,
            Start::RangeStart if range_start > 0 => lines.skip_to_line_start()?,
            Start::RangeStart => {}
        }
        Ok(lines)
    }

    /// From `offset` inside the file, moves to the first line that starts
    /// at or after it: past the first newline at or after `offset - 1`.
    fn skip_to_line_start(&mut self) -> Result<(), String> {
        self.offset -= 1;
        loop {
            let pending = &self.buffer[self.start..];
            if let Some(at) = memchr::memchr(b'\n', pending) {
                self.start += at + 1;
                self.offset += at as u64 + 1;
                return Ok(());
            }
            if self.offset + pending.len() as u64 >= self.size {
                self.start = self.buffer.len();
                self.offset = self.size;
                return Ok(());
            }
            self.fetch_more()?;
        }
    }

    /// The file offset after what was consumed.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// At most `max` complete lines that start in the reader's range (the
    /// file's last line may end without a newline) and the offset after
    /// them; None once the range is read.
    pub(crate) fn next_lines(&mut self, max: usize) -> Result<Option<Lines<'_>>, String> {
        loop {
            let pending = &self.buffer[self.start..];
            let mut count = 0;
            let mut end = 0;
            // Whether the next line starts past the range.
            let mut past = self.offset >= self.limit;
            if !past {
                for at in memchr::memchr_iter(b'\n', pending) {
                    count += 1;
                    end = at + 1;
                    past = self.offset + end as u64 >= self.limit;
                    if count == max || past {
                        break;
                    }
                }
            }
            let fetched_to = self.offset + pending.len() as u64;
            let at_end = fetched_to >= self.size;
            if count < max && !past && !at_end {
                self.fetch_more()?;
                continue;
            }
            if count < max && !past && at_end && end < pending.len() {
                // The last line, without its newline.
                end = pending.len();
            }
            if end == 0 {
                return Ok(None);
            }
            let from = self.start;
            self.start += end;
            self.offset += end as u64;
            return Ok(Some(Lines {
                bytes: &self.buffer[from..from + end],
                end: self.offset,
            }));
        }
    }

    /// Appends the next block to what is not consumed yet.
    fn fetch_more(&mut self) -> Result<(), String> {
        self.buffer.drain(..self.start);
        self.start = 0;
        let from = self.offset + self.buffer.len() as u64;
        let to = (from + BLOCK_BYTES).min(self.size);
        let (store, path) = (Arc::clone(&self.store), self.path.clone());
        let block = run_blocking(&self.runtime, async move {
            store.get_range(&path, from..to).await
        })
        .map_err(|e| format!("reading bytes {from}..{to}: {e}"))?;
        if block.is_empty() {
            return Err(format!(
                "the file ended at byte {from}, before the {} bytes it had when reading began \
                 (truncated while being read?)",
                self.size
            ));
        }
        self.buffer.extend_from_slice(&block);
        Ok(())
    }
}

/// Complete lines taken from a file.
pub(crate) struct Lines<'a> {
    /// The lines, each with its newline (but perhaps the file's last).
    pub bytes: &'a [u8],
    /// The file offset after them.
    pub end: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn read_all(store: Arc<dyn ObjectStore>, from: u64, max: usize) -> Vec<(String, u64)> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut lines = LineBlocks::open(
            store,
            Path::from("f.txt"),
            Start::At(from),
            (0, 1),
            runtime.handle().clone(),
        )
        .unwrap();
        let mut out = vec![];
        while let Some(taken) = lines.next_lines(max).unwrap() {
            out.push((String::from_utf8(taken.bytes.to_vec()).unwrap(), taken.end));
        }
        out
    }

    fn store_with(contents: &str) -> Arc<dyn ObjectStore> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let put = Arc::clone(&store);
        let bytes = contents.as_bytes().to_vec();
        runtime
            .block_on(async move { put.put(&Path::from("f.txt"), bytes.into()).await })
            .unwrap();
        store
    }

    #[test]
    fn lines_come_in_groups_with_the_offset_after_them() {
        let store = store_with("a\nbb\nccc\nlast");
        assert_eq!(
            read_all(Arc::clone(&store), 0, 2),
            vec![("a\nbb\n".into(), 5), ("ccc\nlast".into(), 13)]
        );
        // Resuming at a committed offset reads only what follows.
        assert_eq!(read_all(store, 5, 10), vec![("ccc\nlast".into(), 13)]);
    }

    /// Every line of every split, read by `readers` readers.
    fn read_split(store: &Arc<dyn ObjectStore>, readers: usize) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut all = vec![];
        for reader in 0..readers {
            let mut lines = LineBlocks::open(
                Arc::clone(store),
                Path::from("f.txt"),
                Start::RangeStart,
                (reader, readers),
                runtime.handle().clone(),
            )
            .unwrap();
            while let Some(taken) = lines.next_lines(3).unwrap() {
                let text = String::from_utf8(taken.bytes.to_vec()).unwrap();
                all.extend(text.lines().map(str::to_string));
            }
        }
        all
    }

    #[test]
    fn readers_of_a_split_file_read_every_line_once() {
        let text: String = (0..200)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 17)))
            .collect();
        let store = store_with(&text);
        let expected: Vec<String> = text.lines().map(str::to_string).collect();
        for readers in [1, 2, 3, 7, 64, 500] {
            assert_eq!(read_split(&store, readers), expected, "{readers} readers");
        }
        // Without a newline at the end.
        let store = store_with("a\nbb\nccc");
        for readers in [1, 2, 4, 9] {
            assert_eq!(
                read_split(&store, readers),
                vec!["a", "bb", "ccc"],
                "{readers} readers"
            );
        }
    }

    #[test]
    fn a_line_longer_than_a_block_is_whole() {
        let long = "x".repeat(BLOCK_BYTES as usize + 10);
        let store = store_with(&format!("{long}\nend\n"));
        let lines = read_all(Arc::clone(&store), 0, 1);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0.len(), long.len() + 1);
        assert_eq!(lines[1], ("end\n".into(), long.len() as u64 + 5));
    }
}
