//! The live event server as a library: the binary (`main.rs`) parses the settings and calls
//! [`serve`]; the fuzz targets reach the wire format and the publish parser through it.

pub mod backend;
pub mod bus;
pub mod config;
pub mod cors;
pub mod direct_stream;
pub mod error;
pub mod iis;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod publish;
pub mod routes;
pub mod security;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod telemetry;
pub mod ticker;

// The event model and the hub live in `events-core` (no web framework: the fuzz targets build
// only that); re-exported so `server::hub` and `server::wire` read as before.
pub use events_core::{hub, wire};

use bus::Bus;
use config::Config;
use hub::{Hub, HubSettings};
use leptos::config::LeptosOptions;
use state::AppState;
use std::{future::IntoFuture, sync::Arc, time::Duration};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The longest the server waits for connections to finish after every stream was told to end.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Binds, serves until asked to stop, then ends every stream and returns.
pub async fn serve(config: Config) -> Result<(), String> {
    let listener = listener::bind(config.addr)?;
    // The real address: the configured port may be 0 (any free port; the tests use that).
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let config = Arc::new(config);
    let settings = HubSettings {
        topics: config.topics.clone(),
        history: config.history,
        max_text: config.max_text,
        subscriber_buffer: config.subscriber_buffer,
    };
    let shutdown = CancellationToken::new();
    let (hub, bus) = match &config.redis_url {
        None => {
            let hub = Arc::new(Hub::new(settings));
            (hub.clone(), Bus::Local(hub))
        }
        Some(url) => {
            // Every id comes from the stream (they are far above 0).
            let hub = Arc::new(Hub::starting_at(settings, 0));
            let redis = bus::redis::RedisBus::start(
                hub.clone(),
                bus::redis::Settings {
                    url: url.clone(),
                    key: config.redis_key.clone(),
                    history: config.history,
                },
                shutdown.clone(),
            )?;
            (hub, Bus::Redis(redis))
        }
    };
    let leptos = LeptosOptions::builder()
        .output_name(config.output_name.clone())
        .site_root(config.site_root.to_string_lossy().to_string())
        .site_pkg_dir(config.pkg_dir.clone())
        .site_addr(config.addr)
        .build();
    let state = AppState {
        hub,
        bus: bus.clone(),
        config: config.clone(),
        leptos,
        shutdown: shutdown.clone(),
        open_streams: Default::default(),
        publish_limit: Arc::new(limits::PublishLimit::new(config.publish_rate)),
        metrics: if config.metrics {
            crate::metrics::install()
        } else {
            None
        },
    };
    if config.pad {
        tracing::info!(
            bytes = wire::PAD_BYTES,
            "padding every event so HttpPlatformHandler's output buffer passes it on at once \
             (EVENTS_PAD=off to stop); the ASP.NET Core Module needs no padding"
        );
    }
    if let Some(every) = config.tick {
        ticker::spawn(bus, every, shutdown.clone());
    }
    shutdown::on_signals(shutdown.clone());

    let router = routes::router(state);
    let (to_hyper, incoming) = tokio::sync::mpsc::channel(1024);
    // Every connection's task, the direct streams among them: waited for when stopping.
    let connections = TaskTracker::new();
    tokio::spawn(listener::accept(
        listener,
        direct_stream::Direct {
            router: router.clone(),
            path_base: config.path_base.as_str().into(),
            write_timeout: config.write_timeout,
            hyper: to_hyper,
            enabled: config.direct_streams,
            streams: connections.clone(),
        },
        shutdown.clone(),
        connections.clone(),
    ));
    let hyper = listener::HyperConnections {
        incoming,
        local: bound,
    };
    let app = router.into_make_service_with_connect_info::<listener::Peer>();
    tracing::info!(
        addr = %bound,
        frontend = ?config.frontend,
        path_base = %config.path_base,
        site_root = %config.site_root.display(),
        instance = %config.instance,
        events = if config.redis_url.is_some() { "redis" } else { "in-process" },
        "listening on http://{}{}/",
        bound,
        config.path_base
    );
    let server = axum::serve(hyper, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    match run_until_stopped(server.into_future(), &shutdown, &connections, DRAIN_LIMIT).await {
        Ok(Drained::All) => {}
        Ok(Drained::TimedOut) => {
            tracing::warn!("connections still open after {DRAIN_LIMIT:?}; exiting anyway")
        }
        Err(e) => return Err(format!("server error: {e}")),
    }
    tracing::info!("stopped");
    Ok(())
}

/// How stopping ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// Hyper's side and every tracked task (the direct streams among them) finished.
    All,
    /// Something was still open at the drain limit (a client that stopped reading).
    TimedOut,
}

