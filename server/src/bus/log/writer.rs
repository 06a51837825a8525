//! The log's one writing connection per process, and the thread that owns its slow work.
//!
//! - **A publish that finds the writer free commits where it is**, on the publisher's task:
//!   one transaction of about 50 µs that never waits (no busy wait for another process, no
//!   flush to the disk in `synchronous = NORMAL`). On this 2-core virtual machine each hand
//!   over to another thread and back cost more than the commit itself (a wake across cores),
//!   so a publisher sending one request at a time got 2.5× fewer publishes per second through
//!   the thread than the in-memory store does.
//! - **Everything else goes to the writer's thread**: publishes that arrive while a commit
//!   runs (taken in batches, whatever queued meanwhile up to [`BATCH`], one transaction each,
//!   so many publishers cost one commit, not one each); a publish that found another process
//!   writing (it waits there inside the busy timeout, so a publish on another process only
//!   waits, it never fails for it); every publish when each commit is flushed to the disk
//!   (`EVENTS_LOG_SYNC=full`); the heartbeat and the trim it brings; and the checkpoints.
//!
//! Checkpoints are the one step of `synchronous = NORMAL` that waits for the disk (0.2 ms
//! typical, 5 ms the worst seen), so the connection's automatic ones are off and the thread
//! runs one every [`CHECKPOINT_EVERY`] commits, holding the writer: publishes meanwhile queue
//! for it rather than block a runtime thread. Holding the writer is what lets a checkpoint
//! finish: run beside a writer that never pauses, a `PASSIVE` checkpoint never catches up, the
//! WAL is never reused and grows (31 MB in 3 s of one publisher, measured).

use super::{
    file::{self, Durability},
    wake::{self, Waker},
};
use crate::hub::Hub;
use events_core::{event::LiveEvent, hub::now_ms};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, TryLockError},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot, Notify};

/// Most publishes in one transaction.
const BATCH: usize = 256;
/// Most events the writer reads into the hub after a commit (more is the reader's job).
const DELIVER_MAX: usize = 512;
/// Most events removed by one trim: retention never holds the write lock for long.
const TRIM_CHUNK: usize = 1000;
/// Commits between two checkpoints. A publish writes about two pages to the WAL, so this stays
/// under SQLite's own default of one per 1,000 pages.
const CHECKPOINT_EVERY: u32 = 300;

pub enum Job {
    /// Store an event; the answer is the event with its id. A `tick` is stored only while
    /// this process holds the tick's lease (`None` when another process ticks).
    Publish(Pending, Reply),
    /// Renew this process's row in `peers`, and trim.
    Heartbeat,
    /// A checkpoint is due (asked by a publish that committed on its own task).
    Checkpoint,
    /// The process is stopping: others need not wake it any more, and may tick.
    Leave,
}

pub struct Pending {
    pub topic: String,
    pub text: String,
    pub sent_ms: u64,
    pub tick: bool,
}

/// What a publish gets: its event, `None` for a tick another process runs, or why not.
pub type Stored = Result<Option<LiveEvent>, String>;
pub type Reply = oneshot::Sender<Stored>;

/// The writer, shared by its thread and the publishers that find it free.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Writer>>);

impl Shared {
    /// Commits `pending` on the caller's thread when nothing else is writing in this process
    /// and no other process holds the file; `Err` gives it back for the writer's thread. With
    /// the answer: whether to ask the thread for a checkpoint (once per due one).
    pub fn try_publish(&self, pending: Pending) -> Result<(Stored, bool), Pending> {
        let mut writer = match self.0.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(pending),
        };
        if writer.settings.durability != Durability::Process {
            return Err(pending);
        }
        // Never wait here: a wait for another process belongs on the writer's thread.
        let _ = writer.conn.busy_timeout(Duration::ZERO);
        let committed = writer.commit(std::slice::from_ref(&pending));
        let _ = writer.conn.busy_timeout(file::BUSY_TIMEOUT);
        if committed.as_ref().is_err_and(is_busy) {
            return Err(pending);
        }
        let stored = writer.settle(committed).map(|mut s| s.pop().flatten());
        let checkpoint = writer.commits >= CHECKPOINT_EVERY && !writer.checkpoint_asked;
        writer.checkpoint_asked |= checkpoint;
        Ok((stored, checkpoint))
    }
}

