//! `CREATE SOURCE … WITH (connector = 'filesystem', path = '…') FORMAT
//! PLAIN ENCODE CSV | JSON | PARQUET`: the rows of one file, of every file
//! under a folder, or of those matching a glob (`s3://bucket/logs/*.csv`),
//! one file after another in name order.
//!
//! Each file is one split. The position the engine commits with every
//! epoch is the list of files in the order they were found, the file being
//! read and the row reached in it, so a restart continues exactly there.
//! With `source.monitor-interval-ms` the folder is listed again at that
//! interval and new files are read after the others; without it the
//! source ends once every file is read. CSV and JSON-lines files are read
//! a block at a time and their position is the byte after the last line
//! read; a line that does not decode is skipped and counted, or fails the
//! source (`format.error-policy = 'fail'`). A Parquet file is read whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use runnel_engine::runtime::connector::{SourceReader, SourceShare};
use runnel_engine::{EngineError, EngineResult, StreamChunk};
use runnel_storage::state_table::key_group;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::line_blocks::{LineBlocks, Share, Start};
use super::{Directory, FileFormat};
use crate::blocking::run_blocking;
use crate::options::{ConnectorError, ErrorPolicy, Options};

/// The options a file source takes, listed when one is unknown.
pub(crate) const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "source.monitor-interval-ms",
    "csv.header",
    "format.error-policy",
    "s3.endpoint",
    "s3.region",
    "s3.access-key",
    "s3.secret-key",
    "s3.path-style-access",
];

/// Where reading stands.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct FilePosition {
    /// Every file found so far, in the order found (a file's index is part
    /// of its rows' keys).
    files: Vec<String>,
    /// The file being read (== files.len() when all are read).
    next_file: usize,
    /// The next row of that file (the row number its key carries).
    next_row: usize,
    /// CSV and JSON lines: the byte where that file's next unread line
    /// starts; None before the reader began the file.
    #[serde(default)]
    next_byte: Option<u64>,
}

/// Reads files as a source.
pub(crate) struct FileSource {
    dir: Directory,
    /// Matches file paths relative to the folder; None: every file.
    pattern: Option<glob::Pattern>,
    format: FileFormat,
    csv_header: bool,
    /// The declared columns then the row key.
    schema: SchemaRef,
    /// The declared columns.
    declared: SchemaRef,
    monitor: Option<Duration>,
    next_listing: Option<Instant>,
    position: FilePosition,
    /// Parquet: the rows of the file being read, decoded.
    loaded: Option<RecordBatch>,
    /// CSV and JSON lines: the file being read.
    text: Option<LineBlocks>,
    policy: ErrorPolicy,
    /// Lines skipped because they did not decode, and when one was last
    /// logged (at most one line per 10 s).
    skipped: u64,
    last_logged: Option<Instant>,
    /// Which of the source's parallel readers this is.
    share: SourceShare,
    runtime: tokio::runtime::Handle,
}

