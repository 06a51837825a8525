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
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        // The token first: once it is cancelled, hyper's side may finish at once (no
        // connection of its own open), and returning then would cut the direct streams
        // before they write their last chunk. Both are waited for below.
        biased;
        _ = shutdown.cancelled() => {}
        done = &mut server => return done.map_err(|e| format!("server error: {e}")),
    }
    // Streams end as soon as the token is cancelled; anything still open after the drain
    // limit (a client that stopped reading) is cut rather than holding the process up.
    connections.close();
    let drained = async {
        server.await?;
        connections.wait().await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(DRAIN_LIMIT, drained).await {
        Ok(done) => done.map_err(|e| format!("server error: {e}"))?,
        Err(_) => tracing::warn!("connections still open after {DRAIN_LIMIT:?}; exiting anyway"),
    }
    tracing::info!("stopped");
    Ok(())
}