fn lock(writer: &Mutex<Writer>) -> MutexGuard<'_, Writer> {
    writer.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub struct Settings {
    pub path: PathBuf,
    pub durability: Durability,
    /// Events kept (`EVENTS_HISTORY`).
    pub history: usize,
    /// Events older than this are removed (`EVENTS_HISTORY_AGE`).
    pub max_age: Option<Duration>,
    /// A process that stops ticking for this long lets another take the tick over.
    pub tick_lease: Duration,
}

pub struct Writer {
    conn: Connection,
    settings: Settings,
    /// This process's wake port (its row in `peers`).
    port: u16,
    /// Who holds the tick's lease: random per process.
    tick_owner: i64,
    waker: Waker,
    /// This process's hub: the writer puts its own events in it (see [`Writer::deliver`]).
    hub: Arc<Hub>,
    /// Wakes this process's own reader.
    local: Arc<Notify>,
    /// The last trim removed a full chunk: more is due at once.
    behind: bool,
    /// Since when writes fail, for one log line per outage.
    failing: bool,
    /// Commits since the last checkpoint.
    commits: u32,
    /// A publish asked the thread for a checkpoint that has not run yet.
    checkpoint_asked: bool,
}

impl Writer {
    pub fn new(
        conn: Connection,
        settings: Settings,
        port: u16,
        hub: Arc<Hub>,
        local: Arc<Notify>,
    ) -> rusqlite::Result<Writer> {
        // The thread runs them (see the module's comment).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        wake::register(&conn, port, now_ms())?;
        Ok(Writer {
            conn,
            settings,
            port,
            tick_owner: (fastrand::u64(..) >> 1) as i64 | 1,
            waker: Waker::bind(),
            hub,
            local,
            behind: false,
            failing: false,
            commits: 0,
            checkpoint_asked: false,
        })
    }

