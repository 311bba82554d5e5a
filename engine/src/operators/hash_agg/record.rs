//! A group's record in the state table: its row count, group values, last
//! emitted result and the state of each incremental aggregate, as
//! `ScalarValue`s through the scalar codec.

use datafusion::arrow::array::ArrayRef;
use datafusion::scalar::ScalarValue;
use runnel_storage::scalar_codec::{decode_scalars, encode_scalars};

use super::{GroupState, HashAggOperator};
use crate::{EngineError, EngineResult};

fn int(value: &ScalarValue) -> EngineResult<i64> {
    match value {
        ScalarValue::Int64(Some(v)) => Ok(*v),
        other => Err(EngineError::Internal(format!(
            "aggregate state holds {other:?} where a count belongs"
        ))),
    }
}

impl HashAggOperator {
    /// Record layout: rows, group count, group values, 1 if there is a
    /// previous result then its values, then per incremental aggregate the
    /// length of its state and the state.
    pub(super) fn encode_record(
        &self,
        state: &mut GroupState,
        out: &mut Vec<u8>,
    ) -> EngineResult<()> {
        let mut values = vec![
            ScalarValue::Int64(Some(state.rows)),
            ScalarValue::Int64(Some(state.values.len() as i64)),
        ];
        values.extend(state.values.iter().cloned());
        match &state.previous {
            Some(previous) => {
                values.push(ScalarValue::Int64(Some(1)));
                values.extend(previous.iter().cloned());
            }
            None => values.push(ScalarValue::Int64(Some(0))),
        }
        for acc in state.accumulators.iter_mut().flatten() {
            let acc_state = acc.state()?;
            values.push(ScalarValue::Int64(Some(acc_state.len() as i64)));
            values.extend(acc_state);
        }
        encode_scalars(&values, out)?;
        Ok(())
    }

    pub(super) fn decode_record(&self, group: u16, bytes: &[u8]) -> EngineResult<GroupState> {
        let values = decode_scalars(bytes)?;
        let mut it = values.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| EngineError::Internal("aggregate state record cut short".into()))
        };
        let rows = int(&next()?)?;
        let count = int(&next()?)? as usize;
        let group_values = (0..count)
            .map(|_| next())
            .collect::<EngineResult<Vec<_>>>()?;
        let previous = if int(&next()?)? == 1 {
            Some(
                (0..self.aggs.len() + count)
                    .map(|_| next())
                    .collect::<EngineResult<Vec<_>>>()?,
            )
        } else {
            None
        };
        let mut accumulators = self.fresh_accumulators()?;
        for acc in accumulators.iter_mut().flatten() {
            let len = int(&next()?)? as usize;
            let state = (0..len).map(|_| next()).collect::<EngineResult<Vec<_>>>()?;
            let arrays = state
                .iter()
                .map(|v| v.to_array())
                .collect::<Result<Vec<ArrayRef>, _>>()?;
            acc.merge_batch(&arrays)?;
        }
        Ok(GroupState {
            group,
            values: group_values,
            rows,
            previous,
            accumulators,
            stored: true,
        })
    }
}
