//! The two Nexmark queries that touch files: q13 joins bids with a side
//! input read from a CSV file (a `filesystem` source), and q10 writes
//! every bid to Parquet files partitioned by day and minute (a
//! `filesystem` sink). The batch side reads the same side-input file, and
//! the sink's files are read back with DataFusion to compare with the
//! batch answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use runnel_engine::runtime::JobState;
use runnel_server::Database;

use crate::queries::{FILE_SINKS, SIDE_INPUT_READERS};

/// The side input's table name and its number of keys (Flink's q13 joins
/// on `MOD(auction, 10000)`).
const SIDE_INPUT: &str = "side_input";
const SIDE_INPUT_KEYS: u64 = 10_000;

/// The files of one query's runs: the side input it reads, the folder its
/// sink writes to; none for the other queries.
pub struct QueryFiles {
    dir: tempfile::TempDir,
    side_input: bool,
    sink_columns: Option<&'static [&'static str]>,
}

impl QueryFiles {
    /// What query `name` reads or writes besides the Nexmark sources, in a
    /// fresh temporary folder (the side input written into it).
    pub fn for_query(name: &str) -> Result<Self> {
        let files = Self {
            dir: tempfile::tempdir()?,
            side_input: SIDE_INPUT_READERS.contains(&name),
            sink_columns: FILE_SINKS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, columns)| *columns),
        };
        if files.side_input {
            std::fs::create_dir(files.side_input_dir())?;
            write_side_input(&files.side_input_file())?;
        }
        if files.sink_columns.is_some() {
            std::fs::create_dir(files.sink_dir())?;
        }
        Ok(files)
    }

    fn side_input_dir(&self) -> PathBuf {
        self.dir.path().join(SIDE_INPUT)
    }

    fn side_input_file(&self) -> PathBuf {
        self.side_input_dir().join("side_input.csv")
    }

    fn sink_dir(&self) -> PathBuf {
        self.dir.path().join("sink")
    }

    /// The `CREATE SOURCE` of the side input, when the query reads it
    /// (bounded: no monitor interval, so the source ends after the file).
    pub fn source_sql(&self) -> Option<String> {
        self.side_input.then(|| {
            format!(
                "CREATE SOURCE {SIDE_INPUT} (key BIGINT, value VARCHAR) \
                 WITH (connector = 'filesystem', path = 'file://{}') FORMAT PLAIN ENCODE CSV",
                self.side_input_dir().display()
            )
        })
    }

    /// Registers the side input for the batch query, when the query reads
    /// it: the same file, read by DataFusion.
    pub async fn register(&self, ctx: &SessionContext) -> Result<()> {
        if self.side_input {
            let path = self.side_input_file();
            let path = path.to_str().context("side input path is not UTF-8")?;
            let schema = Schema::new(vec![
                Field::new("key", DataType::Int64, true),
                Field::new("value", DataType::Utf8, true),
            ]);
            let options = CsvReadOptions::new().has_header(true).schema(&schema);
            ctx.register_csv(SIDE_INPUT, path, options).await?;
        }
        Ok(())
    }

    /// Whether the query's output is a file sink rather than a view.
    pub fn writes_sink(&self) -> bool {
        self.sink_columns.is_some()
    }

    /// The statement that starts query `sql` as `name`: a materialized
    /// view, or a sink writing Parquet files partitioned by the query's
    /// `dt` and `hm` columns.
    pub fn create_sql(&self, name: &str, sql: &str) -> String {
        if self.writes_sink() {
            format!(
                "CREATE SINK {name} AS {sql} WITH (connector = 'filesystem', path = 'file://{}', \
                 partition_by = 'dt, hm') FORMAT PLAIN ENCODE PARQUET",
                self.sink_dir().display()
            )
        } else {
            format!("CREATE MATERIALIZED VIEW {name} AS {sql}")
        }
    }

    /// The statement that stops what [`Self::create_sql`] started.
    pub fn drop_sql(&self, name: &str) -> String {
        if self.writes_sink() {
            format!("DROP SINK {name}")
        } else {
            format!("DROP MATERIALIZED VIEW {name}")
        }
    }

    /// Every row of the sink's Parquet files, read by DataFusion, in the
    /// query's columns (the sink writes its partition columns too).
    pub async fn read_back(&self) -> Result<Vec<RecordBatch>> {
        let columns = self.sink_columns.context("the query writes no sink")?;
        let ctx = SessionContext::new();
        let path = format!("{}/", self.sink_dir().display());
        let frame = ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await?
            .select_columns(columns)?;
        Ok(frame.collect().await?)
    }
}

/// Writes the side input — `key,value` with keys 0..10 000, as Beam's
/// Nexmark prepares it (the value is the key's text) — to `file`.
fn write_side_input(file: &Path) -> Result<()> {
    let mut csv = String::from("key,value\n");
    for key in 0..SIDE_INPUT_KEYS {
        csv.push_str(&format!("{key},{key}\n"));
    }
    std::fs::write(file, csv)?;
    Ok(())
}

/// Waits until sink `id` has written out every epoch it staged (the
/// delivery task deletes what it wrote), failing when its job fails or
/// after `within`.
pub async fn wait_delivered(db: &Arc<Database>, id: u64, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if db.store.scan_changes(id, 0)?.is_empty() {
            return Ok(());
        }
        if let Some(JobState::Failed(error)) = db.runtime.job_state(id) {
            bail!("sink {id} failed: {error}");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("sink {id} still holds staged epochs after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
