//! Settings, from the command line or the environment (IIS passes everything through
//! `web.config`'s `<environmentVariables>`, so every setting has a variable). `--help` lists them.

use clap::Parser;
use events_core::hub::HubSettings;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Parser, Debug)]
#[command(
    name = "server",
    version,
    about = "Live Server-Sent Events, rendered by Leptos, made to run behind IIS.",
    after_help = "The port comes from ASPNETCORE_PORT (IIS, ASP.NET Core Module), else \
                  HTTP_PLATFORM_PORT (IIS, HttpPlatformHandler), else --addr. Behind either IIS \
                  module the server listens on 127.0.0.1 only."
)]
pub struct Args {
    /// Address to listen on when no IIS module gives a port (cargo-leptos sets LEPTOS_SITE_ADDR).
    #[arg(long, env = "LEPTOS_SITE_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: String,

    /// Port given by the ASP.NET Core Module (AspNetCoreModuleV2).
    #[arg(long, env = "ASPNETCORE_PORT", hide = true)]
    pub aspnetcore_port: Option<String>,

    /// Pairing token of the ASP.NET Core Module: requests without it are refused.
    #[arg(long, env = "ASPNETCORE_TOKEN", hide = true)]
    pub aspnetcore_token: Option<String>,

    /// Port given by HttpPlatformHandler.
    #[arg(long, env = "HTTP_PLATFORM_PORT", hide = true)]
    pub http_platform_port: Option<String>,

    /// Path base when IIS hosts the app as an application (e.g. /live); set by the module.
    #[arg(long, env = "ASPNETCORE_APPL_PATH", default_value = "/")]
    pub path_base: String,

