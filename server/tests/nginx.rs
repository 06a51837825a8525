//! The shipped nginx example (deploy/nginx/sse-live.conf), run by a real nginx in front of the
//! real server, with nginx's default `proxy_buffering on`: the page loads and events arrive live.

mod common;

use common::{next_any, spawn, Options, TempDir, PATIENCE};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Starts nginx with the shipped site, pointed at `upstream`.
fn start_nginx(upstream: &str) -> Nginx {
    let binary = nginx_binary().expect(
        "nginx is needed for this test: apt-get install -y nginx (cargo xtask test installs it)",
    );
    let dir = TempDir::new("nginx");
    let port = common::free_port();
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/sse-live.conf"),
    )
    .expect("the shipped nginx example");
    assert!(shipped.contains("server 127.0.0.1:3000;") && shipped.contains("listen 8080;"));
    let site = shipped
        .replace("server 127.0.0.1:3000;", &format!("server {upstream};"))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
    let d = dir.0.display();
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           {site}\n}}\n"
    );
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < PATIENCE, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        child,
        port,
        _dir: dir,
    }
}

/// Publishes `n` events `gap` apart and returns how late each arrived through `url`.
async fn delays(server: &common::Server, url: &str, n: usize, gap: Duration) -> Vec<Duration> {
    let res = common::client()
        .get(url)
        .send()
        .await
        .expect("stream via nginx");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut events = Box::pin(res.bytes_stream().eventsource().map(|e| e.expect("event")));
    // Publish from a task while this one reads, like a real publisher and viewer.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let publisher = {
        let base = server.base.clone();
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep(gap).await;
                let res = common::client()
                    .post(format!("{base}/api/publish"))
                    .json(&serde_json::json!({"topic": "chat", "text": format!("n{i}")}))
                    .send()
                    .await
                    .expect("publish");
                let id = res.json::<serde_json::Value>().await.expect("json")["id"]
                    .as_u64()
                    .expect("id");
                let _ = tx.send((id.to_string(), Instant::now()));
            }
        })
    };
    let mut sent = std::collections::HashMap::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while out.len() < n {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await else {
            break; // held by nginx past the time limit: count what came
        };
        let arrived = Instant::now();
        while let Ok((id, at)) = rx.try_recv() {
            sent.insert(id, at);
        }
        if ev.event == "chat" {
            let at = sent.get(&ev.id).copied().unwrap_or(arrived);
            out.push(arrived.saturating_duration_since(at));
        }
    }
    publisher.abort();
    out
}

#[tokio::test]
async fn events_arrive_live_through_nginx_with_its_default_buffering() {
    if nginx_binary().is_none() {
        panic!("nginx is needed for this test: apt-get install -y nginx");
    }
    let server = spawn(Options::new());
    let upstream = server.base.trim_start_matches("http://").to_string();
    let nginx = start_nginx(&upstream);

    // The page through nginx, to be sure the site works there at all.
    let page = common::client()
        .get(format!("http://127.0.0.1:{}/", nginx.port))
        .send()
        .await
        .expect("page via nginx");
    assert_eq!(page.status(), 200);

    let gap = Duration::from_millis(200);
    let live = delays(
        &server,
        &format!("http://127.0.0.1:{}/api/events", nginx.port),
        5,
        gap,
    )
    .await;
    assert_eq!(live.len(), 5, "every event arrived");
    for d in &live {
        assert!(
            *d < Duration::from_millis(500),
            "live through nginx: {live:?}"
        );
    }

    println!("publish -> receive through nginx: {live:?}");

    // And a stream still opens after all that.
    let mut s = server.stream("/api/events", None).await;
    assert_eq!(next_any(&mut s).await.event, "ready");
}
