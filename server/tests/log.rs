//! The durable event log (the default store), against the real binary: a restart resumes
//! exactly, processes sharing a data folder share one ordered history, a killed process loses
//! no acknowledged event, and a full, read-only, foreign or unwritable store is met as the
//! README says.

mod common;

use common::{client, command, next_any, next_event, spawn, Options, Server, TempDir, PATIENCE};
use eventsource_stream::Event;
use futures::Stream;
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

fn on(data: &TempDir) -> Options {
    Options::new().env("EVENTS_DATA_DIR", &data.0.to_string_lossy())
}

fn id_of(event: &Event) -> u64 {
    event.id.parse().expect("a numeric id")
}

/// The events of a stream, without `ready`, until `n` were read.
async fn take(stream: &mut (impl Stream<Item = Event> + Unpin), n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_event(stream).await);
    }
    out
}

#[tokio::test]
async fn a_restarted_server_resumes_exactly_where_the_client_left_off() {
    let data = TempDir::new("log-restart");
    let first = spawn(on(&data));
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(first.publish("chat", &format!("before {n}")).await);
    }
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {ids:?}"
    );
    first.stop();

    let second = spawn(on(&data));
    // The page's first render shows the history from before the restart.
    let page = common::page_text(&second.url("/")).await;
    for n in 1..=5 {
        assert!(
            page.contains(&format!("before {n}")),
            "the page lost 'before {n}'"
        );
    }
    // A client that had seen the second event gets the other three, no reset, then live.
    let mut stream = second
        .stream("/api/events", Some(&ids[1].to_string()))
        .await;
    let mut seen = Vec::new();
    loop {
        let event = next_any(&mut stream).await;
        assert_ne!(
            event.event, "reset",
            "no reset across a restart: {}",
            event.data
        );
        if event.event == "ready" {
            break;
        }
        seen.push((id_of(&event), common::text_of(&event)));
    }
    assert_eq!(
        seen,
        vec![
            (ids[2], "before 3".to_string()),
            (ids[3], "before 4".to_string()),
            (ids[4], "before 5".to_string())
        ]
    );
    let next = second.publish("chat", "after").await;
    assert_eq!(next, ids[4] + 1, "ids continue after a restart");
    let live = next_event(&mut stream).await;
    assert_eq!(
        (id_of(&live), common::text_of(&live)),
        (next, "after".into())
    );
}

