//! `ENCODE AVRO`: message values in Avro's binary encoding, decoded with
//! `arrow-avro`. The writer schema is either given inline (`avro.schema =
//! '{"type": "record", …}'`; values are bare Avro bodies, as Flink's `avro`
//! format writes them) or kept by a Confluent schema registry
//! (`schema.registry = 'http://…'`; values in the registry's wire format —
//! byte 0, the schema's id in four bytes big-endian, the body — and each
//! id's schema fetched once, `GET /schemas/ids/{id}`). Record fields fill
//! the declared columns of their name, cast to the declared types; a
//! column no field fills is null.

use std::collections::BTreeMap;

use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::format::BadMessage;
use super::registry::Registry;
use crate::columns::{Missing, by_name};
use crate::options::{ConnectorError, Options};

/// The first byte of a value in the registry's wire format.
const CONFLUENT_MAGIC: u8 = 0;
/// The id an inline schema goes by in the decoder's store.
const INLINE_ID: u32 = 0;

/// Where the writer schemas come from.
#[derive(Debug)]
enum WriterSchemas {
    Inline,
    Registry(Registry),
}

/// Decodes Avro values into the declared columns.
#[derive(Debug)]
pub(crate) struct AvroValues {
    declared: SchemaRef,
    writers: WriterSchemas,
    /// The writer schemas known so far, by id.
    known: BTreeMap<u32, String>,
    /// Registry ids that name no schema: their messages are bad.
    unknown: BTreeMap<u32, String>,
    /// A decoder of every known schema; rebuilt when one is added.
    decoder: Option<Decoder>,
}

impl AvroValues {
    /// Reads `avro.schema` or `schema.registry`.
    pub(crate) fn from_options(
        options: &mut Options<'_>,
        declared: &SchemaRef,
    ) -> Result<Self, ConnectorError> {
        let inline = options.get("avro.schema").map(str::to_string);
        let registry = options.get("schema.registry").map(str::to_string);
        let (writers, known) = match (inline, registry) {
            (Some(schema), None) => {
                // Refused now rather than at the first message.
                let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
                store
                    .set(Fingerprint::Id(INLINE_ID), AvroSchema::new(schema.clone()))
                    .and_then(|_| {
                        ReaderBuilder::new()
                            .with_writer_schema_store(store)
                            .build_decoder()
                    })
                    .map_err(|e| ConnectorError::BadValue {
                        key: "avro.schema".into(),
                        value: schema.chars().take(80).collect(),
                        reason: format!("not an Avro record schema: {e}"),
                    })?;
                (WriterSchemas::Inline, BTreeMap::from([(INLINE_ID, schema)]))
            }
            (None, Some(url)) => (
                WriterSchemas::Registry(Registry::new(&url)?),
                BTreeMap::new(),
            ),
            (Some(_), Some(_)) => {
                return Err(ConnectorError::BadValue {
                    key: "avro.schema".into(),
                    value: "…".into(),
                    reason: "give either avro.schema or schema.registry, not both".into(),
                });
            }
            (None, None) => {
                return Err(ConnectorError::Missing(
                    "schema.registry (ENCODE AVRO (schema.registry = 'http://…')) or avro.schema"
                        .into(),
                ));
            }
        };
        Ok(Self {
            declared: SchemaRef::clone(declared),
            writers,
            known,
            unknown: BTreeMap::new(),
            decoder: None,
        })
    }

    /// Whether the schema registry answers (CREATE SOURCE).
    pub(crate) fn check(&self) -> Result<(), ConnectorError> {
        match &self.writers {
            WriterSchemas::Inline => Ok(()),
            WriterSchemas::Registry(registry) => registry.check(),
        }
    }

    /// The rows of `values` and the messages that did not decode; an error
    /// when the schema registry cannot be asked for a schema.
    pub(crate) fn decode(
        &mut self,
        values: &[&[u8]],
    ) -> Result<(RecordBatch, Vec<BadMessage>), String> {
        let mut bad = vec![];
        let mut frames: Vec<(usize, std::borrow::Cow<'_, [u8]>)> = vec![];
        for (index, value) in values.iter().enumerate() {
            match self.frame(value)? {
                Ok(frame) => frames.push((index, frame)),
                Err(reason) => bad.push(BadMessage { index, reason }),
            }
        }
        let (rows, mut undecoded) = self.decode_frames(&frames);
        bad.append(&mut undecoded);
        bad.sort_by_key(|b| b.index);
        Ok((rows, bad))
    }

    /// `value` framed for the decoder (with the id of a known schema), or
    /// why it cannot be.
    fn frame<'a>(
        &mut self,
        value: &'a [u8],
    ) -> Result<Result<std::borrow::Cow<'a, [u8]>, String>, String> {
        if let WriterSchemas::Inline = self.writers {
            let mut framed = Vec::with_capacity(value.len() + 5);
            framed.push(CONFLUENT_MAGIC);
            framed.extend_from_slice(&INLINE_ID.to_be_bytes());
            framed.extend_from_slice(value);
            return Ok(Ok(framed.into()));
        }
        let id = match value {
            [CONFLUENT_MAGIC, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => {
                return Ok(Err(
                    "not in the schema registry's wire format (byte 0, then a schema id)".into(),
                ));
            }
        };
        if let Some(reason) = self.unknown.get(&id) {
            return Ok(Err(reason.clone()));
        }
        if !self.known.contains_key(&id) {
            let WriterSchemas::Registry(registry) = &self.writers else {
                return Ok(Err(format!("schema id {id} is unknown")));
            };
            match registry.fetch(id)? {
                Ok(schema) => {
                    self.known.insert(id, schema);
                    self.decoder = None;
                }
                Err(reason) => {
                    self.unknown.insert(id, reason.clone());
                    return Ok(Err(reason));
                }
            }
        }
        Ok(Ok(value.into()))
    }

