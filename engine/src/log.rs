//! Change logs: the ordered changes of a table or materialized view that
//! downstream jobs read, cut into epochs by seals.
//!
//! A table's log is appended by DML (and kept durably in `storage` until
//! every reader has committed past it); it is sealed for epoch E when the
//! barrier manager injects E. A materialized view's log is appended by its
//! materialize operator and sealed when that operator sees barrier E, so a
//! view on a view reflects, at every committed epoch, exactly what its input
//! view held at that epoch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::{EngineError, EngineResult, Epoch, StreamChunk};

#[derive(Debug, Default)]
struct LogState {
    /// Sequence number the next entry gets.
    next_seq: u64,
    /// Entries not yet read by every reader, oldest first.
    entries: VecDeque<(u64, StreamChunk)>,
    /// Epoch → sequence number the epoch ends before.
    seals: BTreeMap<Epoch, u64>,
    /// Set when the writer stopped for good (e.g. its job failed).
    closed: Option<String>,
}

/// The change log of one relation.
#[derive(Debug)]
pub struct ChangeLog {
    relation: String,
    state: Mutex<LogState>,
    changed: Notify,
}

/// Exclusive append access to a log; see [`ChangeLog::appender`].
pub struct LogAppender<'a> {
    log: &'a ChangeLog,
    state: MutexGuard<'a, LogState>,
}

impl LogAppender<'_> {
    /// The sequence number the next appended entry gets.
    pub fn next_seq(&self) -> u64 {
        self.state.next_seq
    }

    /// Appends an entry; returns its sequence number.
    pub fn append(&mut self, chunk: StreamChunk) -> u64 {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.state.entries.push_back((seq, chunk));
        self.log.changed.notify_waiters();
        seq
    }
}

impl ChangeLog {
    /// An empty log of `relation` whose next entry gets `next_seq`.
    pub fn new(relation: impl Into<String>, next_seq: u64) -> Self {
        Self {
            relation: relation.into(),
            state: Mutex::new(LogState {
                next_seq,
                ..Default::default()
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // Every change to the state is a single push or insert, so a
        // poisoned lock still holds a consistent log.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the log for appending: no seal can cut between what the holder
    /// reads of `next_seq` and what it appends (DML writes the durable copy
    /// of an entry while holding it).
    pub fn appender(&self) -> LogAppender<'_> {
        LogAppender {
            log: self,
            state: self.lock(),
        }
    }

    /// Puts back an entry read from durable storage after a restart.
    pub fn restore(&self, seq: u64, chunk: StreamChunk) {
        let mut state = self.lock();
        state.entries.push_back((seq, chunk));
        state.next_seq = state.next_seq.max(seq + 1);
    }

    /// The sequence number the next entry gets.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Ends epoch `epoch` at the current end of the log.
    pub fn seal(&self, epoch: Epoch) {
        let mut state = self.lock();
        let end = state.next_seq;
        state.seals.insert(epoch, end);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Where epoch `epoch` ended, if it was sealed and not yet trimmed.
    pub fn seal_end(&self, epoch: Epoch) -> Option<u64> {
        self.lock().seals.get(&epoch).copied()
    }

    /// Marks the log as ended: readers waiting for a seal get an error.
    pub fn close(&self, reason: impl Into<String>) {
        self.lock().closed = Some(reason.into());
        self.changed.notify_waiters();
    }

    /// Waits for epoch `epoch` to be sealed and returns the entries from
    /// `from` up to the seal, with the sequence number after them.
    pub async fn read_epoch(
        &self,
        from: u64,
        epoch: Epoch,
    ) -> EngineResult<(Vec<StreamChunk>, u64)> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.lock();
                if let Some(&end) = state.seals.get(&epoch) {
                    let first = state.entries.front().map_or(state.next_seq, |(s, _)| *s);
                    if from < first && from < end {
                        return Err(EngineError::Internal(format!(
                            "change log of {} was trimmed past {from} (oldest kept {first})",
                            self.relation
                        )));
                    }
                    let chunks = state
                        .entries
                        .iter()
                        .filter(|(seq, _)| *seq >= from && *seq < end)
                        .map(|(_, chunk)| chunk.clone())
                        .collect();
                    return Ok((chunks, end.max(from)));
                }
                if let Some(reason) = &state.closed {
                    return Err(EngineError::UpstreamFailed(format!(
                        "{} stopped: {reason}",
                        self.relation
                    )));
                }
            }
            notified.await;
        }
    }

    /// Forgets entries before `seq` and seals of epochs before `epoch`
    /// (every reader has committed past them).
    pub fn trim(&self, seq: u64, epoch: Epoch) {
        let mut state = self.lock();
        while state.entries.front().is_some_and(|(s, _)| *s < seq) {
            state.entries.pop_front();
        }
        state.seals = state.seals.split_off(&epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::operators::harness::chunk;

    #[tokio::test]
    async fn readers_get_what_was_sealed_into_an_epoch() {
        let log = ChangeLog::new("t", 10);
        log.appender().append(chunk(&[(Op::Insert, "a", 1)]));
        log.seal(Epoch(1));
        log.appender().append(chunk(&[(Op::Insert, "b", 2)]));
        let (chunks, end) = log.read_epoch(10, Epoch(1)).await.unwrap();
        assert_eq!((chunks.len(), end), (1, 11));
        let waiting = log.read_epoch(end, Epoch(2));
        let seal = async {
            tokio::task::yield_now().await;
            log.seal(Epoch(2));
        };
        let ((chunks, end), ()) = tokio::join!(async { waiting.await.unwrap() }, seal);
        assert_eq!((chunks.len(), end), (1, 12));
        log.trim(12, Epoch(2));
        assert!(log.read_epoch(10, Epoch(2)).await.is_err());
        log.close("dropped");
        assert!(log.read_epoch(12, Epoch(3)).await.is_err());
    }
}
