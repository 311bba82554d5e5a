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
    /// Forwarded after the chunks of the same hook call.
    watermarks: Vec<Watermark>,
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

    /// Emits a watermark (in the operator's output schema); the task loop
    /// forwards it after this hook's chunks, and only if it rises.
    pub fn emit_watermark(&mut self, watermark: Watermark) {
        self.watermarks.push(watermark);
    }

    /// Takes the watermarks emitted so far.
    pub fn take_watermarks(&mut self) -> Vec<Watermark> {
        std::mem::take(&mut self.watermarks)
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

    /// The watermark of input `input` on one column advanced (the minimum
    /// over that input's upstream subtasks; the task loop calls this only
    /// when it rises). Emit what it closes, and the watermarks it implies
    /// for the output through [`Output::emit_watermark`]. The default
    /// forwards it unchanged, which is right for single-input operators that
    /// keep every column in place and never emit a row later than its input
    /// arrived (filters); others must override. Operators with several
    /// inputs merge them themselves (see [`crate::watermarks`]).
    async fn on_watermark(
        &mut self,
        _input: usize,
        watermark: Watermark,
        out: &mut Output,
    ) -> EngineResult<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    /// Every input delivered `barrier`: emit what the epoch owes and persist
    /// state for it. The default has nothing to do.
    async fn on_barrier(&mut self, _barrier: &Barrier, _out: &mut Output) -> EngineResult<()> {
        Ok(())
    }
}
