//! The connections hyper serves (pages, publishing, files, HTTP/2, and streams that came
//! after another request on their connection), each bounded in time while it asks for nothing.
//!
//! axum's `serve` gives hyper no timer, so a connection that sends nothing, drips its head a
//! byte at a time or opens HTTP/2 and goes quiet is kept forever, with its descriptor and its
//! buffers: a few thousand of them starve the server. Here each connection is served with
//! hyper-util's `auto` builder (HTTP/1 and HTTP/2, as axum does) with a timer and:
//! - hyper's `header_read_timeout` (HTTP/1): a request head must be complete within
//!   `EVENTS_HEADER_TIMEOUT`;
//! - an idle timeout for both protocols: a connection with no request in flight for
//!   `EVENTS_IDLE_TIMEOUT` is shut down gracefully. Hyper has no such setting (hyper#1628); the
//!   count of requests in flight is kept by the service below, a request counting until its
//!   response body ends, so an open stream is never idle;
//! - HTTP/2 keep-alive pings, so a vanished HTTP/2 peer is noticed;
//! - graceful shutdown on the server's stop token.

use crate::connection::Peer;
use axum::{
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::Request,
    Router,
};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long an idle connection, once told to close, may take to close by itself.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// How hyper serves a connection: one builder, shared by every connection.
#[derive(Clone)]
pub struct Hyper {
    builder: Arc<Builder<TokioExecutor>>,
    idle_timeout: Duration,
}

impl Hyper {
    pub fn new(header_timeout: Duration, idle_timeout: Duration, ping: Duration) -> Hyper {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(ping)
            .keep_alive_timeout(ping);
        Hyper {
            builder: Arc::new(builder),
            idle_timeout,
        }
    }

    /// Serves one connection until it closes, idles out, or the server stops (then
    /// gracefully: the answers in flight end first; the streams end on the same token).
    pub async fn serve<I>(&self, io: I, peer: SocketAddr, router: Router, stop: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (in_flight, mut watched) = watch::channel(0usize);
        let in_flight = Arc::new(in_flight);
        let service = tower::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(Peer(peer)));
            let busy = Busy::new(in_flight.clone());
            let router = router.clone();
            async move {
                let Ok(res) = router.oneshot(req.map(Body::new)).await;
                Ok::<_, Infallible>(res.map(|body| Body::new(Counted { body, _busy: busy })))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let mut conn = std::pin::pin!(conn);
        let idle = idle_for(&mut watched, self.idle_timeout);
        let mut idle = std::pin::pin!(idle);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle.as_mut(), if !shutting_down => {
                    tracing::debug!(client = %peer, "idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    // Nothing is in flight, so nothing is lost by cutting it: an HTTP/2 peer
                    // that never answers the GOAWAY's ping (one that sent only the preface)
                    // would otherwise hold on until the keep-alive gives up.
                    let _ = tokio::time::timeout(IDLE_GRACE, conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// Resolves once no request has been in flight for `limit`.
async fn idle_for(watched: &mut watch::Receiver<usize>, limit: Duration) {
    loop {
        if *watched.borrow_and_update() == 0 {
            tokio::select! {
                _ = tokio::time::sleep(limit) => return,
                changed = watched.changed() => if changed.is_err() { return },
            }
        } else if watched.changed().await.is_err() {
            return;
        }
    }
}

/// One request in flight, from its head to the end of its response body.
struct Busy(Arc<watch::Sender<usize>>);

impl Busy {
    fn new(count: Arc<watch::Sender<usize>>) -> Busy {
        count.send_modify(|n| *n += 1);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Counted {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let (count, mut watched) = watch::channel(0usize);
        let count = Arc::new(count);
        let busy = Busy::new(count.clone());
        let limit = Duration::from_secs(60);
        let idle = tokio::time::timeout(limit * 3, idle_for(&mut watched, limit)).await;
        assert!(
            idle.is_err(),
            "a request in flight (an open stream) is never idle"
        );
        drop(busy);
        let started = tokio::time::Instant::now();
        idle_for(&mut watched, limit).await;
        assert!(
            started.elapsed() >= limit,
            "idle only after the whole limit"
        );
    }
}