    /// Starts the thread, which runs until every sender is gone.
    pub fn spawn(self, jobs: mpsc::Receiver<Job>) -> std::io::Result<Shared> {
        let shared = Shared(Arc::new(Mutex::new(self)));
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || run(&writer.0, jobs))
            .map(|_| shared)
    }

    /// One round of the thread's work: what queued since the last one.
    fn handle(&mut self, jobs: Vec<Job>) {
        let (mut batch, mut replies) = (Vec::new(), Vec::new());
        let (mut maintenance, mut leave) = (false, false);
        for job in jobs {
            match job {
                Job::Publish(pending, reply) => {
                    batch.push(pending);
                    replies.push(reply);
                }
                Job::Heartbeat => maintenance = true,
                Job::Checkpoint => {}
                Job::Leave => leave = true,
            }
        }
        let stored = !batch.is_empty();
        if stored {
            let result = self.commit(&batch);
            match self.settle(result) {
                Ok(events) => {
                    for (reply, event) in replies.into_iter().zip(events) {
                        let _ = reply.send(Ok(event));
                    }
                }
                Err(why) => {
                    for reply in replies {
                        let _ = reply.send(Err(why.clone()));
                    }
                }
            }
        }
        if maintenance {
            if let Err(e) = wake::register(&self.conn, self.port, now_ms()) {
                tracing::debug!(error = %e, "cannot renew this process's row in the event log");
            }
        }
        // A publish trims in its own commit.
        if (maintenance || self.behind) && !stored {
            self.trim();
        }
        if self.commits >= CHECKPOINT_EVERY {
            self.checkpoint();
        }
        if leave {
            let _ = wake::unregister(&self.conn, self.port);
            // A process that stops hands the tick over at once, not after its lease.
            let _ = self.conn.execute(
                "UPDATE meta SET value = 0 WHERE key = 'tick_until' \
                 AND (SELECT value FROM meta WHERE key = 'tick_owner') = ?1",
                [self.tick_owner],
            );
        }
    }

    /// After a commit, on whichever thread ran it: one log line per outage, the other
    /// processes woken, this process's hub given the events. The events, in the batch's order.
    fn settle(
        &mut self,
        committed: rusqlite::Result<(Vec<Option<LiveEvent>>, Vec<u16>)>,
    ) -> Result<Vec<Option<LiveEvent>>, String> {
        match committed {
            Ok((stored, peers)) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.settings.path.display(), "the event log takes events again");
                }
                self.commits += 1;
                if stored.iter().any(Option::is_some) {
                    self.waker.wake(&peers);
                    if !self.deliver(&stored) {
                        self.local.notify_one();
                    }
                }
                Ok(stored)
            }
            Err(e) => {
                let why = why(&e);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        path = %self.settings.path.display(),
                        error = %e,
                        "the event log cannot store events: {why}; publishing answers 503, open streams stay up"
                    );
                }
                Err(why)
            }
        }
    }

    /// Copies the WAL back into the file. While this holds the writer no commit of this
    /// process can land, so the copy finishes and the next commit starts the WAL over.
    fn checkpoint(&mut self) {
        self.commits = 0;
        self.checkpoint_asked = false;
        let passive = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(e) = passive {
            // The WAL only grows until the next one; nothing a publisher waits on.
            tracing::debug!(error = %e, "the event log's checkpoint did not run; trying again later");
        }
    }

    /// Puts what was just committed (and whatever came before it that the hub lacks) into
    /// this process's hub before the publishers get their 201, instead of leaving it to the
    /// reader: one thread handoff less per publish, and a stream opened after the 201 has the
    /// event. Order holds because both the writer and the reader go on from a point the hub
    /// already holds, ids in the file have no holes, and the hub refuses an id it has passed.
    /// When the batch follows the hub's head (the usual case) it goes in as it is; otherwise
    /// what lies between is read from the file first. Returns false when it left the work to
    /// the reader (a hole: events trimmed before this process read them; or more than one
    /// read's worth behind).
    fn deliver(&self, stored: &[Option<LiveEvent>]) -> bool {
        let mut events = stored.iter().flatten();
        let Some(first) = events.next() else {
            return true;
        };
        let up_to = events.last().map_or(first.id, |e| e.id);
        let from = self.hub.head();
        if from >= up_to {
            return true;
        }
        if from + 1 == first.id {
            super::into_hub(&self.hub, stored.iter().flatten().cloned());
            return true;
        }
        if up_to - from > DELIVER_MAX as u64 {
            return false;
        }
        let Ok(events) = file::after(&self.conn, from, DELIVER_MAX) else {
            return false;
        };
        if events.first().map(|e| e.id) != Some(from + 1) {
            return false;
        }
        super::into_hub(&self.hub, events);
        self.hub.head() >= up_to
    }

    /// One transaction: the events get consecutive ids after the stored head; the other
    /// processes to wake are read under the same lock.
    fn commit(
        &mut self,
        batch: &[Pending],
    ) -> rusqlite::Result<(Vec<Option<LiveEvent>>, Vec<u16>)> {
        let now = now_ms();
        let lease = self.settings.tick_lease;
        let owner = self.tick_owner;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut head = file::head(&tx)?;
        let mut stored = Vec::with_capacity(batch.len());
        let mut ticks: Option<bool> = None;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (id, topic, text, sent_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for Pending {
                topic,
                text,
                sent_ms,
                tick,
                ..
            } in batch
            {
                if *tick {
                    let holds = match ticks {
                        Some(holds) => holds,
                        None => *ticks.insert(take_tick(&tx, owner, now, lease)?),
                    };
                    if !holds {
                        stored.push(None);
                        continue;
                    }
                }
                head += 1;
                insert.execute(params![head as i64, topic, text, *sent_ms as i64])?;
                stored.push(Some(LiveEvent {
                    id: head,
                    topic: topic.clone(),
                    text: text.clone(),
                    sent_ms: *sent_ms,
                }));
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'head'",
            [head as i64],
        )?;
        let peers = wake::others(&tx, self.port, now)?;
        // Retention in the same commit: one write to the disk per batch, not two.
        let trimmed = trim(&tx, head, self.settings.history, self.settings.max_age)?;
        tx.commit()?;
        self.behind = trimmed == TRIM_CHUNK;
        Ok((stored, peers))
    }

    /// Trims outside a publish (the heartbeat, or a trim that is behind), in a transaction
    /// of its own.
    fn trim(&mut self) {
        let trimmed = (|| -> rusqlite::Result<usize> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let head = file::head(&tx)?;
            let n = trim(&tx, head, self.settings.history, self.settings.max_age)?;
            tx.commit()?;
            Ok(n)
        })();
        match trimmed {
            Ok(n) => self.behind = n == TRIM_CHUNK,
            Err(e) => {
                self.behind = false;
                tracing::debug!(error = %e, "cannot trim the event log now; trying again later");
            }
        }
    }
}

/// The thread: takes what queued (up to [`BATCH`] publishes) without the writer, then holds
/// the writer for one round.
fn run(writer: &Mutex<Writer>, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        let mut round = vec![job];
        let mut publishes = 1;
        while publishes < BATCH {
            let Ok(job) = jobs.try_recv() else { break };
            publishes += usize::from(matches!(job, Job::Publish(..)));
            round.push(job);
        }
        lock(writer).handle(round);
    }
}

