//! What the same bytes cost without shipper, measured in the same run:
//! copying them (memcpy), writing them to the data directory's filesystem
//! (`write(2)` in 1 MiB pieces, one `fdatasync`), and compressing them with
//! zstd at the same level on one thread in 256 KiB pieces (the chunk size).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Bytes per second of each baseline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Baselines {
    /// Copying the bytes in memory.
    pub memcpy: f64,
    /// Writing them to a file in 1 MiB pieces and one `fdatasync`.
    pub write: f64,
    /// Compressing them with zstd on one thread (see [`zstd`]).
    pub zstd: f64,
}

/// The pieces `zstd` compresses, as the chunk builder closes chunks.
pub const CHUNK: usize = 256 * 1024;
/// The pieces `write(2)` is given.
const WRITE: usize = 1 << 20;

/// One-thread zstd over `data`: what no pipeline that compresses these
/// bytes can avoid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zstd {
    /// Bytes in per second.
    pub rate: f64,
    /// Bytes in over bytes out.
    pub ratio: f64,
}

/// Compresses `data` at `level` in [`CHUNK`] pieces with one reused
/// context on this thread.
pub fn zstd(data: &[u8], level: i32) -> std::io::Result<Zstd> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK));
    let mut compressed = 0;
    let started = Instant::now();
    for piece in data.chunks(CHUNK) {
        out.clear();
        compressor.compress_to_buffer(piece, &mut out)?;
        compressed += std::hint::black_box(&out).len();
    }
    Ok(Zstd {
        rate: rate(data.len(), started),
        ratio: data.len() as f64 / compressed.max(1) as f64,
    })
}

/// Measures the baselines on `data`, writing into `dir`.
pub fn measure(data: &[u8], dir: &Path, level: i32) -> std::io::Result<Baselines> {
    // Copied once untimed so the destination's pages exist: the baseline
    // is the copy, not the kernel's page faults.
    let mut copy = data.to_vec();
    let started = Instant::now();
    copy.copy_from_slice(data);
    std::hint::black_box(&copy);
    let memcpy = rate(data.len(), started);
    drop(copy);

    let path = dir.join("baseline-write");
    let in_file =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = std::fs::File::create(&path).map_err(in_file)?;
    let started = Instant::now();
    for piece in data.chunks(WRITE) {
        file.write_all(piece).map_err(in_file)?;
    }
    file.sync_data().map_err(in_file)?;
    let write = rate(data.len(), started);
    drop(file);
    let _ = std::fs::remove_file(&path);

    Ok(Baselines {
        memcpy,
        write,
        zstd: zstd(data, level)?.rate,
    })
}

fn rate(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64().max(1e-9)
}
