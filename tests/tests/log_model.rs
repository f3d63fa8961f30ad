//! Model test of the log: proptest generates random sequences of appends,
//! reads, acknowledgements, reopens and crashes; the log and a simple model
//! (offset → record bytes, plus the cursor) must agree after every step.
//!
//! A crash is simulated by copying the data directory byte for byte while
//! the log is open (what a killed process leaves behind: everything written
//! to the map is in the page cache) and opening the copy. A crash that also
//! loses what was not flushed (power loss) zeroes, in the copy, every chunk
//! that ends past the durable offset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shipper_core::chunk::frame::padded_len;
use shipper_core::chunk::{
    decode_body, ChunkBuilder, ChunkOptions, ChunkView, Compression, Decoder,
};
use shipper_core::log::segment::{parse_segment_file_name, SEGMENT_HEADER_LEN};
use shipper_core::log::{Durability, Log, LogOptions};
use shipper_tests::copy_dir;

const CURSOR: &str = "sink";

/// A record, described compactly so that proptest shrinks parameters, not bytes.
#[derive(Debug, Clone)]
struct RecordSpec {
    len: usize,
    seed: u64,
    multiline: bool,
    compressible: bool,
}

impl RecordSpec {
    fn bytes(&self) -> Vec<u8> {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        const TEXT: &[u8] = b"abcdefghij {}\":,0123456789 level=info msg=";
        let mut bytes: Vec<u8> = (0..self.len)
            .map(|_| {
                if self.compressible {
                    TEXT[rng.random_range(0..TEXT.len())]
                } else {
                    match rng.random::<u8>() {
                        b'\n' => b' ',
                        byte => byte,
                    }
                }
            })
            .collect();
        if self.multiline && !bytes.is_empty() {
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = b'\n';
            }
        }
        bytes
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Build chunks from these records and append them all, then wait.
    Append(Vec<RecordSpec>),
    /// Read from a fraction (per mille) of the offsets; `wait` first waits
    /// until everything appended is durable.
    Read { per_mille: u64, wait: bool },
    /// Commit the cursor somewhere between itself and the durable end.
    Ack { per_mille: u64 },
    /// Close and open again.
    Reopen,
    /// Copy the directory while open and continue with the copy.
    Crash { lose_unflushed: bool },
}

#[derive(Debug, Clone)]
struct Config {
    segment_bytes: u64,
    chunk_max_bytes: usize,
    compression: Compression,
    durability: Durability,
    channel_capacity: usize,
    prepare_ahead: bool,
}

