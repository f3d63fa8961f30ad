//! How long opening a log takes: `Log::open` on a clean 1 GiB data
//! directory (every segment header and chunk CRC checked), against reading
//! the same files with read(2) in the same run. Warm page cache.
//!
//! `cargo bench -p shipper-benches --bench recovery`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shipper_benches::scratch_dir;
use shipper_core::chunk::{ChunkBuilder, ChunkOptions, Compression};
use shipper_core::log::{Durability, Log, LogOptions};

/// Stored bytes to write: 1 GiB.
const LOG_BYTES: u64 = 1 << 30;

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::Never,
        ..LogOptions::default()
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let scratch = scratch_dir().expect("creating a scratch directory under target/");
    let dir = scratch.path().join("data");

    // Codec none keeps the set-up fast; the scan cost is per stored byte.
    let log = Log::open(&dir, options()).expect("opening the bench log");
    let chunk_options = ChunkOptions {
        compression: Compression::None,
        ..ChunkOptions::default()
    };
    let mut builder = ChunkBuilder::new("bench", "recovery", chunk_options).unwrap();
    let mut line = 0u64;
    while log.metrics().bytes_appended < LOG_BYTES {
        line += 1;
        let record = format!(
            r#"{{"seq":{line},"host":"web-{}","path":"/api/v1/items/{}","status":{},"bytes":{}}}"#,
            line % 17,
            line.wrapping_mul(2654435761) % 100_000,
            [200, 200, 200, 404, 500][line as usize % 5],
            line % 9000
        );
        if let Some(chunk) = builder.push(record.as_bytes(), line, None).unwrap() {
            log.append(chunk).unwrap();
        }
    }
    if let Some(chunk) = builder.finish().unwrap() {
        log.append(chunk).unwrap();
    }
    log.flush().expect("flushing the bench log");
    let records = log.next_offset();
    log.close().expect("closing the bench log");
    drop(log);
    let files: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let stored: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();

    let mut group = criterion.benchmark_group("recovery");
    group.throughput(Throughput::Bytes(stored));
    let mut open_times = Vec::new();
    group.bench_function("log_open_1GiB", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let log = Log::open(&dir, options()).expect("reopening");
                let elapsed = started.elapsed();
                assert!(log.recovery_report().is_clean());
                assert_eq!(log.next_offset(), records);
                log.close().unwrap();
                open_times.push(elapsed);
                total += elapsed;
            }
            total
        })
    });
    let mut read_times = Vec::new();
    group.bench_function("read_files_1GiB", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                for file in &files {
                    black_box(std::fs::read(file).unwrap());
                }
                let elapsed = started.elapsed();
                read_times.push(elapsed);
                total += elapsed;
            }
            total
        })
    });
    group.finish();
    criterion.final_summary();

    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let open = median(&mut open_times);
    let read = median(&mut read_times);
    println!(
        "\nrecovery: Log::open of {:.2} GiB ({} segments, {records} records): median {:.0} ms ({:.2} GB/s); \
         read(2) of the same files: {:.0} ms ({:.2} GB/s); open / read(2) throughput ratio {:.2}",
        stored as f64 / (1u64 << 30) as f64,
        files.len(),
        open.as_secs_f64() * 1e3,
        stored as f64 / open.as_secs_f64() / 1e9,
        read.as_secs_f64() * 1e3,
        stored as f64 / read.as_secs_f64() / 1e9,
        read.as_secs_f64() / open.as_secs_f64(),
    );
}
