//! Sources and sinks of Runnel behind the engine's connector traits
//! ([`runnel_engine::runtime::connector`]). Here so far: `datagen` (rows
//! from per-column sequence and random generators), `nexmark` (the
//! Nexmark person, auction and bid events, deterministic from a seed) and
//! `file` (the lines of a local text file): these address rows by position,
//! so a restart resumes exactly where the last committed epoch ended;
//! `socket` (lines from a TCP server, at most once); and `kafka` (a topic's
//! partitions, their offsets committed with each epoch, so exactly once).

mod blocking;
mod columns;
mod datagen;
mod files;
mod kafka;
mod lines;
mod nexmark;
mod options;
mod random;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use runnel_engine::runtime::SinkWriter;
use runnel_engine::runtime::connector::{
    ConnectorFactory, NumberedRows, RowGenerator, SourceReader, SourceShare,
};
use runnel_engine::{EngineError, EngineResult};

pub use nexmark::{NexmarkGenerator, NexmarkTable};
pub use options::ConnectorError;

/// Every connector this build knows.
#[derive(Debug, Default)]
pub struct Connectors;

impl Connectors {
    /// Checks a source definition (CREATE SOURCE): its options, and that
    /// what it reads from is there (a Kafka broker and topic). `schema` is
    /// the declared columns.
    pub fn validate(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
    ) -> Result<(), ConnectorError> {
        let keyed = with_row_key(schema).map_err(|e| ConnectorError::Unsupported(e.to_string()))?;
        open(options, &keyed, SourceShare::WHOLE, true).map(|_| ())
    }

    /// Whether a source with `options` can be read by several parallel
    /// readers, each taking a share of its splits: an append-only Kafka
    /// source (its partitions) and a file source (byte ranges of its
    /// files, or whole files when it watches a folder). A changelog source
    /// is read by one reader, as its upserts by key are ordered only
    /// within one stream.
    pub fn reads_in_parallel(options: &BTreeMap<String, String>) -> bool {
        let is = |key: &str, value: &str| {
            options
                .get(key)
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        };
        (is("connector", "kafka") && !is("format", "upsert") && !is("format", "debezium"))
            || is("connector", "filesystem")
    }

    /// Checks a sink definition (CREATE SINK): its options, and that what
    /// it writes to is there. `schema` is the written columns, `key` the
    /// sink's primary key among them (None: append-only).
    pub fn validate_sink(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        key: Option<&[usize]>,
    ) -> Result<(), ConnectorError> {
        open_sink(options, schema, key, true).map(|_| ())
    }
}

/// Opens a sink writer; `check` also looks at the outside system.
fn open_sink(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    key: Option<&[usize]>,
    check: bool,
) -> Result<Box<dyn SinkWriter>, ConnectorError> {
    let mut options = options::Options::new(options);
    let connector = options.required("connector")?;
    match connector.to_ascii_lowercase().as_str() {
        "kafka" => {
            let writer = kafka::KafkaWriter::new(&mut options, schema, key)?;
            options.finish_accepting(kafka::SINK_OPTIONS)?;
            if check {
                writer.check()?;
            }
            Ok(Box::new(writer))
        }
        "filesystem" => {
            let writer = files::FileWriter::new(&mut options, schema, key)?;
            options.finish_accepting(files::SINK_OPTIONS)?;
            if check {
                writer.check()?;
            }
            Ok(Box::new(writer))
        }
        "blackhole" => {
            options.finish_accepting(&["connector"])?;
            Ok(Box::new(Blackhole))
        }
        other => Err(ConnectorError::Unsupported(format!(
            "sink connector '{other}' (known: kafka, filesystem, blackhole)"
        ))),
    }
}

/// `connector = 'blackhole'`: a sink that writes nothing. The planner ends
/// such a sink's job in the engine's blackhole operator, so no change ever
/// reaches this writer; it is here so the options are checked as any
/// sink's are.
struct Blackhole;

impl SinkWriter for Blackhole {
    fn write_epoch(
        &mut self,
        _epoch: runnel_engine::Epoch,
        _changes: &runnel_engine::StreamChunk,
    ) -> Result<(), runnel_engine::runtime::SinkWriteError> {
        Ok(())
    }
}

/// The declared columns followed by the hidden row key, as the engine
/// passes them.
fn with_row_key(schema: &SchemaRef) -> EngineResult<SchemaRef> {
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        "_row_key",
        datafusion::arrow::datatypes::DataType::Int64,
        false,
    )));
    Ok(Arc::new(datafusion::arrow::datatypes::Schema::new(fields)))
}

/// Opens a reader of `share` of a source over `schema` (declared columns
/// then the row key); `check` also looks at the outside system it reads.
fn open(
    options: &BTreeMap<String, String>,
    schema: &SchemaRef,
    share: SourceShare,
    check: bool,
) -> Result<Box<dyn SourceReader>, ConnectorError> {
    if share != SourceShare::WHOLE && !Connectors::reads_in_parallel(options) {
        return Err(ConnectorError::Unsupported(format!(
            "reading this source with {} parallel readers (only append-only Kafka sources and \
             file sources split their input across readers)",
            share.parallelism
        )));
    }
    let declared = schema.fields().len().saturating_sub(1);
    let declared = Arc::new(
        schema
            .project(&(0..declared).collect::<Vec<_>>())
            .map_err(|e| ConnectorError::Unsupported(e.to_string()))?,
    );
    let mut options = options::Options::new(options);
    let connector = options.required("connector")?;
    let generator: Box<dyn RowGenerator> = match connector.to_ascii_lowercase().as_str() {
        "datagen" => Box::new(datagen::DatagenGenerator::new(&mut options, &declared)?),
        "nexmark" => Box::new(NexmarkGenerator::from_options(&mut options, &declared)?),
        "file" => Box::new(lines::FileLines::new(&mut options, &declared)?),
        "socket" => Box::new(lines::SocketLines::new(&mut options, &declared)?),
        "filesystem" => {
            let source = files::FileSource::new(&mut options, schema, share)?;
            options.finish_accepting(files::SOURCE_OPTIONS)?;
            if check {
                source.check()?;
            }
            return Ok(Box::new(source));
        }
        "kafka" => {
            // Unknown options first: a typo is a better message than a
            // broker that cannot be reached with the wrong settings.
            let reader = kafka::KafkaReader::new(&mut options, schema, share)?;
            options.finish_accepting(kafka::OPTIONS)?;
            if check {
                reader.check()?;
            }
            return Ok(Box::new(reader));
        }
        other => {
            return Err(ConnectorError::Unsupported(format!(
                "connector '{other}' (known: datagen, nexmark, file, socket, kafka, filesystem)"
            )));
        }
    };
    options.finish()?;
    Ok(Box::new(NumberedRows::new(generator, Arc::clone(schema))))
}

impl ConnectorFactory for Connectors {
    fn open(
        &self,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        share: SourceShare,
    ) -> EngineResult<Box<dyn SourceReader>> {
        open(options, schema, share, false).map_err(|e| EngineError::Internal(e.to_string()))
    }

    fn open_sink(
        &self,
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
        key: Option<&[usize]>,
    ) -> EngineResult<Box<dyn SinkWriter>> {
        open_sink(options, schema, key, false).map_err(|e| EngineError::Internal(e.to_string()))
    }
}
