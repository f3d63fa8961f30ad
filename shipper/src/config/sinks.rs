//! `[sinks.NAME]`: where records go. A built-in sink's config is its own
//! module's (`shipper_components::sinks::*`), found by `type` in
//! [`crate::components::SINKS`].

use shipper_components::config::SinkComponent;

use super::validate::Checker;

/// A configured sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// A built-in sink, of one of the types of [`crate::components::SINKS`].
    Builtin(Box<dyn SinkComponent>),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl SinkConfig {
    /// A built-in sink of config `config`.
    pub fn builtin(config: impl SinkComponent) -> Self {
        SinkConfig::Builtin(Box::new(config))
    }

    /// The value of `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Builtin(sink) => sink.type_name(),
            SinkConfig::Plugin(_) => super::PluginComponent::TYPE,
        }
    }

    /// The sources and transforms this sink reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::Builtin(sink) => sink.inputs(),
            SinkConfig::Plugin(s) => &s.inputs,
        }
    }

    /// The built-in sink's config, if it is a `T`.
    pub fn get<T: SinkComponent>(&self) -> Option<&T> {
        match self {
            SinkConfig::Builtin(sink) => (**sink).as_any().downcast_ref(),
            SinkConfig::Plugin(_) => None,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            SinkConfig::Builtin(sink) => sink.check(check),
            SinkConfig::Plugin(plugin) => plugin.check(check, true),
        }
    }
}
