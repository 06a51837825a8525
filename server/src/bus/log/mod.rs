//! The durable event log (the default store): a SQLite file in the data folder holds every
//! event, so the history survives restarts and IIS recycles, and every process pointed at the
//! same folder (an overlapped recycle, `processesPerApplication` > 1, two `cargo run`s) shares
//! one ordered log with one id per event.
//!
//! - **Publishing** stores the event through this process's [writer] (on the publisher's
//!   task when the writer is free, else on its thread, one transaction per batch) and
//!   answers with its id: a publisher's 201 means the event is in the file. The writer also
//!   puts the event in this process's hub before the answer, so a stream opened after the
//!   201 has it.
//! - **One reader task per process** reads what is new from the file, in id order, into the
//!   local [`Hub`], which stays the fan-out core. It is woken by this process's writer, by
//!   the other processes' writers ([wake]), and once per [`wake::POLL`] whatever happens.
//!   So every process's hub holds every event, whichever process it was published on, in
//!   the same order with the same id, and a client resumes on any of them.
//! - **At start** the newest `EVENTS_HISTORY` events are loaded, so ids continue, the first
//!   page shows the history, and `Last-Event-ID` resumes exactly across a restart.
//! - **Resuming** from before the local history but still in the file is served from it.
//!
//! The format is SQLite's, not ours ([file]): WAL mode, one writer at a time, readers never
//! blocked by it, and every commit atomic, so a process killed mid-publish loses no
//! acknowledged event and leaves no torn one.

pub mod file;
pub mod wake;
pub mod writer;

use super::{older_wanted, with_older, PublishError};
use crate::hub::{Frame, Hub, HubSettings, InsertError, Resume, Subscription};
use events_core::{event::LiveEvent, hub::now_ms};
use file::Durability;
use rusqlite::{Connection, OpenFlags};
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;
use writer::{Job, Pending, Shared, Writer};

/// The store's name in the 503's message.
const STORE: &str = "event log";
/// Events read from the file at once.
const BATCH: usize = 512;
/// Publishes queued for the writer before publishers wait for room.
const QUEUE: usize = 4096;
/// Most events served to one resuming client from the file, on top of the local history.
const OLDER_LIMIT: usize = 1000;
/// The longest a client holding an id this process has not read yet waits for its reader.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Settings {
    /// The data folder; the log is [`file::FILE_NAME`] in it.
    pub dir: PathBuf,
    pub durability: Durability,
    pub max_age: Option<Duration>,
    /// Bytes a resume may read from the file (`EVENTS_MAX_REPLAY`).
    pub max_replay: usize,
    /// The tick's interval, when this process ticks.
    pub tick: Option<Duration>,
}

pub struct LogBus {
    hub: Arc<Hub>,
    /// Commits a publish on its own task when free.
    writer: Shared,
    /// The writer's thread: everything else.
    jobs: mpsc::Sender<Job>,
    /// The reader's connection, shared with resumes that read older events.
    read: Arc<Mutex<Connection>>,
    max_replay: usize,
    /// The newest id the reader has read.
    read_up_to: watch::Receiver<u64>,
    /// Wakes this process's reader.
    local: Arc<Notify>,
}

