//! `CREATE SINK … WITH (connector = 'filesystem', path = '…') FORMAT PLAIN
//! ENCODE JSON | CSV | PARQUET`: an append-only query's rows as files.
//!
//! Each epoch's rows are written once the engine publishes the epoch
//! (committed, or with checkpoints, held by a complete checkpoint), so a
//! file is visible only when its checkpoint is complete. Files are named by
//! epoch — `part-<epoch>-<n>.<ext>`, under `col=value/…` folders with
//! `partition_by = 'col, …'` — and an epoch written again after a crash
//! gives the same names and the same bytes: every row is in the files
//! exactly once. Files roll at every epoch (so by time: the barrier or
//! checkpoint interval) and within an epoch at
//! `sink.rolling-policy.file-size` bytes (128 MiB).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::array_value_to_string;
use object_store::ObjectStoreExt;
use runnel_engine::runtime::{SinkWriteError, SinkWriter};
use runnel_engine::{Epoch, Op, StreamChunk};

use super::{Directory, FileFormat};
use crate::options::{ConnectorError, Options};

/// The options a file sink takes, listed when one is unknown.
pub(crate) const SINK_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "partition_by",
    "sink.rolling-policy.file-size",
    "s3.endpoint",
    "s3.region",
    "s3.access-key",
    "s3.secret-key",
    "s3.path-style-access",
];

const DEFAULT_FILE_SIZE: usize = 128 << 20;

/// Writes a sink's epochs as files.
pub(crate) struct FileWriter {
    dir: Directory,
    format: FileFormat,
    /// Columns whose values name the folders.
    partition_by: Vec<(String, usize)>,
    max_file_bytes: usize,
    runtime: tokio::runtime::Handle,
}

