//! criterion benchmarks of the chunk path and the log, each next to a
//! baseline measured in the same run:
//!
//! | group | figure | baseline |
//! |---|---|---|
//! | `chunk` | `ChunkBuilder` push + close, zstd 1 and 3 | `zstd::bulk::compress` of the whole NDJSON buffer, same level (`sliced_zstd*`: zstd alone on 256 KiB slices, for the breakdown) |
//! | `append` | `Log::append` of closed chunks, durability never / interval 100 ms / always | write(2) of the same frames in 1 MiB pieces (+ one fdatasync for the durable policies) |
//! | `read` | reader + `decode_body` + iterate records | zstd decompression of the same bodies, reused context |
//! | `ingest` | build + append, one producer, interval 100 ms | `chunk/bulk_zstd1` |
//! | `always16` | 16 producers, append + `wait_durable` each chunk, durability always | write(2) of the same frames + fdatasync per 16 frames |
//!
//! For the CPU-bound `chunk` and `ingest` figures the baseline is timed
//! once more in criterion's untimed setup, right before each iteration of
//! the figure (ids ending in `[paired…]`); the summary's ratio uses that
//! paired baseline, so figure and baseline alternate and share the noise of
//! this shared machine. The I/O baselines of `append` are not paired: in
//! that setup the log's own threads (segment deletion, prefaulting) would
//! run alongside and slow the baseline, so they run on their own, before
//! the log is opened.
//!
//! After the groups a summary table of ratios is printed and written to
//! `target/shipper-bench-summary.json` (see `shipper_benches::Summary`).
//! Throughput counts raw record payload bytes (newlines excluded).

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use criterion::{black_box, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use shipper_benches::{
    build_chunks, chunk_options, concat_frames, load_average, measure_fdatasync, scratch_dir,
    Dataset, PlainFile, Probe, RecordSize, Row, Summary, Target, SEED,
};
use shipper_core::chunk::{decode_body, ChunkBuilder, Decoder};
use shipper_core::log::{Durability, Log, LogOptions};

/// Raw payload bytes per corpus (one benchmark iteration processes one corpus).
const CORPUS_BYTES: usize = 16 << 20;
/// The default segment size.
const SEGMENT_BYTES: u64 = 64 << 20;
/// A budget the benchmarks never reach: the cursor is committed before
/// every iteration, so passed segments are deleted.
const MAX_BYTES: u64 = 16 << 30;
const PRODUCERS: usize = 16;
const CURSOR: &str = "bench";
const INTERVAL: Duration = Duration::from_millis(100);

fn log_options(durability: Durability) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_bytes: MAX_BYTES,
        durability,
        ..LogOptions::default()
    }
}

/// Lets the log delete every segment appended so far (outside the timing).
fn release(log: &Log) {
    log.commit_cursor(CURSOR, log.next_offset())
        .expect("committing the bench cursor");
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let scratch = scratch_dir().expect("creating a scratch directory under target/");
    let mut summary = Summary::default();
    summary
        .conditions
        .insert("load average at start".into(), load_average());
    describe_machine(&mut summary, scratch.path());

    let corpora = [
        Dataset::generate(RecordSize::Small, CORPUS_BYTES, SEED),
        Dataset::generate(RecordSize::Large, CORPUS_BYTES, SEED),
    ];
    for corpus in &corpora {
        let label = corpus.size().label();
        summary.conditions.insert(
            format!("corpus {label}"),
            format!(
                "{} records, {:.1} B mean, {:.1} MiB payload",
                corpus.record_count(),
                corpus.mean_record_bytes(),
                corpus.raw_bytes() as f64 / (1 << 20) as f64
            ),
        );
        for level in [1, 3] {
            let chunks = build_chunks(corpus, level);
            let stored: usize = chunks.iter().map(|c| c.frame_len()).sum();
            let whole = zstd::bulk::compress(corpus.ndjson(), level)
                .expect("zstd")
                .len();
            summary.conditions.insert(
                format!("chunks {label} zstd {level}"),
                format!(
                    "{} chunks of 256 KiB, compression ratio {:.2} (payload / stored frames); one call over the whole corpus {:.2}",
                    chunks.len(),
                    corpus.raw_bytes() as f64 / stored as f64,
                    corpus.raw_bytes() as f64 / whole as f64
                ),
            );
        }
    }

    chunk_group(&mut criterion, &corpora, &mut summary);
    append_group(&mut criterion, &corpora, scratch.path(), &mut summary);
    read_group(&mut criterion, &corpora, scratch.path(), &mut summary);
    ingest_group(&mut criterion, &corpora, scratch.path(), &mut summary);
    always16_group(&mut criterion, &corpora[0], scratch.path(), &mut summary);
    match measure_fdatasync(scratch.path(), 100) {
        Ok(latency) => summary.fdatasync = Some(latency),
        Err(error) => eprintln!("fdatasync probe failed: {error}"),
    }
    summary
        .conditions
        .insert("load average at end".into(), load_average());

    criterion.final_summary();
    if let Err(error) = summary.report() {
        eprintln!("writing the summary failed: {error}");
    }
}

