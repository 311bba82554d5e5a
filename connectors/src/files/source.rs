//! `CREATE SOURCE … WITH (connector = 'filesystem', path = '…') FORMAT
//! PLAIN ENCODE CSV | JSON | PARQUET`: the rows of every file under a
//! folder, or matching a glob (`s3://bucket/logs/*.csv`), one file after
//! another in name order.
//!
//! Each file is one split. The position the engine commits with every
//! epoch is the list of files in the order they were found, the file being
//! read and the row reached in it, so a restart continues exactly there.
//! With `source.monitor-interval-ms` the folder is listed again at that
//! interval and new files are read after the others; without it the
//! source ends once every file is read. A file is read whole into memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use runnel_engine::runtime::connector::SourceReader;
use runnel_engine::{EngineError, EngineResult, StreamChunk};
use serde::{Deserialize, Serialize};

use super::{Directory, FileFormat};
use crate::blocking::run_blocking;
use crate::columns::{Missing, by_name};
use crate::options::{ConnectorError, Options};

/// The options a file source takes, listed when one is unknown.
pub(crate) const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "source.monitor-interval-ms",
    "csv.header",
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
    /// The next row of that file.
    next_row: usize,
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
    monitor: Option<Duration>,
    next_listing: Option<Instant>,
    position: FilePosition,
    /// The rows of the file being read, decoded.
    loaded: Option<RecordBatch>,
    runtime: tokio::runtime::Handle,
}

impl FileSource {
    /// Reads the options; `schema` is the declared columns then the row key.
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
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
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConnectorError::Unsupported("a file source outside the server's runtime".into())
        })?;
        Ok(Self {
            dir,
            pattern,
            format,
            csv_header,
            schema: Arc::clone(schema),
            monitor,
            next_listing: None,
            position: FilePosition::default(),
            loaded: None,
            runtime,
        })
    }

    /// Whether the folder can be listed (CREATE SOURCE).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        self.list()
            .map(|_| ())
            .map_err(|reason| ConnectorError::BadValue {
                key: "path".into(),
                value: self.dir.url.clone(),
                reason,
            })
    }

    /// The files under the folder that match, relative, in name order.
    fn list(&self) -> Result<Vec<String>, String> {
        let store = Arc::clone(&self.dir.store);
        let root = self.dir.root.clone();
        let listed: Vec<object_store::ObjectMeta> = run_blocking(&self.runtime, async move {
            store.list(Some(&root)).try_collect().await
        })
        .map_err(|e| format!("cannot list it: {e}"))?;
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
            .map_err(|e| EngineError::Internal(format!("file source {}: {e}", self.dir.url)))?;
        for name in found {
            if !self.position.files.contains(&name) {
                self.position.files.push(name);
            }
        }
        self.next_listing = Some(Instant::now() + self.monitor.unwrap_or(Duration::ZERO));
        Ok(())
    }

    /// Fetches and decodes file `index`.
    fn load(&self, index: usize) -> EngineResult<RecordBatch> {
        let name = &self.position.files[index];
        let mut path = self.dir.root.clone();
        for part in name.split('/') {
            path = path.clone().join(part);
        }
        let store = Arc::clone(&self.dir.store);
        let fetched = path.clone();
        let bytes = run_blocking(&self.runtime, async move {
            store.get(&fetched).await?.bytes().await
        })
        .map_err(|e| EngineError::Internal(format!("reading {}/{name}: {e}", self.dir.url)))?;
        let declared = self.schema.fields().len() - 1;
        let declared_schema = Arc::new(
            self.schema
                .project(&(0..declared).collect::<Vec<_>>())
                .map_err(EngineError::Arrow)?,
        );
        self.format
            .decode(bytes, &declared_schema, self.csv_header)
            .map_err(|e| {
                EngineError::Internal(format!(
                    "file {}/{name} does not decode as {:?}: {e}",
                    self.dir.url, self.format
                ))
            })
    }

    fn row_key(&self, file: usize, row: usize) -> i64 {
        ((file as i64) << 36) | row as i64
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
            if self.loaded.is_none() {
                self.loaded = Some(self.load(file)?);
            }
            let loaded = self
                .loaded
                .as_ref()
                .ok_or_else(|| EngineError::Internal("file not loaded".into()))?;
            let start = self.position.next_row.min(loaded.num_rows());
            let take = (loaded.num_rows() - start).min(max_rows);
            if take == 0 {
                self.loaded = None;
                self.position.next_file += 1;
                self.position.next_row = 0;
                continue;
            }
            let slice = loaded.slice(start, take);
            let keys: ArrayRef = Arc::new(Int64Array::from_iter_values(
                (start..start + take).map(|row| self.row_key(file, row)),
            ));
            let mut columns = slice.columns().to_vec();
            columns.push(keys);
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            self.position.next_row = start + take;
            return Ok(Some(StreamChunk::inserts(batch)));
        }
    }

    fn position(&self) -> EngineResult<Vec<u8>> {
        serde_json::to_vec(&self.position)
            .map_err(|e| EngineError::Internal(format!("file position: {e}")))
    }
}

impl FileFormat {
    /// The rows of a whole file in `schema`: CSV fields in column order,
    /// JSON lines and Parquet columns by name (cast to the declared types).
    pub(crate) fn decode(
        self,
        bytes: bytes::Bytes,
        schema: &SchemaRef,
        csv_header: bool,
    ) -> Result<RecordBatch, String> {
        let batches: Vec<RecordBatch> = match self {
            FileFormat::Csv => datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(schema))
                .with_header(csv_header)
                .build(std::io::Cursor::new(bytes))
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?,
            FileFormat::Json => datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema))
                .build(std::io::Cursor::new(bytes))
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?,
            FileFormat::Parquet => {
                let reader = datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .map_err(|e| e.to_string())?
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut out = vec![];
                for batch in reader {
                    let batch = batch.map_err(|e| e.to_string())?;
                    out.push(by_name(&batch, schema, Missing::Refuse, "file")?);
                }
                out
            }
        };
        concat_batches(schema, &batches).map_err(|e| e.to_string())
    }
}