fn record_strategy() -> impl Strategy<Value = RecordSpec> {
    (
        0usize..3000,
        any::<u64>(),
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
        .prop_map(|(len, seed, multiline, compressible)| RecordSpec {
            len,
            seed,
            multiline,
            compressible,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(record_strategy(), 1..24).prop_map(Op::Append),
        3 => (0u64..=1000, any::<bool>()).prop_map(|(per_mille, wait)| Op::Read { per_mille, wait }),
        2 => (0u64..=1000).prop_map(|per_mille| Op::Ack { per_mille }),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|lose_unflushed| Op::Crash { lose_unflushed }),
    ]
}

fn config_strategy() -> impl Strategy<Value = Config> {
    (
        (8u64 << 10)..(256u64 << 10),
        64usize..32768,
        any::<bool>(),
        prop_oneof![
            Just(Durability::Always),
            (1u64..10).prop_map(|ms| Durability::Interval(Duration::from_millis(ms))),
            Just(Durability::Never),
        ],
        1usize..8,
        any::<bool>(),
    )
        .prop_map(
            |(
                segment_bytes,
                chunk_max_bytes,
                zstd,
                durability,
                channel_capacity,
                prepare_ahead,
            )| Config {
                segment_bytes,
                chunk_max_bytes,
                compression: if zstd {
                    Compression::Zstd { level: 1 }
                } else {
                    Compression::None
                },
                durability,
                channel_capacity,
                prepare_ahead,
            },
        )
}

/// The log under test, the directory it lives in and the model.
struct Harness {
    root: tempfile::TempDir,
    generation: u32,
    dir: PathBuf,
    log: Option<Log>,
    options: LogOptions,
    chunk_options: ChunkOptions,
    /// Every record the log must hold, by offset (including ones behind the
    /// cursor that may have been deleted).
    model: BTreeMap<u64, Vec<u8>>,
    /// The offset the next record gets.
    next: u64,
    cursor: Option<u64>,
    decoder: Decoder,
}

impl Harness {
    fn new(config: &Config) -> Harness {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("gen-0");
        let options = LogOptions {
            segment_bytes: config.segment_bytes,
            max_bytes: 1 << 30,
            durability: config.durability,
            channel_capacity: config.channel_capacity,
            prepare_ahead: config.prepare_ahead,
            ..LogOptions::default()
        };
        let chunk_options = ChunkOptions {
            max_bytes: config.chunk_max_bytes,
            compression: config.compression,
            ..ChunkOptions::default()
        };
        let log = Log::open(&dir, options.clone()).unwrap();
        assert!(log.recovery_report().is_clean());
        assert_eq!(log.next_offset(), 0);
        Harness {
            root,
            generation: 0,
            dir,
            log: Some(log),
            options,
            chunk_options,
            model: BTreeMap::new(),
            next: 0,
            cursor: None,
            decoder: Decoder::default(),
        }
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Append(records) => self.append(records),
            Op::Read { per_mille, wait } => {
                let offset = self.next * per_mille / 1000;
                self.read(offset, *wait);
            }
            Op::Ack { per_mille } => self.ack(*per_mille),
            Op::Reopen => self.reopen(),
            Op::Crash { lose_unflushed } => self.crash(*lose_unflushed),
        }
        self.check_invariants();
    }

    fn append(&mut self, specs: &[RecordSpec]) {
        let mut builder =
            ChunkBuilder::new("model", "proptest", self.chunk_options.clone()).unwrap();
        let mut chunks = Vec::new();
        let mut pending = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let bytes = spec.bytes();
            pending.push(bytes.clone());
            if let Some(chunk) = builder.push(&bytes, i as u64, None).unwrap() {
                assert_eq!(chunk.record_count() as usize, pending.len());
                chunks.push((chunk, std::mem::take(&mut pending)));
            }
        }
        if let Some(chunk) = builder.finish().unwrap() {
            assert_eq!(chunk.record_count() as usize, pending.len());
            chunks.push((chunk, pending));
        }
        // Hand all chunks to the writer before waiting for any: group commit.
        let log = self.log.as_ref().unwrap();
        let tickets: Vec<_> = chunks
            .into_iter()
            .map(|(chunk, records)| (log.append(chunk).unwrap(), records))
            .collect();
        let always = self.options.durability == Durability::Always;
        for (ticket, records) in tickets {
            let range = if always {
                ticket.wait_durable().unwrap()
            } else {
                ticket.wait().unwrap()
            };
            assert_eq!(range, self.next..self.next + records.len() as u64);
            for record in records {
                self.model.insert(self.next, record);
                self.next += 1;
            }
            if always {
                assert!(log.durable_offset() >= range.end);
            }
        }
        assert_eq!(log.next_offset(), self.next);
    }

    /// Reads from `offset` and compares with the model.
    fn read(&mut self, offset: u64, wait: bool) {
        let log = self.log.clone().unwrap();
        if wait {
            log.wait_durable(self.next).unwrap();
        }
        let durable_before = log.durable_offset();
        assert!(durable_before <= self.next);
        let start = log.start_offset();
        let effective = offset.max(start);
        let mut reader = log.reader(offset);
        let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut first_chunk_start = None;
        let mut read_end = effective;
        while let Some(chunk) = reader.next() {
            let chunk = chunk.expect("the model test damages nothing");
            if let Some((from, to)) = reader.take_gap() {
                // Skipped offsets at or above the oldest stored one must be
                // offsets the model does not hold (lost in a power loss).
                let from = from.max(start);
                if from < to {
                    assert_eq!(
                        self.model.range(from..to).next(),
                        None,
                        "reader skipped {from}..{to}"
                    );
                }
            }
            let view = chunk.view();
            assert_eq!(
                (view.first_offset(), view.end_offset()),
                (chunk.first_offset(), chunk.end_offset())
            );
            assert!(chunk.first_offset() >= read_end || first_chunk_start.is_none());
            assert!(chunk.end_offset() <= durable_before.max(log.durable_offset()));
            first_chunk_start.get_or_insert(chunk.first_offset());
            let body = decode_body(&view, &mut self.decoder).unwrap();
            let records: Vec<Vec<u8>> = body.records().map(|r| r.unwrap().to_vec()).collect();
            assert_eq!(
                records.len() as u64,
                chunk.end_offset() - chunk.first_offset()
            );
            got.extend((chunk.first_offset()..).zip(records));
            read_end = chunk.end_offset();
        }
        let lo = first_chunk_start.map_or(effective, |s| s.min(effective));
        if let Some(first) = first_chunk_start {
            assert!(
                first <= effective || self.model.range(effective..first).next().is_none(),
                "first chunk at {first} but records from {effective} exist"
            );
        }
        let expected: Vec<(u64, Vec<u8>)> = self
            .model
            .range(lo..read_end.max(lo))
            .map(|(offset, record)| (*offset, record.clone()))
            .collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "read from {offset} (start {start})"
        );
        for (g, e) in got.iter().zip(&expected) {
            assert!(g == e, "record {} differs (read from {offset})", e.0);
        }
        // Everything durable when the read began was returned.
        let must_reach = if wait { self.next } else { durable_before };
        let from = read_end.max(effective);
        if from < must_reach {
            assert_eq!(
                self.model.range(from..must_reach).next().map(|(o, _)| *o),
                None,
                "reader from {offset} stopped at {read_end}, durable was {durable_before}"
            );
        }
    }

    fn ack(&mut self, per_mille: u64) {
        let log = self.log().clone();
        let low = self.cursor.unwrap_or_else(|| log.start_offset());
        let high = log.durable_offset().max(low);
        let offset = low + (high - low) * per_mille / 1000;
        log.commit_cursor(CURSOR, offset).unwrap();
        self.cursor = Some(offset);
        assert_eq!(log.cursor(CURSOR), Some(offset));
    }

    fn reopen(&mut self) {
        let log = self.log.take().unwrap();
        log.close().unwrap();
        drop(log);
        let log = Log::open(&self.dir, self.options.clone()).unwrap();
        self.check_report_is_clean(&log);
        assert_eq!(log.next_offset(), self.next, "next offset after reopen");
        assert_eq!(log.durable_offset(), self.next);
        self.log = Some(log);
        self.read(0, true);
    }

    fn crash(&mut self, lose_unflushed: bool) {
        let log = self.log.take().unwrap();
        let durable = log.durable_offset();
        self.generation += 1;
        let copy = self.root.path().join(format!("gen-{}", self.generation));
        copy_dir(&self.dir, &copy);
        drop(log);
        std::fs::remove_dir_all(&self.dir).unwrap();
        self.dir = copy;
        if lose_unflushed {
            zero_chunks_after(&self.dir, durable);
        }
        let log = Log::open(&self.dir, self.options.clone()).unwrap();
        if lose_unflushed {
            let next = log.next_offset();
            assert!(
                next >= durable && next <= self.next,
                "next {next}, durable {durable}, was {}",
                self.next
            );
            self.model.retain(|&offset, _| offset < durable);
            self.next = next;
        } else {
            self.check_report_is_clean(&log);
            assert_eq!(log.next_offset(), self.next, "next offset after a crash");
        }
        assert_eq!(log.durable_offset(), log.next_offset());
        self.log = Some(log);
        self.read(0, true);
    }

    /// A reopen after a clean close or a process crash repairs nothing; it
    /// only reports again offsets an earlier power loss lost for good.
    fn check_report_is_clean(&self, log: &Log) {
        let report = log.recovery_report();
        let known_losses_only = shipper_core::log::RecoveryReport {
            lost_offsets: Vec::new(),
            removed_files: Vec::new(),
            ..report.clone()
        };
        assert!(known_losses_only.is_clean(), "{report}");
        for &(from, to) in &report.lost_offsets {
            assert_eq!(self.model.range(from..to).next(), None, "{report}");
        }
    }

    /// Checks what must hold after every step.
    fn check_invariants(&self) {
        let log = self.log();
        assert_eq!(log.next_offset(), self.next);
        assert_eq!(log.cursor(CURSOR), self.cursor);
        let start = log.start_offset();
        let bases = segment_bases(&self.dir);
        assert_eq!(
            bases.first().copied(),
            Some(start),
            "segments on disk: {bases:?}"
        );
        let unique: std::collections::BTreeSet<_> = bases.iter().collect();
        assert_eq!(
            unique.len(),
            bases.len(),
            "two segments with one base: {bases:?}"
        );
        match self.cursor {
            None => assert_eq!(start, 0, "nothing is deleted without a cursor"),
            Some(cursor) => {
                assert!(start <= cursor, "start {start} passed the cursor {cursor}");
                // Every sealed segment wholly behind the cursor is gone.
                if let Some(&second) = bases.get(1) {
                    assert!(
                        second > cursor,
                        "segment at {} is behind cursor {cursor}: {bases:?}",
                        bases[0]
                    );
                }
            }
        }
    }
}

