//! Line splitting and syslog parsing throughput, next to a same-run
//! baseline: `memchr::memchr_iter` counting the newlines of the same
//! buffer (the least any line splitter must do).
//!
//! | id | what one iteration does |
//! |---|---|
//! | `baseline/memchr_count` | counts the `\n` of the corpus |
//! | `lines/whole` | `LineSplitter` over the corpus fed in one piece |
//! | `lines/64KiB_reads` | the same fed in 64 KiB pieces (lines span reads) |
//! | `lines/4KiB_reads_crlf` | 4 KiB pieces, `\r\n` endings stripped |
//! | `syslog/rfc5424`, `syslog/rfc3164` | `parse` of every line of a syslog corpus |
//! | `syslog/rfc5424_to_json` | `parse` + `write_json` of every line |
//!
//! criterion reports MB/s of corpus bytes. Each routine also records its
//! own iteration times; the summary printed at the end gives the median in
//! MB/s and lines/s and the ratio to the baseline's median, all measured in
//! this process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shipper_components::framing::lines::{CarriageReturn, LineOptions, LineSplitter};
use shipper_components::parse::syslog::{parse, write_json};

/// Corpus size: a few times the L2 cache, small enough to stay quick.
const CORPUS_BYTES: usize = 8 << 20;
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

const WORDS: [&str; 12] = [
    "GET",
    "/api/v1/orders",
    "status=200",
    "user=alice",
    "latency_ms=12",
    "cache=hit",
    "POST",
    "/login",
    "status=401",
    "retry",
    "upstream=10.0.3.7:8080",
    "bytes=5123",
];

