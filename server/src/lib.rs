//! The live event server as a library: the binary (`main.rs`) parses the settings and calls
//! [`serve`]; the tests reach the Redis script through [`bus`].
//!
//! The map, in the order a connection meets it:
//!
//! - [`config`]: settings, from the command line or the environment (IIS's `web.config`);
//! - `listener`: accepts, with the caps on connections in total and per address;
//! - `connection`: decides who serves a connection: a plain HTTP/1 stream request goes to
//!   the stream's direct writer, everything else to hyper (`http`: timeouts, HTTP/2 pings);
//! - `routes`: the router, behind the ASP.NET Core Module's contract (`iis`: token, shutdown
//!   request, path base), and `access`: who is asking (a Windows sign-in, a token, nobody) and
//!   what they may read and publish;
//! - `stream`: `GET /api/events`, its handler, what it hands a writer (`stream::plan`) and the
//!   two writers; `publish`: the API and the page's form; `page`: the page's data;
//! - [`bus`]: where published events go and subscriptions come from: the durable event log
//!   (`bus/log`: a SQLite file shared by the processes of one machine, the default), this
//!   process's hub from `events-core` alone, or a Redis stream shared by several machines;
//! - `presence`: who is watching (each stream's seat, the figures, shared through Redis);
//! - around them: `limits`, `cors`, `security`, `error`, `metrics`, `ticker` (the demo
//!   source), `shutdown` (signals and the module's request as one token), [`telemetry`].
//!
//! One event's path: `publish` → `bus` → the hub (numbered, encoded once, kept, broadcast) →
//! each stream's writer → the browser's `EventSource` → the tab relay → a row.

mod access;
pub mod bus;
pub mod config;
mod connection;
mod cors;
mod error;
mod http;
mod iis;
mod limits;
mod listener;
mod metrics;
mod page;
mod presence;
mod publish;
mod routes;
mod security;
mod shutdown;
mod state;
mod stream;
pub mod telemetry;
mod ticker;

// The event model and the hub live in `events-core` (no web framework: the fuzz targets build
// only that).
use events_core::{hub, wire};

use bus::Bus;
use config::{Config, Store};
use hub::Hub;
use leptos::config::LeptosOptions;
use state::AppState;
use std::{sync::Arc, time::Duration};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The longest the server waits for connections to finish after every stream was told to end.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Binds, serves until asked to stop, then ends every stream and returns.
pub async fn serve(config: Config) -> Result<(), String> {
    let listener = listener::bind(config.iis.addr)?;
    // The real address: the configured port may be 0 (any free port; the tests use that).
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let (hub, bus) = start_bus(&config, &shutdown).await?;
    let state = app_state(&config, hub.clone(), bus.clone(), &shutdown);
    let shared = match &bus {
        Bus::Redis(redis) => Some(presence::shared::Shared::new(
            redis.connection(),
            redis.key(),
            &config.site.instance,
        )),
        _ => None,
    };
    let presence = presence::spawn(state.presence.clone(), hub, shared, shutdown.clone());
    say_what_runs(&config);
    if let Some(every) = config.publish.tick {
        ticker::spawn(bus, every, shutdown.clone());
    }
    shutdown::on_signals(shutdown.clone());

    // Every connection's task, the direct streams among them: waited for when stopping.
    let connections = TaskTracker::new();
    let dispatch = dispatch(&config, routes::router(state), &connections, &shutdown);
    tokio::spawn(listener::accept(
        listener,
        dispatch,
        caps(&config),
        shutdown.clone(),
        connections.clone(),
    ));
    tracing::info!(
        addr = %bound,
        frontend = ?config.iis.frontend,
        path_base = %config.iis.path_base,
        site_root = %config.site.root.display(),
        instance = %config.site.instance,
        events = config.store.name(),
        max_streams = config.stream.max_streams,
        "listening on http://{}{}/",
        bound,
        config.iis.path_base
    );
    shutdown.cancelled().await;
    if drain(&connections, DRAIN_LIMIT).await == Drained::TimedOut {
        tracing::warn!("connections still open after {DRAIN_LIMIT:?}; exiting anyway");
    }
    // Its goodbye to Redis, so the other instances stop counting this one at once; bounded,
    // since Redis may be what is gone (its figures then expire by themselves).
    let _ = tokio::time::timeout(Duration::from_secs(1), presence).await;
    tracing::info!("stopped");
    Ok(())
}

