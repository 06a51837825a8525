//! Turns every way of being asked to stop into one token that the accept loop, the tick
//! source and every open stream watch.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on Ctrl-C, SIGTERM (Unix) or Ctrl-Break (Windows, which is what the ASP.NET
/// Core Module sends when its shutdown request is not answered; `ctrl_c()` does not see it).
pub fn on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let reason = wait_for_signal().await;
        tracing::info!(reason, "stopping: ending every stream");
        token.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return "ctrl-c";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "ctrl-c",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(windows)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::windows;
    let (mut brk, mut close) = match (windows::ctrl_break(), windows::ctrl_close()) {
        (Ok(b), Ok(c)) => (b, c),
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            return "ctrl-c";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "ctrl-c",
        _ = brk.recv() => "ctrl-break",
        _ = close.recv() => "ctrl-close",
    }
}
