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
            for (name, source) in &config.sources {
                if source
                    .get::<shipper_components::sources::sdk::SdkSourceConfig>()
                    .is_some()
                {
                    eprintln!(
                        "{file}: sources.{name}: warning: `shipper run` refuses type \"sdk\": only an application embedding shipper (shipper::ingest::Ingestor) can feed it"
                    );
                }
            }
            let refused = check_plugins(config);
            for (key, error) in &refused {
                eprintln!("{file}: {key}: {error}");
            }
            if !refused.is_empty() {
                return Ok(Outcome::Failed);
            }
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

/// Loads every plugin library the config names, checks that it is of the
/// kind its section says and that it takes its configuration (an instance
/// is created from it and destroyed, as the component's start would);
/// returns `(key path, error)` for each that fails.
fn check_plugins(config: &config::Config) -> Vec<(String, String)> {
    use shipper::config::{PluginComponent, SinkConfig, SourceConfig, TransformConfig};
    use shipper_plugin_host::Kind;
    let sources = config
        .sources
        .iter()
        .filter_map(|(name, source)| match source {
            SourceConfig::Plugin(plugin) => Some((format!("sources.{name}"), plugin, Kind::Source)),
            _ => None,
        });
    let transforms = config
        .transforms
        .iter()
        .filter_map(|(name, transform)| match transform {
            TransformConfig::Plugin(plugin) => {
                Some((format!("transforms.{name}"), plugin, Kind::Transform))
            }
            _ => None,
        });
    let sinks = config.sinks.iter().filter_map(|(name, sink)| match sink {
        SinkConfig::Plugin(plugin) => Some((format!("sinks.{name}"), plugin, Kind::Sink)),
        _ => None,
    });
    let mut refused = Vec::new();
    for (key, plugin, kind) in sources.chain(transforms).chain(sinks) {
        let plugin: &PluginComponent = plugin;
        match shipper_plugin_host::load(&plugin.plugin) {
            Ok(loaded) if loaded.kind() == kind => {
                if let Err(error) =
                    shipper_plugin_host::check_config(&loaded, &plugin.config_json())
                {
                    refused.push((
                        key,
                        format!(
                            "the {kind} plugin {} refuses its configuration: {error}",
                            loaded.name()
                        ),
                    ));
                }
            }
            Ok(loaded) => refused.push((
                format!("{key}.plugin"),
                format!(
                    "{} is a {} plugin ({}), not a {kind}",
                    plugin.plugin.display(),
                    loaded.kind(),
                    loaded.name()
                ),
            )),
            Err(error) => refused.push((format!("{key}.plugin"), error.to_string())),
        }
    }
    refused
}
