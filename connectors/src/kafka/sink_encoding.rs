//! How a Kafka sink encodes rows into message keys and values: `ENCODE
//! JSON` (an object per row, every column present) or `ENCODE AVRO` (the
//! Avro schema derived from the columns by `arrow-avro`). With
//! `schema.registry = 'http://…'` the Avro schemas are registered under
//! `<topic>-value` and `<topic>-key` and each message is in the registry's
//! wire format (byte 0, the schema id, the body); without, a message is the
//! bare Avro body.

use arrow_avro::schema::{AvroSchema, FingerprintStrategy};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use datafusion::arrow::array::RecordBatch;
use runnel_engine::runtime::SinkWriteError;

use super::registry::Registry;
use crate::options::{ConnectorError, Options};

/// Which part of a message rows are encoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Key,
    Value,
}

/// A sink's row encoding.
#[derive(Debug)]
pub(crate) enum RowEncoding {
    Json,
    Avro(AvroRows),
}

/// Avro encoding of keys and values, their schemas registered when the
/// first rows come.
#[derive(Debug)]
pub(crate) struct AvroRows {
    topic: String,
    registry: Option<Registry>,
    /// The schema ids of the key and value, once registered.
    ids: [Option<u32>; 2],
}

impl RowEncoding {
    /// Reads `encode` and, for Avro, `schema.registry`.
    pub(crate) fn from_options(
        options: &mut Options<'_>,
        topic: &str,
    ) -> Result<Self, ConnectorError> {
        let encode = options.get("encode").unwrap_or("json");
        match encode.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "avro" => {
                let registry = match options.get("schema.registry") {
                    Some(url) => Some(Registry::new(url)?),
                    None => None,
                };
                Ok(Self::Avro(AvroRows {
                    topic: topic.to_string(),
                    registry,
                    ids: [None, None],
                }))
            }
            other => Err(ConnectorError::Unsupported(format!(
                "ENCODE {} for a Kafka sink (known: JSON, AVRO)",
                other.to_ascii_uppercase()
            ))),
        }
    }

    /// Whether what encoding needs answers (a schema registry).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        match self {
            Self::Avro(AvroRows {
                registry: Some(registry),
                ..
            }) => registry.check(),
            _ => Ok(()),
        }
    }

    /// Each row of `batch`, encoded as `part` of its message.
    pub(crate) fn rows(
        &mut self,
        batch: &RecordBatch,
        part: Part,
    ) -> Result<Vec<Vec<u8>>, SinkWriteError> {
        match self {
            Self::Json => Ok(json_rows(batch)?
                .into_iter()
                .map(String::into_bytes)
                .collect()),
            Self::Avro(avro) => avro.rows(batch, part),
        }
    }
}

impl AvroRows {
    fn rows(&mut self, batch: &RecordBatch, part: Part) -> Result<Vec<Vec<u8>>, SinkWriteError> {
        let failed = |e: &dyn std::fmt::Display| {
            SinkWriteError::Failed(format!("encoding rows as Avro: {e}"))
        };
        let schema = batch.schema().as_ref().clone();
        let encoder = match &self.registry {
            None => WriterBuilder::new(schema).build_encoder::<AvroBinaryFormat>(),
            Some(registry) => {
                let slot = &mut self.ids[part as usize];
                let id = match *slot {
                    Some(id) => id,
                    None => {
                        let avro = AvroSchema::try_from(&schema).map_err(|e| failed(&e))?;
                        let subject = match part {
                            Part::Key => format!("{}-key", self.topic),
                            Part::Value => format!("{}-value", self.topic),
                        };
                        let id = registry
                            .register(&subject, &avro.json_string)
                            .map_err(SinkWriteError::Unavailable)?;
                        *slot = Some(id);
                        id
                    }
                };
                WriterBuilder::new(schema)
                    .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                    .build_encoder::<AvroSoeFormat>()
            }
        };
        let mut encoder = encoder.map_err(|e| failed(&e))?;
        encoder.encode(batch).map_err(|e| failed(&e))?;
        Ok(encoder.flush().iter().map(|row| row.to_vec()).collect())
    }
}

/// Each row of `batch` as a JSON object, every column present.
pub(crate) fn json_rows(batch: &RecordBatch) -> Result<Vec<String>, SinkWriteError> {
    let mut buffer = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buffer);
        writer
            .write(batch)
            .map_err(|e| SinkWriteError::Failed(format!("encoding rows as JSON: {e}")))?;
        writer
            .finish()
            .map_err(|e| SinkWriteError::Failed(format!("encoding rows as JSON: {e}")))?;
    }
    let text = String::from_utf8(buffer)
        .map_err(|e| SinkWriteError::Failed(format!("JSON is not UTF-8: {e}")))?;
    // Newlines inside values are escaped, so each line is one row.
    Ok(text.lines().map(str::to_string).collect())
}
