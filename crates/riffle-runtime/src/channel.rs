//! Channels between tasks, with credit-based flow control.
//!
//! A channel has one receiver and a fixed number of senders (the producer subtasks that feed
//! one partition). Its credit is counted in batches and in bytes: a sender waits while the
//! queue holds `credit.batches` batches or adding its batch would pass `credit.bytes` (a
//! batch larger than the whole byte credit is admitted alone into an empty queue, so that it
//! cannot wait forever). A slow consumer therefore slows its producers, and the memory queued
//! on a channel stays within its credit.
//!
//! The receiver sees one [`Message::EndOfInput`], after every sender has sent its own.
//! Between tasks the executor gives every producer a channel of its own (one sender), so
//! that an [`InputGate`](crate::gate::InputGate) can tell the producers apart and stop
//! reading one of them (barrier alignment); the channels of one gate share one wake-up
//! signal. Local channels pass `RecordBatch` by reference; a network transport implements
//! the same contract with credits granted over the wire.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::message::Message;

/// How much a channel may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Batches queued at most.
    pub batches: usize,
    /// Bytes of Arrow buffers queued at most (one oversized batch excepted).
    pub bytes: usize,
}

impl Credit {
    /// This credit shared by `producers` channels that feed one consumer, so that giving
    /// each producer a channel of its own does not multiply the memory a consumer may have
    /// queued. Each share keeps at least one batch and one byte.
    pub fn share(self, producers: usize) -> Credit {
        let producers = producers.max(1);
        Credit {
            batches: self.batches.div_ceil(producers).max(1),
            bytes: self.bytes.div_ceil(producers).max(1),
        }
    }
}

/// High-water marks and counters of one channel, for tests, reports and progress.
#[derive(Debug, Default)]
pub struct ChannelStats {
    peak_batches: AtomicUsize,
    peak_bytes: AtomicUsize,
    largest_batch_bytes: AtomicUsize,
    rows: AtomicU64,
    /// Time of the waits that ended.
    waited_nanos: AtomicU64,
    /// The waits going on: how many, and the sum of their starts (since [`clock_base`]).
    ongoing: Mutex<(usize, u128)>,
}

/// A fixed instant that wait starts are counted from.
fn clock_base() -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

fn since_base(instant: tokio::time::Instant) -> u128 {
    instant.saturating_duration_since(clock_base()).as_nanos()
}

impl ChannelStats {
    /// Rows sent so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// How long senders waited for credit so far, the waits going on included: the time
    /// the consumer held its producers back (backpressure).
    pub fn waited(&self) -> std::time::Duration {
        let nanos = self.ongoing.lock().map_or(0, |ongoing| {
            let (count, starts) = *ongoing;
            let ended = u128::from(self.waited_nanos.load(Ordering::Relaxed));
            ended + (count as u128 * since_base(tokio::time::Instant::now())).saturating_sub(starts)
        });
        std::time::Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }

    /// Senders waiting for credit now.
    pub fn waiting(&self) -> usize {
        self.ongoing.lock().map_or(0, |ongoing| ongoing.0)
    }

    /// Most batches ever queued at once.
    pub fn peak_batches(&self) -> usize {
        self.peak_batches.load(Ordering::Relaxed)
    }

    /// Most bytes ever queued at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes.load(Ordering::Relaxed)
    }

    /// Size of the largest batch sent.
    pub fn largest_batch_bytes(&self) -> usize {
        self.largest_batch_bytes.load(Ordering::Relaxed)
    }
}

/// The receiving side went away: the job is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

struct State {
    queue: VecDeque<Message>,
    queued_batches: usize,
    queued_bytes: usize,
    /// Senders that have neither sent end-of-input nor been dropped.
    open_senders: usize,
    receiver_alive: bool,
}

struct Shared {
    credit: Credit,
    state: Mutex<State>,
    /// Signalled when a message is queued or a sender leaves; shared by the channels of one
    /// input gate.
    readable: Arc<Notify>,
    /// Signalled when credit is returned or the receiver leaves.
    writable: Notify,
    stats: Arc<ChannelStats>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in this module; the state stays valid
        // (each critical section is a few field updates), so go on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Creates a channel fed by `senders` producers.
pub fn channel(credit: Credit, senders: usize) -> (Vec<Sender>, Receiver) {
    channel_notifying(credit, senders, Arc::new(Notify::new()))
}

/// Creates a channel that signals `readable` whenever its receiver may have something new:
/// an input gate gives the same signal to all its channels and waits on it once.
pub fn channel_notifying(
    credit: Credit,
    senders: usize,
    readable: Arc<Notify>,
) -> (Vec<Sender>, Receiver) {
    let shared = Arc::new(Shared {
        credit: Credit {
            batches: credit.batches.max(1),
            bytes: credit.bytes.max(1),
        },
        state: Mutex::new(State {
            queue: VecDeque::new(),
            queued_batches: 0,
            queued_bytes: 0,
            open_senders: senders,
            receiver_alive: true,
        }),
        readable,
        writable: Notify::new(),
        stats: Arc::new(ChannelStats::default()),
    });
    let senders = (0..senders)
        .map(|_| Sender {
            shared: Arc::clone(&shared),
            finished: false,
        })
        .collect();
    (senders, Receiver { shared })
}

/// A sender's wait for credit: counted in [`ChannelStats::waiting`] while it lasts (also
/// when the send is abandoned), its time added to [`ChannelStats::waited`] when it ends.
struct CreditWait<'a> {
    stats: &'a ChannelStats,
    since: Option<tokio::time::Instant>,
}

