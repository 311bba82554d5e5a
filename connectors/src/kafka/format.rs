//! Message values into rows: `FORMAT PLAIN ENCODE JSON` (one JSON object
//! per message, fields matched to columns by name), `ENCODE CSV` (one
//! record per message, fields in column order) and `ENCODE BYTES` (the
//! whole value in one `bytea` or `varchar` column) and `ENCODE AVRO` (see
//! `avro`). `FORMAT UPSERT` and `FORMAT DEBEZIUM` take `ENCODE JSON` only.
//!
//! A message that does not decode is skipped and counted, or fails the
//! source with `format.error-policy = 'fail'`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;

use super::avro::AvroValues;
use super::changelog::Format;
use crate::options::{ConnectorError, ErrorPolicy, Options};

/// How a message's value is encoded.
pub(crate) enum Encoding {
    Json,
    Csv {
        delimiter: u8,
    },
    Bytes,
    /// The writer schemas and their decoder.
    Avro(Box<AvroValues>),
}

/// A message that did not decode: its index in the batch, and why.
#[derive(Debug)]
pub(crate) struct BadMessage {
    pub index: usize,
    pub reason: String,
}

/// Decodes message values into the declared columns.
pub(crate) struct ValueDecoder {
    /// The declared columns.
    schema: SchemaRef,
    encoding: Encoding,
}

impl ValueDecoder {
    /// Reads `format`, `encode` and the encoding's options.
    pub(crate) fn from_options(
        options: &mut Options<'_>,
        schema: &SchemaRef,
    ) -> Result<(Self, ErrorPolicy, Format), ConnectorError> {
        let format_name = options.get("format").unwrap_or("plain");
        let format = Format::named(format_name).ok_or_else(|| {
            ConnectorError::Unsupported(format!(
                "FORMAT {} for a Kafka source (known: PLAIN, UPSERT, DEBEZIUM)",
                format_name.to_ascii_uppercase()
            ))
        })?;
        let encode = options.get("encode").unwrap_or("json");
        if format.is_changelog() && !encode.eq_ignore_ascii_case("json") {
            return Err(ConnectorError::Unsupported(format!(
                "FORMAT {} ENCODE {} (a changelog is read as ENCODE JSON)",
                format_name.to_ascii_uppercase(),
                encode.to_ascii_uppercase()
            )));
        }
        let encoding = match encode.to_ascii_lowercase().as_str() {
            "json" => Encoding::Json,
            "csv" => {
                let delimiter = match options.get("csv.delimiter") {
                    None => b',',
                    Some(d) if d.len() == 1 => d.as_bytes()[0],
                    Some(other) => {
                        return Err(ConnectorError::BadValue {
                            key: "csv.delimiter".into(),
                            value: other.into(),
                            reason: "must be one ASCII character".into(),
                        });
                    }
                };
                Encoding::Csv { delimiter }
            }
            "bytes" => {
                match schema.fields().as_ref() {
                    [field] if matches!(field.data_type(), DataType::Binary | DataType::Utf8) => {}
                    _ => {
                        return Err(ConnectorError::Unsupported(
                            "ENCODE BYTES with columns other than one bytea or varchar column (declare (value bytea))".into(),
                        ));
                    }
                }
                Encoding::Bytes
            }
            "avro" => Encoding::Avro(Box::new(AvroValues::from_options(options, schema)?)),
            other => {
                return Err(ConnectorError::Unsupported(format!(
                    "ENCODE {} for a Kafka source (known: JSON, CSV, BYTES, AVRO)",
                    other.to_ascii_uppercase()
                )));
            }
        };
        let policy = ErrorPolicy::from_options(options)?;
        Ok((
            Self {
                schema: Arc::clone(schema),
                encoding,
            },
            policy,
            format,
        ))
    }

