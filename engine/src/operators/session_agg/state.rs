//! The stored form of a session aggregation: one record per open session
//! under its key and start, the watermark as of the last barrier, and
//! reading both back (after a restart, or when a key is touched again).

use std::collections::BTreeSet;

use datafusion::arrow::array::ArrayRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};
use runnel_storage::state_table::key_group;

use super::{KeySessions, Session, SessionAggOperator};
use crate::{EngineError, EngineResult};

/// The prefix of every session record of `key`.
fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Where the session of `key` starting at `start` is stored: sessions of
/// a key sort by start.
pub(super) fn record_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut out = key_prefix(key);
    out.extend_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    out
}

fn int(value: Option<ScalarValue>) -> EngineResult<i64> {
    match value {
        Some(ScalarValue::Int64(Some(v))) => Ok(v),
        other => Err(EngineError::Internal(format!(
            "session state holds {other:?} where a number belongs"
        ))),
    }
}

impl SessionAggOperator {
    /// Record layout: key value count, key values, start, last, rows, 1 if
    /// a row was emitted then its values, then per aggregate the length of
    /// its partial state and the state.
    pub(super) fn encode_session(
        &self,
        values: &[ScalarValue],
        session: &mut Session,
    ) -> EngineResult<Vec<u8>> {
        let mut record = vec![ScalarValue::Int64(Some(values.len() as i64))];
        record.extend(values.iter().cloned());
        record.extend(
            [session.start, session.last, session.rows].map(|v| ScalarValue::Int64(Some(v))),
        );
        match &session.previous {
            Some(previous) => {
                record.push(ScalarValue::Int64(Some(1)));
                record.extend(previous.iter().cloned());
            }
            None => record.push(ScalarValue::Int64(Some(0))),
        }
        for acc in session.accumulators.iter_mut() {
            let partial = acc.state()?;
            record.push(ScalarValue::Int64(Some(partial.len() as i64)));
            record.extend(partial);
        }
        let mut bytes = vec![];
        encode_scalars(&record, &mut bytes)?;
        Ok(bytes)
    }

    /// A stored session and its key's values.
    fn decode_session(&self, bytes: &[u8]) -> EngineResult<(Vec<ScalarValue>, Session)> {
        let mut it = decode_scalars(bytes)?.into_iter();
        let count = int(it.next())? as usize;
        let values: Vec<ScalarValue> = it.by_ref().take(count).collect();
        let (start, last, rows) = (int(it.next())?, int(it.next())?, int(it.next())?);
        let previous = match int(it.next())? {
            1 => Some(it.by_ref().take(self.schema.fields().len()).collect()),
            _ => None,
        };
        let mut accumulators = self.fresh_accumulators()?;
        for acc in accumulators.iter_mut() {
            let len = int(it.next())? as usize;
            let partial = it
                .by_ref()
                .take(len)
                .map(|v| v.to_array())
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            acc.merge_batch(&partial)?;
        }
        if values.len() != count {
            return Err(EngineError::Internal(
                "session state record cut short".into(),
            ));
        }
        Ok((
            values,
            Session {
                start,
                last,
                rows,
                accumulators,
                previous,
                pending: vec![],
                changed: false,
            },
        ))
    }

    /// Makes `key`'s sessions touched: read from state unless they already
    /// are; `values` gives a new key's values.
    pub(super) fn touch(
        &mut self,
        key: &[u8],
        values: impl FnOnce() -> EngineResult<Vec<ScalarValue>>,
    ) -> EngineResult<()> {
        if self.dirty.contains_key(key) {
            return Ok(());
        }
        let group = key_group(key);
        let mut entry = KeySessions {
            group,
            values: vec![],
            sessions: vec![],
            retract: vec![],
            removed: vec![],
            stored: BTreeSet::new(),
        };
        for (_, bytes) in self.sessions.scan_prefix(group, &key_prefix(key))? {
            let (values, session) = self.decode_session(&bytes)?;
            entry.values = values;
            entry.stored.insert(session.start);
            entry.sessions.push(session);
        }
        if entry.sessions.is_empty() {
            entry.values = values()?;
        }
        self.dirty.insert(key.to_vec(), entry);
        Ok(())
    }

    /// Reads the watermark and the index of open sessions from state, once.
    pub(super) fn load(&mut self) -> EngineResult<()> {
        if self.loaded {
            return Ok(());
        }
        self.loaded = true;
        if !self.setup.window.watermarked {
            return Ok(());
        }
        let groups = self.setup.key_groups.clone();
        for &group in &groups {
            for (stored_key, bytes) in self.sessions.scan_prefix(group, b"")? {
                let (_, session) = self.decode_session(&bytes)?;
                let key = stored_key
                    .get(4..stored_key.len().saturating_sub(8))
                    .ok_or_else(|| EngineError::Internal("session state key cut short".into()))?;
                let key = key.to_vec();
                self.reindex(&key, &[], &[(session.start, session.last)]);
            }
        }
        self.watermark.load()
    }
}
