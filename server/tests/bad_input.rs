//! Hostile and odd input, in one table, sent to the real server started from a published folder
//! (server binary, `site/`, `web.config`, `logs/`) as the ASP.NET Core Module starts it. Each
//! request goes to the backend as raw bytes (no client library tidies `..` or `%2e` away), with
//! the pairing token, and each answer is checked for its status, for the absence of version
//! banners and for the absence of anything from outside `site/`. Afterwards the server still
//! streams and serves its page.
//!
//! Run with `--nocapture` to see the table of inputs and answers.

mod common;

use common::ancm::{Handler, Module, Published};
use common::raw::{find, Ending, RawStream, Reader};
use common::{client, next_any, next_event};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Strings that appear only in files outside `site/`: web.config, the executable (ELF magic),
/// the log folder, the machine's own files.
const OUTSIDE: &[&[u8]] = &[b"aspNetCore", b"\x7fELF", b"LOG-FILE-MARKER", b"root:x:0:0"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Only the status (and the universal checks).
    Status,
    /// The body contains this (an error message, the control file's content).
    Has(&'static str),
    /// A stream that starts with a `reset` event (and goes on to `ready`).
    Reset,
    /// A stream that goes straight to `ready`, no reset.
    NoReset,
}

struct Case {
    group: &'static str,
    /// What the table shows as the input.
    input: String,
    method: &'static str,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: u16,
    check: Check,
}

fn get(group: &'static str, target: &str, expect: u16, check: Check) -> Case {
    Case {
        group,
        input: format!("GET {target}"),
        method: "GET",
        target: target.to_string(),
        headers: Vec::new(),
        content_type: None,
        body: Vec::new(),
        expect,
        check,
    }
}

fn stream_with(input: &str, last_event_id: &[u8], expect: u16, check: Check) -> Case {
    Case {
        input: format!("Last-Event-ID: {input}"),
        headers: vec![("Last-Event-ID".into(), last_event_id.to_vec())],
        ..get("resume", "/api/events", expect, check)
    }
}

fn publish(
    input: &str,
    content_type: &'static str,
    body: Vec<u8>,
    expect: u16,
    check: Check,
) -> Case {
    Case {
        group: "publish",
        input: input.to_string(),
        method: "POST",
        target: "/api/publish".into(),
        headers: Vec::new(),
        content_type: Some(content_type),
        body,
        expect,
        check,
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    /// Without its chunk framing.
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends the request exactly as written and reads the answer: to its end, or for a stream
/// until its `ready` event.
async fn raw(port: u16, token: &str, case: &Case) -> Answer {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nMS-ASPNETCORE-TOKEN: {token}\r\nConnection: close\r\n",
        case.method, case.target
    )
    .into_bytes();
    for (name, value) in &case.headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    if let Some(ct) = case.content_type {
        request.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    if case.method == "POST" {
        request.extend_from_slice(format!("Content-Length: {}\r\n", case.body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(&case.body);

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the backend");
    let (rd, mut wr) = tcp.into_split();
    // Written on its own: a server that answers before reading everything must still be heard.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let read = async {
        let mut answer = RawStream::answer(Reader::new(rd))
            .await
            .unwrap_or_else(|e| panic!("{}: not an HTTP answer: {e}", case.input));
        let stream = answer
            .head
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if stream {
            while let Some(event) = answer.next_event().await {
                if event.event == "ready" {
                    break;
                }
            }
        } else {
            // Cut or whole, the checks below judge what arrived.
            let ending = answer.end().await;
            assert_ne!(
                ending,
                Ending::NotYet,
                "{}: no end of the answer",
                case.input
            );
        }
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .unwrap_or_else(|_| panic!("{}: no complete answer within 20 s", case.input));
    writer.abort();
    Answer {
        status: answer.head.status,
        body: answer.received().to_vec(),
        headers: answer.head.headers,
    }
}

fn cases(first_id: u64, head: u64) -> Vec<Case> {
    use Check::*;
    let json = "application/json";
    let mut cases = vec![
        // The control: the one file that may be served, and the page.
        get("static", "/pkg/probe.js", 200, Has("probe-file")),
        get("static", "/", 200, Status),
        // Out of site/: every spelling of "up", of "root" and of "end of string".
        get("static", "/web.config", 404, Status),
        get("static", "/server", 404, Status),
        get("static", "/logs/stdout.log", 404, Status),
        get("static", "/site/pkg/probe.js", 404, Status),
        get("static", "/pkg/../../web.config", 404, Status),
        get("static", "/pkg/../pkg/../../server", 404, Status),
        get("static", "/../web.config", 404, Status),
        get("static", "/%2e%2e/web.config", 404, Status),
        get("static", "/pkg/%2e%2e/%2e%2e/web.config", 404, Status),
        get("static", "/pkg/%2E%2E%2F%2E%2E%2Fweb.config", 404, Status),
        get("static", "/pkg/..%2f..%2flogs%2fstdout.log", 404, Status),
        get(
            "static",
            "/pkg/%252e%252e/%252e%252e/web.config",
            404,
            Status,
        ),
        get("static", "/pkg/..%5c..%5cweb.config", 404, Status),
        get("static", "/pkg/%5c..%5cserver", 404, Status),
        get("static", "/pkg/..\\..\\web.config", 404, Status),
        get("static", "//etc/passwd", 404, Status),
        get("static", "/%2fetc%2fpasswd", 404, Status),
        get("static", "/C:/Windows/win.ini", 404, Status),
        get("static", "/pkg/C:%5cWindows%5cwin.ini", 404, Status),
        get("static", "/web.config%00.js", 404, Status),
        get("static", "/pkg/probe.js%00", 404, Status),
        get("static", "/pkg/%c0%ae%c0%ae/web.config", 404, Status),
        get("static", "/pkg/", 404, Status),
        // The stream's query.
        get(
            "query",
            "/api/events?topic=nope",
            400,
            Has("unknown topic 'nope'"),
        ),
        get(
            "query",
            "/api/events?topic=chat,nope",
            400,
            Has("unknown topic"),
        ),
        get("query", "/api/events?topic=%zz", 400, Has("unknown topic")),
        get(
            "query",
            "/api/events?topic=%ff%fe",
            400,
            Has("unknown topic"),
        ),
        get("query", "/api/events?topic=%", 400, Has("unknown topic")),
        get("query", "/api/events?topic=chat&topic=alert", 400, Status),
        get("query", "/api/events?%%%=%%%", 200, NoReset),
        get("query", "/api/events?topic=", 200, NoReset),
        get("query", "/api/events?lastEventId=%zz", 200, Reset),
        // Last-Event-ID: never an error, a reset when it cannot be continued.
        stream_with("(empty)", b"", 200, NoReset),
        stream_with("abc", b"abc", 200, Reset),
        stream_with("-1", b"-1", 200, Reset),
        stream_with("1e3", b"1e3", 200, Reset),
        stream_with("0", b"0", 200, Reset),
        stream_with(
            "head + 1,000,000 (bigger than any id)",
            (head + 1_000_000).to_string().as_bytes(),
            200,
            Reset,
        ),
        stream_with("2^64-1", u64::MAX.to_string().as_bytes(), 200, Reset),
        stream_with(
            "10^30 (past u64)",
            b"1000000000000000000000000000000",
            200,
            Reset,
        ),
        stream_with(
            "an id of the process before (10 s older)",
            (first_id - 10_000_000).to_string().as_bytes(),
            200,
            Reset,
        ),
        stream_with("not text (0xff 0xfe)", b"\xff\xfe", 200, Reset),
        stream_with(
            "8 KiB of digits",
            "9".repeat(8 * 1024).as_bytes(),
            200,
            Reset,
        ),
        // The HTTP layer.
        Case {
            input: "GET / with a 1 MiB header".into(),
            headers: vec![("X-Long".into(), vec![b'a'; 1024 * 1024])],
            ..get("http", "/", 431, Status)
        },
        get("http", "/pkg/a b", 400, Status),
        Case {
            input: "BREW / (unknown method)".into(),
            method: "BREW",
            ..get("http", "/", 405, Status)
        },
        // POST /api/publish.
        publish(
            "malformed JSON",
            json,
            b"{\"topic\":".to_vec(),
            400,
            Has("parse"),
        ),
        publish(
            "not an object",
            json,
            b"[1,2]".to_vec(),
            422,
            Has("invalid type"),
        ),
        publish(
            "missing text",
            json,
            br#"{"topic":"chat"}"#.to_vec(),
            422,
            Has("missing field `text`"),
        ),
        publish(
            "missing topic",
            json,
            br#"{"text":"x"}"#.to_vec(),
            422,
            Has("missing field `topic`"),
        ),
        publish(
            "unknown field",
            json,
            br#"{"topic":"chat","text":"x","x":1}"#.to_vec(),
            422,
            Has("unknown field"),
        ),
        publish(
            "text not a string",
            json,
            br#"{"topic":"chat","text":5}"#.to_vec(),
            422,
            Has("invalid type"),
        ),
        publish(
            "invalid UTF-8",
            json,
            b"{\"topic\":\"chat\",\"text\":\"\xff\xfe\"}".to_vec(),
            400,
            Status,
        ),
        publish(
            "empty topic",
            json,
            br#"{"topic":"","text":"x"}"#.to_vec(),
            400,
            Has("topic must not be empty"),
        ),
        publish(
            "40-byte topic",
            json,
            format!(r#"{{"topic":"{}","text":"x"}}"#, "a".repeat(40)).into_bytes(),
            400,
            Has("longer than 32"),
        ),
        publish(
            "topic with a newline",
            json,
            br#"{"topic":"chat\nid: 5","text":"x"}"#.to_vec(),
            400,
            Has("topic contains"),
        ),
        publish(
            "unknown topic",
            json,
            br#"{"topic":"other","text":"x"}"#.to_vec(),
            400,
            Has("unknown topic 'other'"),
        ),
        publish(
            "reserved topic",
            json,
            br#"{"topic":"ready","text":"x"}"#.to_vec(),
            400,
            Has("reserved"),
        ),
        publish(
            "blank text",
            json,
            br#"{"topic":"chat","text":" \n "}"#.to_vec(),
            400,
            Has("only spaces"),
        ),
        publish(
            "empty text",
            json,
            br#"{"topic":"chat","text":""}"#.to_vec(),
            400,
            Has("text must not be empty"),
        ),
        publish(
            "101-byte text (max 100)",
            json,
            format!(r#"{{"topic":"chat","text":"{}"}}"#, "x".repeat(101)).into_bytes(),
            400,
            Has("longer than 100 bytes"),
        ),
        publish("2 MiB body", json, vec![b' '; 2 * 1024 * 1024], 413, Status),
        publish(
            "text/plain body",
            "text/plain",
            br#"{"topic":"chat","text":"x"}"#.to_vec(),
            415,
            Has("Content-Type"),
        ),
    ];
    for case in &mut cases {
        if case.group == "publish" {
            case.input = format!("POST /api/publish: {}", case.input);
        }
    }
    cases
}

fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text: String = text.chars().take(60).collect();
    text.replace('\n', "⏎").replace('\r', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_gets_its_answer_and_the_server_carries_on() {
    let folder = Published::new("bad-input");
    folder.set_env("EVENTS_TICK", "off");
    folder.set_env("EVENTS_MAX_TEXT", "100");
    let dir = folder.path();
    std::fs::create_dir_all(dir.join("site").join("pkg")).expect("site/pkg");
    std::fs::write(
        dir.join("site").join("pkg").join("probe.js"),
        "// probe-file\n",
    )
    .expect("write the probe file");
    std::fs::write(dir.join("logs").join("stdout.log"), "LOG-FILE-MARKER\n").expect("write log");
    let module = Module::start(&folder, Handler::site_root()).await;
    let token = module.token.clone().expect("the module's token");

    // A live stream, open through the whole table: it must see nothing until the good event.
    let mut live = module.stream("/api/events", None).await;
    assert_eq!(next_any(&mut live).await.event, "ready");
    let first_id = module.publish("alert", "before the table").await;
    assert_eq!(next_event(&mut live).await.id, first_id.to_string());

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for case in cases(first_id, first_id) {
        let answer = raw(module.port, &token, &case).await;
        let mut problems = Vec::new();
        if answer.status != case.expect {
            problems.push(format!(
                "status {} (expected {})",
                answer.status, case.expect
            ));
        }
        for banner in ["server", "x-powered-by"] {
            if let Some(v) = answer.header(banner) {
                problems.push(format!("{banner}: {v}"));
            }
        }
        for secret in OUTSIDE {
            if find(&answer.body, secret).is_some() {
                problems.push(format!("the body holds {:?}", show(secret)));
            }
        }
        let body = String::from_utf8_lossy(&answer.body);
        let reset = body.contains("event: reset\n");
        match case.check {
            Check::Status => {}
            Check::Has(text) if !body.contains(text) => {
                problems.push(format!("the body lacks {text:?}: {:?}", show(&answer.body)))
            }
            Check::Has(_) => {}
            Check::Reset if !reset || !body.contains("event: ready\n") => {
                problems.push(format!("no reset then ready: {:?}", show(&answer.body)))
            }
            Check::NoReset if reset || !body.contains("event: ready\n") => {
                problems.push(format!("not straight to ready: {:?}", show(&answer.body)))
            }
            Check::Reset | Check::NoReset => {}
        }
        let note = match (case.check, answer.status) {
            (Check::Reset, 200) if reset => "stream: reset, ready".to_string(),
            (Check::NoReset, 200) => "stream: ready".to_string(),
            (_, 200) if case.group == "static" && case.target != "/" => show(&answer.body),
            (_, 200) => answer.header("content-type").unwrap_or("").to_string(),
            _ if body.starts_with("{\"error\"") => show(&answer.body),
            _ => String::new(),
        };
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.input, problems.join("; ")));
        }
        rows.push([
            case.group.to_string(),
            case.input.chars().take(60).collect(),
            case.expect.to_string(),
            answer.status.to_string(),
            verdict.to_string(),
            note,
        ]);
    }
    print_table(&rows);

    // Nothing of it was published, and the server still streams and serves its page.
    let good = module.publish("chat", "after the table").await;
    let ev = next_event(&mut live).await;
    assert_eq!(
        ev.id,
        good.to_string(),
        "the first event after the table is the good one"
    );
    let mut fresh = module
        .stream("/api/events", Some(&first_id.to_string()))
        .await;
    assert_eq!(next_any(&mut fresh).await.id, good.to_string());
    assert_eq!(next_any(&mut fresh).await.event, "ready");
    let page = client().get(module.url("/")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.headers().get("server").is_none());
    module
        .wait_for_log(&["request refused", "status=422"])
        .await;
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn print_table(rows: &[[String; 6]]) {
    let head = ["group", "input", "expected", "answer", "", "detail"];
    let mut widths = head.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            out.push_str(cell);
            out.push_str(&" ".repeat(pad + 2));
        }
        println!("{}", out.trim_end());
    };
    line(&head.map(String::from));
    for row in rows {
        line(row);
    }
}

/// A body we refuse is answered (413) after its first few KiB, while the client is still sending
/// the rest. Closing on unread input would reset the connection, and a client that writes its
/// whole body before it reads (as reqwest did, rarely, when the table's 2 MiB case was sent with it) would see a broken
/// pipe instead of the answer. The server reads and drops the rest for a moment first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_is_answered_while_the_client_is_still_sending_it() {
    // Bodies above 1,624 bytes are refused: 100 bytes of text, each escaped into six, and 1 KiB.
    let server = common::spawn(common::Options::new().env("EVENTS_MAX_TEXT", "100"));
    let body_len = 2 * 1024 * 1024;
    let piece = vec![b' '; 64 * 1024];
    for round in 0..3 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
        );
        let sent = tokio::time::timeout(Duration::from_secs(20), async {
            tcp.write_all(head.as_bytes()).await?;
            tcp.write_all(&piece).await?;
            tcp.write_all(&piece).await?;
            // The answer has arrived, so the server is done with this connection: the rest of
            // the body is sent after it has closed its side.
            tcp.readable().await?;
            for _ in 2..body_len / piece.len() {
                tcp.write_all(&piece).await?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("the body sent within 20 s");
        if let Err(e) = sent {
            panic!("round {round}: sending the body failed after the answer: {e}");
        }
        let mut answer = RawStream::answer(Reader::new(tcp))
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        assert_eq!(answer.head.status, 413, "round {round}");
        assert_ne!(answer.end().await, Ending::NotYet, "round {round}");
    }
    // And the server is still there.
    let id = server.publish("chat", "after the big bodies").await;
    assert!(id > 0);
}
