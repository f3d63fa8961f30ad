//! Corpus generation throughput, next to a same-run baseline: copying the
//! very same records (already generated) into a buffer, record by record
//! (`memcpy`, the least any producer of these bytes does).
//!
//! | id | what one iteration does, for 10,000 records |
//! |---|---|
//! | `KIND/natural/memcpy` | appends each pre-generated record and a newline to a reused buffer |
//! | `KIND/natural/generate` | `Corpus::next_into` and a newline into a reused buffer |
//! | `access_log/100B/...`, `access_log/1KiB/...` | the same with the size knob |
//!
//! criterion reports MB/s of record bytes. Each routine also records its
//! own iteration times; the summary printed at the end gives the median in
//! MB/s and records/s and the ratio to the memcpy of the same records, all
//! measured in this process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shipper_core::corpus::{Corpus, CorpusKind};

const RECORDS: u64 = 10_000;
const SEED: u64 = 0x0053_4849_5050_4552;

/// Median iteration time per benchmark id, measured inside the routines.
#[derive(Default)]
struct Probe {
    samples: RefCell<BTreeMap<String, Vec<Duration>>>,
}

impl Probe {
    fn time<F: FnMut() -> usize>(&self, id: &str, iters: u64, mut routine: F) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(routine());
        }
        let elapsed = start.elapsed();
        if iters > 0 {
            self.samples
                .borrow_mut()
                .entry(id.to_owned())
                .or_default()
                .push(elapsed / iters as u32);
        }
        elapsed
    }

    fn median(&self, id: &str) -> Option<Duration> {
        let mut samples = self.samples.borrow().get(id)?.clone();
        samples.sort_unstable();
        samples.get(samples.len() / 2).copied()
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let probe = Probe::default();
    let cases: Vec<(String, Corpus)> = vec![
        (
            "access_log/natural".to_owned(),
            Corpus::new(CorpusKind::AccessLog, SEED),
        ),
        (
            "access_log/100B".to_owned(),
            Corpus::new(CorpusKind::AccessLog, SEED).with_record_bytes(100),
        ),
        (
            "access_log/1KiB".to_owned(),
            Corpus::new(CorpusKind::AccessLog, SEED).with_record_bytes(1024),
        ),
        (
            "events/natural".to_owned(),
            Corpus::new(CorpusKind::Events, SEED),
        ),
        ("iot/natural".to_owned(), Corpus::new(CorpusKind::Iot, SEED)),
    ];

    let mut rows = Vec::new();
    let mut out = Vec::with_capacity(16 << 20);
    for (name, corpus) in &cases {
        // The same records, generated once, for the baseline.
        let mut records = Vec::with_capacity(RECORDS as usize);
        let mut generator = corpus.clone();
        for _ in 0..RECORDS {
            let mut record = Vec::new();
            generator.next_into(&mut record);
            records.push(record);
        }
        let bytes: usize = records.iter().map(Vec::len).sum();
        let mut group = criterion.benchmark_group(name.as_str());
        group.throughput(Throughput::Bytes(bytes as u64));
        let memcpy_id = format!("{name}/memcpy");
        group.bench_function("memcpy", |b| {
            b.iter_custom(|iters| {
                probe.time(&memcpy_id, iters, || {
                    out.clear();
                    for record in &records {
                        out.extend_from_slice(black_box(record));
                        out.push(b'\n');
                    }
                    black_box(&out).len()
                })
            })
        });
        let generate_id = format!("{name}/generate");
        group.bench_function("generate", |b| {
            b.iter_custom(|iters| {
                probe.time(&generate_id, iters, || {
                    // The same records each iteration.
                    let mut generator = corpus.clone();
                    out.clear();
                    for _ in 0..RECORDS {
                        generator.next_into(&mut out);
                        out.push(b'\n');
                    }
                    black_box(&out).len()
                })
            })
        });
        group.finish();
        assert_eq!(out.len(), bytes + RECORDS as usize, "{name}: same bytes");
        rows.push((name.clone(), memcpy_id, generate_id, bytes));
    }

    println!();
    println!(
        "{:<28} {:>7} {:>10} {:>12} {:>12} {:>10}",
        "corpus (median)", "B/rec", "MB/s", "Mrecords/s", "memcpy MB/s", "x memcpy"
    );
    for (name, memcpy_id, generate_id, bytes) in rows {
        let (Some(memcpy), Some(generate)) = (probe.median(&memcpy_id), probe.median(&generate_id))
        else {
            continue; // filtered out on the command line
        };
        let seconds = generate.as_secs_f64();
        println!(
            "{:<28} {:>7} {:>10.0} {:>12.2} {:>12.0} {:>10.3}",
            name,
            bytes / RECORDS as usize,
            bytes as f64 / seconds / 1e6,
            RECORDS as f64 / seconds / 1e6,
            bytes as f64 / memcpy.as_secs_f64() / 1e6,
            memcpy.as_secs_f64() / seconds,
        );
    }
    println!("(ratio = generation throughput / memcpy of the same records, same run)");
}
