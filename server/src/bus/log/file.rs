//! The log's file: opening it (created when missing, refused when foreign or damaged, never
//! repaired or deleted), its schema, and the reads every process makes.
//!
//! Ids are consecutive: the writer gives each event `head + 1` and stores the new head in the
//! same transaction, so a reader that finds `last + 1` missing knows events were trimmed
//! before it read them (it then resets its hub instead of leaving a silent gap). A new file
//! starts its ids at the creation time in microseconds, as the in-memory hub does, so a
//! browser holding an id from an older history (another file, or the in-memory store) gets a
//! `reset` and never a replay of unrelated events that happen to share its numbers.

use events_core::event::LiveEvent;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use std::{path::Path, time::Duration};

/// The log's file in the data folder (SQLite adds `-wal` and `-shm` beside it while open).
pub const FILE_NAME: &str = "events.db";
/// Our files carry this in their header (`PRAGMA application_id`, "SSEv"): a SQLite file made
/// by something else is refused, not written into.
const APPLICATION_ID: i32 = 0x5353_4576;
/// The schema below (`PRAGMA user_version`); a file from a newer server is refused.
const SCHEMA_VERSION: i32 = 1;
/// How long a statement waits for another process's write before it fails: publishes from
/// several processes take turns inside this, so "busy" never reaches a publisher.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  topic TEXT NOT NULL,
  text TEXT NOT NULL,
  sent_ms INTEGER NOT NULL
);
-- 'head': the newest id given; 'tick_owner', 'tick_until': who runs the demo tick.
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- The processes sharing this file, by the loopback UDP port they are woken on.
CREATE TABLE peers (port INTEGER PRIMARY KEY, pid INTEGER NOT NULL, seen_ms INTEGER NOT NULL);
";

/// How much a commit waits for the disk (`PRAGMA synchronous` in WAL mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `NORMAL`: a commit is in the operating system's hands when the publisher gets its 201.
    /// It survives the process being killed; a power cut may lose the last moments (never
    /// tear an event or damage the file).
    Process,
    /// `FULL`: every commit is flushed to the disk first; it survives a power cut too, at
    /// the cost of one flush per batch of publishes.
    PowerLoss,
}

/// Opens (creating when missing) the log at `path` for reading and writing, checked.
pub fn open(path: &Path, durability: Durability) -> Result<Connection, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| describe(path, &e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| describe(path, &e))?;
    check_owner(&conn, path)?;
    // WAL: one writer at a time, readers never blocked by it, and a commit is one append.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| describe(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "EVENTS_DATA_DIR: '{}' cannot use SQLite's WAL mode (it stays in '{mode}'); is the \
             data folder on a network share? Use a local folder",
            path.display()
        ));
    }
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(|e| describe(path, &e))?;
    create_schema(&conn, path)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| describe(path, &e))?;
    if check != "ok" {
        // Its report is a line per damaged page: the first few say enough on one line.
        let lines: Vec<&str> = check.lines().filter(|l| !l.starts_with("***")).collect();
        let mut check = lines.iter().take(3).copied().collect::<Vec<_>>().join("; ");
        if lines.len() > 3 {
            check.push_str(&format!("; {} more", lines.len() - 3));
        }
        return Err(format!(
            "EVENTS_DATA_DIR: the event log '{}' is damaged ({check}); it was left as it is: \
             move it away to start a new history, or restore it from a backup",
            path.display()
        ));
    }
    Ok(conn)
}

/// Only reads: a foreign or newer file is refused before anything is written into it.
fn check_owner(conn: &Connection, path: &Path) -> Result<(), String> {
    let read = || -> rusqlite::Result<(i32, i32, i64)> {
        let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app, version, tables))
    };
    let (app, version, tables) = read().map_err(|e| describe(path, &e))?;
    let foreign = |what: &str| {
        Err(format!(
            "EVENTS_DATA_DIR: '{}' is {what}, not this server's event log; it was left as it \
             is: move it away, or point EVENTS_DATA_DIR at another folder",
            path.display()
        ))
    };
    if app == 0 && tables > 0 {
        return foreign("another program's SQLite database");
    }
    if app != 0 && app != APPLICATION_ID {
        return foreign(&format!(
            "a SQLite database of another application (id {app:#x})"
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "EVENTS_DATA_DIR: '{}' was written by a newer version of this server (schema \
             {version}, this one reads {SCHEMA_VERSION}); run that version, or move the file away",
            path.display()
        ));
    }
    Ok(())
}

