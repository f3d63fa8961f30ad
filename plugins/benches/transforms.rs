//! Transform throughput over an NDJSON corpus, next to two same-run
//! baselines: copying every record (`memcpy`, the least a stage that
//! passes records on can do) and parsing every record into a
//! `serde_json::Value` (what a naive transform would do first).
//!
//! | id | what one iteration does, for every record |
//! |---|---|
//! | `baseline/memcpy` | appends the record to a reused buffer |
//! | `baseline/serde_json_value` | `serde_json::from_slice::<Value>` |
//! | `filter/equals_nested` | `http.status == 500`, keep |
//! | `filter/exists_missing` | `trace.id` exists (never does: scans the whole record) |
//! | `sample/counter` | 1 in 10 by counter (no parsing) |
//! | `sample/key` | 1 in 10 by `user.id` |
//! | `remap/rename_delete_redact_add` | one of each step |
//!
//! criterion reports MB/s of record bytes. Each routine also records its
//! own iteration times; the summary printed at the end gives the median in
//! MB/s and records/s and the ratios to both baselines, all measured in
//! this process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shipper_components::transform::{
    Condition, FieldValue, Filter, FilterAction, FilterOptions, Remap, RemapOptions, Sample,
    SampleOptions, Transform,
};

/// Corpus size: a few times the L2 cache, small enough to stay quick.
const CORPUS_BYTES: usize = 4 << 20;
const SEED: u64 = 0x0053_4849_5050_4552;

/// A tiny deterministic generator (xorshift*), so the corpus is fixed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: [&str; 5] = [
    "/api/v1/orders",
    "/login",
    "/api/v1/users/42",
    "/static/app.js",
    "/health",
];
const STATUSES: [u16; 5] = [200, 200, 201, 404, 500];

/// NDJSON records of about 250 bytes, as a web service might log them.
fn corpus() -> Vec<Vec<u8>> {
    let mut rng = Rng(SEED);
    let mut records = Vec::new();
    let mut total = 0;
    while total < CORPUS_BYTES {
        let record = format!(
            r#"{{"ts":"2024-05-01T10:00:{:02}.{:06}Z","level":"{}","msg":"request served in {} ms","http":{{"method":"GET","path":"{}","status":{},"bytes":{}}},"user":{{"id":"u{}","email":"user{}@example.com"}},"latency_ms":{}.{}}}"#,
            rng.below(60),
            rng.below(1_000_000),
            if rng.below(10) == 0 { "error" } else { "info" },
            rng.below(500),
            PATHS[rng.below(PATHS.len() as u64) as usize],
            STATUSES[rng.below(STATUSES.len() as u64) as usize],
            rng.below(100_000),
            rng.below(10_000),
            rng.below(10_000),
            rng.below(500),
            rng.below(1000),
        );
        total += record.len();
        records.push(record.into_bytes());
    }
    records
}

/// Median iteration time per benchmark id, measured inside the routines.
#[derive(Default)]
struct Probe {
    samples: RefCell<BTreeMap<&'static str, Vec<Duration>>>,
}