impl CreditWait<'_> {
    fn begin(&mut self) {
        if self.since.is_none() {
            let now = tokio::time::Instant::now();
            self.since = Some(now);
            if let Ok(mut ongoing) = self.stats.ongoing.lock() {
                ongoing.0 += 1;
                ongoing.1 += since_base(now);
            }
        }
    }
}

impl Drop for CreditWait<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.since {
            // Under the lock, so that `waited` never counts this wait twice or not at all.
            if let Ok(mut ongoing) = self.stats.ongoing.lock() {
                ongoing.0 -= 1;
                ongoing.1 -= since_base(since);
                let waited = since.elapsed().as_nanos() as u64;
                self.stats.waited_nanos.fetch_add(waited, Ordering::Relaxed);
            }
        }
    }
}

/// One producer's end of a channel.
pub struct Sender {
    shared: Arc<Shared>,
    finished: bool,
}

impl Sender {
    /// Queues a message, waiting for credit if it is a batch. Sending
    /// [`Message::EndOfInput`] finishes this sender.
    pub async fn send(&mut self, message: Message) -> Result<(), Disconnected> {
        if self.finished {
            return Ok(());
        }
        let size = message.size_bytes();
        let is_batch = matches!(message, Message::Batch(_));
        let is_end = matches!(message, Message::EndOfInput);
        let rows = match &message {
            Message::Batch(batch) => batch.num_rows() as u64,
            _ => 0,
        };
        let mut wait = CreditWait {
            stats: &self.shared.stats,
            since: None,
        };
        loop {
            let writable = self.shared.writable.notified();
            {
                let mut state = self.shared.lock();
                if !state.receiver_alive {
                    return Err(Disconnected);
                }
                let credit = self.shared.credit;
                let fits = !is_batch
                    || state.queued_batches == 0
                    || (state.queued_batches < credit.batches
                        && state.queued_bytes + size <= credit.bytes);
                if fits {
                    if is_end {
                        self.finished = true;
                        state.open_senders -= 1;
                        if state.open_senders == 0 {
                            state.queue.push_back(Message::EndOfInput);
                        }
                    } else {
                        if is_batch {
                            state.queued_batches += 1;
                            state.queued_bytes += size;
                            let stats = &self.shared.stats;
                            stats
                                .peak_batches
                                .fetch_max(state.queued_batches, Ordering::Relaxed);
                            stats
                                .peak_bytes
                                .fetch_max(state.queued_bytes, Ordering::Relaxed);
                            stats.largest_batch_bytes.fetch_max(size, Ordering::Relaxed);
                            stats.rows.fetch_add(rows, Ordering::Relaxed);
                        }
                        state.queue.push_back(message);
                    }
                    drop(state);
                    self.shared.readable.notify_waiters();
                    return Ok(());
                }
            }
            wait.begin();
            writable.await;
        }
    }

    /// The statistics of the channel this sender feeds.
    pub fn stats(&self) -> Arc<ChannelStats> {
        Arc::clone(&self.shared.stats)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.shared.lock();
            state.open_senders -= 1;
            drop(state);
            self.shared.readable.notify_waiters();
        }
    }
}

/// What a receiver gets.
#[derive(Debug)]
pub enum Received {
    /// The next message.
    Message(Message),
    /// A sender went away without finishing: its task failed or was cancelled.
    Broken,
}

/// What a receiver has right now.
#[derive(Debug)]
pub enum TryReceived {
    /// The next message, or a broken sender (as [`Receiver::recv`] returns them).
    Ready(Received),
    /// Nothing queued yet.
    Empty,
    /// The channel ended: its end-of-input or its breakage was already received.
    Closed,
}