#[tokio::test]
async fn processes_sharing_a_folder_see_every_event_once_in_one_order() {
    let data = TempDir::new("log-shared");
    let a = spawn(on(&data));
    let b = spawn(on(&data));
    let mut on_a = a.stream("/api/events", None).await;
    let mut on_b = b.stream("/api/events", None).await;
    // Both streams are live (their `ready` arrived) before anything is published.
    assert_eq!(next_any(&mut on_a).await.event, "ready");
    assert_eq!(next_any(&mut on_b).await.event, "ready");

    // Publishers on both processes at once: the database is busy with the other's write
    // again and again, which a publisher must never see.
    const EACH: usize = 60;
    async fn publish_all(server: &Server, tag: &str) -> Vec<u64> {
        let publishes =
            (0..EACH).map(|n| async move { server.publish("chat", &format!("{tag} {n}")).await });
        futures::future::join_all(publishes).await
    }
    let (from_a, from_b) = tokio::join!(publish_all(&a, "a"), publish_all(&b, "b"));
    let mut published: Vec<u64> = from_a.iter().chain(&from_b).copied().collect();
    published.sort_unstable();
    published.dedup();
    assert_eq!(published.len(), 2 * EACH, "one id per event");

    let seen_a = take(&mut on_a, 2 * EACH).await;
    let seen_b = take(&mut on_b, 2 * EACH).await;
    let order = |events: &[Event]| {
        events
            .iter()
            .map(|e| (id_of(e), common::text_of(e)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        order(&seen_a),
        order(&seen_b),
        "the same events in the same order"
    );
    let ids: Vec<u64> = seen_a.iter().map(id_of).collect();
    assert_eq!(ids, published, "every event once, in id order");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "no gap");
}

#[tokio::test]
async fn a_process_killed_while_publishing_loses_no_acknowledged_event() {
    let data = TempDir::new("log-kill");
    let opts = || {
        on(&data)
            .env("EVENTS_HISTORY", "100000")
            .env("EVENTS_PUBLISH_RATE", "0")
    };
    let mut server = spawn(opts());
    let url = server.url("/api/publish");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Eight publishers as fast as they can; each keeps what was acknowledged (201).
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let url = url.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let http = client();
                let mut acked = Vec::new();
                for n in 0.. {
                    let text = format!("p{p} n{n} {}", "x".repeat(200));
                    let res = http
                        .post(&url)
                        .json(&serde_json::json!({ "topic": "chat", "text": text }))
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status() != 201 {
                        break;
                    }
                    let Ok(body) = res.json::<serde_json::Value>().await else {
                        break;
                    };
                    acked.push((body["id"].as_u64().expect("id"), text));
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();
    // Killed mid-stride: after a few hundred acknowledgements, with publishes in flight.
    let started = Instant::now();
    while count.load(std::sync::atomic::Ordering::Relaxed) < 500 {
        assert!(started.elapsed() < PATIENCE, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let mut acked = BTreeMap::new();
    for p in publishers {
        acked.extend(p.await.expect("publisher"));
    }
    assert!(
        acked.len() >= 500,
        "only {} publishes were acknowledged",
        acked.len()
    );

    let again = spawn(opts());
    let first = *acked.keys().next().expect("one");
    let mut stream = again
        .stream("/api/events", Some(&(first - 1).to_string()))
        .await;
    let mut stored = BTreeMap::new();
    loop {
        let event = next_any(&mut stream).await;
        assert_ne!(event.event, "reset", "{}", event.data);
        if event.event == "ready" {
            break;
        }
        // Every stored event is whole: its data parses and its text is one a publisher sent.
        stored.insert(id_of(&event), common::text_of(&event));
    }
    for (id, text) in &acked {
        assert_eq!(
            stored.get(id),
            Some(text),
            "acknowledged event {id} lost or changed"
        );
    }
    let ids: Vec<u64> = stored.keys().copied().collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "no hole in the log"
    );
    assert!(
        stored
            .values()
            .all(|t| t.starts_with('p') && t.ends_with(&"x".repeat(200))),
        "a torn event"
    );
    eprintln!(
        "killed after {} acknowledged publishes; {} stored (the rest were in flight)",
        acked.len(),
        stored.len()
    );
}

fn start_once(data_dir: &Path) -> (i32, String) {
    let site = TempDir::new("log-startup");
    let out = command()
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("LEPTOS_SITE_ROOT", &site.0)
        .env("EVENTS_TICK", "off")
        .env("EVENTS_DATA_DIR", data_dir)
        .output()
        .expect("run the server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test]
async fn a_foreign_or_damaged_file_is_refused_at_startup_and_left_alone() {
    let data = TempDir::new("log-foreign");
    let file = data.0.join("events.db");
    let notes = b"someone's notes, not a database\n".repeat(100);
    std::fs::write(&file, &notes).expect("write");
    let (code, stderr) = start_once(&data.0);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("EVENTS_DATA_DIR") && stderr.contains(&*file.to_string_lossy()),
        "names the setting and the file: {stderr}"
    );
    assert!(stderr.contains("not a SQLite database"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        notes,
        "never deleted or changed"
    );

    // A log of ours whose pages were overwritten (a disk fault, a bad copy).
    let damaged = TempDir::new("log-damaged");
    // 300 publishes at full speed: past the per-address publish rate (100/s, bursts of 200).
    let server = spawn(on(&damaged).env("EVENTS_PUBLISH_RATE", "0"));
    for n in 0..300 {
        server
            .publish("chat", &format!("event {n} {}", "z".repeat(100)))
            .await;
    }
    server.stop();
    let file = damaged.0.join("events.db");
    let conn = rusqlite::Connection::open(&file).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    let mut bytes = std::fs::read(&file).expect("read");
    assert!(
        bytes.len() >= 4 * 4096,
        "a log of several pages: {}",
        bytes.len()
    );
    for b in &mut bytes[2 * 4096..] {
        *b = 0xA5;
    }
    std::fs::write(&file, &bytes).expect("write");
    let (code, stderr) = start_once(&damaged.0);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("damaged"), "{stderr}");
    assert_eq!(std::fs::read(&file).expect("read"), bytes, "left as it is");
}

#[test]
fn a_data_folder_that_cannot_be_made_is_one_line_at_startup() {
    let parent = TempDir::new("log-unwritable");
    let blocker = parent.0.join("a-file");
    std::fs::write(&blocker, b"").expect("write");
    let folder = blocker.join("data");
    let (code, stderr) = start_once(&folder);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&*folder.to_string_lossy()) && stderr.contains("Modify rights"),
        "names the folder and what to do: {stderr}"
    );
    assert!(stderr.contains(" as "), "names the identity: {stderr}");
}

/// A small file system of its own (tmpfs), to fill up and to make read-only. Needs the right
/// to mount, which the CI machines (root in a container) have.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = TempDir::new("log-disk");
        let path = dir.0.join("mnt");
        std::fs::create_dir_all(&path).expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { path, _dir: dir })
    }

    fn remount(&self, options: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {options}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

async fn publish_status(server: &Server, text: &str) -> (u16, String) {
    let res = server
        .request(reqwest::Method::POST, "/api/publish")
        .json(&serde_json::json!({ "topic": "chat", "text": text }))
        .send()
        .await
        .expect("publish request");
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_full_disk_answers_503_while_streams_stay_up() {
    let Some(disk) = SmallDisk::mount("1m") else {
        panic!("this test mounts a small tmpfs: run the tests as root (as CI does)");
    };
    let server = spawn(
        Options::new()
            .env("EVENTS_DATA_DIR", &disk.path.join("data").to_string_lossy())
            .env("EVENTS_HEARTBEAT", "200ms"),
    );
    let mut stream = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut stream).await.event, "ready");

    // Fill the disk: each event is 60 KiB, the disk 1 MiB.
    let big = "y".repeat(60 * 1024);
    let mut full = None;
    for _ in 0..40 {
        let (status, body) = publish_status(&server, &big).await;
        if status == 503 {
            full = Some(body);
            break;
        }
        assert_eq!(status, 201, "{body}");
    }
    let body = full.expect("the disk filled up");
    assert!(
        body.contains("event log") && body.contains("full"),
        "{body}"
    );
    server
        .wait_for_log(&["the event log cannot store events"])
        .await;

    // The stream is still up (its heartbeats keep coming) and gets what is stored after the
    // disk has room again.
    let ping = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = next_any(&mut stream).await;
            if e.event == "ping" {
                return e;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "the stream stayed up");
    disk.remount("size=16m");
    let id = server.publish("chat", "room again").await;
    let live = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = next_event(&mut stream).await;
            if e.event == "chat" && common::text_of(&e) == "room again" {
                return e;
            }
        }
    })
    .await
    .expect("the event published after the disk had room");
    assert_eq!(id_of(&live), id);
    server
        .wait_for_log(&["the event log takes events again"])
        .await;
    drop(server);
}

