//! The input gate: all the channels a subtask reads, one per producer, and the in-band
//! protocol over them.
//!
//! Every producer subtask feeds a consumer subtask through a channel of its own, so the gate
//! can tell producers apart. That is what three rules need:
//!
//! - **Barrier alignment** (Chandy-Lamport, as Flink's aligned checkpoints): once barrier `n`
//!   arrives on a channel, that channel is blocked (not read, so its credit stops its
//!   producer) while the others are read, until every channel still open has delivered `n`;
//!   the gate then yields [`GateOutput::Aligned`] once, and the task snapshots its operators
//!   and forwards the barrier once. A channel that ends counts as having delivered it.
//!   A newer barrier arriving before an older one aligned abandons the older checkpoint
//!   (its coordinator aborts it anyway) and yields [`GateOutput::Abandoned`].
//! - **Watermarks**: the gate's watermark is the minimum over its open channels, yielded
//!   when it advances; since it travels in band, it never passes the rows before it.
//! - **End of input**: per channel; the gate ends when every channel has ended.
//!
//! [`BarrierAligner`] and [`WatermarkValve`] are the pure rules, tested on their own; the
//! gate drives them over real channels. A network transport implements the same contract
//! by delivering each producer's stream into its own channel.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use tokio::sync::Notify;

use crate::channel::{Received, Receiver, TryReceived};
use crate::message::{CheckpointId, Message};

/// What the gate hands its task.
#[derive(Debug)]
pub enum GateOutput {
    /// Rows from one of the gate's inputs (the edge they came on).
    Batch {
        /// Which input of the task (edge) the rows belong to.
        input: usize,
        /// The rows.
        batch: RecordBatch,
    },
    /// The minimum watermark over the open channels advanced to this value.
    Watermark(i64),
    /// Every open channel delivered barrier `id`: snapshot now, then forward it once.
    Aligned(CheckpointId),
    /// Barrier `id` will never align, because a newer one arrived first.
    Abandoned(CheckpointId),
    /// A producer went away without finishing: its task failed.
    Broken,
}

/// Decides when a barrier is aligned over a fixed set of channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BarrierAligner {
    channels: usize,
    closed: BTreeSet<usize>,
    /// The checkpoint being aligned and the channels that delivered its barrier.
    aligning: Option<(CheckpointId, BTreeSet<usize>)>,
    /// The newest checkpoint aligned or abandoned: barriers up to it are stale.
    done: Option<CheckpointId>,
}

/// What a barrier does to the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlignStep {
    /// Stop reading this channel until the barrier aligns.
    Block,
    /// Every open channel delivered this barrier: unblock all.
    Aligned(CheckpointId),
    /// A newer barrier began: the older checkpoint is given up, every channel unblocked,
    /// and this channel blocked for the newer one (aligned already if it is the only one).
    Superseded {
        /// The checkpoint given up.
        abandoned: CheckpointId,
        /// Whether the newer barrier is aligned at once.
        aligned: bool,
    },
    /// An old barrier (of a checkpoint already aligned or given up): ignore it.
    Stale,
}

impl BarrierAligner {
    /// An aligner over `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            ..Self::default()
        }
    }

    /// Barrier `id` arrived on `channel`.
    pub fn on_barrier(&mut self, channel: usize, id: CheckpointId) -> AlignStep {
        if self.done.is_some_and(|done| id <= done) {
            return AlignStep::Stale;
        }
        match &mut self.aligning {
            Some((current, _)) if id < *current => AlignStep::Stale,
            Some((current, arrived)) if id == *current => {
                arrived.insert(channel);
                if self.all_arrived() {
                    self.finish();
                    AlignStep::Aligned(id)
                } else {
                    AlignStep::Block
                }
            }
            Some((current, _)) => {
                let abandoned = *current;
                self.aligning = Some((id, BTreeSet::from([channel])));
                let aligned = self.all_arrived();
                if aligned {
                    self.finish();
                }
                AlignStep::Superseded { abandoned, aligned }
            }
            None => {
                self.aligning = Some((id, BTreeSet::from([channel])));
                if self.all_arrived() {
                    self.finish();
                    AlignStep::Aligned(id)
                } else {
                    AlignStep::Block
                }
            }
        }
    }

    /// `channel` ended; returns the checkpoint this aligns, if any.
    pub fn on_closed(&mut self, channel: usize) -> Option<CheckpointId> {
        self.closed.insert(channel);
        if self.aligning.is_some() && self.all_arrived() {
            return Some(self.finish());
        }
        None
    }

    fn all_arrived(&self) -> bool {
        let Some((_, arrived)) = &self.aligning else {
            return false;
        };
        (0..self.channels).all(|c| arrived.contains(&c) || self.closed.contains(&c))
    }

    fn finish(&mut self) -> CheckpointId {
        let (id, _) = self
            .aligning
            .take()
            .expect("finish is called while aligning");
        self.done = Some(id);
        id
    }
}