    /// A decoder of the known schemas.
    fn decoder(&mut self, batch_size: usize) -> Result<&mut Decoder, String> {
        if self
            .decoder
            .as_ref()
            .is_none_or(|d| d.batch_size() < batch_size)
        {
            let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
            for (id, schema) in &self.known {
                store
                    .set(Fingerprint::Id(*id), AvroSchema::new(schema.clone()))
                    .map_err(|e| format!("schema id {id}: {e}"))?;
            }
            let decoder = ReaderBuilder::new()
                .with_batch_size(batch_size.max(1024))
                .with_writer_schema_store(store)
                .build_decoder()
                .map_err(|e| e.to_string())?;
            self.decoder = Some(decoder);
        }
        self.decoder
            .as_mut()
            .ok_or_else(|| "no Avro decoder".to_string())
    }

    /// Decodes framed values: all at once, or should that fail, each on its
    /// own (with a fresh decoder after one that failed).
    fn decode_frames(
        &mut self,
        frames: &[(usize, std::borrow::Cow<'_, [u8]>)],
    ) -> (RecordBatch, Vec<BadMessage>) {
        let declared = SchemaRef::clone(&self.declared);
        let empty = || RecordBatch::new_empty(SchemaRef::clone(&declared));
        if frames.is_empty() {
            return (empty(), vec![]);
        }
        let all: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        if let Ok(rows) = self.decode_bytes(&all, frames.len())
            && rows.num_rows() == frames.len()
        {
            return (rows, vec![]);
        }
        let mut batches = vec![];
        let mut bad = vec![];
        for (index, frame) in frames {
            self.decoder = None;
            match self.decode_bytes(frame, 1) {
                Ok(rows) if rows.num_rows() == 1 => batches.push(rows),
                Ok(rows) => bad.push(BadMessage {
                    index: *index,
                    reason: format!("holds {} Avro records, not one", rows.num_rows()),
                }),
                Err(reason) => bad.push(BadMessage {
                    index: *index,
                    reason,
                }),
            }
        }
        self.decoder = None;
        match datafusion::arrow::compute::concat_batches(&self.declared, &batches) {
            Ok(rows) => (rows, bad),
            Err(e) => {
                let reason = e.to_string();
                let bad = frames
                    .iter()
                    .map(|(index, _)| BadMessage {
                        index: *index,
                        reason: reason.clone(),
                    })
                    .collect();
                (empty(), bad)
            }
        }
    }

    /// Every record in `bytes`, in the declared columns.
    fn decode_bytes(&mut self, mut bytes: &[u8], records: usize) -> Result<RecordBatch, String> {
        let declared = SchemaRef::clone(&self.declared);
        let decoder = self.decoder(records)?;
        let mut batches = vec![];
        while !bytes.is_empty() {
            let taken = decoder.decode(bytes).map_err(|e| e.to_string())?;
            bytes = &bytes[taken..];
            // A full batch, or a change of writer schema, stops the decoder.
            match decoder.flush().map_err(|e| e.to_string())? {
                Some(batch) => batches.push(by_name(&batch, &declared, Missing::Null, "record")?),
                None if taken == 0 => return Err("a truncated Avro record".into()),
                None => {}
            }
        }
        if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(by_name(&batch, &declared, Missing::Null, "record")?);
        }
        datafusion::arrow::compute::concat_batches(&declared, &batches).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn inline(schema: &str, declared: &[(&str, DataType)]) -> AvroValues {
        let declared = Arc::new(Schema::new(
            declared
                .iter()
                .map(|(name, t)| Field::new(*name, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let values = Map::from([("avro.schema".to_string(), schema.to_string())]);
        AvroValues::from_options(&mut Options::new(&values), &declared).unwrap()
    }

    const SCHEMA: &str = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#;

    #[test]
    fn bare_bodies_decode_and_bad_ones_are_reported() {
        let mut avro = inline(
            SCHEMA,
            &[
                ("name", DataType::Utf8),
                ("id", DataType::Int64),
                ("missing", DataType::Int64),
            ],
        );
        // Zigzag varints: 1 is 0x02, 2 is 0x04; a string is its length
        // then its bytes.
        let values: Vec<&[u8]> = vec![
            &[0x02, 0x02, b'a'],
            &[0x06],
            &[0x04, 0x00],
            &[0x08, 0x00, 0x55],
        ];
        let (rows, bad) = avro.decode(&values).unwrap();
        assert_eq!(rows.num_rows(), 2);
        assert_eq!(rows.column(0).as_string::<i32>().value(0), "a");
        let ids = rows.column(1).as_primitive::<Int64Type>();
        assert_eq!((ids.value(0), ids.value(1)), (1, 2));
        assert_eq!(rows.column(2).null_count(), 2);
        assert_eq!(bad.iter().map(|b| b.index).collect::<Vec<_>>(), [1, 3]);
        // Good values after bad ones decode on the next call too.
        let (rows, bad) = avro.decode(&[&[0x0a, 0x02, b'z']]).unwrap();
        assert_eq!((rows.num_rows(), bad.len()), (1, 0));
    }

    #[test]
    fn a_schema_that_is_not_a_record_is_refused() {
        let declared = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        for schema in [r#"{"type": "nope"}"#, "not json"] {
            let values = Map::from([("avro.schema".to_string(), schema.to_string())]);
            let error = AvroValues::from_options(&mut Options::new(&values), &declared)
                .unwrap_err()
                .to_string();
            assert!(error.contains("avro.schema"), "{error}");
        }
    }
}
