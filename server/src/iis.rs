//! The ASP.NET Core Module's contract (AspNetCoreModuleV2, out-of-process), as ASP.NET Core's
//! own IIS integration implements it (dotnet/aspnetcore `src/Servers/IIS/IISIntegration/src/
//! IISMiddleware.cs`), so IIS can run this server as it runs a .NET one:
//!
//! - Pairing token: the module starts us with `ASPNETCORE_TOKEN` and adds
//!   `MS-ASPNETCORE-TOKEN` to every request it forwards (after removing any the client sent).
//!   A request without the right token did not come through IIS: 400, empty body, before
//!   anything else looks at it (the shutdown request included). Nothing on the machine can
//!   then reach the backend around IIS.
//! - Shutdown: on recycle, config change or `app_offline.htm`, the module sends
//!   `POST {ASPNETCORE_APPL_PATH}/iisintegration` with `MS-ASPNETCORE-EVENT: shutdown ` (with a
//!   trailing space) and expects 202; otherwise it sends Ctrl-Break, and after
//!   `shutdownTimeLimit` kills the process.
//! - Port: `ASPNETCORE_PORT`, on the IPv4 loopback only ([`listen_addr`]).
//! - Path base: the backend sees the full path, application prefix included; ASP.NET matches
//!   the prefix case-insensitively (`/Live/...` reaches the `/live` application), so we do too.

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
};
use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::Arc,
};
use tokio_util::sync::CancellationToken;

/// What put us where we are: decides the listen address and, later, the IIS contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// Started by the ASP.NET Core Module (streams each chunk as it comes).
    AspNetCoreModule,
    /// Started by HttpPlatformHandler (buffers about 8 KB of output).
    HttpPlatformHandler,
    /// Started by hand or by cargo-leptos.
    Direct,
}

/// Where to listen, and who started us. Behind either IIS module, loopback only: the module
/// connects to 127.0.0.1 (its readiness check looks for an IPv4 listener, docs/ANCM.md), and nothing
/// else on the network should reach us around IIS. The module's port wins over
/// HttpPlatformHandler's, which wins over the address given by hand.
pub fn listen_addr(
    aspnetcore_port: Option<&str>,
    http_platform_port: Option<&str>,
    addr: &str,
) -> Result<(SocketAddr, Frontend), String> {
    let loopback = |name: &str, value: &str| -> Result<SocketAddr, String> {
        match value.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into()),
            _ => Err(format!("{name}: '{value}' is not a port number (1-65535)")),
        }
    };
    if let Some(port) = aspnetcore_port.filter(|p| !p.is_empty()) {
        return Ok((
            loopback("ASPNETCORE_PORT", port)?,
            Frontend::AspNetCoreModule,
        ));
    }
    if let Some(port) = http_platform_port.filter(|p| !p.is_empty()) {
        return Ok((
            loopback("HTTP_PLATFORM_PORT", port)?,
            Frontend::HttpPlatformHandler,
        ));
    }
    match addr.trim().parse::<SocketAddr>() {
        Ok(addr) => Ok((addr, Frontend::Direct)),
        Err(_) => Err(format!(
            "LEPTOS_SITE_ADDR: '{addr}' is not an address like 127.0.0.1:3000"
        )),
    }
}

pub const TOKEN_HEADER: &str = "ms-aspnetcore-token";
pub const EVENT_HEADER: &str = "ms-aspnetcore-event";

pub struct Contract {
    /// `ASPNETCORE_TOKEN`; `None` when not started by the module (nothing is checked then).
    pub token: Option<String>,
    /// `""` or `/live`.
    pub path_base: String,
    pub shutdown: CancellationToken,
}

impl Contract {
    fn shutdown_path(&self) -> String {
        format!("{}/iisintegration", self.path_base)
    }
}

/// Runs before routing, for every request.
pub async fn enforce(
    State(contract): State<Arc<Contract>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &contract.token {
        let presented = req.headers().get(TOKEN_HEADER);
        // Plain comparison, as ASP.NET's `string.Equals(..., Ordinal)`: the token is a
        // per-process GUID on a loopback socket, not a secret worth a timing defence.
        if presented.map(|v| v.as_bytes()) != Some(token.as_bytes()) {
            tracing::warn!(
                path = %req.uri().path(),
                token = if presented.is_some() { "wrong" } else { "missing" },
                "request refused: not forwarded by the ASP.NET Core Module"
            );
            return StatusCode::BAD_REQUEST.into_response();
        }
        if req.method() == Method::POST
            && req
                .uri()
                .path()
                .eq_ignore_ascii_case(&contract.shutdown_path())
            && req
                .headers()
                .get(EVENT_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("shutdown"))
        {
            tracing::info!("stopping: the ASP.NET Core Module asked for shutdown");
            contract.shutdown.cancel();
            return StatusCode::ACCEPTED.into_response();
        }
    }
    if let Some(uri) = canonical_base(req.uri(), &contract.path_base) {
        *req.uri_mut() = uri;
    }
    next.run(req).await
}

