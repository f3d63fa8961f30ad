//! `stdout`: writes every record to standard output, one per line, for
//! debugging a pipeline (`shipper run -c x.toml | head`). A record is
//! acknowledged once it is written and standard output flushed; shipper's
//! own log goes to standard error, so the two never mix.

use std::io::Write;

use async_trait::async_trait;
use shipper_core::chunk::{decode_body, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::StoredChunk;

/// Writes records to `W` (standard output unless a test gives another).
#[derive(Debug)]
pub struct StdoutSink<W = std::io::Stdout> {
    out: W,
    decoder: Decoder,
}

impl Default for StdoutSink {
    fn default() -> Self {
        StdoutSink::to(std::io::stdout())
    }
}

impl<W: Write> StdoutSink<W> {
    /// A sink writing to `out`.
    pub fn to(out: W) -> Self {
        StdoutSink {
            out,
            decoder: Decoder::default(),
        }
    }

    /// What it was writing to.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        let failed =
            |e: std::io::Error| ComponentError::Retryable(format!("writing to stdout: {e}"));
        for chunk in chunks {
            let view = chunk.view();
            let body = decode_body(&view, &mut self.decoder)
                .map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
            for record in body.records() {
                let record =
                    record.map_err(|e| ComponentError::undecodable(chunk.first_offset(), e))?;
                self.out.write_all(record).map_err(failed)?;
                self.out.write_all(b"\n").map_err(failed)?;
            }
        }
        self.out.flush().map_err(failed)
    }
}

#[async_trait]
impl<W: Write + Send> Sink for StdoutSink<W> {
    async fn open(&mut self, cx: &SinkContext) -> Result<(), ComponentError> {
        self.decoder = cx.decoder();
        Ok(())
    }

    async fn deliver(&mut self, chunks: &[StoredChunk]) -> Result<(), ComponentError> {
        // A pipe to a slow reader blocks: keep that off the async workers.
        tokio::task::block_in_place(|| self.write(chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipper_core::chunk::{ChunkBuilder, ChunkOptions};
    use shipper_core::log::{Log, LogOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn every_record_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let mut builder = ChunkBuilder::new("s", "in", ChunkOptions::default()).unwrap();
        builder.push(b"{\"a\":1}", 1, None).unwrap();
        builder.push(b"two\nlines", 1, None).unwrap();
        log.append(builder.finish().unwrap().unwrap())
            .unwrap()
            .wait_durable()
            .unwrap();
        let chunks: Vec<StoredChunk> = log.reader(0).map(Result::unwrap).collect();
        let mut sink = StdoutSink::to(Vec::new());
        sink.deliver(&chunks).await.unwrap();
        assert_eq!(sink.into_inner(), b"{\"a\":1}\ntwo\nlines\n");
    }
}

/// `type = "stdout"`: records to standard output, for debugging.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// The sources and transforms it reads.
    #[serde(default)]
    pub inputs: Vec<String>,
}

impl crate::config::Named for StdoutSinkConfig {
    const TYPE: &'static str = "stdout";
}

impl crate::config::SinkComponent for StdoutSinkConfig {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn build(
        &self,
        _cx: &crate::config::BuildContext<'_>,
    ) -> Result<Box<dyn Sink>, crate::config::BuildError> {
        Ok(Box::new(StdoutSink::default()))
    }
}
