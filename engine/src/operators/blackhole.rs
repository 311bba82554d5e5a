//! Blackhole: the end of a `connector = 'blackhole'` sink's job, which
//! takes every change and writes it nowhere (Flink's and RisingWave's
//! `blackhole` connector), so a query can be measured without the cost of
//! storing or delivering its output. It keeps no state and runs in every
//! subtask of its fragment.

use async_trait::async_trait;

use crate::operator::{Output, StreamOperator};
use crate::{EngineResult, StreamChunk};

/// Drops every chunk.
#[derive(Debug, Default)]
pub struct BlackholeOperator;

#[async_trait]
impl StreamOperator for BlackholeOperator {
    fn name(&self) -> &'static str {
        "blackhole"
    }

    fn preserves_append_only(&self) -> bool {
        true
    }

    async fn process_chunk(
        &mut self,
        _input: usize,
        _chunk: StreamChunk,
        _out: &mut Output,
    ) -> EngineResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::operators::harness::{Harness, chunk};

    #[tokio::test]
    async fn drops_every_change() {
        let mut h = Harness::new(BlackholeOperator);
        let out = h
            .push_chunk(chunk(&[(Op::Insert, "a", 1), (Op::Delete, "b", 2)]))
            .await
            .unwrap();
        assert!(out.is_empty(), "{out:?}");
    }
}