impl LogBus {
    /// Opens (or creates) the log, loads the newest events into a new hub, and starts the
    /// writer and the reader. Every error is one line for the startup failure.
    pub async fn start(
        hub_settings: HubSettings,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Hub>, Arc<LogBus>), String> {
        prepare_folder(&settings.dir)?;
        let path = settings.dir.join(file::FILE_NAME);
        let write = file::open(&path, settings.durability)?;
        let mut read = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.busy_timeout(file::BUSY_TIMEOUT).map(|()| c))
        .map_err(|e| format!("EVENTS_DATA_DIR: the event log '{}': {e}", path.display()))?;
        let since = oldest_kept_ms(settings.max_age);
        let (events, head) = file::newest(&mut read, hub_settings.history, since).map_err(|e| {
            format!(
                "EVENTS_DATA_DIR: cannot read the event log '{}': {e}",
                path.display()
            )
        })?;
        // The hub's head is the one before the first event it holds, so a client that saw
        // that one resumes without a reset; ids older than that are resumed from the file.
        let start = events.first().map_or(head, |e| e.id - 1);
        let hub = Arc::new(Hub::starting_at(hub_settings.clone(), start));
        let loaded = events.len();
        into_hub(&hub, events);
        let wakes = wake::Wakes::bind()
            .await
            .map_err(|e| format!("cannot open the event log's wake socket on 127.0.0.1: {e}"))?;
        let local = Arc::new(Notify::new());
        let writer = Writer::new(
            write,
            writer::Settings {
                path: path.clone(),
                durability: settings.durability,
                history: hub_settings.history,
                max_age: settings.max_age,
                tick_lease: settings.tick.map_or(Duration::from_secs(3), |every| {
                    (every * 3).max(Duration::from_secs(3))
                }),
            },
            wakes.port(),
            hub.clone(),
            local.clone(),
        )
        .map_err(|e| {
            format!(
                "EVENTS_DATA_DIR: cannot write the event log '{}': {e}",
                path.display()
            )
        })?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = writer
            .spawn(queue)
            .map_err(|e| format!("cannot start the event log's writer thread: {e}"))?;
        tracing::info!(path = %path.display(), loaded, head, "event log open");
        let read = Arc::new(Mutex::new(read));
        let (read_tx, read_up_to) = watch::channel(head);
        let reader = Reader {
            hub: hub.clone(),
            read: read.clone(),
            history: hub_settings.history,
            max_age: settings.max_age,
            last: head,
            read_up_to: read_tx,
            jobs: jobs.clone(),
            wakes,
            local: local.clone(),
        };
        tokio::spawn(reader.run(shutdown));
        let bus = Arc::new(LogBus {
            hub: hub.clone(),
            writer,
            jobs,
            read,
            max_replay: settings.max_replay,
            read_up_to,
            local,
        });
        Ok((hub, bus))
    }

    pub async fn publish(&self, topic: &str, text: &str) -> Result<LiveEvent, PublishError> {
        self.hub.check(topic, text)?;
        self.store(topic, text, false)
            .await?
            .ok_or_else(|| unavailable("the writer skipped an event".into()))
    }

    /// A tick: stored only while this process holds the tick's lease in the file, so that
    /// several processes sharing the log tick once between them (`None` when another does).
    pub async fn tick(&self, text: &str) -> Result<Option<LiveEvent>, PublishError> {
        self.hub.check("tick", text)?;
        self.store("tick", text, true).await
    }

    /// Stores the event; the writer puts it in this process's hub before it answers, so after
    /// the publisher's 201 a stream opened on this process has the event in its replay or its
    /// live feed, as with the in-memory store. When the writer left that to the reader, this
    /// waits (briefly) for the reader.
    async fn store(
        &self,
        topic: &str,
        text: &str,
        tick: bool,
    ) -> Result<Option<LiveEvent>, PublishError> {
        let stored = self.write(topic, text, tick).await?;
        if let Some(event) = stored.as_ref().filter(|e| self.hub.head() < e.id) {
            self.local.notify_one();
            let mut read_up_to = self.read_up_to.clone();
            let _ =
                tokio::time::timeout(CATCH_UP_WAIT, read_up_to.wait_for(|h| *h >= event.id)).await;
        }
        Ok(stored)
    }

    async fn write(
        &self,
        topic: &str,
        text: &str,
        tick: bool,
    ) -> Result<Option<LiveEvent>, PublishError> {
        let pending = Pending {
            topic: topic.to_string(),
            text: text.to_string(),
            sent_ms: now_ms(),
            tick,
        };
        // Nothing queued for the writer's thread: commit here (see [`writer`] for why).
        let queued = self.jobs.capacity() < self.jobs.max_capacity();
        let pending = if queued {
            pending
        } else {
            match self.writer.try_publish(pending) {
                Ok((stored, checkpoint)) => {
                    if checkpoint {
                        let _ = self.jobs.try_send(Job::Checkpoint);
                    }
                    return stored.map_err(unavailable);
                }
                Err(pending) => pending,
            }
        };
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job::Publish(pending, reply)).await.is_err() {
            return Err(unavailable("its writer has stopped".into()));
        }
        match answer.await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable("its writer has stopped".into())),
        }
    }

    pub async fn subscribe(&self, resume: &Resume) -> Subscription {
        if let Resume::After(id) = *resume {
            self.catch_up_to(id).await;
        }
        let mut sub = self.hub.subscribe(resume);
        // Older than the local history: the file may still hold it.
        let Some((id, end)) = older_wanted(resume, &sub) else {
            return sub;
        };
        let max_bytes = self.max_replay;
        let older = blocking(&self.read, move |conn| {
            file::range(conn, id, end, OLDER_LIMIT, max_bytes)
        })
        .await;
        match older {
            Ok(Some(older)) => with_older(
                &mut sub,
                older.into_iter().map(|e| Arc::new(Frame::new(e))).collect(),
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "cannot read older events from the log; the client gets a reset")
            }
        }
        sub
    }

    /// A client that was on another process may hold an id this reader has not read yet:
    /// when the file has it, wait (a little) for the reader rather than answer `reset`.
    async fn catch_up_to(&self, id: u64) {
        if id <= *self.read_up_to.borrow() || id <= self.hub.head() {
            return;
        }
        let held = blocking(&self.read, move |conn| file::holds(conn, id)).await;
        if matches!(held, Ok(true)) {
            self.local.notify_one();
            let mut read_up_to = self.read_up_to.clone();
            let _ = tokio::time::timeout(CATCH_UP_WAIT, read_up_to.wait_for(|h| *h >= id)).await;
        }
    }
}