/// The gate's watermark: the minimum over its open channels, once each has sent one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkValve {
    /// Per channel: its latest watermark, `None` before its first; closed channels leave.
    latest: Vec<Option<i64>>,
    closed: Vec<bool>,
    emitted: Option<i64>,
}

impl WatermarkValve {
    /// A valve over `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self {
            latest: vec![None; channels],
            closed: vec![false; channels],
            emitted: None,
        }
    }

    /// `channel` sent `watermark`; returns the gate's watermark if it advanced.
    pub fn on_watermark(&mut self, channel: usize, watermark: i64) -> Option<i64> {
        let latest = &mut self.latest[channel];
        // A channel's watermark never goes back.
        *latest = Some(latest.map_or(watermark, |old| old.max(watermark)));
        self.advance()
    }

    /// `channel` ended; returns the gate's watermark if that lets it advance.
    pub fn on_closed(&mut self, channel: usize) -> Option<i64> {
        self.closed[channel] = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<i64> {
        let mut open = self
            .latest
            .iter()
            .zip(&self.closed)
            .filter(|(_, closed)| !**closed)
            .map(|(latest, _)| *latest)
            .peekable();
        open.peek()?;
        let minimum = open.collect::<Option<Vec<i64>>>()?.into_iter().min()?;
        if self.emitted.is_none_or(|emitted| minimum > emitted) {
            self.emitted = Some(minimum);
            return Some(minimum);
        }
        None
    }
}

struct InputChannel {
    receiver: Receiver,
    input: usize,
    blocked: bool,
    closed: bool,
}

/// The channels one subtask reads, with alignment and the watermark valve.
pub struct InputGate {
    channels: Vec<InputChannel>,
    readable: Arc<Notify>,
    aligner: BarrierAligner,
    valve: WatermarkValve,
    ready: VecDeque<GateOutput>,
    /// Where the next scan of the channels starts, so that no producer is favoured.
    next: usize,
}

impl InputGate {
    /// A gate over `channels` (each with the task input it belongs to), all of which signal
    /// `readable` (see [`channel_notifying`](crate::channel::channel_notifying)).
    pub fn new(channels: Vec<(usize, Receiver)>, readable: Arc<Notify>) -> Self {
        let count = channels.len();
        Self {
            channels: channels
                .into_iter()
                .map(|(input, receiver)| InputChannel {
                    receiver,
                    input,
                    blocked: false,
                    closed: false,
                })
                .collect(),
            readable,
            aligner: BarrierAligner::new(count),
            valve: WatermarkValve::new(count),
            ready: VecDeque::new(),
            next: 0,
        }
    }

    /// A gate over no channels: already at its end. Replacing a task's gate with it drops
    /// the channels, so that their producers stop.
    pub fn closed() -> Self {
        Self::new(Vec::new(), Arc::new(Notify::new()))
    }

    /// The next thing for the task; `None` once every channel has ended.
    pub async fn next(&mut self) -> Option<GateOutput> {
        self.next_where(true).await
    }

    /// The next thing for a task that takes no rows now: a barrier, a watermark or the
    /// end, read only where one is at the head of its channel (a batch there stays queued,
    /// so the order within each channel holds). Waits while every head is a batch.
    pub async fn next_control(&mut self) -> Option<GateOutput> {
        self.next_where(false).await
    }

    async fn next_where(&mut self, batches: bool) -> Option<GateOutput> {
        loop {
            let takeable = self
                .ready
                .front()
                .is_some_and(|output| batches || !matches!(output, GateOutput::Batch { .. }));
            if takeable {
                return self.ready.pop_front();
            }
            if self.ready.is_empty() && self.channels.iter().all(|c| c.closed) {
                return None;
            }
            // Taken before looking, so that a message queued in between still wakes us.
            let signal = Arc::clone(&self.readable);
            let readable = signal.notified();
            if !self.ready.is_empty() || !self.poll_channels(batches) {
                readable.await;
            }
        }
    }

    /// Looks at each readable channel once, from where the last look stopped; queues what
    /// it found and says whether it found anything. Without `batches`, a channel whose next
    /// message is a batch is passed by.
    fn poll_channels(&mut self, batches: bool) -> bool {
        let count = self.channels.len();
        for offset in 0..count {
            let index = (self.next + offset) % count;
            let channel = &mut self.channels[index];
            if channel.closed || channel.blocked {
                continue;
            }
            let received = if batches {
                channel.receiver.try_recv()
            } else {
                channel.receiver.try_recv_control()
            };
            match received {
                TryReceived::Empty => continue,
                TryReceived::Ready(received) => {
                    self.next = (index + 1) % count;
                    self.accept(index, received);
                    return true;
                }
                TryReceived::Closed => {
                    self.close(index);
                    return true;
                }
            }
        }
        false
    }

