//! The one thread per process that writes the log: it takes publishes in batches (whatever
//! queued while the last commit ran, up to [`BATCH`]) and commits each batch in one
//! transaction, so many publishers cost one commit, not one each. SQLite lets one process
//! write at a time; the others wait inside the busy timeout, so a publish on another
//! process only waits, it never fails for it.
//!
//! A thread of its own and not `spawn_blocking` per publish: the connection is not shared
//! between threads, batching needs one queue, and a commit's wait for the disk then never
//! holds one of the runtime's threads.
//!
//! SQLite's automatic checkpoint stays in this thread's commits, although it is the one step
//! of `synchronous = NORMAL` that waits for the disk (about one commit in a hundred, 0.2 ms
//! typical, 5 ms the worst seen). Run from a thread of its own, a `PASSIVE` checkpoint never
//! catches up with a writer that never pauses, so the WAL is never reused and grows: 31 MB in
//! 3 s of one publisher, measured.

use super::{
    file::{self, Durability},
    wake::{self, Waker},
};
use crate::hub::Hub;
use events_core::{event::LiveEvent, hub::now_ms};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::sync::{mpsc, oneshot, Notify};

/// Most publishes in one transaction.
const BATCH: usize = 256;
/// Most events the writer reads into the hub after a commit (more is the reader's job).
const DELIVER_MAX: usize = 512;
/// Most events removed by one trim: retention never holds the write lock for long.
const TRIM_CHUNK: usize = 1000;

pub enum Job {
    /// Store an event; the answer is the event with its id. A `tick` is stored only while
    /// this process holds the tick's lease (`None` when another process ticks).
    Publish(Pending),
    /// Renew this process's row in `peers`, and trim.
    Heartbeat,
    /// The process is stopping: others need not wake it any more, and may tick.
    Leave,
}

pub struct Pending {
    pub topic: String,
    pub text: String,
    pub sent_ms: u64,
    pub tick: bool,
    pub reply: oneshot::Sender<Result<Option<LiveEvent>, String>>,
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
}

impl Writer {
    pub fn new(
        conn: Connection,
        settings: Settings,
        port: u16,
        hub: Arc<Hub>,
        local: Arc<Notify>,
    ) -> rusqlite::Result<Writer> {
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
        })
    }

    /// Runs on its own thread until every sender is gone.
    pub fn spawn(self, jobs: mpsc::Receiver<Job>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || self.run(jobs))
            .map(|_| ())
    }

    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(job) = jobs.blocking_recv() {
            let mut maintenance = false;
            let mut leave = false;
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Publish(pending) => batch.push(pending),
                    Job::Heartbeat => maintenance = true,
                    Job::Leave => leave = true,
                }
                if batch.len() < BATCH {
                    next = jobs.try_recv().ok();
                }
            }
            let stored = !batch.is_empty();
            if stored {
                self.publish(&mut batch);
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
    }

    fn publish(&mut self, batch: &mut Vec<Pending>) {
        let result = self.commit(batch);
        match result {
            Ok((stored, peers)) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.settings.path.display(), "the event log takes events again");
                }
                if stored.iter().any(Option::is_some) {
                    self.waker.wake(&peers);
                    if !self.deliver(&stored) {
                        self.local.notify_one();
                    }
                }
                for (pending, event) in batch.drain(..).zip(stored) {
                    let _ = pending.reply.send(Ok(event));
                }
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
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(why.clone()));
                }
            }
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
            reply: oneshot::channel().0,
        }
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
        let (jobs, queue) = mpsc::channel(1);
        jobs.try_send(Job::Leave).expect("queue");
        drop(jobs);
        a.run(queue);
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
        let kept: Vec<u64> = file::after(&w.conn, 0, 100)
            .expect("read")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            kept,
            ids[2..],
            "an expired event after a young one waits: no hole in the ids"
        );
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
        let kept: Vec<u64> = file::after(&w.conn, 0, 100)
            .expect("read")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            kept,
            ids[ids.len() - 10..],
            "the newest EVENTS_HISTORY events"
        );
    }
}