/// A folder that loses its write rights while the server runs does not stop it (the log is
/// open), so the place where read-only shows is the next start: one line, exit 2.
#[test]
fn a_read_only_data_folder_is_one_line_at_startup() {
    let Some(disk) = SmallDisk::mount("1m") else {
        panic!("this test mounts a small tmpfs: run the tests as root (as CI does)");
    };
    let folder = disk.path.join("data");
    std::fs::create_dir_all(&folder).expect("data folder");
    disk.remount("ro");
    let (code, stderr) = start_once(&folder);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&*folder.to_string_lossy())
            && stderr.contains("Read-only")
            && stderr.contains("Modify rights"),
        "names the folder, the cause and what to do: {stderr}"
    );
}

#[tokio::test]
async fn the_memory_store_keeps_nothing_across_a_restart() {
    let data = TempDir::new("log-memory");
    let opts = || on(&data).env("EVENTS_STORE", "memory");
    let first = spawn(opts());
    let id = first.publish("chat", "forgotten").await;
    first.stop();
    let second = spawn(opts());
    let mut stream = second.stream("/api/events", Some(&id.to_string())).await;
    assert_eq!(next_any(&mut stream).await.event, "reset");
    assert!(
        std::fs::read_dir(&data.0).map_or(true, |d| d
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "pkg")),
        "nothing written to the data folder"
    );
}
