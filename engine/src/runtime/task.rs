//! The loop of one subtask: receive from its inputs, align barriers, push
//! messages through the chained operators, dispatch the output and report
//! each sealed epoch to the barrier manager.

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::exchange::{Dispatcher, InputReceiver};
use super::manager::Report;
use crate::operator::{Output, StreamOperator};
use crate::{Barrier, EngineError, EngineResult, Message, StreamChunk};

/// One running subtask.
pub(crate) struct Task {
    pub job: u64,
    pub input: InputReceiver,
    /// Input index → the first operator's port.
    pub ports: Vec<usize>,
    pub operators: Vec<Box<dyn StreamOperator>>,
    pub dispatcher: Dispatcher,
    pub reports: mpsc::UnboundedSender<Report>,
}

impl Task {
    /// Runs until the inputs close; an error is reported to the manager.
    pub(crate) async fn run(mut self) {
        if let Err(error) = self.run_inner().await {
            let _ = self.reports.send(Report::Failed {
                job: self.job,
                error: error.to_string(),
            });
        }
    }

    async fn run_inner(&mut self) -> EngineResult<()> {
        let inputs = self.ports.len();
        // Barrier alignment: an input that delivered the barrier is held
        // (its later messages queued) until every input delivered it.
        let mut held = vec![false; inputs];
        let mut queued: Vec<VecDeque<Message>> = vec![VecDeque::new(); inputs];
        let mut arrived = 0;
        loop {
            let next = (0..inputs)
                .find(|&i| !held[i] && !queued[i].is_empty())
                .and_then(|i| queued[i].pop_front().map(|m| (i, m)));
            let (index, message) = match next {
                Some(item) => item,
                None => match self.input.recv().await {
                    Some(item) => item,
                    None => return Ok(()),
                },
            };
            if held[index] {
                queued[index].push_back(message);
                continue;
            }
            match message {
                Message::Chunk(chunk) => self.push_chunk(0, self.ports[index], chunk).await?,
                // Event-time watermarks arrive with issue 4's sources; the
                // change logs read here carry none.
                Message::Watermark(_) => {}
                Message::Barrier(barrier) => {
                    held[index] = true;
                    arrived += 1;
                    if arrived == inputs {
                        self.barrier(barrier).await?;
                        held.iter_mut().for_each(|h| *h = false);
                        arrived = 0;
                    }
                }
            }
        }
    }

    /// Pushes a chunk into operator `from` (on `port`) and on through the
    /// rest of the chain to the dispatcher.
    async fn push_chunk(
        &mut self,
        from: usize,
        port: usize,
        chunk: StreamChunk,
    ) -> EngineResult<()> {
        let mut chunks = vec![chunk];
        let mut out = Output::default();
        for (i, op) in self.operators.iter_mut().enumerate().skip(from) {
            let mut next = vec![];
            for chunk in chunks {
                let port = if i == from { port } else { 0 };
                op.process_chunk(port, chunk, &mut out).await?;
                next.extend(out.take());
            }
            chunks = next;
            if chunks.is_empty() {
                return Ok(());
            }
        }
        for chunk in chunks {
            self.dispatcher.chunk(chunk).await?;
        }
        Ok(())
    }

    async fn barrier(&mut self, barrier: Barrier) -> EngineResult<()> {
        let mut writes = runnel_storage::WriteSet::new();
        for i in 0..self.operators.len() {
            let mut out = Output::default();
            self.operators[i].on_barrier(&barrier, &mut out).await?;
            writes.extend(out.take_writes());
            for chunk in out.take() {
                if i + 1 < self.operators.len() {
                    self.push_chunk(i + 1, 0, chunk).await?;
                } else {
                    self.dispatcher.chunk(chunk).await?;
                }
            }
        }
        self.reports
            .send(Report::Sealed {
                job: self.job,
                epoch: barrier.epoch,
                writes,
            })
            .map_err(|_| EngineError::Stopped("barrier manager ended".into()))?;
        self.dispatcher.broadcast(Message::Barrier(barrier)).await
    }
}
