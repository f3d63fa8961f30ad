//! The built-in components: one list of kinds per role. The config
//! loader, `shipper validate`, the runtime and reload find a component's
//! type here and know nothing else about it; each kind's module (in
//! `shipper_plugins`) owns its config, checks, build and metrics.
//!
//! Adding a sink: its module (config struct with `TYPE`, an
//! `impl SinkComponent`, the sink), one line in [`SINKS`], its section in
//! docs/config.md, and its tests. ARCHITECTURE.md has the recipe.

use serde::de::DeserializeOwned;
use shipper_plugins::component::SinkComponent;
use shipper_plugins::sinks::{
    blackhole::BlackholeSinkConfig, file::FileSinkConfig, http::HttpSinkConfig,
    nats::NatsSinkConfig, postgres::PostgresSinkConfig, stdout::StdoutSinkConfig,
};

use crate::config::document::{Node, Reporter};
use crate::config::KeyPath;

/// Reads a component's config from its table, reporting every error.
pub(crate) type Parse<C> = fn(&mut Reporter<'_>, &Node<'_>, &KeyPath) -> Option<Box<C>>;

/// A type of sink: its `type` name and how its config is read.
#[derive(Debug)]
pub struct SinkKind {
    /// The value of `type` that selects it.
    pub type_name: &'static str,
    pub(crate) parse: Parse<dyn SinkComponent>,
}

fn parse_sink<C: SinkComponent + DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    node: &Node<'_>,
    path: &KeyPath,
) -> Option<Box<dyn SinkComponent>> {
    let config: C = reporter.deserialize(node, path)?;
    Some(Box::new(config))
}

const fn sink<C: SinkComponent + DeserializeOwned>(type_name: &'static str) -> SinkKind {
    SinkKind {
        type_name,
        parse: parse_sink::<C>,
    }
}

/// Every built-in sink.
pub static SINKS: &[SinkKind] = &[
    sink::<BlackholeSinkConfig>(BlackholeSinkConfig::TYPE),
    sink::<FileSinkConfig>(FileSinkConfig::TYPE),
    sink::<HttpSinkConfig>(HttpSinkConfig::TYPE),
    sink::<NatsSinkConfig>(NatsSinkConfig::TYPE),
    sink::<PostgresSinkConfig>(PostgresSinkConfig::TYPE),
    sink::<StdoutSinkConfig>(StdoutSinkConfig::TYPE),
];

/// The sink kind whose `type` is `type_name`.
pub fn sink_kind(type_name: &str) -> Option<&'static SinkKind> {
    SINKS.iter().find(|kind| kind.type_name == type_name)
}