/// Base offsets of the segment files in `dir`, ascending.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .filter_map(|entry| parse_segment_file_name(&entry.unwrap().file_name().to_string_lossy()))
        .collect();
    bases.sort_unstable();
    bases
}

/// Zeroes every chunk that ends past `durable` (and everything after it) in
/// the segments of `dir`: what a power loss may leave.
fn zero_chunks_after(dir: &Path, durable: u64) {
    let mut lost = false;
    for base in segment_bases(dir) {
        let path = dir
            .join("segments")
            .join(shipper_core::log::segment::segment_file_name(base));
        let mut bytes = std::fs::read(&path).unwrap();
        let mut pos = SEGMENT_HEADER_LEN;
        if !lost {
            while pos < bytes.len() {
                match ChunkView::parse(&bytes[pos..]) {
                    Ok(view) if view.end_offset() <= durable => {
                        pos += padded_len(view.frame().len())
                    }
                    Ok(_) => {
                        lost = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if lost {
            let end = bytes.len();
            bytes[pos.min(end)..].fill(0);
            std::fs::write(&path, &bytes).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 500,
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/log_model.txt"),
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_agrees_with_model(config in config_strategy(), ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mut harness = Harness::new(&config);
        for op in &ops {
            harness.run(op);
        }
        harness.read(0, true);
        let log = harness.log.take().unwrap();
        log.close().unwrap();
    }
}

/// Found by the model: a chunk too large for the segment `Log::open`
/// created replaced that segment's file (same base offset); with a cursor,
/// deleting the "older" segment then deleted the active one, and a reader
/// waiting on the empty segment never moved on.
#[test]
fn chunk_larger_than_the_fresh_segment_keeps_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 8192,
        max_bytes: 1 << 30,
        durability: Durability::Always,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let mut reader = log.reader(0);
    assert!(reader.next().is_none());
    log.commit_cursor(CURSOR, 0).unwrap();
    let options_none = ChunkOptions {
        compression: Compression::None,
        ..ChunkOptions::default()
    };
    let mut builder = ChunkBuilder::new("s", "c", options_none).unwrap();
    let record = vec![b'x'; 9000];
    builder.push(&record, 1, None).unwrap();
    let range = log
        .append(builder.finish().unwrap().unwrap())
        .unwrap()
        .wait_durable()
        .unwrap();
    assert_eq!(range, 0..1);
    assert_eq!(segment_bases(dir.path()), vec![0]);
    let chunk = reader
        .next()
        .expect("the reader moves to the new segment")
        .unwrap();
    assert_eq!(chunk.first_offset(), 0);
    log.close().unwrap();
    let log = Log::open(dir.path(), options).unwrap();
    assert_eq!(log.next_offset(), 1);
    let chunk = log.reader(0).next().unwrap().unwrap();
    let mut decoder = Decoder::default();
    let body = decode_body(&chunk.view(), &mut decoder).unwrap();
    assert_eq!(body.records().next().unwrap().unwrap(), &record[..]);
}