    fn accept(&mut self, index: usize, received: Received) {
        match received {
            Received::Broken => {
                self.channels[index].closed = true;
                self.ready.push_back(GateOutput::Broken);
            }
            Received::Message(Message::EndOfInput) => self.close(index),
            Received::Message(Message::Batch(batch)) => self.ready.push_back(GateOutput::Batch {
                input: self.channels[index].input,
                batch,
            }),
            Received::Message(Message::Watermark(watermark)) => {
                if let Some(watermark) = self.valve.on_watermark(index, watermark) {
                    self.ready.push_back(GateOutput::Watermark(watermark));
                }
            }
            Received::Message(Message::Barrier(id)) => match self.aligner.on_barrier(index, id) {
                AlignStep::Block => self.channels[index].blocked = true,
                AlignStep::Aligned(id) => self.aligned(id),
                AlignStep::Superseded { abandoned, aligned } => {
                    self.unblock_all();
                    self.ready.push_back(GateOutput::Abandoned(abandoned));
                    if aligned {
                        self.ready.push_back(GateOutput::Aligned(id));
                    } else {
                        self.channels[index].blocked = true;
                    }
                }
                AlignStep::Stale => {}
            },
        }
    }

    fn close(&mut self, index: usize) {
        self.channels[index].closed = true;
        if let Some(id) = self.aligner.on_closed(index) {
            self.aligned(id);
        }
        if let Some(watermark) = self.valve.on_closed(index) {
            self.ready.push_back(GateOutput::Watermark(watermark));
        }
    }

    fn aligned(&mut self, id: CheckpointId) {
        self.unblock_all();
        self.ready.push_back(GateOutput::Aligned(id));
    }

    fn unblock_all(&mut self) {
        for channel in &mut self.channels {
            channel.blocked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::channel::{Credit, Sender, channel_notifying};

    fn batch(value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).unwrap()
    }

    fn gate(producers: usize, batches: usize) -> (Vec<Sender>, InputGate) {
        let readable = Arc::new(Notify::new());
        let credit = Credit {
            batches,
            bytes: 1 << 20,
        };
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..producers {
            let (mut sender, receiver) = channel_notifying(credit, 1, Arc::clone(&readable));
            senders.push(sender.pop().unwrap());
            receivers.push((0, receiver));
        }
        (senders, InputGate::new(receivers, readable))
    }

    /// Everything the gate yields until it ends, as short strings.
    async fn drain(gate: &mut InputGate) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(output) = gate.next().await {
            seen.push(describe(&output));
        }
        seen
    }

    fn describe(output: &GateOutput) -> String {
        match output {
            GateOutput::Batch { batch, .. } => {
                let values = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                format!("b{}", values.value(0))
            }
            GateOutput::Watermark(w) => format!("w{w}"),
            GateOutput::Aligned(id) => format!("aligned {id}"),
            GateOutput::Abandoned(id) => format!("abandoned {id}"),
            GateOutput::Broken => "broken".into(),
        }
    }

