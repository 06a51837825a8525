//! Logs: one line per event of interest, to stdout, which IIS captures into `logs\stdout_*.log`.

use tracing_subscriber::EnvFilter;

pub fn init(filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("RUST_LOG: '{filter}': {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colour codes only make the IIS log files harder to read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}
