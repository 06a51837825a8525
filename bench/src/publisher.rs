//! The publisher: POSTs marked events to the first instance over keep-alive connections.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::sse::marker_text;
use crate::unix_ns;

#[derive(Clone, Debug)]
pub struct Plan {
    pub target: SocketAddr,
    pub path: String,
    pub topic: String,
    pub events: u64,
    /// None: as fast as the connections go (burst).
    pub interval: Option<Duration>,
    pub payload: usize,
    pub connections: usize,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Publishes answered 201 (and the seqs 0..published were all sent).
    pub published: u64,
    pub failed: u64,
    pub errors: Vec<String>,
    pub first_send_ns: u64,
    pub last_send_ns: u64,
}

/// Sends seq 0..events, each stamped with its send time; seq `i` is due at `i * interval`.
pub async fn publish(plan: Plan) -> Outcome {
    let next = Rc::new(Cell::new(0u64));
    let outcome = Rc::new(std::cell::RefCell::new(Outcome {
        first_send_ns: unix_ns(),
        ..Outcome::default()
    }));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.connections.max(1) {
        let (plan, next, outcome) = (plan.clone(), next.clone(), outcome.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut sender = None;
            loop {
                let seq = next.get();
                if seq >= plan.events {
                    break;
                }
                next.set(seq + 1);
                if let Some(interval) = plan.interval {
                    tokio::time::sleep_until((start + interval * seq as u32).into()).await;
                }
                let result = send(&mut sender, &plan, seq).await;
                let mut o = outcome.borrow_mut();
                o.last_send_ns = unix_ns();
                match result {
                    Ok(()) => o.published += 1,
                    Err(e) => {
                        o.failed += 1;
                        sender = None;
                        if o.errors.len() < 5 {
                            o.errors.push(e);
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Rc::try_unwrap(outcome)
        .map(|c| c.into_inner())
        .unwrap_or_default()
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One marked publish on `sender`'s connection (made first when there is none).
pub async fn send(sender: &mut Option<Sender>, plan: &Plan, seq: u64) -> Result<(), String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(plan.target)
            .await
            .map_err(|e| format!("publish connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("publish handshake: {e}"))?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        *sender = Some(s);
    }
    let s = sender.as_mut().expect("connected above");
    s.ready().await.map_err(|e| format!("publish: {e}"))?;
    let text = marker_text(unix_ns(), seq, plan.payload);
    let body = serde_json::json!({ "topic": plan.topic, "text": text }).to_string();
    let request = Request::post(plan.path.as_str())
        .header(hyper::header::HOST, plan.target.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = s
        .send_request(request)
        .await
        .map_err(|e| format!("publish: {e}"))?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status != hyper::StatusCode::CREATED {
        return Err(format!("publish answered {status}"));
    }
    Ok(())
}
