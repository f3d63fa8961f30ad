//! End-to-end pipeline throughput: the file source and the TCP source, each
//! into the log and out through a blackhole consumer that commits its
//! cursor, for ~100-byte and ~1 KiB JSON lines.
//!
//! Each run reports records/s, raw MB/s, CPU seconds (user + system of the
//! whole process, so the TCP client is included) per GB and the peak RSS
//! above the in-memory corpus. Baselines on the same corpus in the same
//! run: memcpy, and zstd level 1 in one thread over 256 KiB pieces (the
//! chunk size): compression is the one cost the pipeline cannot avoid, so
//! the ratio to it says what everything else costs.
//!
//! `cargo bench -p shipper-benches --bench pipeline` (set
//! `SHIPPER_BENCH_MB` to change the corpus size, default 128).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use shipper_benches::{Dataset, RecordSize, SEED};
use shipper_components::sources::file::{FileOptions, FileSource};
use shipper_components::sources::socket::{
    Listen, SocketFraming, SocketOptions, SocketParse, SocketSource,
};
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Durability, Log, LogOptions};

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// (VmRSS, VmHWM) in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` 5).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Measured {
    seconds: f64,
    cpu: f64,
    peak_above: u64,
}

fn log_in(dir: &Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            durability: Durability::Interval(Duration::from_millis(100)),
            ..LogOptions::default()
        },
    )
    .unwrap()
}

/// Runs `source` until the blackhole consumer has acknowledged `records`.
fn run_pipeline(
    runtime: &tokio::runtime::Runtime,
    log: &Log,
    mut source: Box<dyn Source>,
    records: u64,
    feed: impl FnOnce() + Send + 'static,
) -> Measured {
    let (rss_before, _) = rss();
    reset_peak();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let shutdown = Shutdown::new();
    let mut cx = SourceContext {
        emitter: Emitter::new(log.clone(), "in", ChunkOptions::default()).unwrap(),
        shutdown: shutdown.clone(),
    };
    let task = runtime.spawn(async move { source.run(&mut cx).await });
    let feeder = std::thread::spawn(feed);
    // The blackhole: read durable chunks, count, commit the cursor.
    let mut reader = log.reader(0);
    let mut seen = 0;
    while seen < records {
        match reader.next() {
            Some(chunk) => {
                let chunk = chunk.unwrap();
                seen += chunk.end_offset() - chunk.first_offset();
                log.commit_cursor("blackhole", chunk.end_offset()).unwrap();
            }
            None => {
                reader.wait(Duration::from_millis(50)).unwrap();
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let (_, peak) = rss();
    shutdown.trigger();
    feeder.join().unwrap();
    runtime.block_on(task).unwrap().unwrap();
    Measured {
        seconds,
        cpu,
        peak_above: peak.saturating_sub(rss_before),
    }
}

fn zstd_baseline(corpus: &Dataset) -> f64 {
    let started = Instant::now();
    let mut compressor = zstd::bulk::Compressor::new(1).unwrap();
    let mut out = 0;
    for piece in corpus.ndjson().chunks(256 << 10) {
        out += compressor.compress(piece).unwrap().len();
    }
    assert!(out > 0);
    started.elapsed().as_secs_f64()
}

fn memcpy_baseline(corpus: &Dataset) -> f64 {
    let mut target = vec![0u8; corpus.ndjson().len()];
    let started = Instant::now();
    target.copy_from_slice(corpus.ndjson());
    std::hint::black_box(&target);
    started.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then
    // run a tiny corpus once, so the code is exercised but quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let megabytes: usize = std::env::var("SHIPPER_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 128 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<22} {:>10} {:>12} {:>9} {:>9} {:>10} {:>12} {:>11}",
        "pipeline",
        "records",
        "records/s",
        "MB/s",
        "CPU s/GB",
        "peak RSS",
        "÷ zstd-1 1T",
        "÷ memcpy"
    );
    for size in [RecordSize::Small, RecordSize::Large] {
        let corpus = Dataset::generate(size, megabytes << 20, SEED);
        let records = corpus.record_count();
        let raw = corpus.raw_bytes() as f64;
        let zstd = zstd_baseline(&corpus);
        let memcpy = memcpy_baseline(&corpus);
        for scenario in ["file", "tcp"] {
            let scratch = tempfile::tempdir().unwrap();
            let log = log_in(&scratch.path().join("data"));
            let measured = match scenario {
                "file" => {
                    let input = scratch.path().join("input.log");
                    std::fs::write(&input, corpus.ndjson()).unwrap();
                    let source = FileSource::new(
                        FileOptions {
                            include: vec![input.display().to_string()],
                            ..FileOptions::default()
                        },
                        "in",
                    )
                    .unwrap();
                    run_pipeline(&runtime, &log, Box::new(source), records, || {})
                }
                _ => {
                    let source = runtime
                        .block_on(SocketSource::bind(
                            SocketOptions {
                                listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                                framing: SocketFraming::Newline,
                                max_connections: 4,
                                idle_timeout: std::time::Duration::from_secs(300),
                                max_frame_bytes: 1 << 20,
                                parse: SocketParse::None,
                                tls: None,
                                socket_mode: 0o600,
                            },
                            "in",
                        ))
                        .unwrap();
                    let address = source.local_addr().unwrap();
                    let bytes = corpus.ndjson().to_vec();
                    run_pipeline(&runtime, &log, Box::new(source), records, move || {
                        let mut stream = std::net::TcpStream::connect(address).unwrap();
                        for piece in bytes.chunks(64 << 10) {
                            stream.write_all(piece).unwrap();
                        }
                    })
                }
            };
            log.close().unwrap();
            let mb_s = raw / measured.seconds / 1e6;
            println!(
                "{:<22} {:>10} {:>12.0} {:>9.1} {:>9.2} {:>8.1} MB {:>12.2} {:>11.3}",
                format!("{scenario} {}", size.label()),
                records,
                records as f64 / measured.seconds,
                mb_s,
                measured.cpu / (raw / 1e9),
                measured.peak_above as f64 / 1e6,
                zstd / measured.seconds,
                memcpy / measured.seconds,
            );
        }
    }
}