/// Creates the tables in a new file. Under the write lock, so that two processes starting
/// at once create them once.
fn create_schema(conn: &Connection, path: &Path) -> Result<(), String> {
    let create = || -> rusqlite::Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let version: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            tx.execute_batch(SCHEMA)?;
            let first = events_core::hub::now_ms().saturating_mul(1000);
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('head', ?1), ('tick_owner', 0), ('tick_until', 0)",
                params![first as i64],
            )?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tx.commit()
    };
    create().map_err(|e| describe(path, &e))
}

/// A SQLite error at startup as one line that names the file and what to do.
fn describe(path: &Path, e: &rusqlite::Error) -> String {
    let file = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!(
            "EVENTS_DATA_DIR: '{file}' is not a SQLite database, so not this server's event log; \
             it was left as it is: move it away, or point EVENTS_DATA_DIR at another folder"
        ),
        Some(ErrorCode::DatabaseCorrupt) => format!(
            "EVENTS_DATA_DIR: the event log '{file}' is damaged ({e}); it was left as it is: move \
             it away to start a new history, or restore it from a backup"
        ),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            format!(
                "EVENTS_DATA_DIR: cannot write the event log '{file}' as {}: {e}; give that \
                 identity Modify rights on the data folder, or point EVENTS_DATA_DIR elsewhere",
                identity()
            )
        }
        _ => format!("EVENTS_DATA_DIR: the event log '{file}': {e}"),
    }
}

/// Who this process runs as, for the message that asks for rights on the data folder. Under
/// IIS that is the application pool's identity (`IIS APPPOOL\<pool>`).
pub fn identity() -> String {
    let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
    match (var("USERDOMAIN"), var("USERNAME").or_else(|| var("USER"))) {
        (Some(domain), Some(user)) => format!("{domain}\\{user}"),
        (None, Some(user)) => user,
        _ => "the user running this process".into(),
    }
}

/// The newest id given (the events table may hold none of them any more).
pub fn head(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'head'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|v| v as u64)
}

fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<LiveEvent> {
    Ok(LiveEvent {
        id: row.get::<_, i64>(0)? as u64,
        topic: row.get(1)?,
        text: row.get(2)?,
        sent_ms: row.get::<_, i64>(3)? as u64,
    })
}

/// The newest `count` events sent at or after `since_ms`, oldest first, and the head they
/// were read with (one read transaction, so the reader goes on exactly after them).
pub fn newest(
    conn: &mut Connection,
    count: usize,
    since_ms: u64,
) -> rusqlite::Result<(Vec<LiveEvent>, u64)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let head = head(&tx)?;
    let mut events = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, topic, text, sent_ms FROM events WHERE sent_ms >= ?2 \
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![count as i64, since_ms as i64], event)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    events.reverse();
    tx.finish()?;
    Ok((events, head))
}

/// Up to `limit` events after `after`, oldest first.
pub fn after(conn: &Connection, after: u64, limit: usize) -> rusqlite::Result<Vec<LiveEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, topic, text, sent_ms FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after as i64, limit as i64], event)?;
    rows.collect()
}

/// The events after `after` up to `end`, when the log still holds `after + 1` (so nothing
/// between was trimmed), there are at most `limit` and their texts come to at most
/// `max_bytes` (read no further: a resume must not cost more memory than a replay may send);
/// `None` otherwise.
pub fn range(
    conn: &Connection,
    after: u64,
    end: u64,
    limit: usize,
    max_bytes: usize,
) -> rusqlite::Result<Option<Vec<LiveEvent>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, topic, text, sent_ms FROM events WHERE id > ?1 AND id <= ?2 \
         ORDER BY id LIMIT ?3",
    )?;
    let mut rows = stmt.query_map(params![after as i64, end as i64, limit as i64 + 1], event)?;
    let mut events = Vec::new();
    let mut bytes = 0usize;
    for row in rows.by_ref() {
        let event = row?;
        bytes = bytes.saturating_add(event.text.len());
        if events.len() == limit || bytes > max_bytes {
            return Ok(None);
        }
        events.push(event);
    }
    let whole =
        events.first().map(|e| e.id) == Some(after + 1) && events.last().map(|e| e.id) == Some(end);
    Ok(whole.then_some(events))
}