    /// Folder with the client files (pkg/, assets); a relative path is looked up beside the
    /// executable first, then in the working directory.
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "site")]
    pub site_root: PathBuf,

    /// Sub-folder of the site root holding the WebAssembly client.
    #[arg(long, env = "LEPTOS_SITE_PKG_DIR", default_value = "pkg")]
    pub pkg_dir: String,

    /// File name (without extension) of the client's .js/.wasm/.css in the pkg folder.
    #[arg(long, env = "LEPTOS_OUTPUT_NAME", default_value = "sse-live")]
    pub output_name: String,

    /// Interval of the built-in `tick` source, at least 1ms ("off" disables it). "auto": 1s,
    /// but off with EVENTS_REDIS_URL (every instance would tick into the shared stream).
    #[arg(long, env = "EVENTS_TICK", default_value = "auto")]
    pub tick: String,

    /// Where events are kept: "log" (a SQLite file in EVENTS_DATA_DIR: survives restarts and
    /// IIS recycles, shared by every process pointed at the folder), "memory" (this process
    /// only; a restart starts a new history) or "redis" (EVENTS_REDIS_URL, for a farm).
    /// "auto": redis when EVENTS_REDIS_URL is set, else log.
    #[arg(long, env = "EVENTS_STORE", default_value = "auto")]
    pub store: String,

    /// Folder of the event log (created when missing); relative to the executable's folder.
    /// The app pool's identity needs Modify rights on it, as on logs\. Processes pointed at
    /// the same folder share one history; give each site its own.
    #[arg(long, env = "EVENTS_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Events older than this are removed from the log, e.g. "7d" ("off": kept until
    /// EVENTS_HISTORY newer ones push them out).
    #[arg(long, env = "EVENTS_HISTORY_AGE", default_value = "off")]
    pub history_age: String,

    /// How the log commits: "normal" (the event is in the operating system's hands before
    /// the publisher's 201: it survives the process being killed or recycled; a power cut may
    /// lose the last moments) or "full" (flushed to the disk first: it survives a power cut,
    /// and costs a disk flush per batch of publishes).
    #[arg(long, env = "EVENTS_LOG_SYNC", default_value = "normal")]
    pub log_sync: String,

    /// Redis to share events with other instances through a stream, e.g.
    /// redis://127.0.0.1:6379/ (with EVENTS_STORE=auto, setting it selects Redis).
    #[arg(long, env = "EVENTS_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Key of the Redis stream: instances with the same Redis and key share their events.
    #[arg(long, env = "EVENTS_REDIS_KEY", default_value = "sse-live:events")]
    pub redis_key: String,

    /// This instance's name, shown on the page and in the stream's `ready` event
    /// (default: host name and process id).
    #[arg(long, env = "EVENTS_INSTANCE")]
    pub instance: Option<String>,

    /// Interval of the keep-alive (`ping` event) on every stream, well inside any proxy's idle timeout.
    #[arg(long, env = "EVENTS_HEARTBEAT", default_value = "15s")]
    pub heartbeat: String,

    /// Reconnect delay the stream suggests to browsers (the SSE `retry:` field).
    #[arg(long, env = "EVENTS_RETRY", default_value = "2s")]
    pub retry: String,

    /// Events kept for resuming with Last-Event-ID.
    #[arg(long, env = "EVENTS_HISTORY", default_value_t = 1000)]
    pub history: usize,

    /// Topics that may be published, comma-separated (each becomes an SSE event name).
    #[arg(long, env = "EVENTS_TOPICS", default_value = "tick,chat,alert")]
    pub topics: String,

    /// Rows the page keeps in its live list (and renders on first load).
    #[arg(long, env = "EVENTS_PAGE_ROWS", default_value_t = 200)]
    pub page_rows: usize,

    /// Longest text accepted in one event, in bytes.
    #[arg(long, env = "EVENTS_MAX_TEXT", default_value_t = 64 * 1024)]
    pub max_text: usize,

    /// Events a subscriber may fall behind before it is disconnected (it then resumes from
    /// the history).
    #[arg(long, env = "EVENTS_SUBSCRIBER_BUFFER", default_value_t = 1024)]
    pub subscriber_buffer: usize,

    /// A write to a client that makes no progress for this long drops the connection (a client
    /// that stopped reading).
    #[arg(long, env = "EVENTS_WRITE_TIMEOUT", default_value = "20s")]
    pub write_timeout: String,

    /// Most streams open at once; past it new streams get 503 with a jittered Retry-After.
    /// Default 10000, or 4500 under the ASP.NET Core Module: IIS counts every open stream as a
    /// request and answers 503.2 itself past `appConcurrentRequestLimit` (5000 by default),
    /// without our Retry-After. Raise both together.
    #[arg(long, env = "EVENTS_MAX_STREAMS")]
    pub max_streams: Option<usize>,

    /// Publishes per second allowed to one client address (bursts of twice that); 0 = no limit.
    #[arg(long, env = "EVENTS_PUBLISH_RATE", default_value_t = 100)]
    pub publish_rate: u32,

    /// When set, `POST /api/publish` needs `Authorization: Bearer <key>` (or `X-Publish-Key`).
    /// It guards that endpoint only: the page's form stays open to whoever can load the page
    /// (see EVENTS_PUBLISH_FORM).
    #[arg(long, env = "EVENTS_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// The page's publish form (`POST {base}/api/publish_event`): "on" (anyone who can load
    /// the page may publish through it; its same-origin check stops other sites' pages, it is
    /// not a password) or "off" (it answers 403; publish with the key only).
    #[arg(long, env = "EVENTS_PUBLISH_FORM", default_value = "on")]
    pub publish_form: String,

    /// Pad each event with an 8 KiB comment so HttpPlatformHandler's output buffer passes it
    /// on at once: "auto" (when started by HttpPlatformHandler), "on" or "off".
    #[arg(long, env = "EVENTS_PAD", default_value = "auto")]
    pub pad: String,

    /// `GET /metrics` in the Prometheus text format: "on" or "off" (then 404).
    #[arg(long, env = "EVENTS_METRICS", default_value = "on")]
    pub metrics: String,

    /// Origins of other sites whose pages may open the stream and publish (with cookies),
    /// comma-separated and exact, e.g. "https://intranet.example.com"; none by default.
    #[arg(long, env = "EVENTS_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,

    /// Who writes a stream on a plain HTTP/1 connection: "direct" (a task that owns the
    /// socket; under 2 KiB per open stream) or "hyper" (as every other response; the way to
    /// rule the direct writer out when chasing a problem). HTTP/2 streams are always hyper's.
    #[arg(long, env = "EVENTS_STREAM_WRITER", default_value = "direct")]
    pub stream_writer: String,

    /// Longest time to answer any request except the stream (pages, publish, the form,
    /// files); past it the answer is 408.
    #[arg(long, env = "EVENTS_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: String,

    /// Most bytes of missed events sent to one stream when it resumes; past it the client
    /// gets a `reset` and the newest events that fit.
    #[arg(long, env = "EVENTS_MAX_REPLAY", default_value_t = 8 * 1024 * 1024)]
    pub max_replay: usize,

    /// Most bytes of events in the page's first render, counted as the page carries them
    /// (each event's row and its entry in the page data, escaped). The default holds at least
    /// one event of the longest text however it escapes.
    #[arg(long, env = "EVENTS_PAGE_BYTES", default_value_t = 1024 * 1024)]
    pub page_bytes: usize,

    /// Longest a client may take to send a request head, from connecting or from the end of
    /// its previous answer; then the connection is closed.
    #[arg(long, env = "EVENTS_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: String,

    /// A connection with no request in flight (an idle keep-alive, an HTTP/2 connection with
    /// no stream) is closed after this long.
    #[arg(long, env = "EVENTS_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,

    /// Most connections open at once; past it new ones get 503 and are closed. Default: the
    /// process's descriptor limit less a reserve (Linux), else 16000, so a flood meets this
    /// answer instead of a failing accept.
    #[arg(long, env = "EVENTS_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most connections open at once from one address (0: no limit). Trusted proxies and,
    /// under the ASP.NET Core Module, the module itself are not counted by address.
    #[arg(long, env = "EVENTS_MAX_CONNECTIONS_PER_ADDR", default_value_t = 1_000)]
    pub max_connections_per_addr: usize,

    /// Most streams open at once for one client address (0: no limit); behind IIS or a
    /// trusted proxy, the address the proxy forwarded.
    #[arg(long, env = "EVENTS_MAX_STREAMS_PER_ADDR", default_value_t = 1_000)]
    pub max_streams_per_addr: usize,

    /// Reverse proxies whose `X-Forwarded-For` is believed (its last entry is the client),
    /// comma-separated addresses or CIDRs, e.g. "127.0.0.1, 10.0.0.0/8". Under the ASP.NET
    /// Core Module the module's own requests (those with its pairing token) are believed
    /// without this.
    #[arg(long, env = "EVENTS_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Who may read and publish each topic: a TOML file of rules (README, "Who may see what");
    /// a relative path is taken from the executable's folder. Without it every topic is open.
    #[arg(long, env = "EVENTS_ACCESS_FILE")]
    pub access_file: Option<PathBuf>,

    /// Anonymous viewers (no Windows sign-in, no token): "on" (served, the topic rules say
    /// what they see) or "off" (the page and the stream answer 401).
    #[arg(long, env = "EVENTS_ANONYMOUS", default_value = "on")]
    pub anonymous: String,

    /// Who is watching, as the page and `GET /api/presence` show it: "off" (a count only) or
    /// "on" (also the signed-in watchers' names, to everyone who may open the page).
    #[arg(long, env = "EVENTS_PRESENCE_NAMES", default_value = "off")]
    pub presence_names: String,

    /// Believe signed tokens (JWT, HS256) made with this shared secret, at least 32 bytes.
    #[arg(long, env = "EVENTS_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Believe signed tokens (JWT, RS256 or ES256) whose signer's public key is in this PEM
    /// file; a relative path is taken from the executable's folder.
    #[arg(long, env = "EVENTS_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<PathBuf>,

    /// When set, a token's `iss` must be this.
    #[arg(long, env = "EVENTS_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// When set, a token's `aud` must name this.
    #[arg(long, env = "EVENTS_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// The cookie a browser carries its token in (a browser's EventSource cannot send an
    /// `Authorization` header, but it sends cookies).
    #[arg(long, env = "EVENTS_TOKEN_COOKIE", default_value = "events_token")]
    pub token_cookie: String,

    /// Log filter (tracing-subscriber syntax), e.g. "info" or "server=debug,info".
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// `EVENTS_MAX_STREAMS` when nothing sets it.
pub const MAX_STREAMS: usize = 10_000;
/// The same under the ASP.NET Core Module: below IIS's own `appConcurrentRequestLimit` (5000 by
/// default), so that the cap's answer is ours (503 with `Retry-After`, which our client and
/// browsers honour) and not IIS's 503.2.
pub const MAX_STREAMS_UNDER_IIS: usize = 4_500;

