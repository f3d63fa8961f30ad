//! `generator`: records from a [`Corpus`], for trying shipper out and for
//! benchmarks without an external producer. It emits `count` records and
//! ends, or runs until shutdown; `rate` paces it (records per second, in
//! batches every ~10 ms), otherwise it runs as fast as the log takes the
//! records.
//!
//! Records are stamped with the wall-clock time: under a rate, record `k`
//! gets the time it was due (start + k / rate); without one, the time its
//! batch was generated. Their content is a pure function of the seed,
//! their index and that time (see [`shipper_core::corpus`]). A restart generates
//! from index 0 again.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Source, SourceContext};

use shipper_core::corpus::{Corpus, CorpusKind};

/// Records generated between two looks at shutdown and the linger time
/// when running unpaced (about a millisecond of work).
const BATCH: u64 = 1024;
/// Period of the paced loop's wake-ups.
const TICK: Duration = Duration::from_millis(10);

/// Options of a [`GeneratorSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// What the records look like.
    pub corpus: CorpusKind,
    /// The corpus seed.
    pub seed: u64,
    /// The corpus size knob: records of about this many bytes.
    pub record_bytes: Option<usize>,
    /// Records to emit before the source ends; `None`: until shutdown.
    pub count: Option<u64>,
    /// Records per second; `None`: as fast as possible.
    pub rate: Option<u64>,
}

impl GeneratorOptions {
    /// Unlimited, unpaced records of `corpus` from seed 0.
    pub fn new(corpus: CorpusKind) -> Self {
        GeneratorOptions {
            corpus,
            seed: 0,
            record_bytes: None,
            count: None,
            rate: None,
        }
    }
}

/// Emits generated records; see the module docs.
#[derive(Debug)]
pub struct GeneratorSource {
    stream: String,
    corpus: Corpus,
    count: Option<u64>,
    rate: Option<u64>,
}

impl GeneratorSource {
    /// A generator emitting into `stream`. A rate or record size of 0 is
    /// refused.
    pub fn new(options: GeneratorOptions, stream: &str) -> Result<Self, ComponentError> {
        if options.rate == Some(0) {
            return Err(ComponentError::Fatal(
                "rate must be at least 1 record per second".to_owned(),
            ));
        }
        let mut corpus = Corpus::new(options.corpus, options.seed);
        match options.record_bytes {
            Some(0) => {
                return Err(ComponentError::Fatal(
                    "record_bytes must be at least 1".to_owned(),
                ))
            }
            Some(bytes) => corpus = corpus.with_record_bytes(bytes),
            None => {}
        }
        Ok(GeneratorSource {
            stream: stream.to_owned(),
            corpus,
            count: options.count,
            rate: options.rate,
        })
    }

    /// Emits records `from..to`, all stamped `timestamp`, or (paced) each
    /// at the time it was due.
    fn emit_range(
        &self,
        cx: &mut SourceContext,
        record: &mut Vec<u8>,
        from: u64,
        to: u64,
        stamp: Stamp,
    ) -> Result<(), ComponentError> {
        for index in from..to {
            let timestamp = match stamp {
                Stamp::Fixed(timestamp) => timestamp,
                Stamp::Due { start_ns, rate } => {
                    start_ns + due_offset(index, rate).as_nanos() as u64
                }
            };
            record.clear();
            self.corpus.record_at(index, timestamp, record);
            cx.emitter.emit(&self.stream, record, timestamp, None)?;
        }
        Ok(())
    }

    async fn run_unpaced(
        &mut self,
        cx: &mut SourceContext,
        record: &mut Vec<u8>,
        limit: u64,
    ) -> Result<(), ComponentError> {
        let mut emitted = 0;
        while emitted < limit && !cx.shutdown.is_triggered() {
            let end = limit.min(emitted + BATCH);
            self.emit_range(cx, record, emitted, end, Stamp::Fixed(now_nanos()))?;
            emitted = end;
            // Let the sinks and the admin endpoint on this worker run.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn run_paced(
        &mut self,
        cx: &mut SourceContext,
        record: &mut Vec<u8>,
        limit: u64,
        rate: u64,
    ) -> Result<(), ComponentError> {
        let started = Instant::now();
        let stamp = Stamp::Due {
            start_ns: now_nanos(),
            rate,
        };
        // Records per wake-up: a tick's worth, at least one.
        let per_tick = (u128::from(rate) * TICK.as_nanos() / 1_000_000_000).max(1) as u64;
        let mut emitted = 0;
        while emitted < limit {
            // Records 0..due are due by now (record k at k / rate).
            let due = (u128::from(rate) * started.elapsed().as_nanos() / 1_000_000_000 + 1)
                .min(u128::from(limit)) as u64;
            if due > emitted {
                // Catch up in bounded batches, looking at shutdown between them.
                let end = due.min(emitted + BATCH);
                self.emit_range(cx, record, emitted, end, stamp)?;
                emitted = end;
                if cx.shutdown.is_triggered() {
                    break;
                }
                tokio::task::yield_now().await;
                continue;
            }
            // Sleep until a tick's worth of records is due.
            let wake = started + due_offset(limit.min(emitted + per_tick) - 1, rate);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = cx.shutdown.wait() => break,
            }
        }
        Ok(())
    }
}

