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

impl crate::config::Named for SdkSourceConfig {
    const TYPE: &'static str = "sdk";
}

#[async_trait::async_trait]
impl SourceComponent for SdkSourceConfig {
    async fn build(&self, _cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        Err("type \"sdk\" takes the records of an application that embeds shipper (shipper::ingest::Ingestor); `shipper run` has nothing to feed it".into())
    }
}
