//! A Kafka source's position: the next offset of each partition it read
//! (and, for a bounded source, where each partition stops), stored with
//! every epoch, and the row key made of partition and offset.

use std::collections::BTreeMap;

use runnel_engine::{EngineError, EngineResult};

/// Bits of the row key that hold the offset; the partition (the split, as
/// the engine's per-split watermarks read it) is above them.
const OFFSET_BITS: u32 = runnel_engine::runtime::connector::SPLIT_SHIFT;

/// The row key of the message at `offset` in `partition`: unique within
/// the source and the same after a restart.
pub(crate) fn row_key(partition: i32, offset: i64) -> EngineResult<i64> {
    if !(0..1 << (63 - OFFSET_BITS)).contains(&partition)
        || !(0..1 << OFFSET_BITS).contains(&offset)
    {
        return Err(EngineError::Internal(format!(
            "kafka message at partition {partition} offset {offset}: a row key holds partitions \
             below {} and offsets below 2^{OFFSET_BITS}",
            1 << (63 - OFFSET_BITS)
        )));
    }
    Ok(((partition as i64) << OFFSET_BITS) | offset)
}

/// The next offset to read, per partition, and for a bounded source the
/// offset each partition stops before. One reader's: a source read in
/// parallel keeps one of these per reader, each over its own partitions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PartitionOffsets {
    next: BTreeMap<i32, i64>,
    /// None until a bounded source first lists its partitions; then the
    /// end of each of the reader's (`scan.bounded.mode = 'latest-offset'`),
    /// which may be none.
    stop: Option<BTreeMap<i32, i64>>,
    /// Whether the reader ever assigned its partitions: after that,
    /// `scan.startup.mode` no longer applies, even to a reader that had no
    /// partition to read then.
    started: bool,
}

impl PartitionOffsets {
    /// The next offset of `partition`, if the source has one.
    pub(crate) fn next(&self, partition: i32) -> Option<i64> {
        self.next.get(&partition).copied()
    }

    pub(crate) fn set_next(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset);
    }

    /// Where each partition of a bounded source stops, once known.
    pub(crate) fn stops(&self) -> Option<&BTreeMap<i32, i64>> {
        self.stop.as_ref()
    }

    /// Records where a bounded source's partitions stop (all at once:
    /// a partial list would end the source early).
    pub(crate) fn set_stops(&mut self, stops: impl IntoIterator<Item = (i32, i64)>) {
        self.stop = Some(stops.into_iter().collect());
    }

    /// True until the reader first assigned its partitions, when it
    /// resolved `scan.startup.mode`.
    pub(crate) fn is_fresh(&self) -> bool {
        !self.started && self.next.is_empty()
    }

    /// The reader assigned its partitions (if it had any).
    pub(crate) fn set_started(&mut self) {
        self.started = true;
    }

    /// As stored: `{"partitions": {"0": 42, …}, "started": true}`, plus
    /// `"stop": {…}` when the source is bounded.
    pub(crate) fn encode(&self) -> EngineResult<Vec<u8>> {
        let as_json = |offsets: &BTreeMap<i32, i64>| -> serde_json::Map<String, serde_json::Value> {
            offsets
                .iter()
                .map(|(p, o)| (p.to_string(), serde_json::Value::from(*o)))
                .collect()
        };
        let mut value = serde_json::json!({ "partitions": as_json(&self.next) });
        if let Some(stop) = &self.stop {
            value["stop"] = serde_json::Value::Object(as_json(stop));
        }
        if self.started {
            value["started"] = serde_json::Value::Bool(true);
        }
        serde_json::to_vec(&value)
            .map_err(|e| EngineError::Internal(format!("kafka source position: {e}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> EngineResult<Self> {
        let bad =
            |what: String| EngineError::Internal(format!("stored kafka source position: {what}"));
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let offsets = |key: &str| -> EngineResult<Option<BTreeMap<i32, i64>>> {
            let Some(found) = value.get(key) else {
                return Ok(None);
            };
            let map = found
                .as_object()
                .ok_or_else(|| bad(format!("{key} is not an object")))?;
            let mut offsets = BTreeMap::new();
            for (partition, offset) in map {
                let partition: i32 = partition
                    .parse()
                    .map_err(|_| bad(format!("partition {partition}")))?;
                let offset = offset
                    .as_i64()
                    .ok_or_else(|| bad(format!("offset {offset}")))?;
                offsets.insert(partition, offset);
            }
            Ok(Some(offsets))
        };
        Ok(Self {
            next: offsets("partitions")?.ok_or_else(|| bad("no partitions".into()))?,
            stop: offsets("stop")?,
            started: value
                .get("started")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_encoding() {
        let mut offsets = PartitionOffsets::default();
        assert!(offsets.is_fresh());
        offsets.set_next(0, 17);
        offsets.set_next(3, 1 << 40);
        let back = PartitionOffsets::decode(&offsets.encode().unwrap()).unwrap();
        assert_eq!(back.next(0), Some(17));
        assert_eq!(back.next(3), Some(1 << 40));
        assert_eq!(back.next(1), None);
        assert!(!back.is_fresh());
        assert_eq!(back, offsets);
        assert!(back.stops().is_none());

        offsets.set_stops([(0, 20), (1, 0)]);
        let back = PartitionOffsets::decode(&offsets.encode().unwrap()).unwrap();
        let stops = back.stops().unwrap();
        assert_eq!((stops.get(&0), stops.get(&1)), (Some(&20), Some(&0)));
        assert_eq!(back, offsets);
    }

    #[test]
    fn a_reader_without_partitions_keeps_that_it_started() {
        // A reader of a parallel source that owns no partition yet.
        let mut offsets = PartitionOffsets::default();
        offsets.set_stops([]);
        offsets.set_started();
        assert!(!offsets.is_fresh());
        let back = PartitionOffsets::decode(&offsets.encode().unwrap()).unwrap();
        assert!(!back.is_fresh());
        assert_eq!(back.stops().map(|s| s.len()), Some(0));
        assert_eq!(back, offsets);
        assert!(PartitionOffsets::decode(br#"{"partitions": {}, "stop": 3}"#).is_err());
    }

    #[test]
    fn row_keys_are_unique_per_partition_and_offset() {
        assert_ne!(row_key(0, 1).unwrap(), row_key(1, 0).unwrap());
        assert_eq!(row_key(2, 5).unwrap(), (2 << 48) | 5);
        assert!(row_key(-1, 0).is_err());
        assert!(row_key(0, 1 << 48).is_err());
        assert!(row_key(32_768, 0).is_err());
    }
}