/// Removes the oldest events past the count (`history`) or the age, at most [`TRIM_CHUNK`]
/// at a time so that retention never holds the write lock for long; returns how many. The
/// file holds what the hub's ring holds, so a position older than `EVENTS_HISTORY` gets the
/// same `reset` from either store.
///
/// Only ever a run from the oldest event on: the ids left stay consecutive, which is what
/// tells a reader that a missing id was trimmed. An event kept past its age because an
/// older-stamped one follows it goes with the next trim. The cost is one seek at the oldest
/// end when nothing is due, and a walk over exactly the rows removed when something is.
fn trim(
    conn: &Connection,
    head: u64,
    history: usize,
    max_age: Option<Duration>,
) -> rusqlite::Result<usize> {
    let oldest: Option<(i64, i64)> = conn
        .prepare_cached("SELECT id, sent_ms FROM events ORDER BY id LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((oldest, oldest_ms)) = oldest else {
        return Ok(0);
    };
    let mut cut = head as i64 - history as i64;
    let past_age = super::oldest_kept_ms(max_age) as i64;
    if oldest_ms < past_age {
        // The first event young enough to keep; everything before it goes.
        let young: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM events WHERE id >= ?1 AND id < ?2 AND sent_ms >= ?3 \
                 ORDER BY id LIMIT 1",
            )?
            .query_row(params![oldest, oldest + TRIM_CHUNK as i64, past_age], |r| {
                r.get(0)
            })
            .optional()?;
        cut = cut.max(young.map_or(i64::MAX, |id| id - 1));
    }
    let cut = cut.min(oldest + TRIM_CHUNK as i64 - 1);
    if cut < oldest {
        return Ok(0);
    }
    conn.prepare_cached("DELETE FROM events WHERE id >= ?1 AND id <= ?2")?
        .execute(params![oldest, cut])
}

/// Whether this process may tick now; takes or renews the lease when it may.
fn take_tick(
    tx: &rusqlite::Transaction<'_>,
    owner: i64,
    now: u64,
    lease: Duration,
) -> rusqlite::Result<bool> {
    let value = |key: &str| -> rusqlite::Result<i64> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
    };
    let (holder, until) = (value("tick_owner")?, value("tick_until")?);
    if holder != owner && until > now as i64 {
        return Ok(false);
    }
    tx.execute(
        "UPDATE meta SET value = CASE key WHEN 'tick_owner' THEN ?1 ELSE ?2 END \
         WHERE key IN ('tick_owner', 'tick_until')",
        params![owner, (now + lease.as_millis() as u64) as i64],
    )?;
    Ok(true)
}