fn describe_machine(summary: &mut Summary, scratch: &Path) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    summary.conditions.insert("cpus".into(), cpus.to_string());
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        summary
            .conditions
            .insert("kernel".into(), kernel.trim().to_owned());
    }
    summary
        .conditions
        .insert("scratch dir".into(), scratch.display().to_string());
    if let Ok(out) = std::process::Command::new("df")
        .arg("-hT")
        .arg(scratch)
        .output()
    {
        if let Some(line) = String::from_utf8_lossy(&out.stdout).lines().nth(1) {
            summary.conditions.insert(
                "scratch filesystem (df -hT)".into(),
                line.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
    }
}

/// Records how often and how long the log flushed during a benchmark
/// (warm-up included), to tell flush cost from the rest.
fn describe_flushes(summary: &mut Summary, id: &str, log: &Log) {
    let metrics = log.metrics();
    // Segments the cursor let the log delete, still mapped by this process
    // (their disk space is not free until unmapped).
    let held = std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| {
        maps.lines()
            .filter(|line| {
                line.contains(&*log.dir().to_string_lossy()) && line.ends_with("(deleted)")
            })
            .count()
    });
    if held > 0 {
        summary.conditions.insert(
            format!("{id} deleted segments still mapped"),
            format!("{held} mappings of deleted segment files before close"),
        );
    }
    summary.conditions.insert(
        format!("{id} log flushes"),
        format!(
            "{} chunks, {} flushes ({:.1} chunks per flush, mean {:.3} ms per flush), {} segments created",
            metrics.chunks_appended,
            metrics.flushes,
            metrics.chunks_appended as f64 / metrics.flushes.max(1) as f64,
            metrics.flush_nanos as f64 / metrics.flushes.max(1) as f64 / 1e6,
            metrics.segments_created
        ),
    );
}

/// The chunk figure: every record pushed, the last chunk closed.
fn build_all(builder: &mut ChunkBuilder, corpus: &Dataset) -> usize {
    let mut stored = 0;
    for (i, record) in corpus.records().enumerate() {
        if let Some(chunk) = builder.push(record, i as u64, None).expect("push") {
            stored += black_box(chunk).frame_len();
        }
    }
    if let Some(chunk) = builder.finish().expect("finish") {
        stored += black_box(chunk).frame_len();
    }
    stored
}

/// The chunk baseline: zstd over the whole NDJSON buffer in one call.
fn bulk_compress(corpus: &Dataset, level: i32) -> usize {
    zstd::bulk::compress(black_box(corpus.ndjson()), level)
        .expect("zstd")
        .len()
}