/// `/LIVE/api/events` → `/live/api/events` when the base is `/live`, and the application's
/// root `/live/` (what IIS links to) → `/live` (where the nested router has its page);
/// `None` when nothing needs rewriting or the path is outside the base.
fn canonical_base(uri: &Uri, base: &str) -> Option<Uri> {
    let path = uri.path();
    if base.is_empty() {
        return None;
    }
    let (head, rest) = path.split_at_checked(base.len())?;
    if !head.eq_ignore_ascii_case(base) || !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = if rest == "/" { "" } else { rest };
    if head == base && rest.len() + base.len() == path.len() {
        return None;
    }
    let mut rewritten = format!("{base}{rest}");
    if let Some(q) = uri.query() {
        rewritten.push('?');
        rewritten.push_str(q);
    }
    rewritten.parse().ok()
}

/// The client's IP, for per-client limits: the same trust rule as [`client_addr`].
pub fn client_ip(
    trusted: bool,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    if trusted {
        if let Some(entry) = last_entry(headers, "x-forwarded-for") {
            // `1.2.3.4:5678`, `[2001:db8::1]:443`, or a bare address.
            let host = match entry.rsplit_once(':') {
                Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
                    h.trim_start_matches('[').trim_end_matches(']')
                }
                _ => entry.as_str(),
            };
            if let Ok(ip) = host.parse() {
                return ip;
            }
        }
    }
    peer.ip()
}

fn last_entry(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .map(str::to_string)
}

/// The client's address for the logs. Behind the module (a valid token was required to get
/// here) it is the **last** `X-Forwarded-For` entry, the one the module appended; earlier
/// entries are whatever the client sent. Without a token the header is anyone's to forge, so
/// the socket's peer is used.
pub fn client_addr(
    trusted: bool,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> String {
    if trusted {
        if let Some(addr) = last_entry(headers, "x-forwarded-for") {
            return match last_entry(headers, "x-forwarded-proto") {
                Some(proto) => format!("{addr} ({proto})"),
                None => addr,
            };
        }
    }
    peer.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn the_base_is_matched_without_case() {
        let u = |s: &str| s.parse::<Uri>().expect("uri");
        assert_eq!(
            canonical_base(&u("/LIVE/api/events?topic=a"), "/live"),
            Some(u("/live/api/events?topic=a"))
        );
        assert_eq!(canonical_base(&u("/Live"), "/live"), Some(u("/live")));
        assert_eq!(canonical_base(&u("/live/"), "/live"), Some(u("/live")));
        assert_eq!(
            canonical_base(&u("/live/?a=1"), "/live"),
            Some(u("/live?a=1"))
        );
        assert_eq!(canonical_base(&u("/live"), "/live"), None);
        assert_eq!(canonical_base(&u("/live/x"), "/live"), None);
        assert_eq!(canonical_base(&u("/LiveX/x"), "/live"), None);
        assert_eq!(canonical_base(&u("/other"), "/live"), None);
        assert_eq!(canonical_base(&u("/x"), ""), None);
        assert_eq!(canonical_base(&u("/é"), "/a"), None);
    }

    #[test]
    fn only_the_modules_own_forwarded_entry_is_trusted() {
        let peer = "127.0.0.1:5000".parse().expect("addr");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7:51234".parse().expect("v"),
        );
        h.insert("x-forwarded-proto", "http, https".parse().expect("v"));
        assert_eq!(client_addr(true, peer, &h), "203.0.113.7:51234 (https)");
        assert_eq!(client_addr(false, peer, &h), "127.0.0.1:5000");
        assert_eq!(client_addr(true, peer, &HeaderMap::new()), "127.0.0.1:5000");
        let mut v6 = HeaderMap::new();
        v6.insert("x-forwarded-for", "[2001:db8::1]:443".parse().expect("v"));
        assert_eq!(client_addr(true, peer, &v6), "[2001:db8::1]:443");
        assert_eq!(
            client_ip(true, peer, &v6),
            "2001:db8::1".parse::<std::net::IpAddr>().expect("ip")
        );
        assert_eq!(
            client_ip(true, peer, &h),
            "203.0.113.7".parse::<std::net::IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(false, peer, &h), peer.ip());
    }
}
