//! The streaming engine of Runnel: executing a `StreamGraph` of incremental
//! operators over changelog Arrow batches, with barriers and watermarks as
//! in-band messages (see DESIGN.md, "The contracts").
//!
//! What is here so far are the contracts every operator will share:
//! [`StreamChunk`] (rows plus the [`Op`] each makes) and [`Message`]
//! (chunks, [`Watermark`]s and [`Barrier`]s of an [`Epoch`]), the
//! [`operator::StreamOperator`] trait, and the stateless operators
//! (projection, filter) over DataFusion `PhysicalExpr`s. The task runtime,
//! stateful operators and exchanges build on them (issue 3).

mod chunk;
mod error;
pub mod graph;
pub mod log;
pub mod log_codec;
mod message;
pub mod operator;
pub mod operators;
pub mod rising;
pub mod runtime;
pub mod watermarks;

pub use chunk::{Op, StreamChunk};
pub use error::{EngineError, EngineResult};
pub use message::{Barrier, BarrierKind, Epoch, Message, Watermark};