fn chunk_group(criterion: &mut Criterion, corpora: &[Dataset], summary: &mut Summary) {
    let mut group = criterion.benchmark_group("chunk");
    group.sampling_mode(SamplingMode::Flat);
    for corpus in corpora {
        let label = corpus.size().label();
        group.throughput(Throughput::Bytes(corpus.raw_bytes()));
        for level in [1, 3] {
            let figure = Probe::new(
                format!("chunk/builder_zstd{level}/{label}"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            let mut builder =
                ChunkBuilder::new("bench", "corpus", chunk_options(level)).expect("valid options");
            // The baseline again, timed in criterion's (untimed) setup right
            // before each iteration of the figure: the two alternate, so
            // the ratio sees the same machine noise.
            let paired = Probe::new(
                format!("chunk/bulk_zstd{level}/{label} [paired]"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            group.bench_function(
                BenchmarkId::new(format!("builder_zstd{level}"), label),
                |b| {
                    b.iter_batched(
                        || paired.time(|| bulk_compress(corpus, level)),
                        |_| figure.time(|| build_all(&mut builder, corpus)),
                        BatchSize::PerIteration,
                    )
                },
            );
            let baseline = Probe::new(
                format!("chunk/bulk_zstd{level}/{label}"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            group.bench_function(BenchmarkId::new(format!("bulk_zstd{level}"), label), |b| {
                b.iter(|| baseline.time(|| bulk_compress(corpus, level)))
            });
            // Decomposition, not a row: zstd alone on 256 KiB slices with a
            // reused context separates what chunking costs zstd from what
            // the builder adds on top.
            let sliced = Probe::new(
                format!("chunk/sliced_zstd{level}/{label}"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            let mut compressor = zstd::bulk::Compressor::new(level).expect("zstd context");
            let mut output = vec![0; zstd::zstd_safe::compress_bound(256 << 10)];
            group.bench_function(
                BenchmarkId::new(format!("sliced_zstd{level}"), label),
                |b| {
                    b.iter(|| {
                        sliced.time(|| {
                            let mut stored = 0;
                            for slice in corpus.ndjson().chunks(256 << 10) {
                                stored += compressor
                                    .compress_to_buffer(slice, &mut output[..])
                                    .expect("zstd");
                            }
                            stored
                        })
                    })
                },
            );
            summary.rows.push(Row::new(
                figure.id(),
                paired.id(),
                Target::Ratio(0.85),
                "ChunkBuilder push + close into 256 KiB chunks vs one zstd::bulk::compress call over the whole NDJSON buffer, same level (design: ~97%)",
            ));
        }
    }
    group.finish();
}

fn append_group(
    criterion: &mut Criterion,
    corpora: &[Dataset],
    scratch: &Path,
    summary: &mut Summary,
) {
    let mut group = criterion.benchmark_group("append");
    group.sampling_mode(SamplingMode::Flat);
    for corpus in corpora {
        let label = corpus.size().label();
        group.throughput(Throughput::Bytes(corpus.raw_bytes()));
        let frames = concat_frames(&build_chunks(corpus, 1));

        for (name, synced) in [("write", false), ("write_fdatasync", true)] {
            let probe = Probe::new(
                format!("append/{name}/{label}"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            let path = scratch.join(format!("{name}-{label}.dat"));
            let file = RefCell::new(
                PlainFile::create(&path, SEGMENT_BYTES).expect("creating the baseline file"),
            );
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_batched(
                    || {
                        file.borrow_mut()
                            .recycle()
                            .expect("truncating the baseline file")
                    },
                    |()| {
                        probe.time(|| {
                            let mut file = file.borrow_mut();
                            file.write(&frames).expect("write(2)");
                            if synced {
                                file.sync().expect("fdatasync");
                            }
                        })
                    },
                    BatchSize::PerIteration,
                )
            });
            let (syncs, mean) = file.borrow().sync_stats();
            if syncs > 0 {
                summary.conditions.insert(
                    format!("append/{name}/{label} fdatasync"),
                    format!("{syncs} calls, mean {:.3} ms", mean.as_secs_f64() * 1e3),
                );
            }
            drop(file);
            let _ = std::fs::remove_file(&path);
        }

        for (name, durability, baseline) in [
            ("log_never", Durability::Never, "write"),
            (
                "log_interval100ms",
                Durability::Interval(INTERVAL),
                "write_fdatasync",
            ),
            ("log_always", Durability::Always, "write_fdatasync"),
        ] {
            let probe = Probe::new(
                format!("append/{name}/{label}"),
                corpus.record_count(),
                corpus.raw_bytes(),
            );
            let dir = scratch.join(format!("{name}-{label}"));
            let log = Log::open(&dir, log_options(durability)).expect("opening the log");
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_batched(
                    || {
                        release(&log);
                        build_chunks(corpus, 1)
                    },
                    |chunks| {
                        probe.time(|| {
                            let mut last = None;
                            for chunk in chunks {
                                last = Some(log.append(chunk).expect("append"));
                            }
                            let last = last.expect("at least one chunk");
                            match durability {
                                Durability::Never => last.wait(),
                                Durability::Interval(_) => {
                                    let range = last.wait();
                                    log.flush().expect("flush");
                                    range
                                }
                                Durability::Always => last.wait_durable(),
                            }
                            .expect("appended")
                        })
                    },
                    BatchSize::PerIteration,
                )
            });
            describe_flushes(summary, &format!("append/{name}/{label}"), &log);
            log.close().expect("closing the log");
            let _ = std::fs::remove_dir_all(&dir);
            let note = match durability {
                Durability::Never => "Log::append of closed zstd-1 chunks, wait until written (no flush) vs write(2) of the same frames in 1 MiB pieces (design: prefaulted mmap ~1.5x write(2))",
                Durability::Interval(_) => "Log::append, then log.flush() once at the end vs write(2) 1 MiB pieces + one fdatasync",
                Durability::Always => "Log::append pipelined from one producer, wait_durable on the last ticket (the writer flushes per group) vs write(2) 1 MiB pieces + one fdatasync",
            };
            let target = match durability {
                // The target: append of closed chunks with `never`
                // at >= 80% of write(2). Flushed policies are reported.
                Durability::Never => Target::Ratio(0.80),
                _ => Target::Report,
            };
            summary.rows.push(Row::new(
                probe.id(),
                format!("append/{baseline}/{label}"),
                target,
                note,
            ));
        }
    }
    group.finish();
}

fn read_group(
    criterion: &mut Criterion,
    corpora: &[Dataset],
    scratch: &Path,
    summary: &mut Summary,
) {
    let mut group = criterion.benchmark_group("read");
    group.sampling_mode(SamplingMode::Flat);
    for corpus in corpora {
        let label = corpus.size().label();
        group.throughput(Throughput::Bytes(corpus.raw_bytes()));
        let dir = scratch.join(format!("read-{label}"));
        let log = Log::open(&dir, log_options(Durability::Never)).expect("opening the log");
        let mut last = None;
        for chunk in build_chunks(corpus, 1) {
            last = Some(log.append(chunk).expect("append"));
        }
        last.expect("chunks").wait().expect("appended");
        log.flush().expect("flush");
        let bodies: Vec<Vec<u8>> = log
            .reader(0)
            .map(|stored| stored.expect("stored chunk").view().body().to_vec())
            .collect();

        let figure = Probe::new(
            format!("read/log_reader_decode/{label}"),
            corpus.record_count(),
            corpus.raw_bytes(),
        );
        let mut decoder = Decoder::default();
        group.bench_function(BenchmarkId::new("log_reader_decode", label), |b| {
            b.iter(|| {
                figure.time(|| {
                    let mut total = 0;
                    for stored in log.reader(0) {
                        let stored = stored.expect("stored chunk");
                        let view = stored.view();
                        let body = decode_body(&view, &mut decoder).expect("decode");
                        for record in body.records() {
                            total += black_box(record.expect("record")).len();
                        }
                    }
                    assert_eq!(total as u64, corpus.raw_bytes());
                    total
                })
            })
        });

        let baseline = Probe::new(
            format!("read/zstd_decompress/{label}"),
            corpus.record_count(),
            corpus.raw_bytes(),
        );
        let mut context = zstd::bulk::Decompressor::new().expect("zstd context");
        let mut buffer = Vec::with_capacity(1 << 20);
        group.bench_function(BenchmarkId::new("zstd_decompress", label), |b| {
            b.iter(|| {
                baseline.time(|| {
                    let mut total = 0;
                    for body in &bodies {
                        buffer.clear();
                        total += context
                            .decompress_to_buffer(body, &mut buffer)
                            .expect("zstd");
                    }
                    total
                })
            })
        });
        log.close().expect("closing the log");
        let _ = std::fs::remove_dir_all(&dir);
        summary.rows.push(Row::new(
            figure.id(),
            baseline.id(),
            Target::Report,
            "reader from offset 0 (CRC-checked parse) + decode_body + iterate records vs zstd decompression of the same bodies with a reused context (design: decompression ~1,860 MB/s)",
        ));
    }
    group.finish();
}

fn ingest_group(
    criterion: &mut Criterion,
    corpora: &[Dataset],
    scratch: &Path,
    summary: &mut Summary,
) {
    let mut group = criterion.benchmark_group("ingest");
    group.sampling_mode(SamplingMode::Flat);
    for corpus in corpora {
        let label = corpus.size().label();
        group.throughput(Throughput::Bytes(corpus.raw_bytes()));
        let dir = scratch.join(format!("ingest-{label}"));
        let log =
            Log::open(&dir, log_options(Durability::Interval(INTERVAL))).expect("opening the log");
        let mut builder =
            ChunkBuilder::new("bench", "ingest", chunk_options(1)).expect("valid options");
        let probe = Probe::new(
            format!("ingest/build_append_interval/{label}"),
            corpus.record_count(),
            corpus.raw_bytes(),
        );
        let paired = Probe::new(
            format!("chunk/bulk_zstd1/{label} [paired with ingest]"),
            corpus.record_count(),
            corpus.raw_bytes(),
        );
        group.bench_function(BenchmarkId::new("build_append_interval", label), |b| {
            b.iter_batched(
                || {
                    release(&log);
                    paired.time(|| bulk_compress(corpus, 1))
                },
                |_| {
                    probe.time(|| {
                        let mut last = None;
                        for (i, record) in corpus.records().enumerate() {
                            if let Some(chunk) = builder.push(record, i as u64, None).expect("push")
                            {
                                last = Some(log.append(chunk).expect("append"));
                            }
                        }
                        if let Some(chunk) = builder.finish().expect("finish") {
                            last = Some(log.append(chunk).expect("append"));
                        }
                        last.expect("chunks").wait().expect("appended")
                    })
                },
                BatchSize::PerIteration,
            )
        });
        log.close().expect("closing the log");
        let _ = std::fs::remove_dir_all(&dir);
        let baseline = paired.id();
        match corpus.size() {
            RecordSize::Small => summary.rows.push(Row::new(
                probe.id(),
                baseline,
                Target::RecordsPerSec(2e6),
                "one producer thread: push + close (zstd 1) + Log::append, durability interval 100 ms, wait until written; baseline one-call zstd 1 (the only real cost)",
            )),
            RecordSize::Large => summary.rows.push(Row::new(
                probe.id(),
                baseline,
                Target::Report,
                "as above with 1 KiB records (design: one thread read+chunk+append ~0.87 of one-call zstd 1)",
            )),
        }
    }
    group.finish();
}

fn always16_group(
    criterion: &mut Criterion,
    corpus: &Dataset,
    scratch: &Path,
    summary: &mut Summary,
) {
    let mut group = criterion.benchmark_group("always16");
    group.sampling_mode(SamplingMode::Flat);
    let label = corpus.size().label();
    group.throughput(Throughput::Bytes(corpus.raw_bytes()));
    let parts = corpus.split(PRODUCERS);

    let dir = scratch.join(format!("always16-{label}"));
    let log = Log::open(&dir, log_options(Durability::Always)).expect("opening the log");
    let figure = Probe::new(
        format!("always16/log_wait_durable/{label}"),
        corpus.record_count(),
        corpus.raw_bytes(),
    );
    group.bench_function(BenchmarkId::new("log_wait_durable", label), |b| {
        b.iter_batched(
            || {
                release(&log);
                parts
                    .iter()
                    .map(|part| build_chunks(part, 1))
                    .collect::<Vec<_>>()
            },
            |per_producer| {
                figure.time(|| {
                    std::thread::scope(|scope| {
                        for chunks in per_producer {
                            let log = &log;
                            scope.spawn(move || {
                                for chunk in chunks {
                                    log.append(chunk)
                                        .expect("append")
                                        .wait_durable()
                                        .expect("durable");
                                }
                            });
                        }
                    })
                })
            },
            BatchSize::PerIteration,
        )
    });
    describe_flushes(summary, figure.id(), &log);
    log.close().expect("closing the log");
    let _ = std::fs::remove_dir_all(&dir);

    // The same frames, one write(2) + fdatasync per 16 frames: perfect group commit.
    let chunks: Vec<_> = parts
        .iter()
        .flat_map(|part| build_chunks(part, 1))
        .collect();
    let groups: Vec<Vec<u8>> = chunks.chunks(PRODUCERS).map(concat_frames).collect();
    let path = scratch.join(format!("always16-{label}.dat"));
    let file =
        RefCell::new(PlainFile::create(&path, SEGMENT_BYTES).expect("creating the baseline file"));
    let baseline = Probe::new(
        format!("always16/write_fdatasync_per16/{label}"),
        corpus.record_count(),
        corpus.raw_bytes(),
    );
    group.bench_function(BenchmarkId::new("write_fdatasync_per16", label), |b| {
        b.iter_batched(
            || {
                file.borrow_mut()
                    .recycle()
                    .expect("truncating the baseline file")
            },
            |()| {
                baseline.time(|| {
                    let mut file = file.borrow_mut();
                    for frames in &groups {
                        file.write(frames).expect("write(2)");
                        file.sync().expect("fdatasync");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    let (syncs, mean) = file.borrow().sync_stats();
    summary.conditions.insert(
        format!("{} fdatasync", baseline.id()),
        format!("{syncs} calls, mean {:.3} ms", mean.as_secs_f64() * 1e3),
    );
    drop(file);
    let _ = std::fs::remove_file(&path);
    summary.rows.push(Row::new(
        figure.id(),
        baseline.id(),
        Target::RecordsPerSec(1e6),
        "16 producer threads, each append + wait_durable per 256 KiB chunk, durability always; baseline one thread writing the same frames with one fdatasync per 16 frames (ideal group commit)",
    ));
    group.finish();
}
