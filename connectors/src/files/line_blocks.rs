//! Reading a text file on an object store as complete lines, a block of
//! bytes at a time from any byte offset, so a file source never holds more
//! of a file than one block (and one line that straddles two) and resumes
//! at the byte after the last line an epoch committed.
//!
//! A file can be split between readers: the file is cut into stripes of a
//! few MiB, and reader `i` of `n` reads the lines that start in stripes
//! `i`, `i + n`, `i + 2n`, … (the last line of a stripe maybe reaching
//! past it), as Hadoop's and Flink's line readers do with their splits, so
//! every line is read by exactly one reader. Interleaved stripes keep the
//! readers close together in the file: in a file written in event-time
//! order they read rows of about the same time, so the slowest reader's
//! watermark (which every downstream operator waits for) is not half a file
//! behind the rows the others have sent, and windows close as they go.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::blocking::run_blocking;

/// Bytes fetched from the store at a time.
const BLOCK_BYTES: u64 = 4 << 20;

/// The length of the stripes readers of one file take turns at.
pub(crate) const STRIPE_BYTES: u64 = 4 << 20;

/// Bytes fetched at a time to finish a line that runs past a stripe.
const TAIL_BYTES: u64 = 64 << 10;

/// Which lines of a file one reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Share {
    /// This reader's number, below `readers`.
    pub reader: u64,
    pub readers: u64,
    /// The stripe length in bytes (more than zero).
    pub stripe: u64,
}

impl Share {
    /// The whole file, for one reader.
    pub(crate) fn whole() -> Self {
        Self {
            reader: 0,
            readers: 1,
            stripe: u64::MAX,
        }
    }

    /// Reader `reader` of `readers`, taking turns at stripes of
    /// [`STRIPE_BYTES`].
    pub(crate) fn of(reader: usize, readers: usize) -> Self {
        if readers <= 1 {
            return Self::whole();
        }
        Self {
            reader: reader as u64,
            readers: readers as u64,
            stripe: STRIPE_BYTES,
        }
    }

    fn owns_stripe(&self, stripe: u64) -> bool {
        stripe % self.readers == self.reader
    }

    /// The first byte of the first stripe this reader owns at or after
    /// stripe `stripe` (saturating).
    fn own_stripe_from(&self, stripe: u64) -> u64 {
        let behind = (self.reader + self.readers - stripe % self.readers) % self.readers;
        (stripe.saturating_add(behind)).saturating_mul(self.stripe)
    }

    /// The end of the stripe that holds byte `offset` (saturating).
    fn stripe_end(&self, offset: u64) -> u64 {
        (offset / self.stripe + 1).saturating_mul(self.stripe)
    }
}

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
    /// Which stripes are this reader's.
    share: Share,
    /// Lines that start at or after this byte belong to another reader:
    /// the end of the stripe being read.
    limit: u64,
    /// Fetched bytes; `buffer[start..]` is not consumed yet.
    buffer: Vec<u8>,
    start: usize,
    /// The file offset of `buffer[start]`.
    offset: u64,
    runtime: tokio::runtime::Handle,
}

