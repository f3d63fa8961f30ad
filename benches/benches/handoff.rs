//! The channel hand-off between a source's emitter and the compression
//! pool: closed chunks (their bodies moved, not copied) go out to worker
//! threads and come back compressed on an unbounded channel, at most a few
//! in flight per emitter, as in `shipper_core::emit` (whose pool queue is
//! unbounded and whose emitter keeps at most 4 + one per thread in flight;
//! a bounded channel of depth 4 stands for that cap here). The baseline in
//! the same run is the standard library's `sync_channel` doing the same
//! round trip.
//!
//! `cargo bench -p shipper-benches --bench handoff`.

use std::hint::black_box;
use std::thread;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Chunks handed over per measured iteration.
const CHUNKS: u64 = 2_000;
/// Chunks one emitter has queued for the pool at most.
const DEPTH: usize = 4;

/// A closed chunk: its body moves through the channel, never copied (the
/// emitter reuses body buffers, so no allocation belongs in the loop
/// either: moving an empty Vec costs what moving a full one does).
fn chunk(seq: u64) -> (u64, Vec<u8>) {
    (seq, Vec::new())
}

/// `CHUNKS` chunks out to `workers` threads over crossbeam and back.
fn crossbeam_round_trip(workers: usize) -> u64 {
    let (jobs, job_rx) = crossbeam_channel::bounded::<(u64, Vec<u8>)>(DEPTH);
    let (done_tx, done) = crossbeam_channel::unbounded::<(u64, Vec<u8>)>();
    thread::scope(|scope| {
        for _ in 0..workers {
            let (job_rx, done_tx) = (job_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for (seq, body) in job_rx {
                    if done_tx.send((seq, black_box(body))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut back = 0;
        for seq in 0..CHUNKS {
            jobs.send(chunk(seq)).expect("a worker");
            while let Ok((seq, _)) = done.try_recv() {
                back += seq;
            }
        }
        drop(jobs);
        for (seq, _) in done {
            back += seq;
        }
        back
    })
}

/// The same round trip over `std::sync::mpsc` (one worker: its receiver
/// cannot be shared without a lock).
fn std_round_trip() -> u64 {
    let (jobs, job_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(DEPTH);
    let (done_tx, done) = std::sync::mpsc::channel::<(u64, Vec<u8>)>();
    thread::scope(|scope| {
        scope.spawn(move || {
            for (seq, body) in job_rx {
                if done_tx.send((seq, black_box(body))).is_err() {
                    return;
                }
            }
        });
        let mut back = 0;
        for seq in 0..CHUNKS {
            jobs.send(chunk(seq)).expect("the worker");
            while let Ok((seq, _)) = done.try_recv() {
                back += seq;
            }
        }
        drop(jobs);
        for (seq, _) in done {
            back += seq;
        }
        back
    })
}

fn handoff(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("handoff");
    group.throughput(Throughput::Elements(CHUNKS));
    group.bench_function(BenchmarkId::new("std_sync_channel", "1 worker"), |b| {
        b.iter(std_round_trip)
    });
    for workers in [1, 2] {
        group.bench_function(
            BenchmarkId::new("crossbeam_bounded", format!("{workers} workers")),
            |b| b.iter(|| crossbeam_round_trip(workers)),
        );
    }
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
