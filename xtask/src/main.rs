//! Project tasks: `cargo xtask setup | dev | test | publish | bench`.
//!
//! Plain Rust and std::process::Command, so it runs wherever cargo runs (Linux and Windows).
//! Every step prints `==> ...`; every failure ends the run with one `error: ...; fix: ...` line.

mod bench;
mod publish;
mod test;
mod tools;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::util::{run, step, Ctx, Res};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and publish the SSE live app"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what the build needs (wasm target, cargo-leptos, wasm-bindgen CLI, wasm-opt)
    Setup,
    /// Setup, then `cargo leptos watch`
    Dev {
        /// Extra arguments for `cargo leptos watch`
        #[arg(last = true)]
        watch_args: Vec<String>,
    },
    /// Setup, then formatting, clippy, builds, Rust tests, browser tests and the size check
    Test(test::TestArgs),
    /// Build the release client and the server for a target, and lay out the IIS folder
    Publish(publish::PublishArgs),
    /// Run the benchmark: our release server against the Go, Node and Python peers
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(&cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(command: &Command) -> Res<()> {
    let ctx = Ctx::new()?;
    match command {
        Command::Setup => {
            tools::setup(&ctx)?;
            step("setup complete");
            Ok(())
        }
        Command::Dev { watch_args } => {
            tools::setup(&ctx)?;
            step("starting cargo leptos watch (Ctrl-C to stop)");
            run(
                ctx.cmd("cargo").args(["leptos", "watch"]).args(watch_args),
                "read the output above; `cargo leptos watch` reproduces it",
            )
        }
        Command::Test(args) => test::test(&ctx, args),
        Command::Publish(args) => publish::publish(&ctx, args),
        Command::Bench(args) => bench::bench(&ctx, args),
    }
}