    /// Whether what decoding needs answers (a schema registry).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        match &self.encoding {
            Encoding::Avro(avro) => avro.check(),
            _ => Ok(()),
        }
    }

    /// The rows of `values`, and the messages that did not decode. Rows
    /// come in message order, one per decoded message. An error when what
    /// decoding needs does not answer (a schema registry).
    pub(crate) fn decode(
        &mut self,
        values: &[&[u8]],
    ) -> Result<(RecordBatch, Vec<BadMessage>), String> {
        match &mut self.encoding {
            Encoding::Avro(avro) => avro.decode(values),
            Encoding::Bytes => Ok(self.bytes(values)),
            // The fast way: every value at once. Should one of them not
            // decode (or decode to other than one row), each on its own.
            Encoding::Json | Encoding::Csv { .. } => Ok(match self.text(values) {
                Ok(batch) if batch.num_rows() == values.len() => (batch, vec![]),
                _ => self.one_by_one(values),
            }),
        }
    }

    fn bytes(&self, values: &[&[u8]]) -> (RecordBatch, Vec<BadMessage>) {
        let column: ArrayRef = if self.schema.field(0).data_type() == &DataType::Binary {
            Arc::new(BinaryArray::from_iter_values(values.iter().copied()))
        } else {
            let mut bad = vec![];
            let text: Vec<&str> = values
                .iter()
                .enumerate()
                .filter_map(|(index, v)| match std::str::from_utf8(v) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        bad.push(BadMessage {
                            index,
                            reason: format!("not UTF-8 text: {e}"),
                        });
                        None
                    }
                })
                .collect();
            let column: ArrayRef = Arc::new(StringArray::from(text));
            return match RecordBatch::try_new(Arc::clone(&self.schema), vec![column]) {
                Ok(batch) => (batch, bad),
                Err(e) => self.all_bad(values, &e),
            };
        };
        match RecordBatch::try_new(Arc::clone(&self.schema), vec![column]) {
            Ok(batch) => (batch, vec![]),
            Err(e) => self.all_bad(values, &e),
        }
    }

    fn all_bad(&self, values: &[&[u8]], error: &ArrowError) -> (RecordBatch, Vec<BadMessage>) {
        let bad = (0..values.len())
            .map(|index| BadMessage {
                index,
                reason: error.to_string(),
            })
            .collect();
        (RecordBatch::new_empty(Arc::clone(&self.schema)), bad)
    }

    /// Decodes values of a text encoding, each followed by a newline.
    fn text(&self, values: &[&[u8]]) -> Result<RecordBatch, ArrowError> {
        let rows = values.len().max(1);
        let mut decoder: Box<dyn TextDecoder> = match &self.encoding {
            Encoding::Json => Box::new(
                datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&self.schema))
                    .with_batch_size(rows)
                    .build_decoder()?,
            ),
            Encoding::Csv { delimiter } => Box::new(
                datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(&self.schema))
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .with_batch_size(rows)
                    .build_decoder(),
            ),
            Encoding::Bytes | Encoding::Avro(_) => {
                return Err(ArrowError::ParseError("not a text encoding".into()));
            }
        };
        for value in values {
            feed(decoder.as_mut(), value)?;
            feed(decoder.as_mut(), b"\n")?;
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema))))
    }

    fn one_by_one(&self, values: &[&[u8]]) -> (RecordBatch, Vec<BadMessage>) {
        let mut batches = vec![];
        let mut bad = vec![];
        for (index, value) in values.iter().enumerate() {
            match self.text(&[value]) {
                Ok(batch) if batch.num_rows() == 1 => batches.push(batch),
                Ok(batch) => bad.push(BadMessage {
                    index,
                    reason: format!("holds {} rows, not one", batch.num_rows()),
                }),
                Err(e) => bad.push(BadMessage {
                    index,
                    reason: e.to_string(),
                }),
            }
        }
        match datafusion::arrow::compute::concat_batches(&self.schema, &batches) {
            Ok(batch) => (batch, bad),
            Err(e) => self.all_bad(values, &e),
        }
    }
}

/// The part of arrow's JSON and CSV push decoders this module uses.
trait TextDecoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError>;
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError>;
}

impl TextDecoder for datafusion::arrow::json::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        datafusion::arrow::json::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        datafusion::arrow::json::reader::Decoder::flush(self)
    }
}

impl TextDecoder for datafusion::arrow::csv::reader::Decoder {
    fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        datafusion::arrow::csv::reader::Decoder::decode(self, buf)
    }
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        datafusion::arrow::csv::reader::Decoder::flush(self)
    }
}

/// Feeds all of `buf`: a decoder takes less when its batch is full, which
/// [`ValueDecoder::text`] sizes so that it never is.
fn feed(decoder: &mut dyn TextDecoder, mut buf: &[u8]) -> Result<(), ArrowError> {
    while !buf.is_empty() {
        let taken = decoder.decode(buf)?;
        if taken == 0 {
            return Err(ArrowError::ParseError(
                "value holds more rows than messages".into(),
            ));
        }
        buf = &buf[taken..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use std::collections::BTreeMap;

    fn decoder(encode: &str) -> ValueDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let values = BTreeMap::from([("encode".to_string(), encode.to_string())]);
        let mut options = Options::new(&values);
        ValueDecoder::from_options(&mut options, &schema).unwrap().0
    }

    #[test]
    fn json_values_become_rows_and_bad_ones_are_reported() {
        let mut decoder = decoder("json");
        let values: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "a"}"#,
            br#"{"id": "x"}"#,
            br#"not json"#,
            br#"{"name": "c", "extra": true}"#,
        ];
        let (batch, bad) = decoder.decode(&values).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.value(0), 1);
        assert!(ids.is_null(1));
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn csv_values_fill_columns_in_order() {
        let mut decoder = decoder("csv");
        let values: Vec<&[u8]> = vec![b"1,a", b"2,b", b"x,c"];
        let (batch, bad) = decoder.decode(&values).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].index, 2);
    }

    #[test]
    fn two_objects_in_one_message_are_bad() {
        let mut decoder = decoder("json");
        let values: Vec<&[u8]> = vec![br#"{"id": 1} {"id": 2}"#, br#"{"id": 3}"#];
        let (batch, bad) = decoder.decode(&values).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].index, 0);
    }
}
