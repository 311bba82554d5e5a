//! File contents into rows: a whole Parquet file, or complete lines of a
//! CSV or JSON-lines file, with lines that do not decode skipped (and
//! named) or failing the source, as `format.error-policy` says.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;

use super::FileFormat;
use crate::columns::{Missing, by_name};

/// A line that did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// Its byte offset within the lines given.
    pub at: usize,
    pub reason: String,
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

    /// The rows of `lines` (complete CSV or JSON lines, without a header)
    /// in `schema`, and the lines that did not decode, which are left out.
    /// Whole blocks decode at once; only a block that fails is decoded
    /// line by line to find the bad ones.
    pub(crate) fn decode_lines(
        self,
        lines: &[u8],
        schema: &SchemaRef,
    ) -> Result<(RecordBatch, Vec<BadLine>), String> {
        if let Ok(batch) = self.decode(bytes::Bytes::copy_from_slice(lines), schema, false) {
            return Ok((batch, vec![]));
        }
        let mut good = vec![];
        let mut bad = vec![];
        let mut at = 0;
        for line in lines.split_inclusive(|b| *b == b'\n') {
            let blank = line.iter().all(u8::is_ascii_whitespace);
            if !blank {
                match self.decode(bytes::Bytes::copy_from_slice(line), schema, false) {
                    Ok(batch) => good.push(batch),
                    Err(reason) => bad.push(BadLine { at, reason }),
                }
            }
            at += line.len();
        }
        let batch = concat_batches(schema, &good).map_err(|e| e.to_string())?;
        Ok((batch, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn bad_json_lines_are_left_out_and_named() {
        let lines = b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": \"x\"}\nnot json\n{\"id\": 2}\n";
        let (batch, bad) = FileFormat::Json.decode_lines(lines, &schema()).unwrap();
        assert_eq!(
            pretty_format_batches(&[batch]).unwrap().to_string(),
            "+----+------+\n| id | name |\n+----+------+\n| 1  | a    |\n| 2  |      |\n+----+------+"
        );
        assert_eq!(bad.iter().map(|b| b.at).collect::<Vec<_>>(), vec![23, 35]);
    }

    #[test]
    fn bad_csv_lines_are_left_out() {
        let lines = b"1,a\nx,b\n3,c\n";
        let (batch, bad) = FileFormat::Csv.decode_lines(lines, &schema()).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].at, 4);
    }
}
