//! Which partitions a Kafka source reads and where: discovery of new
//! partitions, where each starts (`scan.startup.mode`) and, for a bounded
//! source, where each stops and whether all are read.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::client::topic_partitions;
use super::{KafkaReader, MAX_BACKOFF, METADATA_TIMEOUT, Startup};

impl KafkaReader {
    /// The topic's partitions, as the broker knows them now.
    pub(super) fn partitions(&self, timeout: Duration) -> Result<Vec<i32>, String> {
        topic_partitions(self.consumer.client(), &self.topic, timeout)
    }

    /// Looks up the topic's partitions when due and assigns new ones. A
    /// bounded source reads the partitions of its first start only.
    pub(super) fn discover(&mut self) {
        let now = Instant::now();
        if self.next_discovery.is_some_and(|at| now < at) {
            return;
        }
        if self.bounded
            && self
                .offsets
                .stops()
                .is_some_and(|stops| self.assigned.len() == stops.len())
        {
            return;
        }
        // Round trips to the broker: the runtime's other tasks go on.
        let found = crate::blocking::blocking(|| {
            self.partitions(METADATA_TIMEOUT)
                .and_then(|all| self.assign_new(&all))
        });
        match found {
            Ok(()) => {
                self.backoff = Duration::from_millis(200);
                self.next_discovery = Some(now + self.discovery_every);
                self.unavailable = None;
            }
            Err(reason) => {
                warn!(topic = %self.topic, servers = %self.servers, retry_in = ?self.backoff, "kafka source: {reason}");
                self.unavailable = Some(format!("kafka source at {}: {reason}", self.servers));
                self.next_discovery = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Assigns the partitions among `all` that are this reader's share and
    /// not assigned yet.
    fn assign_new(&mut self, all: &[i32]) -> Result<(), String> {
        let own: Vec<i32> = all
            .iter()
            .copied()
            .filter(|&p| self.share.owns(p as u32))
            .collect();
        if own.is_empty() && !self.warned_no_partition {
            self.warned_no_partition = true;
            warn!(
                topic = %self.topic, partitions = all.len(), subtask = self.share.subtask,
                parallelism = self.share.parallelism,
                "kafka source reader has no partition of its own: its event time holds \
                 windows downstream back unless source.idle-timeout-ms is set; a view \
                 parallelism no larger than the topic's partitions avoids this"
            );
        }
        if self.bounded && self.offsets.stops().is_none() {
            // All or none: a partial list would end the source early.
            let ends = own
                .iter()
                .map(|&partition| Ok((partition, self.end_of(partition)?)))
                .collect::<Result<Vec<_>, String>>()?;
            info!(topic = %self.topic, stops = ?ends, "bounded kafka source reads partitions up to these offsets");
            self.offsets.set_stops(ends);
        }
        let new: Vec<i32> = own
            .into_iter()
            .filter(|p| !self.assigned.contains(p))
            .filter(|p| {
                !self.bounded
                    || self
                        .offsets
                        .stops()
                        .is_some_and(|stops| stops.contains_key(p))
            })
            .collect();
        let first_start = self.offsets.is_fresh();
        if new.is_empty() {
            self.offsets.set_started();
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        let mut resolved = vec![];
        for &partition in &new {
            let offset = match self.offsets.next(partition) {
                Some(next) => Offset::Offset(next),
                None => {
                    let start = self.start_of(partition, first_start)?;
                    if let Offset::Offset(offset) = start {
                        resolved.push((partition, offset));
                    }
                    start
                }
            };
            list.add_partition_offset(&self.topic, partition, offset)
                .map_err(|e| e.to_string())?;
        }
        self.consumer
            .incremental_assign(&list)
            .map_err(|e| format!("cannot assign partitions {new:?}: {e}"))?;
        for (partition, offset) in resolved {
            self.offsets.set_next(partition, offset);
        }
        // Only once assigned: a failed try resolves the start again.
        self.offsets.set_started();
        info!(topic = %self.topic, partitions = ?new, "kafka source reads new partitions");
        self.assigned.extend(new);
        self.assigned.sort_unstable();
        Ok(())
    }

    /// Where a partition without a committed offset starts. Only the
    /// partitions there are when the source first starts follow
    /// `scan.startup.mode`; later ones start at their beginning. A start
    /// that is not the beginning is resolved to an offset and kept, so a
    /// restart before the first message continues from the same place.
    fn start_of(&self, partition: i32, first_start: bool) -> Result<Offset, String> {
        let offset = match self.startup {
            _ if !first_start => return Ok(Offset::Beginning),
            Startup::Earliest => return Ok(Offset::Beginning),
            Startup::Latest => self.end_of(partition)?,
            Startup::Timestamp(millis) => {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&self.topic, partition, Offset::Offset(millis))
                    .map_err(|e| e.to_string())?;
                let found = self
                    .consumer
                    .offsets_for_times(list, METADATA_TIMEOUT)
                    .map_err(|e| format!("cannot look up offsets by time: {e}"))?;
                match found
                    .find_partition(&self.topic, partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(offset)) => offset,
                    // No message that late yet: from the end.
                    _ => self.end_of(partition)?,
                }
            }
        };
        Ok(Offset::Offset(offset))
    }

    /// The offset the next message of `partition` will get (its high
    /// watermark).
    fn end_of(&self, partition: i32) -> Result<i64, String> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)
            .map_err(|e| format!("cannot read the end of partition {partition}: {e}"))?
            .1)
    }

    /// Stops fetching `partition` (a bounded source read it to its stop).
    pub(super) fn pause(&self, partition: i32) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        if let Err(error) = self.consumer.pause(&list) {
            warn!(topic = %self.topic, partition, "kafka source cannot pause a finished partition: {error}");
        }
    }

    /// Whether a bounded source has read every partition up to its stop.
    /// A partition whose last offsets hold no message (transaction
    /// markers) counts as done once the consumer's position passed them.
    pub(super) fn reached_stops(&self) -> bool {
        let Some(stops) = self.offsets.stops().filter(|_| self.bounded) else {
            return false;
        };
        if self.assigned.len() < stops.len() {
            return false;
        }
        let behind: Vec<i32> = stops
            .iter()
            .filter(|&(&p, &stop)| self.offsets.next(p).unwrap_or(0) < stop)
            .map(|(&p, _)| p)
            .collect();
        if behind.is_empty() {
            return true;
        }
        let Ok(positions) = self.consumer.position() else {
            return false;
        };
        behind.iter().all(|p| {
            matches!(
                positions.find_partition(&self.topic, *p).map(|e| e.offset()),
                Some(Offset::Offset(at)) if at >= stops[p]
            )
        })
    }
}