fn message(rng: &mut Rng) -> String {
    let words = 4 + rng.below(10);
    (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

enum Shape {
    Rfc5424,
    Rfc3164,
}

/// Newline-terminated syslog lines of about 100-200 bytes.
fn corpus(shape: Shape, line_ending: &str) -> Vec<u8> {
    let mut rng = Rng(SEED);
    let mut out = Vec::with_capacity(CORPUS_BYTES + 512);
    while out.len() < CORPUS_BYTES {
        let priority = rng.below(192);
        let pid = rng.below(40_000);
        let second = rng.below(60);
        let text = message(&mut rng);
        let line = match shape {
            Shape::Rfc5424 => format!(
                "<{priority}>1 2024-05-01T10:00:{second:02}.{pid:06}Z web-{} app {pid} req [meta@32473 id=\"{pid}\" zone=\"eu\\]1\"] {text}",
                pid % 7
            ),
            Shape::Rfc3164 => format!(
                "<{priority}>May  1 10:00:{second:02} web-{} app[{pid}]: {text}",
                pid % 7
            ),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(line_ending.as_bytes());
    }
    out
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

fn split(splitter: &mut LineSplitter, corpus: &[u8], piece: usize) -> usize {
    let mut count = 0;
    for piece in corpus.chunks(piece) {
        let mut lines = splitter.feed(piece);
        while let Some(line) = lines.next() {
            black_box(line.bytes);
            count += 1;
        }
    }
    count + usize::from(splitter.finish().is_some())
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let probe = Probe::default();

    let lf = corpus(Shape::Rfc5424, "\n");
    let crlf = corpus(Shape::Rfc5424, "\r\n");
    let bsd = corpus(Shape::Rfc3164, "\n");
    let mut line_counts: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let newlines = |c: &[u8]| memchr::memchr_iter(b'\n', c).count();
    line_counts.insert("baseline/memchr_count", (lf.len(), newlines(&lf)));
    line_counts.insert("lines/whole", (lf.len(), newlines(&lf)));
    line_counts.insert("lines/64KiB_reads", (lf.len(), newlines(&lf)));
    line_counts.insert("lines/4KiB_reads_crlf", (crlf.len(), newlines(&crlf)));
    line_counts.insert("syslog/rfc5424", (lf.len(), newlines(&lf)));
    line_counts.insert("syslog/rfc5424_to_json", (lf.len(), newlines(&lf)));
    line_counts.insert("syslog/rfc3164", (bsd.len(), newlines(&bsd)));

    let mut group = criterion.benchmark_group("framing");
    group.throughput(Throughput::Bytes(lf.len() as u64));
    group.bench_function("baseline/memchr_count", |b| {
        b.iter_custom(|iters| {
            probe.time("baseline/memchr_count", iters, || {
                memchr::memchr_iter(b'\n', black_box(&lf)).count()
            })
        })
    });
    let mut splitter = LineSplitter::new(LineOptions::default());
    group.bench_function("lines/whole", |b| {
        b.iter_custom(|iters| {
            probe.time("lines/whole", iters, || {
                split(&mut splitter, black_box(&lf), lf.len())
            })
        })
    });
    group.bench_function("lines/64KiB_reads", |b| {
        b.iter_custom(|iters| {
            probe.time("lines/64KiB_reads", iters, || {
                split(&mut splitter, black_box(&lf), 64 << 10)
            })
        })
    });
    group.throughput(Throughput::Bytes(crlf.len() as u64));
    let mut crlf_splitter = LineSplitter::new(LineOptions {
        carriage_return: CarriageReturn::Strip,
        ..LineOptions::default()
    });
    group.bench_function("lines/4KiB_reads_crlf", |b| {
        b.iter_custom(|iters| {
            probe.time("lines/4KiB_reads_crlf", iters, || {
                split(&mut crlf_splitter, black_box(&crlf), 4 << 10)
            })
        })
    });

    let rfc5424_lines: Vec<&[u8]> = lf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let rfc3164_lines: Vec<&[u8]> = bsd
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        rfc5424_lines.iter().all(|l| parse(l).is_ok()),
        "the RFC 5424 corpus parses"
    );
    assert!(
        rfc3164_lines.iter().all(|l| parse(l).is_ok()),
        "the RFC 3164 corpus parses"
    );
    group.throughput(Throughput::Bytes(lf.len() as u64));
    group.bench_function("syslog/rfc5424", |b| {
        b.iter_custom(|iters| {
            probe.time("syslog/rfc5424", iters, || {
                rfc5424_lines
                    .iter()
                    .filter_map(|line| parse(black_box(line)).ok())
                    .map(|s| s.message.len())
                    .sum()
            })
        })
    });
    let mut json = Vec::with_capacity(1 << 10);
    group.bench_function("syslog/rfc5424_to_json", |b| {
        b.iter_custom(|iters| {
            probe.time("syslog/rfc5424_to_json", iters, || {
                let mut total = 0;
                for line in &rfc5424_lines {
                    if let Ok(syslog) = parse(black_box(line)) {
                        json.clear();
                        write_json(&syslog, &mut json);
                        total += json.len();
                    }
                }
                total
            })
        })
    });
    group.throughput(Throughput::Bytes(bsd.len() as u64));
    group.bench_function("syslog/rfc3164", |b| {
        b.iter_custom(|iters| {
            probe.time("syslog/rfc3164", iters, || {
                rfc3164_lines
                    .iter()
                    .filter_map(|line| parse(black_box(line)).ok())
                    .map(|s| s.message.len())
                    .sum()
            })
        })
    });
    group.finish();

    let Some(baseline) = probe.median("baseline/memchr_count") else {
        return; // e.g. filtered out on the command line
    };
    let baseline_mbps = lf.len() as f64 / baseline.as_secs_f64() / 1e6;
    println!();
    println!(
        "{:<26} {:>10} {:>12} {:>14}",
        "benchmark (median)", "MB/s", "Mlines/s", "x baseline"
    );
    for (id, (bytes, lines)) in &line_counts {
        let Some(median) = probe.median(id) else {
            continue;
        };
        let seconds = median.as_secs_f64();
        let mbps = *bytes as f64 / seconds / 1e6;
        println!(
            "{:<26} {:>10.0} {:>12.2} {:>14.3}",
            id,
            mbps,
            *lines as f64 / seconds / 1e6,
            mbps / baseline_mbps
        );
    }
    println!(
        "(corpora: {} MiB of ~{} B lines; ratio = MB/s of the figure / MB/s of memchr_iter counting newlines, same run)",
        CORPUS_BYTES >> 20,
        lf.len() / newlines(&lf).max(1)
    );
}