pub use crate::iis::Frontend;

/// The validated settings, grouped by who uses them (clap's [`Args`] is only the input).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where we listen and what put us there (the ASP.NET Core Module's contract).
    pub iis: IisSettings,
    /// The page and the client files.
    pub site: SiteSettings,
    /// The hub: topics, history, text limit, subscriber buffer (events-core's own settings).
    pub hub: HubSettings,
    /// Where events are kept and shared: the log file, this process's memory, or Redis.
    pub store: Store,
    /// The event stream.
    pub stream: StreamSettings,
    /// Publishing: the API, the page's form and the demo tick.
    pub publish: PublishSettings,
    /// Every connection: caps, timeouts, trusted proxies.
    pub connections: ConnectionSettings,
    /// Who may read and publish what.
    pub access: crate::access::Access,
    /// `GET /metrics` on.
    pub metrics: bool,
    /// Presence shows the signed-in watchers' names.
    pub presence_names: bool,
    /// The log filter.
    pub log: String,
}

#[derive(Clone, Debug)]
pub struct IisSettings {
    pub addr: SocketAddr,
    pub frontend: Frontend,
    /// The module's pairing token, when it started us.
    pub token: Option<String>,
    /// `""` at the site root, else `/name` with no trailing slash.
    pub path_base: String,
}

