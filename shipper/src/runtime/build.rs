//! Building what a config names: sources, sinks and each source's emitter
//! with the transforms under it. A built-in component is built through its
//! kind's config (`SourceComponent::build`...), a plugin through the plugin
//! host; nothing here names a component type.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use shipper_components::config::BuildContext;
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{BatchPolicy, Sink, Source, Transform};
use shipper_core::emit::{Emitter, Route};
use shipper_core::log::Log;
use shipper_plugin_host::{DynamicSink, DynamicSource, DynamicTransform};

use crate::config::{Config, PluginComponent, SinkConfig, SourceConfig, TransformConfig};

pub(super) type Built<T> = Vec<(String, Box<T>)>;

/// A sink built from the config, with its name and its inputs.
pub(super) struct BuiltSink {
    pub name: String,
    pub sink: Box<dyn Sink>,
    pub inputs: Vec<String>,
    /// How the sink's batches are gathered (its `batch` table).
    pub batch: Option<BatchPolicy>,
}

/// Builds the sources of `config` that `wanted` names; the first that
/// fails is the error.
pub(super) async fn build_sources(
    config: &Config,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Built<dyn Source>> {
    let mut sources: Built<dyn Source> = Vec::new();
    for (name, source) in config.sources.iter().filter(|(name, _)| wanted(name)) {
        let built: Box<dyn Source> = match source {
            SourceConfig::Plugin(plugin) => Box::new(
                DynamicSource::new(name, &load_plugin(plugin)?, &plugin.config_json())
                    .map_err(|e| anyhow!("source {name}: {e}"))?,
            ),
            SourceConfig::Builtin(component) => {
                let cx = BuildContext {
                    name,
                    data_dir: &config.data_dir,
                };
                component
                    .build(&cx)
                    .await
                    .map_err(|e| anyhow!("source {name}: {e}"))?
            }
        };
        sources.push((name.clone(), built));
    }
    Ok(sources)
}

/// Source `name` of `config`, built.
pub(super) async fn build_source(config: &Config, name: &str) -> anyhow::Result<Box<dyn Source>> {
    let mut built = build_sources(config, |wanted| wanted == name).await?;
    built
        .pop()
        .map(|(_, source)| source)
        .ok_or_else(|| anyhow!("source {name} is not in the config"))
}

/// Builds the sinks of `config` that `wanted` names; the first that fails
/// is the error.
pub(super) fn build_sinks(
    config: &Config,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<BuiltSink>> {
    let mut sinks = Vec::new();
    for (name, sink) in config.sinks.iter().filter(|(name, _)| wanted(name)) {
        let (built, batch): (Box<dyn Sink>, _) = match sink {
            SinkConfig::Builtin(component) => {
                let cx = BuildContext {
                    name,
                    data_dir: &config.data_dir,
                };
                let built = component
                    .build(&cx)
                    .map_err(|e| anyhow!("sink {name}: {e}"))?;
                (built, component.batch())
            }
            SinkConfig::Plugin(plugin) => (
                Box::new(
                    DynamicSink::new(name, &load_plugin(plugin)?, &plugin.config_json())
                        .map_err(|e| anyhow!("sink {name}: {e}"))?,
                ),
                None,
            ),
        };
        sinks.push(BuiltSink {
            name: name.clone(),
            sink: built,
            inputs: sink.inputs().to_vec(),
            batch,
        });
    }
    Ok(sinks)
}

/// Sink `name` of `config`, built.
pub(super) fn build_sink(config: &Config, name: &str) -> anyhow::Result<BuiltSink> {
    build_sinks(config, |wanted| wanted == name)?
        .pop()
        .ok_or_else(|| anyhow!("sink {name} is not in the config"))
}

fn build_transform(
    config: &Config,
    name: &str,
    transform: &TransformConfig,
) -> anyhow::Result<Box<dyn Transform>> {
    Ok(match transform {
        TransformConfig::Plugin(plugin) => Box::new(
            DynamicTransform::new(name, &load_plugin(plugin)?, &plugin.config_json())
                .map_err(|e| anyhow!("transform {name}: {e}"))?,
        ),
        TransformConfig::Builtin(component) => {
            let cx = BuildContext {
                name,
                data_dir: &config.data_dir,
            };
            component
                .build(&cx)
                .map_err(|e| anyhow!("transform {name}: {e}"))?
        }
    })
}

/// The library of a plugin component, loaded (once per process).
fn load_plugin(component: &PluginComponent) -> anyhow::Result<Arc<shipper_plugin_host::Plugin>> {
    Ok(shipper_plugin_host::load(&component.plugin)?)
}

/// Whether the records of `component` pass through plugin code: it is a
/// plugin source, or a plugin transform consumes it (directly or through
/// other transforms). Such a source runs off the async workers, since a
/// plugin may block.
pub(crate) fn runs_plugin_code(config: &Config, component: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut pending = vec![component.to_owned()];
    if matches!(config.sources.get(component), Some(SourceConfig::Plugin(_))) {
        return true;
    }
    while let Some(current) = pending.pop() {
        if !seen.insert(current.clone()) {
            continue;
        }
        for (name, transform) in &config.transforms {
            if transform.inputs().contains(&current) {
                if matches!(transform, TransformConfig::Plugin(_)) {
                    return true;
                }
                pending.push(name.clone());
            }
        }
    }
    false
}

/// The emitter of `component`: it stores the records when a sink reads the
/// component, and routes them through every transform that consumes it.
pub(crate) fn build_emitter(
    config: &Config,
    log: &Log,
    component: &str,
    depth: usize,
) -> anyhow::Result<Emitter> {
    // Validation refuses cycles; the depth bound keeps a bug from recursing forever.
    if depth > config.transforms.len() {
        bail!("transform inputs form a cycle through {component}");
    }
    let store = config
        .sinks
        .values()
        .any(|sink| sink.inputs().iter().any(|input| input == component));
    let mut routes = Vec::new();
    for (name, transform) in &config.transforms {
        if transform.inputs().iter().any(|input| input == component) {
            let emitter = build_emitter(config, log, name, depth + 1)?;
            routes.push(Route::new(
                build_transform(config, name, transform)?,
                emitter,
            ));
        }
    }
    let options = ChunkOptions {
        dictionary: config.log.dictionary_training(),
        compression: shipper_core::chunk::Compression::Zstd {
            level: config.log.zstd_level,
        },
        ..ChunkOptions::default()
    };
    Ok(Emitter::with_routes(
        log.clone(),
        component,
        options,
        store,
        routes,
    )?)
}