/// The timestamps of a range of records.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    /// All the same.
    Fixed(u64),
    /// Each the time it was due: `start_ns + index / rate`.
    Due { start_ns: u64, rate: u64 },
}

/// When record `index` is due after the start, at `rate` per second.
fn due_offset(index: u64, rate: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[async_trait]
impl Source for GeneratorSource {
    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let limit = self.count.unwrap_or(u64::MAX);
        let mut record = Vec::with_capacity(self.corpus.record_bytes().unwrap_or(512));
        match self.rate {
            None => self.run_unpaced(cx, &mut record, limit).await?,
            Some(rate) => self.run_paced(cx, &mut record, limit, rate).await?,
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
    use shipper_core::log::{Durability, Log, LogOptions};

    fn context(log: &Log) -> SourceContext {
        SourceContext {
            emitter: Emitter::new(log.clone(), "gen", ChunkOptions::default()).unwrap(),
            shutdown: Shutdown::new(),
        }
    }

    /// Every record stored in `log`, in order.
    fn stored(log: &Log) -> Vec<Vec<u8>> {
        let mut decoder = Decoder::default();
        let mut records = Vec::new();
        for chunk in log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            assert_eq!(view.stream(), b"gen");
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                records.push(record.unwrap().to_vec());
            }
        }
        records
    }

    #[tokio::test]
    async fn emits_exactly_count_records_durably_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            durability: Durability::Interval(Duration::from_millis(50)),
            ..LogOptions::default()
        };
        let log = Log::open(dir.path(), options).unwrap();
        for (corpus, count) in [
            (CorpusKind::AccessLog, 10_000),
            (CorpusKind::Events, 2_500),
            (CorpusKind::Iot, 1),
        ] {
            let start = log.next_offset();
            let mut source = GeneratorSource::new(
                GeneratorOptions {
                    count: Some(count),
                    record_bytes: Some(200),
                    seed: 9,
                    ..GeneratorOptions::new(corpus)
                },
                "gen",
            )
            .unwrap();
            source.run(&mut context(&log)).await.unwrap();
            // Durable when run returns: readers see only durable chunks.
            assert_eq!(log.durable_offset(), start + count, "{corpus}");
        }
        let records = stored(&log);
        assert_eq!(records.len(), 12_501);
        for (index, record) in records[..10_000].iter().enumerate() {
            assert_eq!(Corpus::seq_of(record), Some(index as u64));
            assert_eq!(record.len(), 200);
            serde_json::from_slice::<serde_json::Value>(record).unwrap();
        }
        let event: serde_json::Value = serde_json::from_slice(&records[10_000]).unwrap();
        assert_eq!(event["seq"], 0);
        assert!(event["event"].is_string());
        let reading: serde_json::Value = serde_json::from_slice(&records[12_500]).unwrap();
        assert!(reading["device"].is_string());
    }

    #[tokio::test]
    async fn the_rate_paces_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let mut source = GeneratorSource::new(
            GeneratorOptions {
                count: Some(1_000),
                rate: Some(2_000),
                ..GeneratorOptions::new(CorpusKind::Iot)
            },
            "gen",
        )
        .unwrap();
        let started = Instant::now();
        source.run(&mut context(&log)).await.unwrap();
        let elapsed = started.elapsed();
        // The last of 1,000 records at 2,000/s is due at 0.4995 s; timers
        // never fire early, so this lower bound holds on any machine.
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert_eq!(log.durable_offset(), 1_000);
        // Each record is stamped with the time it was due: the last one
        // 499.5 ms after the first (`ts` is in unix milliseconds).
        let records = stored(&log);
        let ts = |record: &[u8]| {
            let value: serde_json::Value = serde_json::from_slice(record).unwrap();
            value["ts"].as_u64().unwrap()
        };
        let span = ts(&records[999]) - ts(&records[0]);
        assert!((499..=500).contains(&span), "{span} ms");
        let seqs: Vec<u64> = records.iter().filter_map(|r| Corpus::seq_of(r)).collect();
        assert_eq!(seqs, (0..1_000).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn unlimited_runs_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        for rate in [None, Some(100_000)] {
            let start = log.next_offset();
            let mut source = GeneratorSource::new(
                GeneratorOptions {
                    rate,
                    ..GeneratorOptions::new(CorpusKind::Iot)
                },
                "gen",
            )
            .unwrap();
            let mut cx = context(&log);
            let shutdown = cx.shutdown.clone();
            let task =
                tokio::spawn(
                    async move { source.run(&mut cx).await.map(|()| cx.emitter.counters()) },
                );
            log.durable(start + 5_000).await.unwrap();
            shutdown.trigger();
            let counters = task.await.unwrap().unwrap();
            assert!(counters.records >= 5_000, "{rate:?}: {counters:?}");
            assert_eq!(log.durable_offset(), start + counters.records, "{rate:?}");
        }
    }

    #[test]
    fn a_zero_rate_or_size_is_refused() {
        for options in [
            GeneratorOptions {
                rate: Some(0),
                ..GeneratorOptions::new(CorpusKind::AccessLog)
            },
            GeneratorOptions {
                record_bytes: Some(0),
                ..GeneratorOptions::new(CorpusKind::AccessLog)
            },
        ] {
            assert!(matches!(
                GeneratorSource::new(options, "gen"),
                Err(ComponentError::Fatal(_))
            ));
        }
    }

    #[test]
    fn records_are_due_at_index_over_rate() {
        assert_eq!(due_offset(0, 7), Duration::ZERO);
        assert_eq!(due_offset(999, 2_000), Duration::from_micros(499_500));
        assert_eq!(due_offset(3, 1), Duration::from_secs(3));
        assert_eq!(due_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }
}

