//! The loop of one subtask: receive from its inputs, align barriers, push
//! messages through the chained operators, dispatch the output and report
//! each sealed epoch to the barrier manager.

use std::task::Poll;

use tokio::sync::mpsc;

use super::exchange::{Dispatcher, InputReceiver};
use super::manager::Report;
use crate::operator::{Output, StreamOperator};
use crate::watermarks::WatermarkMerge;
use crate::{Barrier, EngineError, EngineResult, Message};

/// One running subtask.
pub(crate) struct Task {
    pub job: u64,
    /// One channel per input, in input order.
    pub inputs: Vec<InputReceiver>,
    /// Input index → the first operator's port.
    pub ports: Vec<usize>,
    /// See [`WatermarkMerge::with_idle_timeout`].
    pub idle_timeout: Option<std::time::Duration>,
    pub operators: Vec<Box<dyn StreamOperator>>,
    pub dispatcher: Dispatcher,
    pub reports: mpsc::UnboundedSender<Report>,
    /// Watermarks sent downstream so far, so only rising ones go.
    pub emitted: WatermarkMerge,
    /// Per operator after the first, the watermarks it was given, so each
    /// gets only rising ones (the first gets its ports' merged ones).
    pub delivered: Vec<WatermarkMerge>,
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
        // (not read, so its producer waits) until every input delivered it.
        let mut held = vec![false; inputs];
        let mut closed = vec![false; inputs];
        let mut arrived = 0;
        let mut next_first = 0;
        // Watermarks merge per port: a port's subtasks carry the same
        // columns, different ports need not.
        let ports = self.ports.iter().max().map_or(0, |p| p + 1);
        let mut watermarks: Vec<WatermarkMerge> = (0..ports)
            .map(|_| WatermarkMerge::with_idle_timeout(self.idle_timeout))
            .collect();
        let mut width = vec![0; ports];
        let mut local = vec![0; inputs];
        for (index, &port) in self.ports.iter().enumerate() {
            local[index] = width[port];
            width[port] += 1;
        }
        loop {
            // The next message of an input not held, taking inputs in turn.
            let receivers = &mut self.inputs;
            let next = std::future::poll_fn(|cx| {
                let mut open = false;
                for k in 0..inputs {
                    let i = (next_first + k) % inputs;
                    if held[i] || closed[i] {
                        continue;
                    }
                    match receivers[i].poll_recv(cx) {
                        Poll::Ready(Some((_, message))) => return Poll::Ready(Some((i, message))),
                        Poll::Ready(None) => closed[i] = true,
                        Poll::Pending => open = true,
                    }
                }
                if open {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                }
            })
            .await;
            let Some((index, message)) = next else {
                return Ok(());
            };
            next_first = (index + 1) % inputs;
            match message {
                Message::Chunk(chunk) => {
                    self.push(0, self.ports[index], Message::Chunk(chunk))
                        .await?
                }
                Message::Watermark(watermark) => {
                    let port = self.ports[index];
                    if let Some(combined) =
                        watermarks[port].update(local[index], width[port], watermark)
                    {
                        self.push(0, port, Message::Watermark(combined)).await?;
                    }
                }
                Message::Barrier(barrier) => {
                    held[index] = true;
                    arrived += 1;
                    if arrived == inputs {
                        // Ports whose inputs went idle since their last
                        // watermark may now let it rise.
                        for (port, merge) in watermarks.iter_mut().enumerate() {
                            for combined in merge.poll() {
                                self.push(0, port, Message::Watermark(combined)).await?;
                            }
                        }
                        self.barrier(barrier).await?;
                        held.iter_mut().for_each(|h| *h = false);
                        arrived = 0;
                    }
                }
            }
        }
    }

    /// Pushes a chunk or watermark into operator `from` (on `port`) and on
    /// through the rest of the chain to the dispatcher. What an operator
    /// emits for one message goes on in order: its chunks, then its
    /// watermarks. Watermarks leave the chain only when they rise.
    async fn push(&mut self, from: usize, port: usize, message: Message) -> EngineResult<()> {
        let mut messages = vec![message];
        let delivered = &mut self.delivered;
        for (i, op) in self.operators.iter_mut().enumerate().skip(from) {
            let port = if i == from { port } else { 0 };
            let mut next = vec![];
            let mut out = Output::default();
            for message in messages {
                match message {
                    Message::Chunk(chunk) => op.process_chunk(port, chunk, &mut out).await?,
                    Message::Watermark(watermark) => {
                        let rising =
                            i == 0 || delivered[i - 1].update(0, 1, watermark.clone()).is_some();
                        if rising {
                            op.on_watermark(port, watermark, &mut out).await?
                        }
                    }
                    Message::Barrier(_) => {
                        return Err(EngineError::Internal(
                            "a barrier pushed as data through a chain".into(),
                        ));
                    }
                }
                next.extend(out.take().into_iter().map(Message::Chunk));
                next.extend(out.take_watermarks().into_iter().map(Message::Watermark));
            }
            messages = next;
            if messages.is_empty() {
                return Ok(());
            }
        }
        for message in messages {
            self.dispatch(message).await?;
        }
        Ok(())
    }

    /// Sends what the last operator emitted downstream.
    async fn dispatch(&mut self, message: Message) -> EngineResult<()> {
        match message {
            Message::Chunk(chunk) => self.dispatcher.chunk(chunk).await,
            Message::Watermark(watermark) => {
                if self.emitted.update(0, 1, watermark.clone()).is_some() {
                    self.dispatcher
                        .broadcast(Message::Watermark(watermark))
                        .await?;
                }
                Ok(())
            }
            Message::Barrier(_) => {
                Err(EngineError::Internal("a barrier dispatched as data".into()))
            }
        }
    }

    /// Sends what operator `i` emitted on through the operators after it.
    async fn push_after(&mut self, i: usize, message: Message) -> EngineResult<()> {
        if i + 1 < self.operators.len() {
            self.push(i + 1, 0, message).await
        } else {
            self.dispatch(message).await
        }
    }

    async fn barrier(&mut self, barrier: Barrier) -> EngineResult<()> {
        let mut writes = runnel_storage::WriteSet::new();
        for i in 0..self.operators.len() {
            let mut out = Output::default();
            self.operators[i].on_barrier(&barrier, &mut out).await?;
            writes.extend(out.take_writes());
            let emitted = out.take().into_iter().map(Message::Chunk);
            let emitted: Vec<Message> = emitted
                .chain(out.take_watermarks().into_iter().map(Message::Watermark))
                .collect();
            for message in emitted {
                self.push_after(i, message).await?;
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
