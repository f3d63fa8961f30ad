//! `stdin`: one record per line of standard input, for pipes
//! (`tail -F app.log | shipper run -c shipper.toml`).

use async_trait::async_trait;
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Source, SourceContext};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::framing::lines::{LineOptions, LineSplitter};

/// Reads lines from standard input (or any byte stream) until it ends.
pub struct StdinSource<R> {
    input: R,
    stream: String,
    splitter: LineSplitter,
}

impl<R> std::fmt::Debug for StdinSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinSource")
            .field("stream", &self.stream)
            .finish()
    }
}

impl StdinSource<tokio::io::Stdin> {
    /// Lines of the process's standard input into `stream`.
    pub fn new(stream: &str, lines: LineOptions) -> Self {
        StdinSource::from_reader(tokio::io::stdin(), stream, lines)
    }
}

impl<R: AsyncRead + Unpin + Send> StdinSource<R> {
    /// Lines of any byte stream into `stream` (tests use this).
    pub fn from_reader(input: R, stream: &str, lines: LineOptions) -> Self {
        StdinSource {
            input,
            stream: stream.to_owned(),
            splitter: LineSplitter::new(lines),
        }
    }
}

#[async_trait]
impl<R: AsyncRead + Unpin + Send> Source for StdinSource<R> {
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = self.input.read(&mut buffer) => {
                    let n = read.map_err(|e| ComponentError::Fatal(format!("reading standard input: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    let now = now_nanos();
                    let mut lines = self.splitter.feed(&buffer[..n]);
                    while let Some(line) = lines.next() {
                        cx.emitter.emit(&self.stream, line.bytes, now, None)?;
                    }
                }
                () = cx.shutdown.wait() => break,
            }
        }
        if let Some(last) = self.splitter.finish() {
            cx.emitter
                .emit(&self.stream, last.bytes, now_nanos(), None)?;
        }
        cx.emitter.durable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipper_core::chunk::{decode_body, ChunkOptions, Decoder};
    use shipper_core::component::Shutdown;
    use shipper_core::emit::Emitter;
    use shipper_core::log::{Log, LogOptions};

    #[tokio::test]
    async fn every_line_becomes_a_durable_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let input: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .chain(*b"last, unterminated")
            .collect();
        let mut source = StdinSource::from_reader(&input[..], "app", LineOptions::default());
        let mut cx = SourceContext {
            emitter: Emitter::new(log.clone(), "in", ChunkOptions::default()).unwrap(),
            shutdown: Shutdown::new(),
        };
        source.run(&mut cx).await.unwrap();
        assert_eq!(log.durable_offset(), 10_001);
        let mut decoder = Decoder::default();
        let mut lines = Vec::new();
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            assert_eq!(view.stream(), b"app");
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                lines.push(String::from_utf8(record.unwrap().to_vec()).unwrap());
            }
        }
        assert_eq!(lines.len(), 10_001);
        assert_eq!(lines[9_999], "line 9999");
        assert_eq!(lines[10_000], "last, unterminated");
    }
}

mod process;

pub use process::{process_stdin, SharedInput};

/// The `stdin` source's config: `[sources.NAME] type = "stdin"` (no keys).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {}

impl crate::config::Named for StdinSourceConfig {
    const TYPE: &'static str = "stdin";
}

#[async_trait::async_trait]
impl crate::config::SourceComponent for StdinSourceConfig {
    async fn build(
        &self,
        cx: &crate::config::BuildContext<'_>,
    ) -> Result<Box<dyn Source>, crate::config::BuildError> {
        // One reader of the process's input for every stdin source it
        // starts: a restarted source goes on where the last one stopped.
        Ok(Box::new(StdinSource::from_reader(
            process_stdin(),
            cx.name,
            LineOptions::default(),
        )))
    }
}
