//! Is a trained zstd dictionary worth it? Compression ratio and speed with
//! and without a dictionary trained on a stream's first records, for
//! 100-300 byte JSON records, with the default chunk size (256 KiB) and
//! with small chunks (what a quiet source's 5 ms linger produces).
//!
//! `cargo bench -p shipper-benches --bench dictionary`

use std::time::Instant;

use shipper_core::corpus::{Corpus, CorpusKind};

struct Measured {
    ratio: f64,
    compress_mb_s: f64,
    decompress_mb_s: f64,
}

/// Compresses `records` in chunks of about `chunk_bytes`, with `dict` if
/// given, and decompresses them again.
fn measure(records: &[Vec<u8>], chunk_bytes: usize, level: i32, dict: Option<&[u8]>) -> Measured {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::with_capacity(chunk_bytes + 1024);
    for record in records {
        current.extend_from_slice(record);
        current.push(b'\n');
        if current.len() >= chunk_bytes {
            chunks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    let raw: usize = chunks.iter().map(Vec::len).sum();
    let mut compressor = match dict {
        Some(dict) => zstd::bulk::Compressor::with_dictionary(level, dict).unwrap(),
        None => zstd::bulk::Compressor::new(level).unwrap(),
    };
    let started = Instant::now();
    let compressed: Vec<Vec<u8>> = chunks
        .iter()
        .map(|chunk| compressor.compress(chunk).unwrap())
        .collect();
    let compress = started.elapsed().as_secs_f64();
    let mut decompressor = match dict {
        Some(dict) => zstd::bulk::Decompressor::with_dictionary(dict).unwrap(),
        None => zstd::bulk::Decompressor::new().unwrap(),
    };
    let started = Instant::now();
    for (chunk, original) in compressed.iter().zip(&chunks) {
        let out = decompressor.decompress(chunk, original.len()).unwrap();
        assert_eq!(out.len(), original.len());
    }
    let decompress = started.elapsed().as_secs_f64();
    let stored: usize = compressed.iter().map(Vec::len).sum();
    Measured {
        ratio: raw as f64 / stored as f64,
        compress_mb_s: raw as f64 / compress / 1e6,
        decompress_mb_s: raw as f64 / decompress / 1e6,
    }
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let count = if quick { 20_000 } else { 400_000 };
    println!(
        "{:<11} {:>7} {:>9} {:>14} {:>14} {:>16} {:>16}",
        "corpus", "B/rec", "chunk", "ratio no dict", "ratio dict", "MB/s no dict", "MB/s dict"
    );
    for kind in [CorpusKind::AccessLog, CorpusKind::Events, CorpusKind::Iot] {
        let mut corpus = Corpus::new(kind, 7);
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let mut record = Vec::new();
            corpus.next_into(&mut record);
            records.push(record);
        }
        let mean = records.iter().map(Vec::len).sum::<usize>() / records.len();
        // Trained on the stream's first records, as the builder would.
        let samples = &records[..records.len().min(2_000)];
        let dict = zstd::dict::from_samples(samples, 64 << 10).unwrap();
        let rest = &records[samples.len()..];
        for chunk in [256 << 10, 16 << 10, 2 << 10] {
            let plain = measure(rest, chunk, 1, None);
            let with = measure(rest, chunk, 1, Some(&dict));
            println!(
                "{:<11} {:>7} {:>8}K {:>14.2} {:>14.2} {:>7.0} / {:<6.0} {:>7.0} / {:<6.0}",
                format!("{kind:?}"),
                mean,
                chunk >> 10,
                plain.ratio,
                with.ratio,
                plain.compress_mb_s,
                plain.decompress_mb_s,
                with.compress_mb_s,
                with.decompress_mb_s,
            );
        }
    }
    println!("MB/s: compress / decompress, zstd level 1, one thread; dictionary 64 KiB trained on 2,000 records");
}