impl LineBlocks {
    /// Opens `path` for the reader with `share`, from `start`.
    pub(crate) fn open(
        store: Arc<dyn ObjectStore>,
        path: Path,
        start: Start,
        share: Share,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, String> {
        let (head_store, head_path) = (Arc::clone(&store), path.clone());
        let meta = run_blocking(&runtime, async move { head_store.head(&head_path).await })
            .map_err(|e| e.to_string())?;
        let mut lines = Self {
            store,
            path,
            size: meta.size,
            share,
            limit: 0,
            buffer: vec![],
            start: 0,
            offset: 0,
            runtime,
        };
        match start {
            // A committed offset in one of this reader's stripes goes on
            // in it; one in another's (after a line that ran past this
            // reader's stripe) goes on at the next stripe of its own.
            Start::At(offset) if share.owns_stripe(offset / share.stripe) => {
                lines.offset = offset;
                lines.limit = share.stripe_end(offset);
            }
            Start::At(offset) => {
                lines.enter_stripe(share.own_stripe_from(offset / share.stripe))?
            }
            Start::RangeStart => lines.enter_stripe(share.own_stripe_from(0))?,
        }
        Ok(lines)
    }

    /// Moves to the first line that starts in the stripe at `from` (the
    /// end of the file when it starts past it).
    fn enter_stripe(&mut self, from: u64) -> Result<(), String> {
        self.buffer.clear();
        self.start = 0;
        if from >= self.size {
            self.offset = self.size;
            self.limit = self.size;
            return Ok(());
        }
        self.offset = from;
        self.limit = self.share.stripe_end(from);
        if from > 0 {
            self.skip_to_line_start()?;
        }
        Ok(())
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
            if past && self.limit < self.size {
                // This stripe is read: on to the reader's next one.
                let next = self.share.own_stripe_from(self.limit / self.share.stripe);
                self.enter_stripe(next)?;
                continue;
            }
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
        // Up to the stripe's end, then only as much as finishes its last
        // line: what lies past it is another reader's.
        let to = if from < self.limit {
            (from + BLOCK_BYTES).min(self.limit)
        } else {
            from + TAIL_BYTES
        }
        .min(self.size);
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
            Share::whole(),
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

    /// Every line of every stripe, read by `readers` readers taking turns
    /// at stripes of `stripe` bytes, in file order; each reader restarts
    /// at every committed offset once.
    fn read_split(store: &Arc<dyn ObjectStore>, readers: u64, stripe: u64) -> Vec<String> {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let open = |reader, start| {
            let share = Share {
                reader,
                readers,
                stripe,
            };
            LineBlocks::open(
                Arc::clone(store),
                Path::from("f.txt"),
                start,
                share,
                runtime.handle().clone(),
            )
            .unwrap()
        };
        let mut all = vec![];
        for reader in 0..readers {
            let mut lines = open(reader, Start::RangeStart);
            while let Some(taken) = lines.next_lines(3).unwrap() {
                let text = String::from_utf8(taken.bytes.to_vec()).unwrap();
                let mut line_at = taken.end - taken.bytes.len() as u64;
                for line in text.split_inclusive('\n') {
                    all.push((line_at, line.trim_end_matches('\n').to_string()));
                    line_at += line.len() as u64;
                }
                // A restart at the committed offset goes on where it was
                // (or at the reader's next stripe).
                lines = open(reader, Start::At(taken.end));
            }
        }
        all.sort();
        all.into_iter().map(|(_, line)| line).collect()
    }

    #[test]
    fn readers_of_a_split_file_read_every_line_once() {
        let text: String = (0..200)
            .map(|i| format!("line {i} {}\n", "x".repeat(i % 17)))
            .collect();
        let store = store_with(&text);
        let expected: Vec<String> = text.lines().map(str::to_string).collect();
        for readers in [1, 2, 3, 7, 64, 500] {
            for stripe in [1, 5, 16, 100, 1000, 1 << 20] {
                assert_eq!(
                    read_split(&store, readers, stripe),
                    expected,
                    "{readers} readers, stripes of {stripe} bytes"
                );
            }
        }
        // Without a newline at the end.
        let store = store_with("a\nbb\nccc");
        for readers in [1, 2, 4, 9] {
            for stripe in [1, 2, 3, 4, 100] {
                assert_eq!(
                    read_split(&store, readers, stripe),
                    vec!["a", "bb", "ccc"],
                    "{readers} readers, stripes of {stripe} bytes"
                );
            }
        }
    }

    #[test]
    fn one_reader_takes_the_whole_file_and_stripes_alternate() {
        assert_eq!(Share::of(0, 1), Share::whole());
        let share = Share::of(1, 3);
        assert_eq!(share.own_stripe_from(0), STRIPE_BYTES);
        assert_eq!(share.own_stripe_from(1), STRIPE_BYTES);
        assert_eq!(share.own_stripe_from(2), 4 * STRIPE_BYTES);
        assert_eq!(share.stripe_end(STRIPE_BYTES + 7), 2 * STRIPE_BYTES);
        assert_eq!(Share::whole().stripe_end(123), u64::MAX);
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