/// The `generator` source's config: `[sources.NAME] type = "generator"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{GeneratorOptions, GeneratorSource};
    use crate::config::{BuildContext, BuildError, ByteSize, Checks, SourceComponent};
    use shipper_core::corpus::CorpusKind;

    /// The largest `record_bytes` of a generator source.
    pub const GENERATOR_MAX_RECORD_BYTES: ByteSize = ByteSize::mib(1);

    /// `type = "generator"`: synthetic records from a seeded corpus.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct GeneratorSourceConfig {
        #[serde(default)]
        pub format: CorpusKind,
        /// Records to emit before the source ends; absent: until shutdown.
        #[serde(default)]
        pub count: Option<u64>,
        /// Records per second; absent: as fast as possible.
        #[serde(default)]
        pub rate: Option<u64>,
        #[serde(default)]
        pub seed: u64,
        /// Pad or trim records to about this size; absent: their natural size.
        #[serde(default)]
        pub record_bytes: Option<ByteSize>,
    }

    impl crate::config::Named for GeneratorSourceConfig {
        const TYPE: &'static str = "generator";
    }

    #[async_trait::async_trait]
    impl SourceComponent for GeneratorSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            if self.count == Some(0) {
                check.error(
                    &["count"],
                    "must be at least 1 (leave it out to run until stopped)",
                );
            }
            if self.rate == Some(0) {
                check.error(
                    &["rate"],
                    "must be at least 1 record per second (leave it out for as fast as possible)",
                );
            }
            match self.record_bytes {
                Some(bytes) if bytes.bytes() == 0 => {
                    check.error(&["record_bytes"], "must be at least 1 byte");
                }
                Some(bytes) if bytes > GENERATOR_MAX_RECORD_BYTES => check.error(
                    &["record_bytes"],
                    format!("must be at most {GENERATOR_MAX_RECORD_BYTES}"),
                ),
                _ => {}
            }
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let options = GeneratorOptions {
                corpus: self.format,
                seed: self.seed,
                record_bytes: self
                    .record_bytes
                    .map(|bytes| usize::try_from(bytes.bytes()).unwrap_or(usize::MAX)),
                count: self.count,
                rate: self.rate,
            };
            Ok(Box::new(
                GeneratorSource::new(options, cx.name).map_err(|e| e.to_string())?,
            ))
        }
    }
}

pub use config::{GeneratorSourceConfig, GENERATOR_MAX_RECORD_BYTES};