/// This process's hub, and the bus events are published on: the event log or a Redis stream
/// that feeds the hub, or the hub itself.
async fn start_bus(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<(Arc<Hub>, Bus), String> {
    match &config.store {
        Store::Log {
            dir,
            max_age,
            durability,
        } => {
            let (hub, log) = bus::log::LogBus::start(
                config.hub.clone(),
                bus::log::Settings {
                    dir: dir.clone(),
                    durability: *durability,
                    max_age: *max_age,
                    max_replay: config.stream.max_replay,
                    tick: config.publish.tick,
                },
                shutdown.clone(),
            )
            .await?;
            Ok((hub, Bus::Log(log)))
        }
        Store::Memory => {
            let hub = Arc::new(Hub::new(config.hub.clone()));
            Ok((hub.clone(), Bus::Local(hub)))
        }
        Store::Redis { url, key } => {
            // Every id comes from the stream (they are far above 0).
            let hub = Arc::new(Hub::starting_at(config.hub.clone(), 0));
            let redis = bus::redis::RedisBus::start(
                hub.clone(),
                bus::redis::Settings {
                    url: url.clone(),
                    key: key.clone(),
                    history: config.hub.history,
                },
                shutdown.clone(),
            )?;
            Ok((hub, Bus::Redis(redis)))
        }
    }
}

fn app_state(
    config: &Arc<Config>,
    hub: Arc<Hub>,
    bus: Bus,
    shutdown: &CancellationToken,
) -> AppState {
    let leptos = LeptosOptions::builder()
        .output_name(config.site.output_name.clone())
        .site_root(config.site.root.to_string_lossy().to_string())
        .site_pkg_dir(config.site.pkg_dir.clone())
        .site_addr(config.iis.addr)
        .build();
    AppState {
        hub,
        bus,
        config: config.clone(),
        leptos: Arc::new(leptos),
        shutdown: shutdown.clone(),
        open_streams: Default::default(),
        presence: presence::Presence::new(config.hub.topics.clone(), config.presence_names),
        streams_per_addr: Default::default(),
        publish_limit: Arc::new(limits::PublishLimit::new(config.publish.rate)),
        metrics: if config.metrics {
            crate::metrics::install()
        } else {
            None
        },
    }
}

/// The settings an operator may not expect, said once at startup.
fn say_what_runs(config: &Config) {
    if config.stream.pad {
        tracing::info!(
            bytes = wire::PAD_BYTES,
            "padding every event so HttpPlatformHandler's output buffer passes it on at once \
             (EVENTS_PAD=off to stop); the ASP.NET Core Module needs no padding"
        );
    }
    if config.publish.key.is_some() && config.publish.form {
        tracing::info!(
            "EVENTS_PUBLISH_KEY guards POST /api/publish; the page's form stays open to whoever \
             can load the page (EVENTS_PUBLISH_FORM=off closes it)"
        );
    }
}

/// Who serves each connection, and with what.
fn dispatch(
    config: &Config,
    router: axum::Router,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
) -> connection::Dispatch {
    let limits = &config.connections;
    connection::Dispatch {
        router,
        path_base: config.iis.path_base.as_str().into(),
        write_timeout: config.stream.write_timeout,
        header_timeout: limits.header_timeout,
        hyper: http::Hyper::new(
            limits.header_timeout,
            limits.idle_timeout,
            config.stream.heartbeat,
        ),
        enabled: config.stream.direct_writer,
        connections: connections.clone(),
        shards: std::sync::Arc::new(stream::shard::Shards::new(connections.clone())),
        stop: shutdown.clone(),
    }
}

/// The caps on connections. Under the module every request comes from its loopback address,
/// which is therefore not counted by address (the forwarded client is, for streams).
fn caps(config: &Config) -> listener::Caps {
    let mut exempt = config.connections.trusted_proxies.clone();
    if config.iis.token.is_some() {
        exempt.extend(
            ["127.0.0.1/32", "::1/128"]
                .iter()
                .filter_map(|n| n.parse::<ipnet::IpNet>().ok()),
        );
    }
    listener::Caps {
        max: config.connections.max,
        per_addr: config.connections.max_per_addr,
        exempt,
    }
}

/// How stopping ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// Every connection's task (the direct streams among them) finished.
    All,
    /// Something was still open at the drain limit (a client that stopped reading).
    TimedOut,
}

/// Once the stop token is cancelled: waits for every connection's task, at most `limit`.
///
/// Every connection, whoever serves it, is a task of the one tracker, and each ends on the
/// same token (hyper's gracefully, the streams with their last chunk). Returning earlier
/// drops the runtime, and with it every stream before it has written its end: with two
/// things to wait for (hyper's serve loop and the direct streams) an earlier version took
/// "hyper's side is done" for "everything is done", which under load was not yet true, and a
/// recycle cut streams mid-body.
async fn drain(tasks: &TaskTracker, limit: Duration) -> Drained {
    tasks.close();
    match tokio::time::timeout(limit, tasks.wait()).await {
        Ok(()) => Drained::All,
        Err(_) => Drained::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stopping_waits_for_every_connection_to_write_its_end() {
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        let finished = Arc::new(AtomicBool::new(false));
        let (flag, token) = (finished.clone(), stop.clone());
        // A stream that needs a moment after the token to write its last chunk.
        tasks.spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        stop.cancel();
        assert_eq!(drain(&tasks, Duration::from_secs(5)).await, Drained::All);
        assert!(finished.load(Ordering::SeqCst), "the stream was cut");
    }

    #[tokio::test]
    async fn a_connection_that_never_ends_is_left_at_the_limit() {
        let tasks = TaskTracker::new();
        tasks.spawn(std::future::pending::<()>());
        let drained = drain(&tasks, Duration::from_millis(50)).await;
        assert_eq!(drained, Drained::TimedOut);
    }
}