    #[tokio::test]
    async fn alignment_holds_back_a_channel_after_its_barrier() {
        let (mut senders, mut gate) = gate(2, 8);
        // Producer 0: a row, the barrier, a row after it. Producer 1: three rows, then the
        // barrier. No row sent after a barrier may come out before the alignment.
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Barrier(7)).await.unwrap();
        senders[0].send(Message::Batch(batch(2))).await.unwrap();
        for value in [10, 11, 12] {
            senders[1].send(Message::Batch(batch(value))).await.unwrap();
        }
        senders[1].send(Message::Barrier(7)).await.unwrap();
        senders[1].send(Message::Batch(batch(13))).await.unwrap();
        for sender in &mut senders {
            sender.send(Message::EndOfInput).await.unwrap();
        }
        let seen = drain(&mut gate).await;
        let aligned = seen.iter().position(|s| s == "aligned 7").unwrap();
        let before: BTreeSet<&str> = seen[..aligned].iter().map(String::as_str).collect();
        let after: BTreeSet<&str> = seen[aligned + 1..].iter().map(String::as_str).collect();
        assert_eq!(
            before,
            BTreeSet::from(["b1", "b10", "b11", "b12"]),
            "{seen:?}"
        );
        assert_eq!(after, BTreeSet::from(["b2", "b13"]), "{seen:?}");
        assert_eq!(seen.iter().filter(|s| s.starts_with("aligned")).count(), 1);
    }

    // Paused clock: "still waiting" is decided when every task is idle, not by real time.
    #[tokio::test(start_paused = true)]
    async fn a_blocked_channel_stops_its_producer_through_credit() {
        let (mut senders, mut gate) = gate(2, 1);
        senders[0].send(Message::Barrier(1)).await.unwrap();
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        let mut first = senders.remove(0);
        let mut second = senders.remove(0);
        // The gate reads producer 0's barrier and blocks it; producer 0's queued batch stays
        // queued, so its next send waits for credit.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.next())
                .await
                .is_err()
        );
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            first.send(Message::Batch(batch(2))),
        )
        .await;
        assert!(waiting.is_err(), "producer 0 must wait while blocked");
        second.send(Message::Barrier(1)).await.unwrap();
        assert_eq!(describe(&gate.next().await.unwrap()), "aligned 1");
        assert_eq!(describe(&gate.next().await.unwrap()), "b1");
    }

    #[tokio::test]
    async fn a_channel_that_ends_counts_as_aligned() {
        let (mut senders, mut gate) = gate(2, 8);
        senders[0].send(Message::Barrier(3)).await.unwrap();
        senders[0].send(Message::Batch(batch(5))).await.unwrap();
        senders[0].send(Message::EndOfInput).await.unwrap();
        senders[1].send(Message::Batch(batch(9))).await.unwrap();
        senders[1].send(Message::EndOfInput).await.unwrap();
        assert_eq!(drain(&mut gate).await, vec!["b9", "aligned 3", "b5"]);
    }

    #[tokio::test]
    async fn the_watermark_is_the_minimum_over_open_channels_and_keeps_its_place() {
        let (mut senders, mut gate) = gate(2, 8);
        senders[0].send(Message::Watermark(10)).await.unwrap();
        senders[0].send(Message::Batch(batch(1))).await.unwrap();
        senders[0].send(Message::Watermark(30)).await.unwrap();
        senders[0].send(Message::EndOfInput).await.unwrap();
        let seen = drain_until(&mut gate, 2).await;
        // Producer 1 has sent no watermark yet: none can be emitted.
        assert_eq!(seen, vec!["b1"]);
        senders[1].send(Message::Watermark(20)).await.unwrap();
        senders[1].send(Message::Batch(batch(2))).await.unwrap();
        senders[1].send(Message::Watermark(40)).await.unwrap();
        senders[1].send(Message::EndOfInput).await.unwrap();
        // Producer 0 has ended, so it no longer holds the watermark back.
        assert_eq!(drain(&mut gate).await, vec!["w20", "b2", "w40"]);
    }

    /// Reads until the gate has nothing ready (it would wait), at most `limit` outputs.
    async fn drain_until(gate: &mut InputGate, limit: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..limit {
            match tokio::time::timeout(Duration::from_millis(20), gate.next()).await {
                Ok(Some(output)) => seen.push(describe(&output)),
                _ => break,
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_broken_producer_is_reported() {
        let (mut senders, mut gate) = gate(2, 8);
        senders[1].send(Message::EndOfInput).await.unwrap();
        senders.remove(0);
        assert_eq!(drain(&mut gate).await, vec!["broken"]);
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_and_old_barriers_are_stale() {
        let mut aligner = BarrierAligner::new(3);
        assert_eq!(aligner.on_barrier(0, 1), AlignStep::Block);
        assert_eq!(
            aligner.on_barrier(1, 2),
            AlignStep::Superseded {
                abandoned: 1,
                aligned: false
            }
        );
        assert_eq!(aligner.on_barrier(2, 1), AlignStep::Stale);
        assert_eq!(aligner.on_barrier(0, 2), AlignStep::Block);
        assert_eq!(aligner.on_closed(2), Some(2));
        assert_eq!(aligner.on_barrier(1, 2), AlignStep::Stale);
        let mut single = BarrierAligner::new(1);
        assert_eq!(single.on_barrier(0, 5), AlignStep::Aligned(5));
    }

    #[test]
    fn watermarks_never_go_back() {
        let mut valve = WatermarkValve::new(2);
        assert_eq!(valve.on_watermark(0, 5), None);
        assert_eq!(valve.on_watermark(1, 7), Some(5));
        assert_eq!(valve.on_watermark(0, 3), None, "a late, lower watermark");
        assert_eq!(valve.on_watermark(0, 9), Some(7));
        assert_eq!(valve.on_closed(1), Some(9));
        assert_eq!(valve.on_closed(0), None);
    }
}
