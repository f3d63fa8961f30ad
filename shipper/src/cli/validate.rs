//! `shipper validate -c FILE`: checks a config without running it.

use std::path::PathBuf;

use shipper::config::{self, LoadError};

use crate::Outcome;

/// Arguments of `shipper validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// The config file to check.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
}

/// Prints `FILE:LINE: key.path: message` for every error and warning (on
/// stderr) and, for a valid config, a one-line summary (on stdout).
pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<Outcome> {
    let file = args.config.display();
    match config::load(&args.config) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{file}:{warning}");
            }
            let config = &loaded.config;
            println!(
                "config OK: {} sources, {} transforms, {} sinks",
                config.sources.len(),
                config.transforms.len(),
                config.sinks.len()
            );
            Ok(Outcome::Success)
        }
        Err(LoadError::Invalid { invalid, .. }) => {
            for diagnostic in &invalid.diagnostics {
                eprintln!("{file}:{diagnostic}");
            }
            let errors = invalid.errors().count();
            eprintln!(
                "{file}: {errors} error{} found",
                if errors == 1 { "" } else { "s" }
            );
            Ok(Outcome::Failed)
        }
        Err(error @ LoadError::Read { .. }) => Err(error.into()),
    }
}
