//! `[transforms.NAME]`: record changes on the producing side.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::validate::Checker;
use shipper_plugins::component::FieldValue;

/// A configured transform; the variant is chosen by the table's `type` key.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformConfig {
    Filter(FilterTransform),
    Sample(SampleTransform),
    Remap(RemapTransform),
    /// A plugin library (`plugin = "PATH"`).
    Plugin(super::PluginComponent),
}

impl TransformConfig {
    /// The values `type` may take.
    pub const TYPES: [&'static str; 3] = ["filter", "sample", "remap"];

    /// The value of `type` that selects this variant.
    pub fn type_name(&self) -> &'static str {
        match self {
            TransformConfig::Filter(_) => "filter",
            TransformConfig::Sample(_) => "sample",
            TransformConfig::Remap(_) => "remap",
            TransformConfig::Plugin(_) => super::PluginComponent::TYPE,
        }
    }

    /// The sources and transforms this transform reads.
    pub fn inputs(&self) -> &[String] {
        match self {
            TransformConfig::Filter(t) => &t.inputs,
            TransformConfig::Sample(t) => &t.inputs,
            TransformConfig::Remap(t) => &t.inputs,
            TransformConfig::Plugin(t) => &t.inputs,
        }
    }

    pub(super) fn check(&self, check: &mut Checker<'_, '_, '_>) {
        match self {
            TransformConfig::Plugin(plugin) => plugin.check(check, true),
            TransformConfig::Filter(filter) => {
                let conditions = [
                    filter.equals.is_some(),
                    filter.not_equals.is_some(),
                    filter.exists.is_some(),
                ];
                if conditions.iter().filter(|set| **set).count() != 1 {
                    check.error(
                        &[],
                        "needs exactly one condition: `equals`, `not_equals` or `exists`",
                    );
                }
                check_field(check, &["field"], &filter.field);
            }
            TransformConfig::Sample(sample) => {
                if sample.rate == 0 {
                    check.error(&["rate"], "must be at least 1 (keep 1 record in `rate`)");
                }
                if let Some(key) = &sample.key {
                    check_field(check, &["key"], key);
                }
            }
            TransformConfig::Remap(remap) => {
                for (old, new) in &remap.rename {
                    check_field(check, &["rename", old], old);
                    check_field(check, &["rename", old], new);
                }
                for field in &remap.delete {
                    check_field(check, &["delete"], field);
                }
                for field in &remap.redact {
                    check_field(check, &["redact"], field);
                }
                for field in remap.add.keys() {
                    check_field(check, &["add", field], field);
                }
                if remap.rename.is_empty()
                    && remap.delete.is_empty()
                    && remap.redact.is_empty()
                    && remap.add.is_empty()
                {
                    check.warning(
                        &[],
                        "does nothing: give `rename`, `delete`, `redact` or `add`",
                    );
                }
            }
        }
    }
}

/// A field path, checked by the transforms' own parser (no empty path,
/// no empty segment between dots).
fn check_field(check: &mut Checker<'_, '_, '_>, keys: &[&str], field: &str) {
    if let Err(error) = shipper_plugins::transform::FieldPath::parse(field) {
        check.error(keys, error.to_string());
    }
}

/// What a filter does with records that meet its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    #[default]
    Keep,
    Drop,
}

/// `type = "filter"`: keeps or drops records by one field condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTransform {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub field: String,
    #[serde(default)]
    pub equals: Option<FieldValue>,
    #[serde(default)]
    pub not_equals: Option<FieldValue>,
    #[serde(default)]
    pub exists: Option<bool>,
    #[serde(default)]
    pub action: FilterAction,
}

/// `type = "sample"`: keeps 1 record in `rate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleTransform {
    #[serde(default)]
    pub inputs: Vec<String>,
    pub rate: u64,
    /// Field whose value decides, deterministically, which records are kept.
    #[serde(default)]
    pub key: Option<String>,
}

/// `type = "remap"`: renames, deletes, redacts and adds fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapTransform {
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Old name to new name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub delete: Vec<String>,
    /// Fields whose values are replaced by a fixed marker.
    #[serde(default)]
    pub redact: Vec<String>,
    #[serde(default)]
    pub add: BTreeMap<String, FieldValue>,
}
