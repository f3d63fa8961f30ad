//! `plugin = "PATH"`: a source, transform or sink whose code is a shared
//! library loaded at start (docs/plugins.md). Every key of the table but
//! `type`, `plugin` and `inputs` is the plugin's own configuration, handed
//! to it as a JSON object.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::Checker;

/// A component implemented by a plugin library.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginComponent {
    /// The library, relative to the working directory.
    pub plugin: PathBuf,
    /// The sources and transforms it reads (transforms and sinks).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The rest of the table: the plugin's configuration.
    #[serde(flatten)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl PluginComponent {
    /// The type name the config speaks of: `plugin`.
    pub const TYPE: &'static str = "plugin";

    /// The plugin's configuration as the JSON text it is handed.
    pub fn config_json(&self) -> String {
        serde_json::Value::Object(self.config.clone()).to_string()
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>, takes_inputs: bool) {
        if self.plugin.as_os_str().is_empty() {
            check.error(&["plugin"], "must not be empty");
        } else if !self.plugin.is_file() {
            check.error(
                &["plugin"],
                format!("{} is not a file", self.plugin.display()),
            );
        }
        if !takes_inputs && !self.inputs.is_empty() {
            check.error(&["inputs"], "a source has no inputs");
        }
    }
}
