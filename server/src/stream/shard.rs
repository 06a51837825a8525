//! The fan-out shards: how the direct writer delivers a published event to every open stream.
//!
//! Why not a task per stream: each stream's task, woken through the broadcast channel, made one
//! event to 10,000 streams 10,000 wake-ups, each taking the channel's lock, polling the
//! stream's `select!` and its timers, and the last stream waited for all the others on workers
//! that share the cores with everything else. A shard (one per worker) takes each event from
//! the hub once and writes it to all of its streams back to back, each with one non-blocking
//! `writev` of the shared frame, so a delivery costs about what the write costs (BENCHMARKS.md
//! has the floor, and how close this gets to it).
//!
//! What each stream still has of its own:
//! - a small watcher task that waits for the client to close (or send what it should not) and
//!   for its token to expire: rare events, which never hold up the others' deliveries;
//! - when its socket's buffer is full, a queue of what it has not yet taken. The shard writes
//!   it as room appears, never waits on it, and drops the stream when a write makes no progress
//!   for the write deadline, or ends it when the queue holds more events than a subscriber may
//!   fall behind (the lag rule of the per-stream reader).
//!
//! The contract is the one a stream in a task of its own keeps ([`super::direct_writer`]):
//! order, the lag rule, the write deadline, heartbeats, the topic filter, the last chunk on
//! shutdown and the `expired` event. A stream whose feed is not the shard's (it opened just as
//! the hub was cut, and the shard still reads the old feed) runs in a task of its own.

use super::{
    direct_writer::{self, Out, EMPTY, EXPIRED, MAX_BATCH, PING},
    plan::{self, Guard, Plan},
};
use crate::{connection::stalled_client, hub::Frame, metrics::Ended};
use bytes::Bytes;
use slab::Slab;
use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::Poll,
    time::Duration,
};
use tokio::{
    net::TcpStream,
    sync::{
        broadcast::{
            self,
            error::{RecvError, TryRecvError},
        },
        mpsc,
    },
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, Sleep},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// An opened stream (its head, opening, replay and `ready` written), for a shard to take.
pub struct Joining {
    pub(super) out: Out,
    pub(super) plan: Plan,
    /// The connection's place under the caps, held for as long as the stream is open.
    pub(super) slot: Box<dyn Send>,
}

/// The shards of one server: one per worker, each started by the first stream it gets.
pub struct Shards {
    lanes: Vec<Mutex<Option<mpsc::UnboundedSender<Box<Joining>>>>>,
    next: AtomicUsize,
    tasks: TaskTracker,
}

impl Shards {
    /// `tasks`: the server waits for the shards, the watchers and the streams' last writes
    /// when it stops.
    pub fn new(tasks: TaskTracker) -> Shards {
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or(1)
            .max(1);
        Shards {
            lanes: (0..workers).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            tasks,
        }
    }

    /// Hands the stream to the next shard, starting it if it is not running (the first
    /// stream, or the first after the hub was cut); gives the stream back when no shard can
    /// take it (the server is stopping), for a task of its own.
    pub fn join(&self, joining: Box<Joining>) -> Result<(), Box<Joining>> {
        if joining.plan.guard.shutdown().is_cancelled() {
            return Err(joining);
        }
        let lane = &self.lanes[self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len()];
        let sender = {
            let mut lane = lane.lock().unwrap_or_else(|p| p.into_inner());
            match &*lane {
                Some(sender) if !sender.is_closed() => sender.clone(),
                _ => {
                    let sender = self.start(&joining.plan);
                    *lane = Some(sender.clone());
                    sender
                }
            }
        };
        sender.send(joining).map_err(|refused| refused.0)
    }