#[derive(Clone, Debug)]
pub struct SiteSettings {
    pub root: PathBuf,
    pub pkg_dir: String,
    pub output_name: String,
    /// This instance's name (page and `ready` event).
    pub instance: String,
    pub page_rows: usize,
    pub page_bytes: usize,
    /// Exact origins allowed cross-origin (`scheme://host[:port]`); empty: same origin only.
    pub cors_origins: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum Store {
    /// The durable log (`bus/log`), the default.
    Log {
        dir: PathBuf,
        max_age: Option<Duration>,
        durability: crate::bus::log::file::Durability,
    },
    /// This process's hub alone (`EVENTS_STORE=memory`).
    Memory,
    /// A Redis stream shared by several instances.
    Redis { url: String, key: String },
}

impl Store {
    /// Its name in the log.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Log { .. } => "log",
            Store::Memory => "memory",
            Store::Redis { .. } => "redis",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub write_timeout: Duration,
    pub max_streams: usize,
    /// 0: no limit.
    pub max_per_addr: usize,
    pub max_replay: usize,
    /// Whether each event is followed by [`crate::wire::PAD_BYTES`] of padding.
    pub pad: bool,
    /// Streams on plain HTTP/1 connections are written by `stream/direct_writer.rs` (else
    /// hyper).
    pub direct_writer: bool,
}

#[derive(Clone, Debug)]
pub struct PublishSettings {
    pub rate: u32,
    pub key: Option<String>,
    /// The page's form takes posts (`EVENTS_PUBLISH_FORM=on`).
    pub form: bool,
    pub tick: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// Bound on producing a response head, for everything but the stream.
    pub request_timeout: Duration,
    pub max: usize,
    /// 0: no limit.
    pub max_per_addr: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A setting that cannot be used; its message is the one line printed before exiting.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let (addr, frontend) = crate::iis::listen_addr(
            args.aspnetcore_port.as_deref(),
            args.http_platform_port.as_deref(),
            &args.addr,
        )
        .map_err(ConfigError)?;
        let redis_url = args.redis_url.clone().filter(|u| !u.trim().is_empty());
        let store = store(&args, redis_url)?;
        let tick = match args.tick.trim() {
            "off" | "0" | "" => None,
            "auto" if matches!(store, Store::Redis { .. }) => None,
            "auto" => Some(Duration::from_secs(1)),
            // Down to 1 ms: `2ms` is the 500 events/s of the browser's load test.
            s => Some(duration("EVENTS_TICK", s, Duration::from_millis(1))?),
        };
        let heartbeat = duration(
            "EVENTS_HEARTBEAT",
            &args.heartbeat,
            Duration::from_millis(100),
        )?;
        let retry = duration("EVENTS_RETRY", &args.retry, Duration::from_millis(100))?;
        let write_timeout = duration(
            "EVENTS_WRITE_TIMEOUT",
            &args.write_timeout,
            Duration::from_millis(100),
        )?;
        let request_timeout = duration(
            "EVENTS_REQUEST_TIMEOUT",
            &args.request_timeout,
            Duration::from_millis(100),
        )?;
        let header_timeout = duration(
            "EVENTS_HEADER_TIMEOUT",
            &args.header_timeout,
            Duration::from_millis(100),
        )?;
        let idle_timeout = duration(
            "EVENTS_IDLE_TIMEOUT",
            &args.idle_timeout,
            Duration::from_millis(100),
        )?;
        let max_connections = args.max_connections.unwrap_or_else(default_max_connections);
        if max_connections == 0 {
            return err("EVENTS_MAX_CONNECTIONS: must be at least 1");
        }
        let trusted_proxies = trusted_proxies(&args.trusted_proxies)?;
        let publish_form = on_off("EVENTS_PUBLISH_FORM", &args.publish_form)?;
        let metrics = on_off("EVENTS_METRICS", &args.metrics)?;
        let presence_names = on_off("EVENTS_PRESENCE_NAMES", &args.presence_names)?;
        let cors_origins = cors_origins(&args.cors_origins)?;
        if args.history == 0 {
            return err("EVENTS_HISTORY: must be at least 1");
        }
        if args.page_rows == 0 {
            return err("EVENTS_PAGE_ROWS: must be at least 1");
        }
        if args.subscriber_buffer == 0 {
            return err("EVENTS_SUBSCRIBER_BUFFER: must be at least 1");
        }
        let max_streams = args.max_streams.unwrap_or(match frontend {
            Frontend::AspNetCoreModule => MAX_STREAMS_UNDER_IIS,
            _ => MAX_STREAMS,
        });
        if max_streams == 0 {
            return err("EVENTS_MAX_STREAMS: must be at least 1");
        }
        if args.max_text == 0 {
            return err("EVENTS_MAX_TEXT: must be at least 1");
        }
        let topics = topics(&args.topics)?;
        let direct_writer = match args.stream_writer.trim() {
            "direct" => true,
            "hyper" => false,
            other => {
                return err(format!(
                    "EVENTS_STREAM_WRITER: '{other}' is not one of direct, hyper"
                ))
            }
        };
        let pad = match args.pad.trim() {
            "auto" => frontend == Frontend::HttpPlatformHandler,
            "on" => true,
            "off" => false,
            other => return err(format!("EVENTS_PAD: '{other}' is not one of auto, on, off")),
        };
        if tick.is_some() && !topics.iter().any(|t| t == "tick") {
            return err("EVENTS_TOPICS: must include 'tick' while EVENTS_TICK is on");
        }
        let site_root = site_root(&args.site_root)?;
        if let Store::Log { dir, .. } = &store {
            let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            if absolute(dir).starts_with(absolute(&site_root)) {
                return err(format!(
                    "EVENTS_DATA_DIR: '{}' is inside the site folder '{}', whose every file is \
                     served; put the data folder beside it instead",
                    dir.display(),
                    site_root.display()
                ));
            }
        }
        let token = args.aspnetcore_token.clone().filter(|t| !t.is_empty());
        let access = access(&args, &topics, token.is_some())?;
        Ok(Config {
            iis: IisSettings {
                addr,
                frontend,
                token,
                path_base: path_base(&args.path_base)?,
            },
            site: SiteSettings {
                root: site_root,
                pkg_dir: args.pkg_dir,
                output_name: args.output_name,
                instance: instance(args.instance.as_deref()),
                page_rows: args.page_rows,
                page_bytes: args.page_bytes,
                cors_origins,
            },
            hub: HubSettings {
                topics,
                history: args.history,
                max_text: args.max_text,
                subscriber_buffer: args.subscriber_buffer,
            },
            store,
            stream: StreamSettings {
                heartbeat,
                retry,
                write_timeout,
                max_streams,
                max_per_addr: args.max_streams_per_addr,
                max_replay: args.max_replay,
                pad,
                direct_writer,
            },
            publish: PublishSettings {
                rate: args.publish_rate,
                key: args.publish_key.filter(|k| !k.is_empty()),
                form: publish_form,
                tick,
            },
            connections: ConnectionSettings {
                header_timeout,
                idle_timeout,
                request_timeout,
                max: max_connections,
                max_per_addr: args.max_connections_per_addr,
                trusted_proxies,
            },
            access,
            metrics,
            presence_names,
            log: args.log,
        })
    }
}

