//! The operator contract: what the task loop calls on one parallel instance
//! of a streaming operator.

use async_trait::async_trait;

use runnel_storage::WriteSet;

use crate::{Barrier, EngineResult, StreamChunk, Watermark};

/// Where an operator puts what it emits while handling one message. The task
/// loop forwards the chunks downstream in order, before the message that
/// caused them (for a barrier: before the barrier itself). State writes
/// sealed at a barrier go to [`Output::writes`]; the task hands them to the
/// barrier manager, which commits every operator's writes of an epoch at
/// once.
#[derive(Debug, Default)]
pub struct Output {
    chunks: Vec<StreamChunk>,
    writes: WriteSet,
}

impl Output {
    /// Emits a chunk; empty chunks are dropped.
    pub fn emit(&mut self, chunk: StreamChunk) {
        if chunk.num_rows() > 0 {
            self.chunks.push(chunk);
        }
    }

    /// Takes what was emitted so far.
    pub fn take(&mut self) -> Vec<StreamChunk> {
        std::mem::take(&mut self.chunks)
    }

    /// The state writes of the epoch being sealed.
    pub fn writes(&mut self) -> &mut WriteSet {
        &mut self.writes
    }

    /// Takes the state writes collected so far.
    pub fn take_writes(&mut self) -> WriteSet {
        std::mem::take(&mut self.writes)
    }
}

/// One parallel instance of a streaming operator.
///
/// The task loop owns the protocol: it merges inputs, aligns barriers,
/// computes the minimum watermark over inputs and forwards control messages;
/// operators only react. Hooks are called one at a time, never concurrently.
/// State reads are RocksDB point lookups and short prefix scans (mostly
/// served from the block cache), done inline.
#[async_trait]
pub trait StreamOperator: Send + 'static {
    /// A short snake_case name for plans, logs and metrics.
    fn name(&self) -> &'static str;

    /// True when the operator's output carries only inserts whenever its
    /// inputs do (the planner uses this to pick operators downstream).
    fn preserves_append_only(&self) -> bool;

    /// A chunk arrived on input `input` (0 for single-input operators).
    async fn process_chunk(
        &mut self,
        input: usize,
        chunk: StreamChunk,
        out: &mut Output,
    ) -> EngineResult<()>;

    /// The combined watermark of all inputs advanced. Returns the watermark
    /// to forward (in this operator's output schema), or None to hold it.
    /// The default forwards it unchanged.
    async fn on_watermark(
        &mut self,
        watermark: Watermark,
        _out: &mut Output,
    ) -> EngineResult<Option<Watermark>> {
        Ok(Some(watermark))
    }

    /// Every input delivered `barrier`: emit what the epoch owes and persist
    /// state for it. The default has nothing to do.
    async fn on_barrier(&mut self, _barrier: &Barrier, _out: &mut Output) -> EngineResult<()> {
        Ok(())
    }
}