    fn start(&self, first: &Plan) -> mpsc::UnboundedSender<Box<Joining>> {
        let (joins, joining) = mpsc::unbounded_channel();
        let (leaves, leaving) = mpsc::unbounded_channel();
        let shard = Shard {
            // At the feed's tail: where the first stream stands is worked out when it joins.
            feed: first.live.resubscribe(),
            taken: 0,
            streams: Slab::new(),
            waiting: Vec::new(),
            stall_at: Instant::now(),
            heartbeat: first.heartbeat,
            lag_limit: first.lag_limit,
            ids: 0,
            leaves,
            tasks: self.tasks.clone(),
            gone: Vec::new(),
            newly: Vec::new(),
        };
        let shutdown = first.guard.shutdown().clone();
        self.tasks.spawn(shard.run(joining, leaving, shutdown));
        joins
    }
}

/// What a client did to its open stream, seen by the watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Heard {
    /// Closed, reset, or an error on the socket.
    Closed,
    /// Sent bytes after its request (the answer says `connection: close`).
    Sent,
}

/// Why a watcher speaks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Client(Heard),
    Expired,
}

struct Leave {
    key: usize,
    /// Which stream held `key`: a watcher may speak for a stream the shard already let go.
    id: u64,
    why: Why,
}

/// What a stream has not yet taken: its socket's buffer was full.
struct Queue {
    /// Each piece with the number of events it completes (on a chunk's last piece).
    pieces: VecDeque<(Bytes, usize)>,
    /// Bytes of the first piece already written.
    done: usize,
    /// Events queued and not yet written whole.
    events: usize,
    /// Events that found the queue full. As a reader of its own falls behind while its write
    /// waits: the stream is ended (to resume from the history) once what it holds is written,
    /// unless the write deadline drops it first.
    missed: u64,
    /// The last time a write made progress.
    since: Instant,
}

struct Member {
    out: Out,
    guard: Guard,
    filter: Option<Arc<[String]>>,
    presence: bool,
    pad: Option<Bytes>,
    /// The first feed position (counted as [`Shard::taken`]) this stream has not had.
    from: u64,
    /// Written since the last heartbeat tick.
    wrote: bool,
    queue: Option<Box<Queue>>,
    watcher: JoinHandle<()>,
    id: u64,
    /// In a mutex only to be `Sync` (the shard's loop holds the streams across its waits);
    /// never locked.
    slot: Mutex<Box<dyn Send>>,
}

/// A stream has to go: `None` when the client went (a write failed or stalled), else why the
/// server ends it.
type Gone = Option<Ended>;

impl Member {
    fn wants(&self, frame: &Frame) -> bool {
        if frame.is_announcement() {
            return self.presence;
        }
        super::wanted(&self.filter, &frame.event.topic)
    }

    /// The frames this stream wants, in chunks of at most [`MAX_BATCH`], each with the padding.
    fn offer(&mut self, frames: &[Arc<Frame>], lag_limit: usize) -> Result<(), Gone> {
        // A clone (a reference count), so the chunk can be sent through `&mut self`.
        let pad = self.pad.clone();
        for group in frames.chunks(MAX_BATCH) {
            let mut body: [&Bytes; MAX_BATCH + 1] = [&EMPTY; MAX_BATCH + 1];
            let mut n = 0;
            let mut events = 0;
            for frame in group.iter().filter(|f| self.wants(f)) {
                body[n] = &frame.bytes;
                n += 1;
                events += usize::from(!frame.is_announcement());
            }
            if n == 0 {
                continue;
            }
            if let Some(pad) = &pad {
                body[n] = pad;
                n += 1;
            }
            self.guard.delivered(events as u64);
            self.send(&body[..n], events, lag_limit)?;
        }
        Ok(())
    }

    /// One chunk: written now when the socket takes it (nothing queued before it), else queued.
    fn send(&mut self, body: &[&Bytes], events: usize, lag_limit: usize) -> Result<(), Gone> {
        self.wrote = true;
        if let Some(queue) = &mut self.queue {
            queue.offer(self.out.pieces(&EMPTY, body), events, lag_limit);
            return Ok(());
        }
        match self.out.write_now(&EMPTY, body) {
            Ok(None) => Ok(()),
            Ok(Some((pieces, done))) => {
                self.queue = Some(Queue::started(pieces, done, events));
                Ok(())
            }
            Err(_) => Err(None),
        }
    }