/// The consumer's end of a channel.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next message. After [`Message::EndOfInput`] it returns `None`.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            // Taken before looking, so that a message queued in between still wakes us.
            let shared = Arc::clone(&self.shared);
            let readable = shared.readable.notified();
            match self.try_recv() {
                TryReceived::Ready(received) => return Some(received),
                TryReceived::Closed => return None,
                TryReceived::Empty => readable.await,
            }
        }
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> TryReceived {
        self.try_recv_where(true)
    }

    /// The next message if one is queued and is not a batch (a barrier, a watermark, the
    /// end): [`TryReceived::Empty`] when a batch is next, which stays queued.
    pub fn try_recv_control(&mut self) -> TryReceived {
        self.try_recv_where(false)
    }

    fn try_recv_where(&mut self, batches: bool) -> TryReceived {
        let mut state = self.shared.lock();
        if !batches && matches!(state.queue.front(), Some(Message::Batch(_))) {
            return TryReceived::Empty;
        }
        if let Some(message) = state.queue.pop_front() {
            if matches!(message, Message::Batch(_)) {
                state.queued_batches -= 1;
                state.queued_bytes -= message.size_bytes();
            }
            if matches!(message, Message::EndOfInput) {
                // Only one end-of-input is ever queued; mark the channel drained.
                state.receiver_alive = false;
            }
            drop(state);
            self.shared.writable.notify_waiters();
            return TryReceived::Ready(Received::Message(message));
        }
        if !state.receiver_alive {
            return TryReceived::Closed;
        }
        if state.open_senders == 0 {
            // Every sender left, but not all of them finished.
            state.receiver_alive = false;
            return TryReceived::Ready(Received::Broken);
        }
        TryReceived::Empty
    }

    /// The statistics of this channel.
    pub fn stats(&self) -> Arc<ChannelStats> {
        Arc::clone(&self.shared.stats)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.queue.clear();
        drop(state);
        self.shared.writable.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(0..rows as i64);
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    #[tokio::test]
    async fn end_of_input_arrives_once_after_every_sender_finished() {
        let (mut senders, mut receiver) = channel(
            Credit {
                batches: 4,
                bytes: 1 << 20,
            },
            2,
        );
        let mut second = senders.pop().unwrap();
        let mut first = senders.pop().unwrap();
        first.send(Message::Batch(batch(3))).await.unwrap();
        first.send(Message::EndOfInput).await.unwrap();
        second.send(Message::Watermark(7)).await.unwrap();
        second.send(Message::EndOfInput).await.unwrap();
        let mut seen = Vec::new();
        while let Some(Received::Message(message)) = receiver.recv().await {
            seen.push(format!("{message:?}").chars().take(5).collect::<String>());
        }
        assert_eq!(seen, vec!["Batch", "Water", "EndOf"]);
    }

    // The clock is paused: a timeout elapses only when every task is idle, so "the send is
    // still waiting" is decided without depending on real time.
    #[tokio::test(start_paused = true)]
    async fn a_full_channel_makes_the_sender_wait_for_credit() {
        let (mut senders, mut receiver) = channel(
            Credit {
                batches: 2,
                bytes: 1 << 30,
            },
            1,
        );
        let mut sender = senders.pop().unwrap();
        sender.send(Message::Batch(batch(1))).await.unwrap();
        sender.send(Message::Batch(batch(1))).await.unwrap();
        let third = tokio::time::timeout(
            Duration::from_millis(50),
            sender.send(Message::Batch(batch(1))),
        )
        .await;
        assert!(third.is_err(), "the third batch must wait for credit");
        let stats = receiver.stats();
        assert_eq!(stats.rows(), 2, "the abandoned batch was not sent");
        assert_eq!(stats.waiting(), 0, "the abandoned send no longer waits");
        // A wait going on counts as it goes.
        let mut fourth = Box::pin(sender.send(Message::Batch(batch(1))));
        assert!(futures::poll!(&mut fourth).is_pending());
        let before = stats.waited();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(stats.waiting(), 1);
        assert!(stats.waited() >= before + Duration::from_millis(30));
        drop(fourth);
        assert!(
            stats.waited() >= Duration::from_millis(50),
            "its wait counts"
        );
        assert!(matches!(
            receiver.recv().await,
            Some(Received::Message(Message::Batch(_)))
        ));
        sender.send(Message::Batch(batch(1))).await.unwrap();
        assert_eq!(receiver.stats().peak_batches(), 2);
        assert_eq!(receiver.stats().rows(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn byte_credit_bounds_the_queue_but_admits_one_oversized_batch() {
        let big = batch(10_000);
        let size = big.get_array_memory_size();
        let (mut senders, mut receiver) = channel(
            Credit {
                batches: 100,
                bytes: size / 2,
            },
            1,
        );
        let mut sender = senders.pop().unwrap();
        sender.send(Message::Batch(big.clone())).await.unwrap();
        let second = tokio::time::timeout(
            Duration::from_millis(50),
            sender.send(Message::Batch(big.clone())),
        )
        .await;
        assert!(second.is_err(), "a second oversized batch must wait");
        receiver.recv().await.unwrap();
        sender.send(Message::Batch(big)).await.unwrap();
        assert_eq!(receiver.stats().peak_bytes(), size);
    }

    #[tokio::test]
    async fn a_dropped_sender_is_reported_as_broken() {
        let (mut senders, mut receiver) = channel(
            Credit {
                batches: 2,
                bytes: 1 << 20,
            },
            1,
        );
        senders.clear();
        assert!(matches!(receiver.recv().await, Some(Received::Broken)));
        assert!(receiver.recv().await.is_none());
    }

    #[tokio::test]
    async fn senders_fail_once_the_receiver_is_gone() {
        let (mut senders, receiver) = channel(
            Credit {
                batches: 1,
                bytes: 1 << 20,
            },
            1,
        );
        let mut sender = senders.pop().unwrap();
        sender.send(Message::Batch(batch(1))).await.unwrap();
        drop(receiver);
        assert_eq!(
            sender.send(Message::Batch(batch(1))).await,
            Err(Disconnected)
        );
    }
}
