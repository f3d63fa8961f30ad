//! A transform built in against the same transform loaded as a plugin
//! library (issue 6's target: the dynamic one costs at most 10% more per
//! record). The transform is examples/plugins/redact (credit cards and
//! e-mail addresses), on ~100-byte JSON records of which one in four
//! holds something to redact. Both run behind the engine's `Transform`
//! trait, as the emitter calls them:
//!
//! * `built-in`: the redact crate linked into this binary;
//! * `dynamic`: `libshipper_redact.so`, built by this bench with cargo and
//!   loaded through the C ABI (one call per record, the replacement copied
//!   out of the plugin's buffer);
//! * `copy`: copying each record into a buffer, the same-run baseline.
//!
//! `cargo bench -p shipper-benches --bench plugin`; after criterion's
//! groups it prints dynamic ÷ built-in: the median ratio of many short
//! rounds that alternate the two.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shipper_benches::SEED;
use shipper_core::component::{Transform, TransformOutcome};
use shipper_redact::{Redact, RedactOptions};

/// The redact crate called directly, as a built-in transform would be.
struct BuiltIn(Redact);

impl Transform for BuiltIn {
    fn apply<'a>(&mut self, record: &'a [u8], scratch: &'a mut Vec<u8>) -> TransformOutcome<'a> {
        scratch.clear();
        if self.0.redact(record, scratch) {
            TransformOutcome::Replace(scratch)
        } else {
            TransformOutcome::Keep(record)
        }
    }
}

/// ~100-byte JSON records; one in four carries a card number or an e-mail.
fn records(count: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(SEED);
    (0..count)
        .map(|i| {
            let user: u32 = rng.random_range(1000..9999);
            let amount: u32 = rng.random_range(1..100_000);
            let record = match i % 8 {
                0 => format!(
                    r#"{{"ts":1795000000{i:06},"user":"u{user}@shop.example.com","event":"login","ok":true}}"#
                ),
                4 => format!(
                    r#"{{"ts":1795000000{i:06},"card":"4111 1111 1111 1111","amount":{amount},"ok":true}}"#
                ),
                _ => format!(
                    r#"{{"ts":1795000000{i:06},"user":{user},"event":"page_view","path":"/cart/{amount}","ok":true}}"#
                ),
            };
            record.into_bytes()
        })
        .collect()
}

/// Builds the plugin library (release) into this bench's target directory.
fn plugin_library() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench binary");
    // target/release/deps/<bench binary>
    let profile_dir = exe.parent().and_then(Path::parent).expect("a target dir");
    let target_dir = profile_dir.parent().expect("a target dir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "--lib",
            "-p",
            "shipper-redact",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("running cargo");
    assert!(
        built.status.success(),
        "building the redact plugin failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    target_dir.join("release/libshipper_redact.so")
}

/// Runs every record through `transform`; returns the bytes that go on.
fn run(transform: &mut dyn Transform, records: &[Vec<u8>], scratch: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for record in records {
        bytes += match transform.apply_record("events", 0, record, scratch) {
            TransformOutcome::Keep(kept) | TransformOutcome::Replace(kept) => kept.len(),
            TransformOutcome::Drop => 0,
        };
    }
    bytes
}

fn main() {
    let records = records(4096);
    let library = plugin_library();
    let plugin = shipper_plugin_host::load(&library).expect("the redact plugin loads");
    let mut built_in = BuiltIn(Redact::new(RedactOptions::default()));
    let mut dynamic = shipper_plugin_host::DynamicTransform::new("scrub", &plugin, "{}")
        .expect("an instance of the redact plugin");
    let mut scratch = Vec::with_capacity(256);
    // The two must agree before their speed means anything.
    for record in &records {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let left = format!("{:?}", built_in.apply_record("events", 0, record, &mut a));
        let right = format!("{:?}", dynamic.apply_record("events", 0, record, &mut b));
        assert_eq!(left, right, "built-in and dynamic disagree");
    }

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("transform/redact");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function(BenchmarkId::new("copy", "100B"), |b| {
        b.iter(|| {
            let mut bytes = 0;
            for record in &records {
                scratch.clear();
                scratch.extend_from_slice(record);
                bytes += black_box(&scratch).len();
            }
            bytes
        })
    });
    group.bench_function(BenchmarkId::new("built-in", "100B"), |b| {
        b.iter(|| run(&mut built_in, &records, &mut scratch))
    });
    group.bench_function(BenchmarkId::new("dynamic", "100B"), |b| {
        b.iter(|| run(&mut dynamic, &records, &mut scratch))
    });
    group.finish();
    if std::env::args().any(|arg| arg == "--test" || arg == "--list") {
        return;
    }

    // Many short rounds, alternating which side goes first; the median of
    // the per-round ratios: noise on this shared machine (it halves or
    // doubles both sides within seconds) hits both sides of a round alike.
    let rounds = 301;
    let passes = 4;
    let per_record = |transform: &mut dyn Transform, scratch: &mut Vec<u8>| {
        let started = Instant::now();
        for _ in 0..passes {
            black_box(run(transform, &records, scratch));
        }
        started.elapsed().as_nanos() as f64 / (passes * records.len()) as f64
    };
    let mut samples = Vec::new();
    for round in 0..rounds {
        let (built_in_ns, dynamic_ns) = if round % 2 == 0 {
            let b = per_record(&mut built_in, &mut scratch);
            (b, per_record(&mut dynamic, &mut scratch))
        } else {
            let d = per_record(&mut dynamic, &mut scratch);
            (per_record(&mut built_in, &mut scratch), d)
        };
        samples.push((dynamic_ns / built_in_ns, built_in_ns, dynamic_ns));
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ratio, built_in_ns, dynamic_ns) = samples[samples.len() / 2];
    let quartiles = (
        samples[samples.len() / 4].0,
        samples[samples.len() * 3 / 4].0,
    );
    println!();
    println!(
        "redact, {} records of ~{} bytes, median of {rounds} rounds: built-in {built_in_ns:.1} ns/record, dynamic {dynamic_ns:.1} ns/record; dynamic ÷ built-in = {ratio:.3} (quartiles {:.3}–{:.3}; target ≤ 1.10)",
        records.len(),
        records.iter().map(Vec::len).sum::<usize>() / records.len(),
        quartiles.0,
        quartiles.1,
    );
}