    /// A whole chunk, already framed: one `send` of one buffer when the socket takes it.
    fn send_whole(&mut self, chunk: &Bytes, events: usize, lag_limit: usize) -> Result<(), Gone> {
        self.wrote = true;
        if let Some(queue) = &mut self.queue {
            // Already framed: queued as it is, not as the body of another chunk.
            queue.offer(vec![chunk.clone()], events, lag_limit);
            return Ok(());
        }
        match self.out.send_now(chunk) {
            Ok(sent) if sent == chunk.len() => Ok(()),
            Ok(sent) => {
                self.queue = Some(Queue::started(vec![chunk.clone()], sent, events));
                Ok(())
            }
            Err(_) => Err(None),
        }
    }

    /// Writes what the socket takes of the queue; `true` once it is empty.
    fn flush(&mut self) -> Result<bool, Gone> {
        let Some(queue) = &mut self.queue else {
            return Ok(true);
        };
        while !queue.pieces.is_empty() {
            let parts: Vec<&[u8]> = queue.pieces.iter().map(|(p, _)| &p[..]).collect();
            let written = self
                .out
                .try_write_from(&parts, queue.done)
                .map_err(|_| None)?;
            if written == queue.done {
                return Ok(false);
            }
            queue.since = Instant::now();
            queue.done = written;
            while let Some((piece, events)) = queue.pieces.front() {
                if queue.done < piece.len() {
                    break;
                }
                queue.done -= piece.len();
                queue.events -= events;
                queue.pieces.pop_front();
            }
        }
        let missed = queue.missed;
        self.queue = None;
        if missed > 0 {
            self.guard.lagged(missed);
            return Err(Some(Ended::Lagging));
        }
        Ok(true)
    }
}

impl Queue {
    /// A queue for what a write left: `done` bytes of `pieces` were written.
    fn started(pieces: Vec<Bytes>, done: usize, events: usize) -> Box<Queue> {
        let mut queue = Queue {
            pieces: VecDeque::new(),
            done,
            events: 0,
            missed: 0,
            since: Instant::now(),
        };
        queue.push(pieces, events);
        Box::new(queue)
    }

    /// Queues a chunk behind the others, unless the queue already holds as many events as a
    /// stream may fall behind: then the chunk's events are counted as missed.
    fn offer(&mut self, pieces: Vec<Bytes>, events: usize, lag_limit: usize) {
        if self.missed > 0 || self.events + events > lag_limit {
            self.missed += events as u64;
        } else {
            self.push(pieces, events);
        }
    }

    fn push(&mut self, pieces: Vec<Bytes>, events: usize) {
        let last = pieces.len().saturating_sub(1);
        self.pieces.extend(
            pieces
                .into_iter()
                .enumerate()
                .map(|(i, p)| (p, if i == last { events } else { 0 })),
        );
        self.events += events;
    }
}

/// An event that comes sooner than this after the last round ended is part of a burst.
const BURST_GAP: Duration = Duration::from_millis(10);
/// The longest an event of a burst waits for others to go with it.
const MOST_GATHER: Duration = Duration::from_millis(5);

/// When the shard's delivery rounds end and how long they take, to tell a burst.
///
/// Why: every write costs the kernel about the same whatever it carries, so a round per event
/// costs a burst of events one write per event per stream; a stream in a task of its own
/// batched there by being late. Waiting, in a burst only, about as long as a round takes (at
/// most [`MOST_GATHER`]) lets the events published meanwhile share the round's writes. Events
/// further apart than [`BURST_GAP`] (10 a second, say) never wait, and neither does a round
/// when a whole batch is already waiting (the shard is behind, and must not fall further).
#[derive(Default)]
struct Rounds {
    ended: Option<Instant>,
    took: Duration,
}

