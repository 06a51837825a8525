//! The server: configuration, then the hub, the router, and serving until asked to stop.

use clap::Parser;
use server::{
    config::{Args, Config},
    serve, telemetry,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => return fail(e.to_string().lines().next().unwrap_or("bad arguments")),
    };
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = telemetry::init(&config.log) {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Startup errors are one line on stderr and a non-zero exit: what IIS shows as a 502.5 is
/// then explained by the first line of the stdout log.
fn fail(message: &str) -> ExitCode {
    let message = message.trim_start_matches("error: ");
    eprintln!("error: {message}");
    tracing::error!("{message}");
    ExitCode::from(2)
}
