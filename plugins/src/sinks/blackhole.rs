//! `blackhole`: acknowledges every chunk and keeps nothing; for benchmarks
//! and for measuring everything but the backend.

use async_trait::async_trait;
use shipper_core::component::{ComponentError, Sink};
use shipper_core::log::StoredChunk;

/// Counts what it is given and acknowledges it.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    records: u64,
    bytes: u64,
}

impl BlackholeSink {
    /// Records acknowledged so far.
    pub fn records(&self) -> u64 {
        self.records
    }
    /// Stored (compressed) bytes acknowledged so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        for chunk in chunks {
            self.records += chunk.end_offset() - chunk.first_offset();
            self.bytes += chunk.frame().len() as u64;
        }
        Ok(())
    }
}

/// `type = "blackhole"`: acknowledges and discards, for benchmarks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {
    /// The sources and transforms it reads.
    #[serde(default)]
    pub inputs: Vec<String>,
}

impl crate::config::Named for BlackholeSinkConfig {
    const TYPE: &'static str = "blackhole";
}

impl crate::config::SinkComponent for BlackholeSinkConfig {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn build(
        &self,
        _cx: &crate::config::BuildContext<'_>,
    ) -> Result<Box<dyn Sink>, crate::config::BuildError> {
        Ok(Box::new(BlackholeSink::default()))
    }
}