/// The oldest send time kept by a log whose events expire after `max_age` (0: none expire).
fn oldest_kept_ms(max_age: Option<Duration>) -> u64 {
    max_age.map_or(0, |age| now_ms().saturating_sub(age.as_millis() as u64))
}

/// Events read from the log, into the hub in id order. An id the hub has passed is skipped:
/// this process's writer and its reader both deliver, and whichever comes second finds it
/// there already.
fn into_hub(hub: &Hub, events: impl IntoIterator<Item = LiveEvent>) {
    for event in events {
        match hub.insert(event) {
            Ok(_) | Err(InsertError::Stale { .. }) => {}
            Err(e) => tracing::warn!(error = %e, "skipping an event of the log"),
        }
    }
}

/// Runs `read` on the shared read connection on a blocking thread, off the runtime's own.
async fn blocking<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    read: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, String> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        read(&mut conn)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

fn unavailable(why: String) -> PublishError {
    PublishError::Unavailable { store: STORE, why }
}

/// Creates the data folder when missing and proves it writable, so that a folder the app
/// pool's identity may not write is one line at startup, not a 503 on the first publish.
fn prepare_folder(dir: &Path) -> Result<(), String> {
    let cannot = |what: &str, e: std::io::Error| {
        format!(
            "EVENTS_DATA_DIR: cannot {what} the data folder '{}' as {}: {e}; give that identity \
             Modify rights on it (as for logs\\), or point EVENTS_DATA_DIR at another folder",
            dir.display(),
            file::identity()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot("create", e))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| cannot("write into", e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The one task per process that follows the file into the local hub.
struct Reader {
    hub: Arc<Hub>,
    read: Arc<Mutex<Connection>>,
    history: usize,
    max_age: Option<Duration>,
    /// The newest id read from the file.
    last: u64,
    read_up_to: watch::Sender<u64>,
    jobs: mpsc::Sender<Job>,
    wakes: wake::Wakes,
    local: Arc<Notify>,
}

impl Reader {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(wake::HEARTBEAT);
        heartbeat.tick().await;
        let mut failing = false;
        loop {
            match self.read_new().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("the event log can be read again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the event log; trying again");
                }
                Err(e) => tracing::debug!(error = %e, "still cannot read the event log"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.jobs.send(Job::Leave).await;
                    return;
                }
                _ = self.local.notified() => {}
                _ = self.wakes.next() => {}
                _ = tokio::time::sleep(wake::POLL) => {}
                _ = heartbeat.tick() => {
                    let _ = self.jobs.send(Job::Heartbeat).await;
                }
            }
        }
    }

    /// Everything after `last`, in batches, into the hub.
    async fn read_new(&mut self) -> Result<(), String> {
        loop {
            // What this process's writer already put in the hub needs no reading again.
            self.last = self.last.max(self.hub.head());
            let after = self.last;
            let events = blocking(&self.read, move |conn| file::after(conn, after, BATCH)).await?;
            let Some(first) = events.first() else {
                self.read_up_to.send_if_modified(|h| {
                    let was = *h;
                    *h = was.max(self.last);
                    *h != was
                });
                return Ok(());
            };
            if first.id != self.last + 1 {
                self.gap(first.id).await?;
                continue;
            }
            let full = events.len() == BATCH;
            self.last = events.last().map_or(self.last, |e| e.id);
            into_hub(&self.hub, events);
            self.read_up_to.send_replace(self.last);
            if !full {
                return Ok(());
            }
        }
    }

    /// Events after ours were trimmed before we read them (a process starved for longer
    /// than the history lasts): end the local streams, whose clients reconnect and get a
    /// `reset`, and load the history again.
    async fn gap(&mut self, next: u64) -> Result<(), String> {
        tracing::warn!(
            last = self.last,
            next,
            "events after this process's last one were trimmed from the log before it read \
             them; ending its streams so their clients reconnect and get a reset"
        );
        self.hub.cut();
        let history = self.history;
        let since = oldest_kept_ms(self.max_age);
        let (events, head) =
            blocking(&self.read, move |conn| file::newest(conn, history, since)).await?;
        into_hub(&self.hub, events);
        self.last = head.max(self.last);
        self.read_up_to.send_replace(self.last);
        Ok(())
    }
}
