//! `Ingestor::insert` latency and throughput (issue 5's benchmark):
//! a ~150-byte object, 1, 2 and 4 inserting threads, `durability =
//! "interval"`, a blackhole sink. One insert in 16, picked at random, is
//! timed alone (the cost of reading the clock twice, measured in the same
//! run, is printed next to the figures; the untimed inserts keep it out of
//! the throughput). The baselines, one thread, same objects: serializing
//! with serde_json into a reused buffer (what an insert would cost with
//! nothing else to do), and the `#[derive(Ingest)]` JSON writer alone.
//! The 1-thread run is repeated with the object's `Serialize` impl
//! writing (`#[ingest(serde)]`), to show what the derive's writer buys.
//!
//! `cargo bench -p shipper --bench ingest` (`SHIPPER_INGEST_INSERTS` per
//! thread, default 2,000,000); `cargo test --benches` runs a short smoke
//! version.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shipper::ingest::{Ingest, Ingestor};

/// The object, its JSON written by `#[derive(Ingest)]`.
#[derive(serde::Serialize, Ingest)]
#[ingest(stream = "weather")]
struct Reading {
    ts: u64,
    device: String,
    site: &'static str,
    temperature: f64,
    humidity: f64,
    pressure: f64,
    battery: f64,
    status: &'static str,
}

/// The same object, its JSON written by its `Serialize` impl.
#[derive(serde::Serialize, Ingest)]
#[ingest(stream = "weather", serde)]
struct ViaSerde(Reading);

fn reading(seq: u64) -> Reading {
    Reading {
        ts: 1_795_000_000_000 + seq,
        device: format!("sensor-{:04}", seq % 1000),
        site: "plant-north",
        temperature: 18.0 + (seq % 170) as f64 / 10.0,
        humidity: 40.0 + (seq % 300) as f64 / 10.0,
        pressure: 1000.0 + (seq % 400) as f64 / 10.0,
        battery: 3.0 + (seq % 12) as f64 / 10.0,
        status: "ok",
    }
}

struct Run {
    writer: &'static str,
    threads: usize,
    inserts: u64,
    seconds: f64,
    /// The timed inserts' latencies, sorted.
    latencies: Vec<u32>,
}

impl Run {
    fn percentile(&self, p: f64) -> u32 {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }
}

/// The objects for `threads` threads: built before the clock starts, as
/// building them is the application's work, not the insert's.
fn objects<T>(threads: usize, per_thread: u64, make: impl Fn(Reading) -> T) -> Vec<Vec<T>> {
    (0..threads as u64)
        .map(|t| {
            (0..per_thread)
                .map(|i| make(reading(t * per_thread + i)))
                .collect()
        })
        .collect()
}

fn run<T: Ingest + Sync>(writer: &'static str, objects: Vec<Vec<T>>) -> Run {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = format!(
        r#"data_dir = "{}"
[log]
durability = "interval"
[sources.app]
type = "sdk"
[sinks.void]
type = "blackhole"
inputs = ["app"]
"#,
        dir.path().join("data").display()
    );
    let ingestor = Ingestor::open_toml(&config).expect("an ingestor");
    let started = Instant::now();
    let mut latencies: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = objects
            .iter()
            .enumerate()
            .map(|(thread, objects)| {
                let ingestor = ingestor.clone();
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(objects.len() / 8);
                    // xorshift: which inserts are timed, about one in 16.
                    let mut pick = 0x9e37_79b9_7f4a_7c15_u64 ^ thread as u64;
                    for object in objects {
                        pick ^= pick << 13;
                        pick ^= pick >> 7;
                        pick ^= pick << 17;
                        if pick & 15 == 0 {
                            let before = Instant::now();
                            ingestor.insert(object).expect("insert");
                            latencies
                                .push(before.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                        } else {
                            ingestor.insert(object).expect("insert");
                        }
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("an inserting thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let uploaded = ingestor
            .wait_for_upload(Duration::from_secs(120))
            .await
            .expect("wait for upload");
        assert!(uploaded, "the blackhole acknowledged everything");
        ingestor.close().await.expect("close");
    });
    Run {
        writer,
        threads: objects.len(),
        inserts: objects.iter().map(|o| o.len() as u64).sum(),
        seconds,
        latencies,
    }
}

/// Writing the objects' JSON alone, one thread, with serde_json and with
/// the derived writer: objects per second, and the JSON's size.
fn serialize_baselines(count: u64) -> (f64, f64, usize) {
    let objects: Vec<Reading> = (0..count).map(reading).collect();
    let mut buffer = Vec::with_capacity(1024);
    let mut bytes = 0;
    let started = Instant::now();
    for object in &objects {
        buffer.clear();
        serde_json::to_writer(&mut buffer, object).expect("serializes");
        bytes += black_box(&buffer).len();
    }
    let serde = count as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for object in &objects {
        buffer.clear();
        object.write_json(&mut buffer).expect("writes");
        black_box(&buffer);
    }
    let derived = count as f64 / started.elapsed().as_secs_f64();
    (serde, derived, bytes / count as usize)
}

/// What reading the clock twice costs, in nanoseconds (median of many).
fn clock_cost() -> u32 {
    let mut samples: Vec<u32> = (0..100_000)
        .map(|_| {
            let before = Instant::now();
            black_box(());
            before.elapsed().as_nanos() as u32
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let per_thread = std::env::var("SHIPPER_INGEST_INSERTS")
        .ok()
        .map(|v| v.parse::<u64>().expect("SHIPPER_INGEST_INSERTS: a count"))
        .unwrap_or(if quick { 20_000 } else { 2_000_000 });
    let (serde, derived, object_bytes) = serialize_baselines(per_thread.min(1_000_000));
    let clock = clock_cost();
    println!();
    println!(
        "shipper ingest: {per_thread} inserts per thread of a {object_bytes}-byte JSON object, durability interval, blackhole sink{}",
        if quick { " — quick run, not a measurement" } else { "" }
    );
    println!(
        "baselines, one thread, JSON into a reused buffer: serde_json {:.2} M objects/s, \
         the derived writer {:.2} M/s ({:.2}×); timing an insert costs ~{clock} ns (in the \
         latencies below, not in the rates)",
        serde / 1e6,
        derived / 1e6,
        derived / serde,
    );
    println!();
    println!(
        "| threads | JSON by | inserts/s | ÷ serde_json alone | MB/s | p50 | p99 | p99.9 | max |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let runs = [
        run("derive", objects(1, per_thread, |r| r)),
        run("Serialize", objects(1, per_thread, ViaSerde)),
        run("derive", objects(2, per_thread, |r| r)),
        run("derive", objects(4, per_thread, |r| r)),
    ];
    for run in runs {
        let rate = run.inserts as f64 / run.seconds;
        println!(
            "| {} | {} | {:.2} M | {:.2} | {:.0} | {} ns | {} ns | {} ns | {:.1} ms |",
            run.threads,
            run.writer,
            rate / 1e6,
            rate / serde,
            rate * object_bytes as f64 / 1e6,
            run.percentile(0.50),
            run.percentile(0.99),
            run.percentile(0.999),
            f64::from(*run.latencies.last().unwrap_or(&0)) / 1e6,
        );
    }
    println!();
    println!("issue 5 target: ≥ 3 M inserts/s on one thread, p99 < 2 µs");
}