impl Probe {
    fn time<F: FnMut() -> usize>(&self, id: &'static str, iters: u64, mut routine: F) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(routine());
        }
        let elapsed = start.elapsed();
        if iters > 0 {
            self.samples
                .borrow_mut()
                .entry(id)
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

/// Runs `transform` over every record; the bytes passed on.
fn run(transform: &mut dyn Transform, records: &[Vec<u8>], scratch: &mut Vec<u8>) -> usize {
    records
        .iter()
        .filter_map(|record| {
            transform
                .apply(black_box(record), scratch)
                .bytes()
                .map(<[u8]>::len)
        })
        .sum()
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let probe = Probe::default();
    let records = corpus();
    let bytes: usize = records.iter().map(Vec::len).sum();

    let mut transforms: Vec<(&'static str, Box<dyn Transform>)> = vec![
        (
            "filter/equals_nested",
            Box::new(
                Filter::new(FilterOptions::new(
                    "http.status",
                    Condition::Equals(FieldValue::Integer(500)),
                    FilterAction::Keep,
                ))
                .expect("valid filter"),
            ),
        ),
        (
            "filter/exists_missing",
            Box::new(
                Filter::new(FilterOptions::new(
                    "trace.id",
                    Condition::Exists(true),
                    FilterAction::Drop,
                ))
                .expect("valid filter"),
            ),
        ),
        (
            "sample/counter",
            Box::new(
                Sample::new(SampleOptions {
                    rate: 10,
                    key: None,
                })
                .expect("valid sample"),
            ),
        ),
        (
            "sample/key",
            Box::new(
                Sample::new(SampleOptions {
                    rate: 10,
                    key: Some("user.id".to_owned()),
                })
                .expect("valid sample"),
            ),
        ),
        (
            "remap/rename_delete_redact_add",
            Box::new(
                Remap::new(RemapOptions {
                    rename: vec![("http.status".to_owned(), "status".to_owned())],
                    delete: vec!["ts".to_owned()],
                    redact: vec!["user.email".to_owned()],
                    add: vec![("env".to_owned(), FieldValue::String("prod".to_owned()))],
                    ..RemapOptions::default()
                })
                .expect("valid remap"),
            ),
        ),
    ];

    let mut group = criterion.benchmark_group("transforms");
    group.throughput(Throughput::Bytes(bytes as u64));
    let mut copy = Vec::with_capacity(64 << 10);
    group.bench_function("baseline/memcpy", |b| {
        b.iter_custom(|iters| {
            probe.time("baseline/memcpy", iters, || {
                records
                    .iter()
                    .map(|record| {
                        copy.clear();
                        copy.extend_from_slice(black_box(record));
                        black_box(&copy).len()
                    })
                    .sum()
            })
        })
    });
    group.bench_function("baseline/serde_json_value", |b| {
        b.iter_custom(|iters| {
            probe.time("baseline/serde_json_value", iters, || {
                records
                    .iter()
                    .filter_map(|record| {
                        serde_json::from_slice::<serde_json::Value>(black_box(record)).ok()
                    })
                    .map(|value| value.as_object().map_or(0, |object| object.len()))
                    .sum()
            })
        })
    });
    let mut scratch = Vec::with_capacity(64 << 10);
    for (id, transform) in &mut transforms {
        let id: &'static str = id;
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                probe.time(id, iters, || {
                    run(transform.as_mut(), &records, &mut scratch)
                })
            })
        });
    }
    group.finish();
    for (id, transform) in &transforms {
        let unreadable = transform
            .metrics()
            .iter()
            .find(|metric| metric.name == "shipper_transform_unreadable_records_total")
            .map_or(0, |metric| metric.value());
        assert_eq!(unreadable, 0, "{id}: the corpus is readable");
    }

    let (Some(memcpy), Some(parse)) = (
        probe.median("baseline/memcpy"),
        probe.median("baseline/serde_json_value"),
    ) else {
        return; // e.g. filtered out on the command line
    };
    println!();
    println!(
        "{:<32} {:>9} {:>11} {:>10} {:>10}",
        "benchmark (median)", "MB/s", "Mrecords/s", "x memcpy", "x parse"
    );
    let mut ids = vec!["baseline/memcpy", "baseline/serde_json_value"];
    ids.extend(transforms.iter().map(|(id, _)| *id));
    for id in ids {
        let Some(median) = probe.median(id) else {
            continue;
        };
        let seconds = median.as_secs_f64();
        println!(
            "{:<32} {:>9.0} {:>11.2} {:>10.3} {:>10.3}",
            id,
            bytes as f64 / seconds / 1e6,
            records.len() as f64 / seconds / 1e6,
            memcpy.as_secs_f64() / seconds,
            parse.as_secs_f64() / seconds,
        );
    }
    println!(
        "(corpus: {} records, {} MiB, ~{} B each; ratio = throughput / the baseline's, same run)",
        records.len(),
        bytes >> 20,
        bytes / records.len()
    );
}