impl Rounds {
    fn in_burst(&self) -> bool {
        self.ended.is_some_and(|at| at.elapsed() < BURST_GAP)
    }

    fn gather(&self) -> Duration {
        self.took.min(MOST_GATHER)
    }

    fn done(&mut self, started: Instant) {
        let now = Instant::now();
        self.took = now - started;
        self.ended = Some(now);
    }
}

struct Shard {
    feed: broadcast::Receiver<Arc<Frame>>,
    /// Frames taken from (or lost by) `feed` so far: the feed's positions as this shard counts
    /// them.
    taken: u64,
    streams: Slab<Member>,
    /// The streams with a queue: written when their sockets have room.
    waiting: Vec<usize>,
    /// When the first of them passes the write deadline, if it is still waiting then.
    stall_at: Instant,
    heartbeat: Duration,
    lag_limit: usize,
    ids: u64,
    leaves: mpsc::UnboundedSender<Leave>,
    tasks: TaskTracker,
    /// Streams to let go once the loop over all of them is done.
    gone: Vec<(usize, Gone)>,
    /// Streams that got a queue in that loop.
    newly: Vec<usize>,
}

impl Shard {
    async fn run(
        mut self,
        mut joins: mpsc::UnboundedReceiver<Box<Joining>>,
        mut leaves: mpsc::UnboundedReceiver<Leave>,
        shutdown: CancellationToken,
    ) {
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        // Twice per heartbeat, as a stream of its own ticks: one that wrote nothing for a whole
        // tick gets a ping.
        let half = (self.heartbeat / 2).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + half, half);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch: Vec<Arc<Frame>> = Vec::with_capacity(MAX_BATCH);
        let mut rounds = Rounds::default();
        let ended = loop {
            tokio::select! {
                biased;
                _ = &mut stopping => break Ended::Shutdown,
                joining = joins.recv() => match joining {
                    Some(joining) => self.admit(*joining),
                    // The server let go of its shards: it is stopping.
                    None => break Ended::Shutdown,
                },
                Some(leave) = leaves.recv() => self.leave(leave),
                received = self.feed.recv() => match received {
                    Ok(frame) => {
                        batch.push(frame);
                        // In a burst (this event came soon after the last round), what is
                        // published while one round's time passes goes in the same writes;
                        // a feed already a batch behind has no need to wait.
                        if rounds.in_burst() && self.feed.len() < MAX_BATCH {
                            tokio::time::sleep(rounds.gather()).await;
                        }
                        // Whatever else is already published goes in the same writes.
                        let mut lagged = None;
                        while batch.len() < MAX_BATCH {
                            match self.feed.try_recv() {
                                Ok(frame) => batch.push(frame),
                                Err(TryRecvError::Lagged(missed)) => {
                                    lagged = Some(missed);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let started = Instant::now();
                        self.deliver(&batch);
                        rounds.done(started);
                        batch.clear();
                        if let Some(missed) = lagged {
                            self.lagged(missed);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => self.lagged(missed),
                    // The hub was cut: this feed has ended. The next stream starts a new shard.
                    Err(RecvError::Closed) => break Ended::HubClosed,
                },
                _ = ticks.tick() => self.beat(),
                _ = poll_fn(|cx| writable(&self.streams, &self.waiting, cx)), if !self.waiting.is_empty() => self.flush(),
                _ = tokio::time::sleep_until(self.stall_at), if !self.waiting.is_empty() => self.flush(),
            }
        };
        joins.close();
        self.end_all(ended);
        // Streams handed over before the close: each ends (or goes on) in a task of its own.
        while let Ok(joining) = joins.try_recv() {
            self.alone(*joining);
        }
    }

    fn alone(&self, joining: Joining) {
        let Joining { out, plan, slot } = joining;
        self.tasks.spawn(direct_writer::alone(out, plan, slot));
    }

    /// Takes a stream, from where its own feed stands: the frames the shard has not yet taken
    /// are skipped for it, or the ones the shard has taken and it has not are written first.
    fn admit(&mut self, joining: Joining) {
        let Joining {
            out,
            mut plan,
            slot,
        } = joining;
        if !plan.live.same_channel(&self.feed) || plan.heartbeat != self.heartbeat {
            self.alone(Joining { out, plan, slot });
            return;
        }
        // Both feeds' unread counts at one tail (the stream's read twice around the shard's,
        // until no publish came between): the difference is how far apart they stand.
        let ahead = loop {
            let theirs = plan.live.len();
            let ours = self.feed.len();
            if plan.live.len() == theirs {
                break ours as i64 - theirs as i64;
            }
        };
        let mut missed = Vec::new();
        for _ in ahead..0 {
            match plan.live.try_recv() {
                Ok(frame) => missed.push(frame),
                Err(TryRecvError::Lagged(lost)) => {
                    plan.guard.lagged(lost);
                    plan.guard.end(Ended::Lagging);
                    let Plan { guard, .. } = plan;
                    self.tasks
                        .spawn(retire(out, guard, None, None, slot, Ended::Lagging));
                    return;
                }
                Err(_) => break,
            }
        }
        let Plan {
            filter,
            presence,
            pad,
            expiry,
            guard,
            ..
        } = plan;
        self.ids += 1;
        let key = self.streams.vacant_key();
        let watcher = self.tasks.spawn(watch(
            out.tcp.clone(),
            expiry,
            key,
            self.ids,
            self.leaves.clone(),
        ));
        let mut member = Member {
            out,
            guard,
            filter,
            presence,
            pad,
            from: self.taken + ahead.max(0) as u64,
            wrote: true,
            queue: None,
            watcher,
            id: self.ids,
            slot: Mutex::new(slot),
        };
        let sent = member.offer(&missed, self.lag_limit);
        let queued = member.queue.is_some();
        let key = self.streams.insert(member);
        if queued {
            self.wait(key);
        }
        if let Err(gone) = sent {
            self.gone.push((key, gone));
            self.sweep();
        }
    }

    /// One batch of frames to every stream that has not had them.
    fn deliver(&mut self, batch: &[Arc<Frame>]) {
        let first = self.taken;
        self.taken += batch.len() as u64;
        let events = batch.iter().filter(|f| !f.is_announcement()).count();
        let announcing = events < batch.len();
        // The batch framed once, for each framing, for the streams that take all of it (most):
        // each of them is then one `send` of one shared buffer, as the floor's writes are.
        let mut whole: [Option<Bytes>; 2] = [None, None];
        for (key, member) in self.streams.iter_mut() {
            let skip = member.from.saturating_sub(first);
            if skip >= batch.len() as u64 {
                continue;
            }
            let was_queued = member.queue.is_some();
            let takes_all = skip == 0
                && member.filter.is_none()
                && member.pad.is_none()
                && (member.presence || !announcing);
            let sent = if takes_all {
                let chunked = member.out.chunked;
                let chunk = whole[usize::from(chunked)]
                    .get_or_insert_with(|| direct_writer::framed(batch, chunked));
                member.guard.delivered(events as u64);
                member.send_whole(chunk, events, self.lag_limit)
            } else {
                member.offer(&batch[skip as usize..], self.lag_limit)
            };
            if let Err(gone) = sent {
                self.gone.push((key, gone));
            }
            if !was_queued && member.queue.is_some() {
                self.newly.push(key);
            }
        }
        self.settle();
    }

    /// The shard's feed fell behind the hub: every stream of it missed events, and ends so that
    /// it resumes from the history (as each would have in a task of its own).
    fn lagged(&mut self, missed: u64) {
        self.taken += missed;
        for (key, member) in self.streams.iter() {
            member.guard.lagged(missed);
            self.gone.push((key, Some(Ended::Lagging)));
        }
        self.sweep();
    }

    /// A ping for every stream that wrote nothing since the last tick.
    fn beat(&mut self) {
        for (key, member) in self.streams.iter_mut() {
            if member.queue.is_some() {
                continue;
            }
            if member.wrote {
                member.wrote = false;
                continue;
            }
            if let Err(gone) = member.send(&[&PING], 0, self.lag_limit) {
                self.gone.push((key, gone));
            }
            if member.queue.is_some() {
                self.newly.push(key);
            }
        }
        self.settle();
    }

    /// Starts retrying the streams that got a queue in the loop just done, and lets go of the
    /// ones that have to go.
    fn settle(&mut self) {
        for key in std::mem::take(&mut self.newly) {
            self.wait(key);
        }
        self.sweep();
    }

    fn wait(&mut self, key: usize) {
        if self.waiting.is_empty() {
            if let Some(member) = self.streams.get(key) {
                self.stall_at = Instant::now() + member.out.write_timeout;
            }
        }
        self.waiting.push(key);
    }

    /// Writes what the queued streams' sockets take now, and drops the ones that took nothing
    /// for the write deadline.
    fn flush(&mut self) {
        let now = Instant::now();
        let mut stall_at: Option<Instant> = None;
        let mut still = Vec::with_capacity(self.waiting.len());
        for key in std::mem::take(&mut self.waiting) {
            let Some(member) = self.streams.get_mut(key) else {
                continue;
            };
            match member.flush() {
                Ok(true) => {}
                Ok(false) => {
                    let Some(queue) = &member.queue else {
                        continue;
                    };
                    let deadline = queue.since + member.out.write_timeout;
                    if now >= deadline {
                        stalled_client(&member.guard.client());
                        self.gone.push((key, None));
                    } else {
                        stall_at = Some(stall_at.map_or(deadline, |s| s.min(deadline)));
                    }
                    still.push(key);
                }
                Err(gone) => self.gone.push((key, gone)),
            }
        }
        self.waiting = still;
        if let Some(at) = stall_at {
            self.stall_at = at;
        }
        self.sweep();
    }

    fn leave(&mut self, leave: Leave) {
        if self.streams.get(leave.key).is_none_or(|m| m.id != leave.id) {
            return;
        }
        let gone = match leave.why {
            Why::Expired => Some(Ended::Expired),
            Why::Client(Heard::Closed) => None,
            Why::Client(Heard::Sent) => {
                let client = self.streams[leave.key].guard.client();
                tracing::info!(client = %client, "client sent bytes on its open stream; closing it");
                None
            }
        };
        self.gone.push((leave.key, gone));
        self.sweep();
    }

    fn end_all(&mut self, why: Ended) {
        let keys: Vec<usize> = self.streams.iter().map(|(key, _)| key).collect();
        self.gone
            .extend(keys.into_iter().map(|key| (key, Some(why))));
        self.sweep();
    }

    /// Lets go of the streams in `gone`: the ones the server ends get their last writes in a
    /// task of their own (bounded waits, which must not hold the shard).
    fn sweep(&mut self) {
        for (key, gone) in std::mem::take(&mut self.gone) {
            let Some(member) = self.streams.try_remove(key) else {
                continue;
            };
            let Member {
                out,
                mut guard,
                queue,
                watcher,
                slot,
                ..
            } = member;
            if queue.is_some() {
                self.waiting.retain(|k| *k != key);
            }
            match gone {
                // The client went: the socket closes once the watcher lets go of it.
                None => watcher.abort(),
                Some(why) => {
                    guard.end(why);
                    let slot = slot.into_inner().unwrap_or_else(|p| p.into_inner());
                    self.tasks
                        .spawn(retire(out, guard, queue, Some(watcher), slot, why));
                }
            }
        }
    }
}

/// A stream the server ends: what it had queued, the `expired` event if that is why, and the
/// last chunk, each within the finishing bound, then the close.
async fn retire(
    out: Out,
    guard: Guard,
    queue: Option<Box<Queue>>,
    watcher: Option<JoinHandle<()>>,
    slot: Box<dyn Send>,
    why: Ended,
) {
    if let Some(watcher) = watcher {
        watcher.abort();
        // Its hold on the socket ends with it; the close below needs the socket alone.
        let _ = watcher.await;
    }
    let flushed = match queue {
        None => true,
        Some(queue) => {
            let pieces: Vec<Bytes> = queue.pieces.into_iter().map(|(p, _)| p).collect();
            let sent = tokio::time::timeout(
                direct_writer::FINISH_LIMIT,
                out.wait_and_write(pieces, queue.done),
            )
            .await;
            matches!(sent, Ok(Ok(())))
        }
    };
    if flushed {
        let farewell = (why == Ended::Expired).then_some(&EXPIRED);
        out.finish(farewell).await;
    }
    drop(guard);
    drop(slot);
}

/// Waits for what ends a stream from outside the shard's loop: the client's close (or bytes
/// it should not send) and the token's expiry.
async fn watch(
    tcp: Arc<TcpStream>,
    mut expiry: Option<Pin<Box<Sleep>>>,
    key: usize,
    id: u64,
    leaves: mpsc::UnboundedSender<Leave>,
) {
    let why = tokio::select! {
        biased;
        _ = plan::expired(&mut expiry) => Why::Expired,
        heard = client_left(&tcp) => Why::Client(heard),
    };
    let _ = leaves.send(Leave { key, id, why });
}

/// Waits until the client closes its end (or sends what it should not).
async fn client_left(tcp: &TcpStream) -> Heard {
    loop {
        if tcp.readable().await.is_err() {
            return Heard::Closed;
        }
        let mut scratch = [0u8; 1];
        match tcp.try_read(&mut scratch) {
            Ok(0) => return Heard::Closed,
            Ok(_) => return Heard::Sent,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Heard::Closed,
        }
    }
}

/// Ready when a waiting stream's socket has room (each one's waker is registered).
fn writable(
    streams: &Slab<Member>,
    waiting: &[usize],
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    let mut ready = false;
    for member in waiting.iter().filter_map(|key| streams.get(*key)) {
        ready |= member.out.tcp.poll_write_ready(cx).is_ready();
    }
    if ready {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hub::HubSettings, limits::PerAddress, presence::Presence};
    use events_core::hub::{Hub, Resume};
    use tokio::io::AsyncReadExt;

    fn hub() -> Hub {
        Hub::new(HubSettings {
            topics: vec!["a".into()],
            history: 100,
            max_text: 100_000,
            subscriber_buffer: 1000,
        })
    }

    /// A loopback connection: the server's end and the client's.
    async fn connection() -> (TcpStream, Client) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, client) = tokio::join!(listener.accept(), TcpStream::connect(addr));
        let (tcp, _) = accepted.expect("accept");
        (tcp, Client::new(client.expect("connect")))
    }

    /// A stream opened on `hub` now (its feed starts here): what a shard gets. Not async, so
    /// a test decides when the shard runs (at its next wait: the runtime has one thread).
    fn opened(hub: &Hub, tcp: TcpStream) -> Box<Joining> {
        let peer = tcp.peer_addr().expect("peer");
        let plan = Plan {
            opening: Bytes::new(),
            replay: Vec::new(),
            ready: Bytes::new(),
            live: hub.subscribe(&Resume::Fresh).live,
            heartbeat: Duration::from_secs(60),
            lag_limit: 1000,
            filter: None,
            presence: false,
            pad: None,
            expiry: None,
            guard: Guard::new(
                Arc::new(AtomicUsize::new(1)),
                CancellationToken::new(),
                peer.to_string(),
                crate::metrics::deliveries(),
                PerAddress::default()
                    .acquire(peer.ip(), 0)
                    .expect("no limit"),
                Presence::new(vec!["a".into()], false).seat(None, None),
            ),
        };
        let out = Out {
            tcp: Arc::new(tcp),
            write_timeout: Duration::from_secs(10),
            chunked: true,
        };
        Box::new(Joining {
            out,
            plan,
            slot: Box::new(()),
        })
    }

    /// A stream's client: the ids it has read so far.
    struct Client {
        tcp: TcpStream,
        /// Text after the last whole line.
        partial: String,
        ids: Vec<u64>,
    }

    impl Client {
        fn new(tcp: TcpStream) -> Client {
            Client {
                tcp,
                partial: String::new(),
                ids: Vec::new(),
            }
        }

        /// The ids read by the time there are `want` of them (or the bound passed).
        async fn ids(&mut self, want: usize) -> Vec<u64> {
            let until = Instant::now() + Duration::from_secs(10);
            let mut buf = vec![0u8; 64 * 1024];
            while self.ids.len() < want {
                match tokio::time::timeout_at(until, self.tcp.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        self.partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                        let whole = self.partial.rfind('\n').map_or(0, |i| i + 1);
                        let lines: String = self.partial.drain(..whole).collect();
                        self.ids.extend(
                            lines
                                .lines()
                                .filter_map(|l| l.strip_prefix("id: "))
                                .filter_map(|id| id.trim().parse::<u64>().ok()),
                        );
                    }
                    _ => break,
                }
            }
            self.ids.clone()
        }
    }

    fn publish(hub: &Hub, text: &str) -> u64 {
        hub.publish("a", text).expect("publish").event.id
    }

    /// A stream joins a shard that is behind its own feed (the events published before it
    /// opened are skipped for it) and one that is ahead of it (the events the shard already
    /// wrote to the others are written to it first, from its own feed): each gets every event
    /// after its opening, once, in order.
    #[tokio::test]
    async fn a_stream_joins_where_its_own_feed_stands() {
        let hub = hub();
        let shards = Shards::new(TaskTracker::new());
        let (a, mut a_client) = connection().await;
        let (b, mut b_client) = connection().await;
        let (c, mut c_client) = connection().await;
        assert!(shards.join(opened(&hub, a)).is_ok());
        let e1 = publish(&hub, "one");
        let e2 = publish(&hub, "two");
        // Opened after e2, joined before the shard has read e1 (nothing waited since).
        let b = opened(&hub, b);
        let e3 = publish(&hub, "three");
        assert!(shards.join(b).is_ok());
        assert_eq!(a_client.ids(3).await, [e1, e2, e3]);
        assert_eq!(b_client.ids(1).await, [e3]);

        // Opened before e4, joined after the shard has written e4 and e5 to the others.
        let c = opened(&hub, c);
        let e4 = publish(&hub, "four");
        let e5 = publish(&hub, "five");
        assert_eq!(a_client.ids(5).await, [e1, e2, e3, e4, e5]);
        assert!(shards.join(c).is_ok());
        let e6 = publish(&hub, "six");
        assert_eq!(c_client.ids(3).await, [e4, e5, e6]);
        assert_eq!(b_client.ids(4).await, [e3, e4, e5, e6]);
        assert_eq!(a_client.ids(6).await, [e1, e2, e3, e4, e5, e6]);
    }

    /// A client that does not read while events pile up past its socket's buffer gets them all,
    /// in order, once it reads again: what did not fit waited in its queue, and the shard went
    /// on with the others meanwhile.
    #[tokio::test]
    async fn a_full_socket_gets_its_queue_in_order() {
        let hub = hub();
        let shards = Shards::new(TaskTracker::new());
        let (slow, mut slow_client) = connection().await;
        let (quick, mut quick_client) = connection().await;
        assert!(shards.join(opened(&hub, slow)).is_ok());
        assert!(shards.join(opened(&hub, quick)).is_ok());
        let text = "x".repeat(60_000);
        let mut published = Vec::new();
        // 12 MB, far more than loopback's socket buffers hold, in steps the quick client reads.
        for _ in 0..20 {
            for _ in 0..10 {
                published.push(publish(&hub, &text));
            }
            assert_eq!(quick_client.ids(published.len()).await, published);
        }
        assert_eq!(slow_client.ids(published.len()).await, published);
    }
}