/// Why a commit failed, as the publisher's 503 says it.
fn why(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "the disk holding the event log is full".into(),
        Some(ErrorCode::ReadOnly) => {
            "the event log is read-only (the data folder's rights, or a read-only disk)".into()
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "another process held the event log for over {:?}",
            file::BUSY_TIMEOUT
        ),
        Some(ErrorCode::SystemIoFailure) => format!("the disk failed a write ({e})"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "sse-live-writer-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn writer(dir: &Dir, port: u16, history: usize) -> Writer {
        let path = dir.0.join(file::FILE_NAME);
        let conn = file::open(&path, Durability::Process).expect("open");
        Writer::new(
            conn,
            Settings {
                path,
                durability: Durability::Process,
                history,
                max_age: None,
                tick_lease: Duration::from_secs(60),
            },
            port,
            Arc::new(Hub::starting_at(
                crate::hub::HubSettings {
                    topics: vec!["tick".into(), "chat".into()],
                    history: 100,
                    max_text: 1000,
                    subscriber_buffer: 16,
                },
                0,
            )),
            Arc::new(Notify::new()),
        )
        .expect("writer")
    }

    fn pending(topic: &str, tick: bool) -> Pending {
        Pending {
            topic: topic.into(),
            text: "x".into(),
            sent_ms: now_ms(),
            tick,
        }
    }

    /// The ids the file holds, oldest first.
    fn kept_ids(conn: &Connection) -> Vec<u64> {
        file::after(conn, 0, 100)
            .expect("read")
            .iter()
            .map(|e| e.id)
            .collect()
    }

    #[test]
    fn one_process_ticks_at_a_time_and_hands_the_tick_over_when_it_leaves() {
        let d = dir("tick");
        let mut a = writer(&d, 1, 100);
        let mut b = writer(&d, 2, 100);
        let (stored, peers) = a.commit(&[pending("tick", true)]).expect("commit");
        assert!(stored[0].is_some(), "the first to tick takes the lease");
        assert_eq!(peers, vec![2], "the other process is woken");
        let (stored, _) = b
            .commit(&[pending("tick", true), pending("chat", false)])
            .expect("commit");
        assert!(
            stored[0].is_none(),
            "the lease is held by the other process"
        );
        assert!(stored[1].is_some(), "a publish is stored whoever ticks");
        // `a` stops: its lease is handed over at once.
        a.handle(vec![Job::Leave]);
        let (stored, peers) = b.commit(&[pending("tick", true)]).expect("commit");
        assert!(stored[0].is_some(), "taken over after the holder left");
        assert!(
            peers.is_empty(),
            "the process that left is not woken any more"
        );
    }

    #[test]
    fn age_trims_only_from_the_oldest_end_so_the_ids_left_have_no_hole() {
        let d = dir("age");
        let mut w = writer(&d, 4, 100);
        let (old, young) = (now_ms() - 3_600_000, now_ms());
        let batch: Vec<Pending> = [old, old, young, old, young]
            .into_iter()
            .map(|sent_ms| Pending {
                sent_ms,
                ..pending("chat", false)
            })
            .collect();
        let (stored, _) = w.commit(&batch).expect("commit");
        let ids: Vec<u64> = stored.into_iter().map(|e| e.expect("stored").id).collect();
        let head = file::head(&w.conn).expect("head");
        let removed = trim(&w.conn, head, 100, Some(Duration::from_secs(60))).expect("trim");
        assert_eq!(removed, 2, "the two expired events at the oldest end");
        let kept = kept_ids(&w.conn);
        assert_eq!(
            kept,
            ids[2..],
            "an expired event after a young one waits: no hole in the ids"
        );
    }

    #[test]
    fn publishes_on_their_own_task_leave_checkpoints_to_the_thread_and_the_wal_stays_small() {
        let d = dir("inline");
        let path = d.0.join(file::FILE_NAME);
        let (jobs, queue) = mpsc::channel(16);
        let shared = writer(&d, 5, 100).spawn(queue).expect("thread");
        let wal = || std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
        let through_thread = |pending| {
            let (reply, answer) = oneshot::channel();
            jobs.blocking_send(Job::Publish(pending, reply))
                .expect("thread");
            answer.blocking_recv().expect("answer")
        };
        let mut ids = Vec::new();
        let (mut here, mut largest, mut asked) = (0, 0, false);
        for _ in 0..6 * CHECKPOINT_EVERY {
            // As the bus does: here when the writer is free, else through its thread. Right
            // after asking for a checkpoint, through the thread: that publish is answered
            // once the checkpoint ran, so the WAL's size does not depend on how soon the
            // thread gets a core.
            let tried = if asked {
                Err(pending("chat", false))
            } else {
                shared.try_publish(pending("chat", false))
            };
            asked = false;
            let stored = match tried {
                Ok((stored, checkpoint)) => {
                    here += 1;
                    if checkpoint {
                        jobs.blocking_send(Job::Checkpoint).expect("thread");
                        asked = true;
                    }
                    stored
                }
                Err(pending) => through_thread(pending),
            };
            ids.push(stored.expect("stored").expect("an event").id);
            largest = largest.max(wal());
        }
        // Nothing else writes before the first checkpoint is asked for.
        assert!(here >= CHECKPOINT_EVERY, "commits here: {here}");
        assert!(
            ids.windows(2).all(|p| p[1] == p[0] + 1),
            "one order, no hole"
        );
        // With checkpoints it stayed near 3 MB; without, it passed 14 MB (1,800 commits of
        // about two 4 KiB pages each).
        assert!(largest < 6 << 20, "the WAL reached {largest} bytes");
    }

    #[test]
    fn ids_follow_each_other_and_the_file_keeps_the_newest_history() {
        let d = dir("trim");
        let mut w = writer(&d, 3, 10);
        let mut ids = Vec::new();
        for _ in 0..5 {
            let batch: Vec<Pending> = (0..7).map(|_| pending("chat", false)).collect();
            let (stored, _) = w.commit(&batch).expect("commit");
            ids.extend(stored.into_iter().map(|e| e.expect("stored").id));
            w.trim();
        }
        assert!(ids.windows(2).all(|p| p[1] == p[0] + 1), "{ids:?}");
        let kept = kept_ids(&w.conn);
        assert_eq!(
            kept,
            ids[ids.len() - 10..],
            "the newest EVENTS_HISTORY events"
        );
    }
}