fn access(
    args: &Args,
    topics: &[String],
    module: bool,
) -> Result<crate::access::Access, ConfigError> {
    use crate::access::{token::Verifier, Access, Rules};
    let rules = match &args.access_file {
        Some(path) => Rules::load(&beside_exe(path), topics)
            .map_err(|e| ConfigError(format!("EVENTS_ACCESS_FILE: {e}")))?,
        None => Rules::open(),
    };
    let secret = args.token_secret.as_deref().filter(|s| !s.is_empty());
    let verifier =
        match (secret, &args.token_public_key) {
            (Some(_), Some(_)) => {
                return err("EVENTS_TOKEN_SECRET and EVENTS_TOKEN_PUBLIC_KEY: set one, not both")
            }
            // RFC 7518 asks for a key at least as long as the hash; a short one can be guessed.
            (Some(secret), None) if secret.len() < 32 => return err(
                "EVENTS_TOKEN_SECRET: at least 32 bytes, or tokens can be forged by guessing it",
            ),
            (Some(secret), None) => Some(Verifier::shared_secret(secret)),
            (None, Some(path)) => Some(
                Verifier::public_key(&beside_exe(path))
                    .map_err(|e| ConfigError(format!("EVENTS_TOKEN_PUBLIC_KEY: {e}")))?,
            ),
            (None, None) => None,
        };
    let tokens = verifier.map(|v| {
        v.expect_issuer(args.token_issuer.as_deref().filter(|s| !s.is_empty()))
            .expect_audience(args.token_audience.as_deref().filter(|s| !s.is_empty()))
    });
    let cookie = args.token_cookie.trim();
    if cookie.is_empty()
        || !cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return err(format!(
            "EVENTS_TOKEN_COOKIE: '{cookie}' is not a cookie name (letters, digits, - _ .)"
        ));
    }
    Ok(Access {
        rules,
        tokens,
        anonymous: on_off("EVENTS_ANONYMOUS", &args.anonymous)?,
        cookie: cookie.to_string(),
        module,
    })
}

fn store(args: &Args, redis_url: Option<String>) -> Result<Store, ConfigError> {
    let redis = |url: String| {
        let key = args.redis_key.trim();
        if key.is_empty() {
            return err("EVENTS_REDIS_KEY: must not be empty");
        }
        Ok(Store::Redis {
            url,
            key: key.to_string(),
        })
    };
    match (args.store.trim(), redis_url) {
        ("auto" | "redis", Some(url)) => redis(url),
        ("redis", None) => err("EVENTS_STORE: redis needs EVENTS_REDIS_URL"),
        ("memory", _) => Ok(Store::Memory),
        ("auto" | "log", _) => {
            let max_age = match args.history_age.trim() {
                "off" | "" => None,
                s => Some(duration("EVENTS_HISTORY_AGE", s, Duration::from_secs(1))?),
            };
            let durability = match args.log_sync.trim() {
                "normal" => crate::bus::log::file::Durability::Process,
                "full" => crate::bus::log::file::Durability::PowerLoss,
                other => {
                    return err(format!(
                        "EVENTS_LOG_SYNC: '{other}' is not one of normal, full"
                    ))
                }
            };
            Ok(Store::Log {
                dir: beside_exe(&args.data_dir),
                max_age,
                durability,
            })
        }
        (other, _) => err(format!(
            "EVENTS_STORE: '{other}' is not one of auto, log, memory, redis"
        )),
    }
}

/// A relative path is taken from the executable's folder, not the working directory: IIS
/// starts the server in a folder of its choosing, and the data belongs to the site.
fn beside_exe(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(path)))
        .unwrap_or_else(|| path.to_path_buf())
}

fn on_off(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => err(format!("{name}: '{other}' is not one of on, off")),
    }
}

fn duration(name: &str, value: &str, min: Duration) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim())
        .or_else(|_| value.trim().parse::<u64>().map(Duration::from_millis))
        .map_err(|_| {
            ConfigError(format!(
                "{name}: '{value}' is not a duration (e.g. 500ms, 15s, 2m)"
            ))
        })?;
    if d < min {
        return err(format!("{name}: {value} is shorter than {min:?}"));
    }
    Ok(d)
}

