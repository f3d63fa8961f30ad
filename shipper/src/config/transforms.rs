//! `[transforms.NAME]`: record changes on the producing side. A built-in
//! transform's config is its own module's (`shipper_components::transform::*`),
//! found by `type` in [`crate::components::TRANSFORMS`].

use shipper_components::config::TransformComponent;

use super::validate::Checker;

/// A configured transform.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformConfig {
    /// A built-in transform, of one of the types of
    /// [`crate::components::TRANSFORMS`].
    Builtin(Box<dyn TransformComponent>),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl TransformConfig {
    /// A built-in transform of config `config`.
    pub fn builtin(config: impl TransformComponent) -> Self {
        TransformConfig::Builtin(Box::new(config))
    }

    /// The value of `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            TransformConfig::Builtin(transform) => transform.type_name(),
            TransformConfig::Plugin(_) => super::PluginComponent::TYPE,
        }
    }

    /// The sources and transforms this transform reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            TransformConfig::Builtin(transform) => transform.inputs(),
            TransformConfig::Plugin(t) => &t.inputs,
        }
    }

    /// The built-in transform's config, if it is a `T`.
    pub fn get<T: TransformComponent>(&self) -> Option<&T> {
        match self {
            TransformConfig::Builtin(transform) => (**transform).as_any().downcast_ref(),
            TransformConfig::Plugin(_) => None,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            TransformConfig::Builtin(transform) => transform.check(check),
            TransformConfig::Plugin(plugin) => plugin.check(check, true),
        }
    }
}
