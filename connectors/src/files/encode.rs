//! Rows into file contents: JSON lines, CSV with a header, Parquet.

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use crate::options::ConnectorError;

/// How a file holds rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Json,
    Csv,
    Parquet,
}

impl FileFormat {
    /// `ENCODE name`.
    pub(crate) fn named(name: &str) -> Result<Self, ConnectorError> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Ok(FileFormat::Json),
            "csv" => Ok(FileFormat::Csv),
            "parquet" => Ok(FileFormat::Parquet),
            other => Err(ConnectorError::Unsupported(format!(
                "ENCODE {} for files (known: JSON, CSV, PARQUET)",
                other.to_ascii_uppercase()
            ))),
        }
    }

    /// The file name extension.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Csv => "csv",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The whole contents of a file holding `batch`. The same rows give
    /// the same bytes, so writing a file again is harmless.
    pub(crate) fn encode(self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self {
            FileFormat::Json => {
                let mut writer = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
                writer.write(batch).map_err(|e| e.to_string())?;
                writer.finish().map_err(|e| e.to_string())?;
            }
            FileFormat::Csv => {
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            FileFormat::Parquet => {
                let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), None)
                    .map_err(|e| e.to_string())?;
                writer.write(batch).map_err(|e| e.to_string())?;
                writer.close().map_err(|e| e.to_string())?;
            }
        }
        Ok(out)
    }
}