impl FileSource {
    /// Reads the options; `schema` is the declared columns then the row key.
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
        share: SourceShare,
    ) -> Result<Self, ConnectorError> {
        let path = options.required("path")?.to_string();
        // The folder is the part before the first glob character.
        let glob_at = path.find(['*', '?', '[']);
        let (folder, pattern) = match glob_at {
            None => (path.clone(), None),
            Some(at) => {
                let cut = path[..at].rfind('/').map_or(0, |slash| slash + 1);
                let pattern =
                    glob::Pattern::new(&path[cut..]).map_err(|e| ConnectorError::BadValue {
                        key: "path".into(),
                        value: path.clone(),
                        reason: format!("not a glob: {e}"),
                    })?;
                (path[..cut].to_string(), Some(pattern))
            }
        };
        let dir = Directory::open(&folder, options)?;
        let format_name = options.get("format").unwrap_or("plain");
        if !format_name.eq_ignore_ascii_case("plain") {
            return Err(ConnectorError::Unsupported(format!(
                "FORMAT {} for a file source (known: PLAIN)",
                format_name.to_ascii_uppercase()
            )));
        }
        let format = FileFormat::named(options.get("encode").unwrap_or("csv"))?;
        let csv_header = options
            .get("csv.header")
            .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        let monitor = options
            .parse::<u64>("source.monitor-interval-ms")?
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let policy = ErrorPolicy::from_options(options)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConnectorError::Unsupported("a file source outside the server's runtime".into())
        })?;
        let declared = schema.fields().len().saturating_sub(1);
        let declared = Arc::new(
            schema
                .project(&(0..declared).collect::<Vec<_>>())
                .map_err(|e| ConnectorError::Unsupported(e.to_string()))?,
        );
        Ok(Self {
            dir,
            pattern,
            format,
            csv_header,
            schema: Arc::clone(schema),
            declared,
            monitor,
            next_listing: None,
            position: FilePosition::default(),
            loaded: None,
            text: None,
            policy,
            skipped: 0,
            last_logged: None,
            share,
            runtime,
        })
    }

    /// Whether the folder can be listed (CREATE SOURCE), and, unless the
    /// source watches for new files, holds a file to read.
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        let bad = |reason: String| ConnectorError::BadValue {
            key: "path".into(),
            value: self.dir.url.clone(),
            reason,
        };
        let found = self.list().map_err(bad)?;
        if found.is_empty() && self.monitor.is_none() {
            return Err(bad(
                "no file is there to read (name a file, a folder holding files or a glob that \
                 matches some; or set source.monitor-interval-ms to wait for files to arrive)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The files under the folder that match, relative, in name order.
    /// A `path` naming one file (no glob, nothing under it) lists as that
    /// file, whose relative name is empty.
    fn list(&self) -> Result<Vec<String>, String> {
        let store = Arc::clone(&self.dir.store);
        let root = self.dir.root.clone();
        let single = self.pattern.is_none();
        let listed: Vec<object_store::ObjectMeta> = run_blocking(&self.runtime, async move {
            let listed: Vec<object_store::ObjectMeta> =
                store.list(Some(&root)).try_collect().await?;
            if listed.is_empty() && single {
                match store.head(&root).await {
                    Ok(meta) => return Ok(vec![meta]),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(listed)
        })
        .map_err(|e| format!("cannot list it: {e}"))?;
        if let [only] = listed.as_slice()
            && only.location == self.dir.root
        {
            return Ok(vec![String::new()]);
        }
        let root = self.dir.root.as_ref().to_string();
        let mut names: Vec<String> = listed
            .into_iter()
            .map(|meta| {
                let full = meta.location.as_ref();
                full.strip_prefix(&root)
                    .unwrap_or(full)
                    .trim_start_matches('/')
                    .to_string()
            })
            .filter(|name| !name.is_empty())
            .filter(|name| self.pattern.as_ref().is_none_or(|p| p.matches(name)))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Adds files not seen before, when a listing is due.
    fn discover(&mut self) -> EngineResult<()> {
        let due = match (self.next_listing, self.monitor) {
            (None, _) => true,
            (Some(at), Some(_)) => Instant::now() >= at,
            (Some(_), None) => false,
        };
        if !due {
            return Ok(());
        }
        let found = self
            .list()
            .map_err(|e| EngineError::Source(format!("file source {}: {e}", self.dir.url)))?;
        for name in found {
            if !self.position.files.contains(&name) {
                self.position.files.push(name);
            }
        }
        self.next_listing = Some(Instant::now() + self.monitor.unwrap_or(Duration::ZERO));
        Ok(())
    }

    /// The store path of file `index`.
    fn path_of(&self, index: usize) -> object_store::path::Path {
        let mut path = self.dir.root.clone();
        for part in self.position.files[index]
            .split('/')
            .filter(|part| !part.is_empty())
        {
            path = path.clone().join(part);
        }
        path
    }

    /// File `index` as the user named it: its URL.
    fn shown(&self, index: usize) -> String {
        let name = &self.position.files[index];
        if name.is_empty() {
            self.dir.url.clone()
        } else {
            format!("{}/{name}", self.dir.url.trim_end_matches('/'))
        }
    }

    /// A failure reading file `index`, naming it.
    fn failure(&self, index: usize, reason: impl std::fmt::Display) -> EngineError {
        EngineError::Source(format!("file source: {}: {reason}", self.shown(index)))
    }

    /// Fetches and decodes Parquet file `index` whole.
    fn load(&self, index: usize) -> EngineResult<RecordBatch> {
        let store = Arc::clone(&self.dir.store);
        let fetched = self.path_of(index);
        let bytes = run_blocking(&self.runtime, async move {
            store.get(&fetched).await?.bytes().await
        })
        .map_err(|e| self.failure(index, e))?;
        self.format
            .decode(bytes, &self.declared, self.csv_header)
            .map_err(|e| self.failure(index, format!("does not decode as {:?}: {e}", self.format)))
    }

    /// Parquet: up to `max_rows` rows of file `index` from the next row;
    /// None once it is read.
    fn read_whole(&mut self, index: usize, max_rows: usize) -> EngineResult<Option<RecordBatch>> {
        if self.loaded.is_none() {
            self.loaded = Some(self.load(index)?);
        }
        let loaded = self
            .loaded
            .as_ref()
            .ok_or_else(|| EngineError::Internal("file not loaded".into()))?;
        let start = self.position.next_row.min(loaded.num_rows());
        let take = (loaded.num_rows() - start).min(max_rows);
        if take == 0 {
            self.loaded = None;
            return Ok(None);
        }
        Ok(Some(loaded.slice(start, take)))
    }

    /// CSV and JSON lines: the rows of up to `max_rows` lines of file
    /// `index` from the next unread byte (lines that do not decode left
    /// out, or failing the source); None once it is read.
    fn read_lines(&mut self, index: usize, max_rows: usize) -> EngineResult<Option<RecordBatch>> {
        if self.text.is_none() {
            let start = match self.position.next_byte {
                Some(byte) => Start::At(byte),
                None => Start::RangeStart,
            };
            let mut text = LineBlocks::open(
                Arc::clone(&self.dir.store),
                self.path_of(index),
                start,
                self.byte_share(),
                self.runtime.clone(),
            )
            .map_err(|e| self.failure(index, e))?;
            if self.position.next_byte.is_none() {
                if self.format == FileFormat::Csv && self.csv_header && text.offset() == 0 {
                    // The header line names the columns; fields fill them
                    // in order.
                    let _ = text.next_lines(1).map_err(|e| self.failure(index, e))?;
                }
                self.position.next_byte = Some(text.offset());
            }
            self.text = Some(text);
        }
        let (format, declared) = (self.format, Arc::clone(&self.declared));
        loop {
            let Some(text) = self.text.as_mut() else {
                return Ok(None);
            };
            let taken = match text.next_lines(max_rows) {
                Ok(Some(lines)) => Ok((format.decode_lines(lines.bytes, &declared), lines.end)),
                Ok(None) => {
                    self.text = None;
                    return Ok(None);
                }
                Err(e) => Err(e),
            };
            let (decoded, end) = taken.map_err(|e| self.failure(index, e))?;
            let (batch, bad) = decoded.map_err(|e| self.failure(index, e))?;
            let start = self.position.next_byte.unwrap_or(0);
            if let Some(first) = bad.first() {
                let at = start + first.at as u64;
                if self.policy == ErrorPolicy::Fail {
                    return Err(self.failure(
                        index,
                        format!(
                            "the line at byte {at} does not decode as {format:?}: {} (set \
                             format.error-policy = 'skip' to skip such lines)",
                            first.reason
                        ),
                    ));
                }
                self.skipped += bad.len() as u64;
                if self
                    .last_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    self.last_logged = Some(Instant::now());
                    warn!(
                        file = %self.shown(index),
                        byte = at,
                        reason = %first.reason,
                        skipped = self.skipped,
                        "file source: skipping lines that do not decode"
                    );
                }
            }
            self.position.next_byte = Some(end);
            if batch.num_rows() > 0 {
                return Ok(Some(batch));
            }
        }
    }

    /// Which share of a text file's bytes this reader reads: with several
    /// readers and no monitoring (the files do not change), each reads
    /// its turns of every file's stripes; otherwise whole files
    /// ([`FileSource::owns`]).
    fn byte_share(&self) -> Share {
        if self.splits_files() {
            Share::of(self.share.subtask, self.share.parallelism)
        } else {
            Share::whole()
        }
    }

    fn splits_files(&self) -> bool {
        self.monitor.is_none() && self.format != FileFormat::Parquet
    }

    /// Whether this reader reads (its share of) file `name`: every file
    /// when files are split by bytes, else the files whose name hashes to
    /// it (the same for every reader, whenever each listed the file).
    fn owns(&self, name: &str) -> bool {
        self.splits_files()
            || key_group(name.as_bytes()) as usize % self.share.parallelism.max(1)
                == self.share.subtask
    }

    /// A row's key: the file's index, the reader and the row's number in
    /// what the reader read of the file.
    fn row_key(&self, file: usize, row: usize) -> i64 {
        ((file as i64) << 43) | ((self.share.subtask as i64) << 36) | row as i64
    }
}

impl SourceReader for FileSource {
    fn seek(&mut self, position: Option<&[u8]>) -> EngineResult<()> {
        self.position = match position {
            None => FilePosition::default(),
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| EngineError::Internal(format!("stored file position: {e}")))?,
        };
        self.loaded = None;
        self.text = None;
        self.next_listing = None;
        Ok(())
    }

    fn read(&mut self, max_rows: usize) -> EngineResult<Option<StreamChunk>> {
        loop {
            if self.position.next_file >= self.position.files.len() {
                self.discover()?;
                if self.position.next_file >= self.position.files.len() {
                    return Ok(self.monitor.map(|_| {
                        StreamChunk::inserts(RecordBatch::new_empty(Arc::clone(&self.schema)))
                    }));
                }
            }
            let file = self.position.next_file;
            let owned = self.owns(&self.position.files[file]);
            let rows = match self.format {
                _ if !owned => None,
                FileFormat::Parquet => self.read_whole(file, max_rows)?,
                FileFormat::Csv | FileFormat::Json => self.read_lines(file, max_rows)?,
            };
            let Some(rows) = rows else {
                self.position.next_file += 1;
                self.position.next_row = 0;
                self.position.next_byte = None;
                continue;
            };
            let start = self.position.next_row;
            let keys: ArrayRef = Arc::new(Int64Array::from_iter_values(
                (start..start + rows.num_rows()).map(|row| self.row_key(file, row)),
            ));
            let mut columns = rows.columns().to_vec();
            columns.push(keys);
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            self.position.next_row = start + rows.num_rows();
            return Ok(Some(StreamChunk::inserts(batch)));
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn bounded(&self) -> bool {
        self.monitor.is_none()
    }

    fn position(&self) -> EngineResult<Vec<u8>> {
        serde_json::to_vec(&self.position)
            .map_err(|e| EngineError::Internal(format!("file position: {e}")))
    }
}
