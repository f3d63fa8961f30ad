//! The built-in components: one list of kinds per role. The config
//! loader, `shipper validate`, the runtime and reload find a component's
//! type here and know nothing else about it; each kind's module (in
//! `shipper_components`) owns its config, checks, build and metrics.
//!
//! Adding a sink: its module (config struct with `TYPE`, an
//! `impl SinkComponent`, the sink), one line in [`SINKS`], its section in
//! docs/config.md, and its tests. ARCHITECTURE.md has the recipe.

use serde::de::DeserializeOwned;
use shipper_components::config::{Named, SinkComponent, SourceComponent, TransformComponent};
use shipper_components::sinks::{
    blackhole::BlackholeSinkConfig, file::FileSinkConfig, http::HttpSinkConfig,
    nats::NatsSinkConfig, postgres::PostgresSinkConfig, stdout::StdoutSinkConfig,
};

use shipper_components::sources::{
    file::FileSourceConfig, generator::GeneratorSourceConfig, http::HttpSourceConfig,
    mqtt::MqttSourceConfig, sdk::SdkSourceConfig, shipper::ShipperSourceConfig,
    socket::SocketSourceConfig, stdin::StdinSourceConfig,
};
use shipper_components::transform::{
    FilterTransformConfig, RemapTransformConfig, SampleTransformConfig,
};

use crate::config::document::{Node, Reporter};
use crate::config::KeyPath;

/// Reads a component's config from its table, reporting every error.
pub(crate) type Parse<C> = fn(&mut Reporter<'_>, &Node<'_>, &KeyPath) -> Option<Box<C>>;

/// A type of component: its `type` name and how its config is read.
#[derive(Debug)]
pub struct Kind<C: ?Sized> {
    /// The value of `type` that selects it.
    pub type_name: &'static str,
    pub(crate) parse: Parse<C>,
}

/// A type of source.
pub type SourceKind = Kind<dyn SourceComponent>;
/// A type of sink.
pub type SinkKind = Kind<dyn SinkComponent>;
/// A type of transform.
pub type TransformKind = Kind<dyn TransformComponent>;

fn parse_source<C: SourceComponent + DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    node: &Node<'_>,
    path: &KeyPath,
) -> Option<Box<dyn SourceComponent>> {
    let config: C = reporter.deserialize(node, path)?;
    Some(Box::new(config))
}

const fn source<C: SourceComponent + Named + DeserializeOwned>() -> SourceKind {
    Kind {
        type_name: C::TYPE,
        parse: parse_source::<C>,
    }
}

/// Every built-in source.
pub static SOURCES: &[SourceKind] = &[
    source::<FileSourceConfig>(),
    source::<GeneratorSourceConfig>(),
    source::<HttpSourceConfig>(),
    source::<MqttSourceConfig>(),
    source::<SdkSourceConfig>(),
    source::<ShipperSourceConfig>(),
    source::<SocketSourceConfig>(),
    source::<StdinSourceConfig>(),
];

fn parse_sink<C: SinkComponent + DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    node: &Node<'_>,
    path: &KeyPath,
) -> Option<Box<dyn SinkComponent>> {
    let config: C = reporter.deserialize(node, path)?;
    Some(Box::new(config))
}

const fn sink<C: SinkComponent + Named + DeserializeOwned>() -> SinkKind {
    Kind {
        type_name: C::TYPE,
        parse: parse_sink::<C>,
    }
}

fn parse_transform<C: TransformComponent + DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    node: &Node<'_>,
    path: &KeyPath,
) -> Option<Box<dyn TransformComponent>> {
    let config: C = reporter.deserialize(node, path)?;
    Some(Box::new(config))
}

const fn transform<C: TransformComponent + Named + DeserializeOwned>() -> TransformKind {
    Kind {
        type_name: C::TYPE,
        parse: parse_transform::<C>,
    }
}

/// Every built-in transform.
pub static TRANSFORMS: &[TransformKind] = &[
    transform::<FilterTransformConfig>(),
    transform::<RemapTransformConfig>(),
    transform::<SampleTransformConfig>(),
];

/// Every built-in sink.
pub static SINKS: &[SinkKind] = &[
    sink::<BlackholeSinkConfig>(),
    sink::<FileSinkConfig>(),
    sink::<HttpSinkConfig>(),
    sink::<NatsSinkConfig>(),
    sink::<PostgresSinkConfig>(),
    sink::<StdoutSinkConfig>(),
];

/// The kind in `kinds` whose `type` is `type_name`.
pub fn find<C: ?Sized>(kinds: &'static [Kind<C>], type_name: &str) -> Option<&'static Kind<C>> {
    kinds.iter().find(|kind| kind.type_name == type_name)
}

/// The `type` names of `kinds`.
pub fn type_names<C: ?Sized>(kinds: &[Kind<C>]) -> Vec<&'static str> {
    kinds.iter().map(|kind| kind.type_name).collect()
}
