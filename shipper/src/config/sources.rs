//! `[sources.NAME]`: where records come from. A built-in source's config
//! is its own module's (`shipper_components::sources::*`), found by `type` in
//! [`crate::components::SOURCES`].

use shipper_components::config::{Listener, SourceComponent};

use super::validate::Checker;

/// A configured source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// A built-in source, of one of the types of
    /// [`crate::components::SOURCES`].
    Builtin(Box<dyn SourceComponent>),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl SourceConfig {
    /// A built-in source of config `config`.
    pub fn builtin(config: impl SourceComponent) -> Self {
        SourceConfig::Builtin(Box::new(config))
    }

    /// The value of `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::Builtin(source) => source.type_name(),
            SourceConfig::Plugin(_) => super::PluginComponent::TYPE,
        }
    }

    /// The built-in source's config, if it is a `T`.
    pub fn get<T: SourceComponent>(&self) -> Option<&T> {
        match self {
            SourceConfig::Builtin(source) => (**source).as_any().downcast_ref(),
            SourceConfig::Plugin(_) => None,
        }
    }

    /// Whether a transform can read its records.
    pub fn transformable(&self) -> bool {
        match self {
            SourceConfig::Builtin(source) => source.transformable(),
            SourceConfig::Plugin(_) => true,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            SourceConfig::Builtin(source) => source.check(check),
            SourceConfig::Plugin(plugin) => plugin.check(check, false),
        }
    }

    /// What this source listens on, with the key that says where.
    pub(super) fn listener(&self) -> Option<(&'static str, Listener)> {
        match self {
            SourceConfig::Builtin(source) => source.listener(),
            SourceConfig::Plugin(_) => None,
        }
    }

    /// Whether its listener has TLS or a token.
    pub(super) fn secured(&self) -> bool {
        match self {
            SourceConfig::Builtin(source) => source.secured(),
            SourceConfig::Plugin(_) => false,
        }
    }
}