/// Whether the log holds the event `id`.
pub fn holds(conn: &Connection, id: u64) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM events WHERE id = ?1",
        [id as i64],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "sse-live-file-{tag}-{}-{}",
                std::process::id(),
                events_core::hub::now_ms()
            ));
            std::fs::create_dir_all(&d).expect("temp dir");
            Dir(d)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_new_file_starts_ids_at_its_creation_time_and_opens_again() {
        let dir = Dir::new("new");
        let path = dir.0.join(FILE_NAME);
        let before = events_core::hub::now_ms() * 1000;
        let conn = open(&path, Durability::Process).expect("creates");
        let head = head(&conn).expect("head");
        assert!(head >= before, "{head} < {before}");
        drop(conn);
        let again = open(&path, Durability::PowerLoss).expect("opens again");
        assert_eq!(super::head(&again).expect("head"), head);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
        let dir = Dir::new("text");
        let path = dir.0.join(FILE_NAME);
        let text = b"not a database, but someone's notes\n".repeat(200);
        std::fs::write(&path, &text).expect("write");
        let e = open(&path, Durability::Process).expect_err("refused");
        assert!(e.contains("is not a SQLite database"), "{e}");
        assert_eq!(std::fs::read(&path).expect("read"), text, "left as it was");
    }

    #[test]
    fn another_programs_database_is_refused_and_left_alone() {
        let dir = Dir::new("foreign");
        let path = dir.0.join(FILE_NAME);
        let other = Connection::open(&path).expect("create");
        other
            .execute_batch("CREATE TABLE orders (n INTEGER); INSERT INTO orders VALUES (7);")
            .expect("their table");
        drop(other);
        let e = open(&path, Durability::Process).expect_err("refused");
        assert!(e.contains("another program's SQLite database"), "{e}");
        let other = Connection::open(&path).expect("reopen");
        let n: i64 = other
            .query_row("SELECT n FROM orders", [], |r| r.get(0))
            .expect("their row is still there");
        assert_eq!(n, 7);
        let mode: String = other
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "delete", "not even switched to WAL");
    }

    #[test]
    fn a_range_is_served_only_when_nothing_in_it_was_trimmed() {
        let dir = Dir::new("range");
        let conn = open(&dir.0.join(FILE_NAME), Durability::Process).expect("open");
        for id in [11u64, 12, 13, 14] {
            conn.execute(
                "INSERT INTO events (id, topic, text, sent_ms) VALUES (?1, 'chat', 'x', 1)",
                [id as i64],
            )
            .expect("insert");
        }
        let ids = |r: Option<Vec<LiveEvent>>| r.map(|v| v.iter().map(|e| e.id).collect::<Vec<_>>());
        assert_eq!(
            ids(range(&conn, 10, 14, 10, 100).expect("read")),
            Some(vec![11, 12, 13, 14])
        );
        assert_eq!(
            ids(range(&conn, 11, 13, 10, 100).expect("read")),
            Some(vec![12, 13])
        );
        assert_eq!(
            ids(range(&conn, 9, 14, 10, 100).expect("read")),
            None,
            "10 was trimmed"
        );
        assert_eq!(
            ids(range(&conn, 10, 14, 3, 100).expect("read")),
            None,
            "over the limit"
        );
        assert_eq!(
            ids(range(&conn, 10, 14, 10, 3).expect("read")),
            None,
            "over the bytes"
        );
        assert!(holds(&conn, 12).expect("read"));
        assert!(!holds(&conn, 15).expect("read"));
        let (newest, _) = newest(
            &mut Connection::open(dir.0.join(FILE_NAME)).expect("o"),
            2,
            0,
        )
        .expect("newest");
        assert_eq!(
            newest.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![13, 14]
        );
    }
}