/// Browsers send `Origin: scheme://host[:port]`, nothing more, and with credentials the answer
/// must echo it exactly (never `*`): each entry must be such an origin. A trailing slash, as
/// copied from an address bar, is dropped.
fn cors_origins(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut origins: Vec<String> = Vec::new();
    for o in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let o = o.strip_suffix('/').unwrap_or(o);
        let host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .unwrap_or("");
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
        if !valid {
            return err(format!(
                "EVENTS_CORS_ORIGINS: '{o}' is not an origin like https://example.com \
                 (scheme and host, optional port, no path, no '*')"
            ));
        }
        if !origins.iter().any(|x| x == o) {
            origins.push(o.to_string());
        }
    }
    Ok(origins)
}

/// Descriptors kept for what is not a client connection: the listener, files, Redis, logs.
const DESCRIPTOR_RESERVE: usize = 128;

/// The open-files limit (from `/proc/self/limits`: no unsafe call for it) less a reserve;
/// 16000 where it cannot be read (Windows has no such per-process limit).
fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .map(|soft| soft.saturating_sub(DESCRIPTOR_RESERVE).max(1))
        .unwrap_or(16_000)
}

/// `1.2.3.4`, `::1` or `10.0.0.0/8`, comma-separated; a bare address is a /32 (or /128).
fn trusted_proxies(value: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "EVENTS_TRUSTED_PROXIES: '{v}' is not an address or a CIDR like 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

/// The name given, else `host:pid`. Kept to one short line of printable text: it goes into
/// an HTML attribute and a JSON string (both escaped) and the log.
fn instance(value: Option<&str>) -> String {
    let given = value.map(str::trim).filter(|v| !v.is_empty());
    let name = match given {
        Some(name) => name.to_string(),
        None => format!("{}:{}", host_name(), std::process::id()),
    };
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "server".to_string())
}

fn topics(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut topics: Vec<String> = Vec::new();
    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        events_core::event::validate_topic(t)
            .map_err(|e| ConfigError(format!("EVENTS_TOPICS: {e}")))?;
        if !topics.iter().any(|x| x == t) {
            topics.push(t.to_string());
        }
    }
    if topics.is_empty() {
        return err("EVENTS_TOPICS: name at least one topic");
    }
    Ok(topics)
}

/// ANCM passes `/` at the site root and `/live` under an application (leading slash, no
/// trailing one); we accept sloppier forms too and normalise them.
fn path_base(value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if trimmed.split('/').any(|seg| {
        seg.is_empty() || seg == "." || seg == ".." || seg.contains(['\\', '?', '#', '%'])
    }) {
        return err(format!(
            "ASPNETCORE_APPL_PATH: '{value}' is not a path like /live"
        ));
    }
    Ok(format!("/{trimmed}"))
}

/// A deployed server has no Cargo.toml beside it and IIS may start it from anywhere, so a
/// relative site root is looked up beside the executable first; cargo-leptos runs the server
/// from the workspace with `target/site`, found in the working directory.
fn site_root(value: &Path) -> Result<PathBuf, ConfigError> {
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = if value.is_absolute() {
        vec![value.to_path_buf()]
    } else {
        let beside_exe = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(value)));
        let in_cwd = std::env::current_dir().ok().map(|dir| dir.join(value));
        beside_exe.into_iter().chain(in_cwd).collect()
    };
    for candidate in candidates {
        if candidate.is_dir() {
            return exposes_nothing_else(value, candidate);
        }
        tried.push(candidate.display().to_string());
    }
    err(format!(
        "LEPTOS_SITE_ROOT: site folder '{}' not found (looked in {})",
        value.display(),
        tried.join(" and ")
    ))
}

