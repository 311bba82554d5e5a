//! Exchanges inside a process: bounded channels into each subtask, and the
//! dispatcher that spreads a task's output over the next fragment's
//! subtasks by key group.

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use runnel_storage::key_codec::encode_nullable_key;
use runnel_storage::state_table::{KEY_GROUPS, key_group};
use tokio::sync::mpsc;

use crate::graph::Distribution;
use crate::{EngineError, EngineResult, Message, Op, StreamChunk};

/// Messages into a subtask, tagged with the input they arrived on.
pub(crate) type InputSender = mpsc::Sender<(usize, Message)>;
pub(crate) type InputReceiver = mpsc::Receiver<(usize, Message)>;

/// Capacity of every exchange channel, in messages: small, so a slow
/// consumer slows its producers down (backpressure).
pub(crate) const CHANNEL_CAPACITY: usize = 16;

/// The subtask (of `parallelism`) that owns key group `group`, as in Flink.
pub(crate) fn subtask_of(group: u16, parallelism: usize) -> usize {
    group as usize * parallelism / KEY_GROUPS as usize
}

/// Sends a task's output downstream: through each of its exchanges (none
/// when the task ends in a sink).
pub(crate) struct Dispatcher {
    exchanges: Vec<ExchangeTargets>,
}

/// One exchange's downstream subtasks, each as (sender, input index there).
/// A forward exchange holds only the subtask of the sender's own index.
pub(crate) struct ExchangeTargets {
    pub targets: Vec<(InputSender, usize)>,
    pub distribution: Distribution,
}

async fn send(target: &(InputSender, usize), message: Message) -> EngineResult<()> {
    target
        .0
        .send((target.1, message))
        .await
        .map_err(|_| EngineError::Stopped("downstream task ended".into()))
}

impl Dispatcher {
    /// Sends through `exchanges`, every message to each.
    pub(crate) fn new(exchanges: Vec<ExchangeTargets>) -> Self {
        Dispatcher { exchanges }
    }

    /// Sends a chunk, split by key group when hashing.
    pub(crate) async fn chunk(&self, chunk: StreamChunk) -> EngineResult<()> {
        for exchange in &self.exchanges {
            let targets = &exchange.targets;
            match &exchange.distribution {
                Distribution::Hash(keys) if targets.len() > 1 => {
                    for (target, part) in targets.iter().zip(split(&chunk, keys, targets.len())?) {
                        if let Some(part) = part {
                            send(target, Message::Chunk(part)).await?;
                        }
                    }
                }
                _ => send(&targets[0], Message::Chunk(chunk.clone())).await?,
            }
        }
        Ok(())
    }

    /// Sends a watermark or barrier to every downstream subtask.
    pub(crate) async fn broadcast(&self, message: Message) -> EngineResult<()> {
        for exchange in &self.exchanges {
            for target in &exchange.targets {
                send(target, message.clone()).await?;
            }
        }
        Ok(())
    }
}

/// Splits a chunk by the key group of `keys` over `parallelism` subtasks.
/// An update pair whose halves land apart becomes a delete and an insert.
fn split(
    chunk: &StreamChunk,
    keys: &[usize],
    parallelism: usize,
) -> EngineResult<Vec<Option<StreamChunk>>> {
    let batch = chunk.data();
    let key_columns: Vec<&ArrayRef> = keys.iter().map(|&k| batch.column(k)).collect();
    let mut owner = Vec::with_capacity(batch.num_rows());
    let mut key = vec![];
    for row in 0..batch.num_rows() {
        key.clear();
        encode_nullable_key(&key_columns, row, &mut key)?;
        owner.push(subtask_of(key_group(&key), parallelism));
    }
    let mut ops = chunk.ops()?;
    for row in 0..ops.len() {
        if ops[row] == Op::UpdateDelete && row + 1 < ops.len() && owner[row] != owner[row + 1] {
            ops[row] = Op::Delete;
            ops[row + 1] = Op::Insert;
        }
    }
    let mut parts = Vec::with_capacity(parallelism);
    for subtask in 0..parallelism {
        let rows: Vec<u32> = (0..owner.len())
            .filter(|&r| owner[r] == subtask)
            .map(|r| r as u32)
            .collect();
        if rows.is_empty() {
            parts.push(None);
            continue;
        }
        let part_ops: Vec<Op> = rows.iter().map(|&r| ops[r as usize]).collect();
        let data = take_record_batch(batch, &UInt32Array::from(rows))?;
        parts.push(Some(StreamChunk::new(data, &part_ops)?));
    }
    Ok(parts)
}

/// A shared handle to the sender side of a subtask's input channel.
pub(crate) fn channel() -> (InputSender, InputReceiver) {
    mpsc::channel(CHANNEL_CAPACITY)
}
