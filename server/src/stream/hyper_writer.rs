//! The stream as hyper writes it, as a response body: for HTTP/2, and HTTP/1 connections that
//! asked for something else first (`direct_writer.rs` writes the rest, most streams).

use super::plan::{Handoff, Plan};
use crate::{metrics::Ended, wire};
use axum::body::Body;
use bytes::Bytes;
use tokio::{sync::broadcast::error::RecvError, time::MissedTickBehavior};

/// The response body: empty until polled, then the stream, if no other writer took the plan
/// first.
pub fn body(handoff: Handoff) -> Body {
    let body = futures::stream::unfold(BodyState::Waiting(handoff), |body| async move {
        let mut conn = match body {
            BodyState::Waiting(handoff) => Box::new(Connection::new(handoff.take()?)),
            BodyState::Streaming(conn) => conn,
        };
        let next = conn.next().await?;
        Some((
            Ok::<Bytes, std::convert::Infallible>(next),
            BodyState::Streaming(conn),
        ))
    });
    Body::from_stream(body)
}

enum BodyState {
    Waiting(Handoff),
    Streaming(Box<Connection>),
}

/// One stream being written by hyper.
struct Connection {
    /// The opening, the replay's frames and `ready`, in the order they are written.
    first: std::collections::VecDeque<Bytes>,
    plan: Plan,
    heartbeat: tokio::time::Interval,
    /// Made once and polled on every call, as in `direct_writer.rs`: a new `cancelled()` per
    /// call would take the token's lock twice per delivery.
    stopping: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Set once the `expired` event is written: the stream ends at the next call.
    expired: bool,
}

impl Connection {
    fn new(mut plan: Plan) -> Connection {
        plan.written_by("hyper");
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + plan.heartbeat, plan.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Connection {
            // Taken: the plan need not hold the opening and the replay for the stream's life.
            first: std::iter::once(std::mem::take(&mut plan.opening))
                .chain(
                    std::mem::take(&mut plan.replay)
                        .into_iter()
                        .map(|f| f.bytes.clone()),
                )
                .chain([std::mem::take(&mut plan.ready)])
                .collect(),
            stopping: Box::pin(plan.guard.shutdown().clone().cancelled_owned()),
            expiry: plan.expiry.take(),
            expired: false,
            plan,
            heartbeat,
        }
    }

    /// Ends the stream from our side, remembering why for the figures.
    fn end(&mut self, why: Ended) -> Option<Bytes> {
        self.plan.guard.end(why);
        None
    }

    /// The next chunk to write, or `None` to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.pop_front() {
            return Some(first);
        }
        if self.expired {
            return self.end(Ended::Expired);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.stopping.as_mut() => return self.end(Ended::Shutdown),
                _ = super::plan::expired(&mut self.expiry) => {
                    self.expired = true;
                    return Some(Bytes::from_static(wire::EXPIRED));
                }
                received = self.plan.live.recv() => match received {
                    Ok(frame) if self.plan.wants(&frame) => {
                        self.plan.guard.delivered(u64::from(!frame.is_announcement()));
                        // The ping is for quiet streams only.
                        self.heartbeat.reset();
                        return Some(match &self.plan.pad {
                            None => frame.bytes.clone(),
                            Some(pad) => [&frame.bytes[..], &pad[..]].concat().into(),
                        });
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        self.plan.guard.lagged(missed);
                        return self.end(Ended::Lagging);
                    }
                    Err(RecvError::Closed) => return self.end(Ended::HubClosed),
                },
                _ = self.heartbeat.tick() => return Some(wire::ping()),
            }
        }
    }
}