/// Waits for the stop token, then for hyper's side (`server`, which shuts down gracefully on
/// the same token) and for every task in `tasks`, at most `limit` after the token.
///
/// Whether we are stopping is read from the token, never from which future finished first:
/// under load the token can be cancelled, and hyper's side (with no connection of its own
/// left) finish, between the polls of one `select!`, even a biased one. Returning then dropped
/// the runtime, and with it every direct stream before it wrote its last chunk (the broken
/// bodies of a recycle under load).
async fn run_until_stopped<F>(
    server: F,
    stop: &CancellationToken,
    tasks: &TaskTracker,
    limit: Duration,
) -> std::io::Result<Drained>
where
    F: std::future::Future<Output = std::io::Result<()>>,
{
    let mut server = std::pin::pin!(server);
    let mut served = None;
    tokio::select! {
        _ = stop.cancelled() => {}
        done = &mut server => {
            if !stop.is_cancelled() {
                // Hyper's side ends by itself only on an error.
                done?;
                return Err(std::io::Error::other("the server stopped without being asked to"));
            }
            served = Some(done);
        }
    }
    tasks.close();
    let drained = async {
        match served {
            Some(done) => done?,
            None => server.await?,
        }
        tasks.wait().await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(limit, drained).await {
        Ok(done) => done.map(|()| Drained::All),
        Err(_) => Ok(Drained::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A task that, once the token is cancelled, still needs a moment (a stream writing its
    /// last chunk); `true` in the flag when it got to the end.
    fn slow_stream(tasks: &TaskTracker, stop: &CancellationToken) -> Arc<AtomicBool> {
        let finished = Arc::new(AtomicBool::new(false));
        let (flag, stop) = (finished.clone(), stop.clone());
        tasks.spawn(async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        finished
    }

    #[tokio::test]
    async fn streams_are_waited_for_when_hyper_finishes_as_the_token_is_cancelled() {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let finished = slow_stream(&tasks, &stop);
        // The race of a recycle under load, made certain: hyper's side sees the token and
        // finishes within the same poll in which the token is cancelled.
        let token = stop.clone();
        let server = std::future::poll_fn(move |_| {
            token.cancel();
            std::task::Poll::Ready(Ok(()))
        });
        let drained = run_until_stopped(server, &stop, &tasks, Duration::from_secs(5)).await;
        assert_eq!(drained.expect("drained"), Drained::All);
        assert!(finished.load(Ordering::SeqCst), "the stream was cut");
    }

    #[tokio::test]
    async fn streams_are_waited_for_when_the_token_comes_first() {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let finished = slow_stream(&tasks, &stop);
        let token = stop.clone();
        let server = async move {
            token.cancelled().await;
            Ok(())
        };
        let canceller = stop.clone();
        tokio::spawn(async move { canceller.cancel() });
        let drained = run_until_stopped(server, &stop, &tasks, Duration::from_secs(5)).await;
        assert_eq!(drained.expect("drained"), Drained::All);
        assert!(finished.load(Ordering::SeqCst), "the stream was cut");
    }

    #[tokio::test]
    async fn a_task_that_never_ends_is_left_at_the_limit() {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        tasks.spawn(std::future::pending::<()>());
        stop.cancel();
        let drained = run_until_stopped(
            std::future::pending(),
            &stop,
            &tasks,
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(drained.expect("drained"), Drained::TimedOut);
    }

    #[tokio::test]
    async fn hyper_failing_on_its_own_is_an_error() {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let server = async { Err(std::io::Error::other("accept failed")) };
        let drained = run_until_stopped(server, &stop, &tasks, Duration::from_secs(1)).await;
        assert!(drained.is_err());
    }
}
