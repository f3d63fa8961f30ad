//! `ticker-source`: a test fixture for the plugin host's tests, not a
//! source for real use. It emits the records `{"n":I,"source":"ticker"}`
//! for I = 0, 1, 2, ... Its config (a JSON object):
//!
//! * `"stream"` (default `"ticks"`): the stream the records go to.
//! * `"count": N`: emit N records, then end; without it, run until the
//!   host says stop.
//! * `"interval_ms"` (default 0): wait this long between records (ending
//!   early when the host says stop); 0 emits as fast as the host takes
//!   them, asking whether to stop every 1000 records.
//! * `"panic_at": I`: panic just before emitting record I.
//! * `"ignore_stop": true`: never ask whether to stop (a source that only
//!   emits); it ends when `emit` refuses a record.
//! * `"block_ms": N`: after the first record, sleep N ms without asking the
//!   host anything (a read that hangs).
//!
//! An error from `emit` (the host is stopping, or its log failed) is
//! returned as it is. At the end the source waits until what it emitted is
//! durable, then returns. Any other key is a fatal error naming it.

// The `#[unsafe(no_mangle)]` that `export_plugin!` expands to comes from
// another crate's macro, where rustc does not report `unsafe_code`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use shipper_plugin::{export_plugin, now_nanos, Error, SourceHost, SourcePlugin};

/// How often a source without an interval asks whether to stop.
const STOP_CHECK_EVERY: u64 = 1000;

/// The source's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_stream")]
    stream: String,
    count: Option<u64>,
    #[serde(default)]
    interval_ms: u64,
    panic_at: Option<u64>,
    #[serde(default)]
    ignore_stop: bool,
    #[serde(default)]
    block_ms: u64,
}

fn default_stream() -> String {
    "ticks".to_owned()
}

/// The source.
#[derive(Debug)]
struct TickerSource {
    config: Config,
}

impl SourcePlugin for TickerSource {
    const NAME: &'static str = "ticker-source";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(config: &str) -> Result<Self, Error> {
        let config = serde_json::from_str(config)
            .map_err(|e| Error::Fatal(format!("ticker-source: invalid config: {e}")))?;
        Ok(TickerSource { config })
    }

    fn run(&mut self, host: &SourceHost<'_>) -> Result<(), Error> {
        let interval = Duration::from_millis(self.config.interval_ms);
        let mut payload = String::new();
        let mut n: u64 = 0;
        while self.config.count.is_none_or(|count| n < count) {
            if n == 1 && self.config.block_ms > 0 {
                std::thread::sleep(Duration::from_millis(self.config.block_ms));
            }
            if n > 0 && !self.config.ignore_stop {
                let stop = if interval.is_zero() {
                    n % STOP_CHECK_EVERY == 0 && host.should_stop()
                } else {
                    host.wait_stop(interval)
                };
                if stop {
                    break;
                }
            }
            if self.config.panic_at == Some(n) {
                panic!("ticker-source: panic_at {n}");
            }
            payload.clear();
            let _ = write!(payload, r#"{{"n":{n},"source":"ticker"}}"#);
            host.emit(&self.config.stream, payload.as_bytes(), now_nanos())?;
            n += 1;
        }
        host.wait_durable()
    }
}

export_plugin!(source TickerSource);
