//! `shipper plugin inspect FILE`: what a plugin library is, or why it
//! cannot be loaded.

use std::path::PathBuf;

use crate::Outcome;

/// Arguments of `shipper plugin`.
#[derive(Debug, clap::Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PluginCommand {
    /// Load a plugin library and print its name, kind, version and ABI
    /// version (exit 0), or why it cannot be loaded (exit 1).
    Inspect {
        /// The shared library.
        file: PathBuf,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: PluginArgs) -> anyhow::Result<Outcome> {
    match args.command {
        PluginCommand::Inspect { file, json } => inspect(&file, json),
    }
}

/// The config section a plugin of `kind` goes in, and the built-in types
/// of that role (the one list of kinds the loader reads).
fn role(kind: shipper_plugin_host::Kind) -> (&'static str, Vec<&'static str>) {
    use shipper::components::{type_names, SINKS, SOURCES, TRANSFORMS};
    match kind {
        shipper_plugin_host::Kind::Source => ("sources", type_names(SOURCES)),
        shipper_plugin_host::Kind::Transform => ("transforms", type_names(TRANSFORMS)),
        shipper_plugin_host::Kind::Sink => ("sinks", type_names(SINKS)),
    }
}

fn inspect(file: &std::path::Path, json: bool) -> anyhow::Result<Outcome> {
    match shipper_plugin_host::load(file) {
        Ok(plugin) => {
            let (section, builtins) = role(plugin.kind());
            if json {
                let object = serde_json::json!({
                    "path": plugin.path(),
                    "name": plugin.name(),
                    "kind": plugin.kind().as_str(),
                    "version": plugin.version(),
                    "abi_version": plugin.abi_version(),
                    "section": section,
                    "builtin_types": builtins,
                });
                println!("{object}");
            } else {
                println!("path:         {}", plugin.path().display());
                println!("name:         {}", plugin.name());
                println!("kind:         {}", plugin.kind());
                println!("version:      {}", plugin.version());
                println!("abi version:  {}", plugin.abi_version());
                println!(
                    "use:          [{section}.NAME] with plugin = \"{}\"",
                    plugin.path().display()
                );
                println!("built-ins:    {}", builtins.join(", "));
            }
            Ok(Outcome::Success)
        }
        Err(error) => {
            if json {
                println!("{}", serde_json::json!({ "error": error.to_string() }));
            }
            eprintln!("{error}");
            Ok(Outcome::Failed)
        }
    }
}
