//! `sdk`: the records an application embedding shipper inserts
//! (`shipper::ingest::Ingestor`). The source has no code of its own: the
//! ingestor's inserting threads emit straight into the log. `shipper run`
//! has nothing to feed it and refuses it.

use shipper_core::component::Source;

use crate::config::{BuildContext, BuildError, SourceComponent};

/// `[sources.NAME] type = "sdk"` (no keys).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdkSourceConfig {}

impl SdkSourceConfig {
    /// Its `type`.
    pub const TYPE: &'static str = "sdk";
}

#[async_trait::async_trait]
impl SourceComponent for SdkSourceConfig {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    async fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        Err("type \"sdk\" takes the records of an application that embeds shipper (shipper::ingest::Ingestor); `shipper run` has nothing to feed it".into())
    }

    fn clone_box(&self) -> Box<dyn SourceComponent> {
        Box::new(self.clone())
    }
}