/// Everything under the site root is served as it is: a site root that holds the server
/// itself (the published folder, `LEPTOS_SITE_ROOT=.`) would serve the executable, web.config
/// and logs/. Refused at startup rather than served.
fn exposes_nothing_else(value: &Path, root: PathBuf) -> Result<PathBuf, ConfigError> {
    let refuse = |what: &str| {
        err(format!(
            "LEPTOS_SITE_ROOT: '{}' ({}) holds {what}, and everything in it is served; point it \
             at the folder of client files (site)",
            value.display(),
            root.display()
        ))
    };
    let canonical = root.canonicalize().unwrap_or_else(|_| root.clone());
    let exe = std::env::current_exe().and_then(|e| e.canonicalize());
    if exe.is_ok_and(|exe| exe.starts_with(&canonical)) {
        return refuse("the server executable");
    }
    if canonical.join("web.config").exists() {
        return refuse("web.config");
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let site = site();
        let mut argv = vec!["server"];
        if !extra.contains(&"--site-root") {
            argv.extend(["--site-root", site.to_str().expect("utf-8 temp path")]);
        }
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    /// A site folder that does not hold the test executable.
    fn site() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sse-live-config-site-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a site folder");
        dir
    }

    #[test]
    fn a_site_root_that_holds_the_server_or_web_config_is_refused() {
        let exe_dir = std::env::current_exe()
            .expect("exe")
            .parent()
            .expect("folder")
            .to_path_buf();
        for root in [exe_dir.clone(), exe_dir.join("..")] {
            let e = site_root(&root).expect_err("the executable's folder");
            assert!(e.0.contains("the server executable"), "{e}");
        }
        let with_config = site().join("with-config");
        std::fs::create_dir_all(&with_config).expect("create");
        std::fs::write(with_config.join("web.config"), "<configuration/>").expect("write");
        let e = site_root(&with_config).expect_err("web.config");
        assert!(e.0.contains("web.config"), "{e}");
        assert_eq!(site_root(&site()).expect("a plain folder"), site());
    }

    #[test]
    fn the_module_port_wins_and_binds_loopback() {
        let mut a = args(&["--addr", "0.0.0.0:80"]);
        a.aspnetcore_port = Some("12345".into());
        a.http_platform_port = Some("999".into());
        let c = Config::from_args(a).expect("valid");
        assert_eq!(c.iis.addr, "127.0.0.1:12345".parse().expect("addr"));
        assert_eq!(c.iis.frontend, Frontend::AspNetCoreModule);
    }

    #[test]
    fn the_stream_cap_sits_below_iis_own_limit_under_the_module() {
        let mut a = args(&[]);
        a.aspnetcore_port = Some("12345".into());
        assert_eq!(
            Config::from_args(a).expect("valid").stream.max_streams,
            4_500
        );
        assert_eq!(
            Config::from_args(args(&[]))
                .expect("valid")
                .stream
                .max_streams,
            10_000
        );
        let mut a = args(&["--max-streams", "6000"]);
        a.aspnetcore_port = Some("12345".into());
        assert_eq!(
            Config::from_args(a).expect("valid").stream.max_streams,
            6_000,
            "set by hand"
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidrs() {
        let c = Config::from_args(args(&["--trusted-proxies", "127.0.0.1, 10.0.0.0/8,::1"]))
            .expect("valid");
        let shown: Vec<String> = c
            .connections
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        let e = Config::from_args(args(&["--trusted-proxies", "10.0.0.0/33"])).expect_err("bad");
        assert!(
            e.0.starts_with("EVENTS_TRUSTED_PROXIES: '10.0.0.0/33'"),
            "{e}"
        );
        assert!(Config::from_args(args(&[]))
            .expect("valid")
            .connections
            .trusted_proxies
            .is_empty());
    }

    #[test]
    fn http_platform_port_is_next() {
        let mut a = args(&[]);
        a.http_platform_port = Some("8081".into());
        let c = Config::from_args(a).expect("valid");
        assert_eq!(c.iis.addr, "127.0.0.1:8081".parse().expect("addr"));
        assert_eq!(c.iis.frontend, Frontend::HttpPlatformHandler);
        assert!(
            c.stream.pad,
            "padding is on by default behind HttpPlatformHandler"
        );
        let mut a = args(&["--pad", "off"]);
        a.http_platform_port = Some("8081".into());
        assert!(!Config::from_args(a).expect("valid").stream.pad);
        assert!(!Config::from_args(args(&[])).expect("valid").stream.pad);
        assert!(Config::from_args(args(&["--pad", "sometimes"])).is_err());
        assert!(
            Config::from_args(args(&[]))
                .expect("valid")
                .stream
                .direct_writer
        );
        let hyper = Config::from_args(args(&["--stream-writer", "hyper"])).expect("valid");
        assert!(!hyper.stream.direct_writer);
        assert!(Config::from_args(args(&["--stream-writer", "tokio"])).is_err());
    }

    #[test]
    fn bad_settings_say_which() {
        let mut a = args(&[]);
        a.aspnetcore_port = Some("80a".into());
        let e = Config::from_args(a).expect_err("bad port");
        assert!(e.0.starts_with("ASPNETCORE_PORT:"), "{e}");
        let e = Config::from_args(args(&["--heartbeat", "soon"])).expect_err("bad duration");
        assert!(e.0.starts_with("EVENTS_HEARTBEAT:"), "{e}");
        let e = Config::from_args(args(&["--history", "0"])).expect_err("zero history");
        assert!(e.0.starts_with("EVENTS_HISTORY:"), "{e}");
        let e = Config::from_args(args(&["--topics", "a b"])).expect_err("bad topic");
        assert!(e.0.starts_with("EVENTS_TOPICS:"), "{e}");
        let e = Config::from_args(args(&["--topics", "chat"])).expect_err("tick missing");
        assert!(e.0.contains("tick"), "{e}");
        let e = Config::from_args(args(&["--site-root", "/no/such/dir"])).expect_err("no site");
        assert!(e.0.starts_with("LEPTOS_SITE_ROOT:"), "{e}");
    }

    #[test]
    fn redis_turns_the_automatic_tick_off() {
        let c = Config::from_args(args(&[])).expect("valid");
        assert_eq!(c.publish.tick, Some(Duration::from_secs(1)));
        assert_eq!(c.store.name(), "log");
        let c = Config::from_args(args(&["--redis-url", "redis://127.0.0.1:1/"])).expect("valid");
        assert_eq!(
            c.publish.tick, None,
            "each instance would tick into the shared stream"
        );
        assert!(
            matches!(&c.store, Store::Redis { key, .. } if key == "sse-live:events"),
            "{:?}",
            c.store
        );
        let c =
            Config::from_args(args(&["--redis-url", "redis://x/", "--tick", "2s"])).expect("valid");
        assert_eq!(
            c.publish.tick,
            Some(Duration::from_secs(2)),
            "asked for explicitly"
        );
        assert!(
            Config::from_args(args(&["--redis-url", "redis://x/", "--redis-key", " "])).is_err()
        );
    }

    #[test]
    fn the_log_is_the_default_store_beside_the_executable() {
        let c = Config::from_args(args(&[])).expect("valid");
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .expect("exe dir");
        match &c.store {
            Store::Log {
                dir,
                max_age,
                durability,
            } => {
                assert_eq!(dir, &exe_dir.join("data"));
                assert_eq!(*max_age, None);
                assert_eq!(*durability, crate::bus::log::file::Durability::Process);
            }
            other => panic!("{other:?}"),
        }
        let c =
            Config::from_args(args(&["--history-age", "7d", "--log-sync", "full"])).expect("valid");
        assert!(matches!(
            c.store,
            Store::Log {
                max_age: Some(d),
                durability: crate::bus::log::file::Durability::PowerLoss,
                ..
            } if d == Duration::from_secs(7 * 86400)
        ));
        let memory = Config::from_args(args(&["--store", "memory"])).expect("valid");
        assert_eq!(memory.store.name(), "memory");
        for (flags, setting) in [
            (&["--store", "disk"][..], "EVENTS_STORE:"),
            (&["--store", "redis"][..], "EVENTS_STORE:"),
            (&["--log-sync", "always"][..], "EVENTS_LOG_SYNC:"),
            (&["--history-age", "soon"][..], "EVENTS_HISTORY_AGE:"),
        ] {
            let e = Config::from_args(args(flags)).expect_err("refused");
            assert!(e.0.starts_with(setting), "{e}");
        }
    }

    #[test]
    fn the_data_folder_may_not_be_inside_the_served_site_folder() {
        let site = std::env::temp_dir().join(format!("sse-live-cfg-site-{}", std::process::id()));
        std::fs::create_dir_all(site.join("pkg")).expect("site");
        let site_arg = site.to_string_lossy().to_string();
        let inside = site.join("data").to_string_lossy().to_string();
        let e = Config::from_args(args(&["--site-root", &site_arg, "--data-dir", &inside]))
            .expect_err("refused");
        assert!(
            e.0.starts_with("EVENTS_DATA_DIR:") && e.0.contains("served"),
            "{e}"
        );
        let beside = site
            .with_file_name("sse-live-cfg-data")
            .to_string_lossy()
            .to_string();
        assert!(
            Config::from_args(args(&["--site-root", &site_arg, "--data-dir", &beside])).is_ok()
        );
        let _ = std::fs::remove_dir_all(&site);
    }

    #[test]
    fn instance_names() {
        assert_eq!(instance(Some(" web-1 ")), "web-1");
        assert_eq!(instance(Some("a\nb")), "ab");
        assert_eq!(instance(Some(&"x".repeat(100))).len(), 64);
        let default = instance(None);
        assert!(
            default.ends_with(&format!(":{}", std::process::id())),
            "{default}"
        );
    }

    #[test]
    fn tick_can_be_turned_off() {
        let c = Config::from_args(args(&["--tick", "off", "--topics", "chat"])).expect("valid");
        assert_eq!(c.publish.tick, None);
        assert_eq!(c.hub.topics, vec!["chat".to_string()]);
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        assert!(cors_origins("").expect("none").is_empty());
        assert_eq!(
            cors_origins(" https://a.example , http://b.example:8080/ ,https://a.example")
                .expect("valid"),
            vec!["https://a.example", "http://b.example:8080"]
        );
        for bad in [
            "*",
            "a.example",
            "https://a.example/x",
            "ftp://a",
            "https://",
        ] {
            let e = cors_origins(bad).expect_err(bad);
            assert!(e.0.starts_with("EVENTS_CORS_ORIGINS:"), "{e}");
        }
    }

    #[test]
    fn request_timeout_and_metrics_are_checked() {
        let c = Config::from_args(args(&[])).expect("valid");
        assert_eq!(c.connections.request_timeout, Duration::from_secs(30));
        assert!(c.metrics);
        let e = Config::from_args(args(&["--request-timeout", "50ms"])).expect_err("too short");
        assert!(e.0.starts_with("EVENTS_REQUEST_TIMEOUT:"), "{e}");
        assert!(
            !Config::from_args(args(&["--metrics", "off"]))
                .expect("valid")
                .metrics
        );
        assert!(Config::from_args(args(&["--metrics", "maybe"])).is_err());
    }

    #[test]
    fn path_bases_are_normalised() {
        assert_eq!(path_base("/").expect("root"), "");
        assert_eq!(path_base("/live").expect("app"), "/live");
        assert_eq!(path_base("live/").expect("sloppy"), "/live");
        assert_eq!(path_base("/a/b").expect("nested"), "/a/b");
        assert!(path_base("/a/../b").is_err());
        assert!(path_base("/a//b").is_err());
    }
}
