//! The `shipper` binary: the command line over `shipper-core`.
//!
//! Only this crate knows the command line, the tracing subscriber, the
//! config file (`shipper::config`, in the library half of the crate) and,
//! in later issues, the runtime; the engine in `shipper-core` knows none
//! of them.
//!
//! Exit codes: 0 success, 1 `inspect --verify` found corruption or
//! `validate` found an invalid config, 2 any error (bad arguments, a
//! missing directory or file, I/O failures).

#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// shipper: streams insert-only data from where it is produced to a
/// backend, keeping it durably on local disk until the backend has it.
#[derive(Debug, Parser)]
#[command(name = "shipper", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Look at a data directory without changing it: segments, cursors,
    /// and every damaged byte range found.
    Inspect(cli::inspect::InspectArgs),
    /// Write generated access-log records into a log, read them back,
    /// verify them and print throughput: a quick check of the storage
    /// engine on this machine's disk.
    Demo(cli::demo::DemoArgs),
    /// Check a config file without running it: print every error with its
    /// line and key path (exit 1), or a summary (exit 0).
    Validate(cli::validate::ValidateArgs),
    /// Run the pipeline a config describes until SIGTERM or SIGINT, or
    /// until every source has ended; SIGHUP reloads the config file.
    Run(cli::run::RunArgs),
    /// Benchmark ingest: a built-in load generator through a real
    /// pipeline, reported beside memcpy, write(2) and zstd baselines.
    Bench(cli::bench::BenchArgs),
    /// Work with plugin libraries: `shipper plugin inspect FILE`.
    Plugin(cli::plugin::PluginArgs),
}

/// What a command asks the process to exit with, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything as expected.
    Success,
    /// The command ran, and found what it was asked to look for
    /// (`inspect --verify` found corruption, `validate` an invalid config).
    Failed,
}

const EXIT_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

/// Events go to stderr, filtered by `RUST_LOG` (else `level`), in the human
/// format or as JSON lines; stdout stays for the command's output.
pub(crate) fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` sets up logging from its config's `[logging]` table.
    if !matches!(cli.command, Command::Run(_)) {
        init_tracing("info", false);
    }
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Validate(args) => cli::validate::run(args),
        Command::Run(args) => cli::run::run(args),
        Command::Plugin(args) => cli::plugin::run(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(EXIT_FAILED),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