impl FileWriter {
    /// Reads the options; `key` is Some for a sink whose query updates
    /// rows, which files cannot take.
    pub(crate) fn new(
        options: &mut Options<'_>,
        schema: &SchemaRef,
        key: Option<&[usize]>,
    ) -> Result<Self, ConnectorError> {
        let dir = Directory::from_options(options)?;
        let format_name = options.get("format").unwrap_or("plain");
        if !format_name.eq_ignore_ascii_case("plain") {
            return Err(ConnectorError::Unsupported(format!(
                "FORMAT {} for a file sink (files only append rows: FORMAT PLAIN)",
                format_name.to_ascii_uppercase()
            )));
        }
        if key.is_some() {
            return Err(ConnectorError::Unsupported(
                "a file sink of a query that updates rows (files only append; use \
                 EMIT ON WINDOW CLOSE or a Kafka FORMAT UPSERT sink)"
                    .into(),
            ));
        }
        let format = FileFormat::named(options.get("encode").unwrap_or("json"))?;
        let partition_by = match options.get("partition_by") {
            None => vec![],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|column| {
                    schema
                        .index_of(column)
                        .map(|i| (column.to_string(), i))
                        .map_err(|_| ConnectorError::Column {
                            column: column.into(),
                            reason: "partition_by names a column the sink does not write".into(),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let max_file_bytes = options
            .parse::<usize>("sink.rolling-policy.file-size")?
            .unwrap_or(DEFAULT_FILE_SIZE)
            .max(1);
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ConnectorError::Unsupported("a file sink outside the server's runtime".into())
        })?;
        Ok(Self {
            dir,
            format,
            partition_by,
            max_file_bytes,
            runtime,
        })
    }

    /// Whether the location can be listed (CREATE SINK).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        let store = Arc::clone(&self.dir.store);
        let root = self.dir.root.clone();
        let listed = crate::blocking::run_blocking(&self.runtime, async move {
            store.list_with_delimiter(Some(&root)).await
        });
        listed.map(|_| ()).map_err(|e| ConnectorError::BadValue {
            key: "path".into(),
            value: self.dir.url.clone(),
            reason: format!("cannot list it: {e}"),
        })
    }

    /// The rows of `batch` per partition folder (`col=value` names, none
    /// unpartitioned).
    fn partitions(&self, batch: &RecordBatch) -> Result<Vec<(Vec<String>, RecordBatch)>, String> {
        if self.partition_by.is_empty() {
            return Ok(vec![(vec![], batch.clone())]);
        }
        let mut rows: BTreeMap<Vec<String>, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            let mut folder = vec![];
            for (name, column) in &self.partition_by {
                let array = batch.column(*column);
                let value = if array.is_null(row) {
                    "__HIVE_DEFAULT_PARTITION__".to_string()
                } else {
                    array_value_to_string(array, row).map_err(|e| e.to_string())?
                };
                folder.push(format!("{name}={value}"));
            }
            rows.entry(folder).or_default().push(row as u32);
        }
        rows.into_iter()
            .map(|(folder, indices)| {
                take_record_batch(batch, &UInt32Array::from(indices))
                    .map(|b| (folder, b))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// File contents for `batch`, split in halves by rows until each file
    /// is at most the rolling size (or one row).
    fn files(&self, batch: &RecordBatch, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        let bytes = self.format.encode(batch)?;
        if bytes.len() <= self.max_file_bytes || batch.num_rows() <= 1 {
            out.push(bytes);
            return Ok(());
        }
        let half = batch.num_rows() / 2;
        self.files(&batch.slice(0, half), out)?;
        self.files(&batch.slice(half, batch.num_rows() - half), out)
    }
}

impl SinkWriter for FileWriter {
    fn write_epoch(&mut self, epoch: Epoch, changes: &StreamChunk) -> Result<(), SinkWriteError> {
        let ops = changes
            .ops()
            .map_err(|e| SinkWriteError::Failed(e.to_string()))?;
        if ops.iter().any(|op| *op != Op::Insert) {
            return Err(SinkWriteError::Failed(
                "a file sink received a retraction".into(),
            ));
        }
        let mut puts = vec![];
        for (folder, batch) in self
            .partitions(changes.data())
            .map_err(SinkWriteError::Failed)?
        {
            let mut contents = vec![];
            self.files(&batch, &mut contents)
                .map_err(|e| SinkWriteError::Failed(format!("encoding rows: {e}")))?;
            for (n, bytes) in contents.into_iter().enumerate() {
                // Each part is one path segment: object_store escapes what a
                // value holds (a `/` becomes %2F).
                let mut path = self.dir.root.clone();
                for part in &folder {
                    path = path.clone().join(part.as_str());
                }
                let name = format!("part-{:020}-{n:04}.{}", epoch.0, self.format.extension());
                puts.push((path.join(name.as_str()), bytes));
            }
        }
        let store = Arc::clone(&self.dir.store);
        crate::blocking::run_blocking(&self.runtime, async move {
            for (path, bytes) in puts {
                store
                    .put(&path, bytes.into())
                    .await
                    .map_err(|e| SinkWriteError::Unavailable(format!("writing {path}: {e}")))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(items: &[(&str, i64)]) -> StreamChunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("item", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(items.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(items.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        StreamChunk::inserts(batch)
    }

    fn files(dir: &std::path::Path) -> Vec<(String, String)> {
        let mut found = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(next) = stack.pop() {
            for entry in std::fs::read_dir(next).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path.strip_prefix(dir).unwrap().display().to_string();
                    found.push((name, std::fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        found.sort();
        found
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn epochs_become_partitioned_rolled_files_and_rewriting_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let values: Map<String, String> = [
            ("path", format!("file://{}", dir.path().display())),
            ("partition_by", "item".to_string()),
            ("sink.rolling-policy.file-size", "12".to_string()),
            ("encode", "csv".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let chunk = rows(&[("a", 1), ("b", 2), ("a", 3), ("a/x", 4)]);
        let schema = chunk.data().schema();
        let mut options = Options::new(&values);
        let mut writer = FileWriter::new(&mut options, &schema, None).unwrap();
        let written = tokio::task::spawn_blocking(move || {
            writer.write_epoch(Epoch(7), &chunk).unwrap();
            let first = files(dir.path());
            // After a crash the same epoch is written again: same files.
            writer.write_epoch(Epoch(7), &chunk).unwrap();
            assert_eq!(files(dir.path()), first);
            first
        })
        .await
        .unwrap();
        let names: Vec<&str> = written.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "item=a%2Fx/part-00000000000000000007-0000.csv",
                "item=a/part-00000000000000000007-0000.csv",
                "item=a/part-00000000000000000007-0001.csv",
                "item=b/part-00000000000000000007-0000.csv",
            ]
        );
        assert_eq!(written[1].1, "item,n\na,1\n");
        assert_eq!(written[2].1, "item,n\na,3\n");
    }
}
