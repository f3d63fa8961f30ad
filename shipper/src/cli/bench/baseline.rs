//! What the same bytes cost without shipper, measured in the same run:
//! copying them (memcpy), writing them to the data directory's filesystem
//! (`write(2)` in 1 MiB pieces, one `fdatasync`), and compressing them with
//! zstd at the same level on one thread in 256 KiB pieces (the chunk size).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

/// Bytes per second of each baseline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Baselines {
    pub memcpy: f64,
    pub write: f64,
    pub zstd: f64,
}

/// The pieces `zstd` compresses, as the chunk builder closes chunks.
const CHUNK: usize = 256 * 1024;
/// The pieces `write(2)` is given.
const WRITE: usize = 1 << 20;

/// Measures the baselines on `data`, writing into `dir`.
pub(crate) fn measure(data: &[u8], dir: &Path, level: i32) -> anyhow::Result<Baselines> {
    // Copied once untimed so the destination's pages exist: the baseline
    // is the copy, not the kernel's page faults.
    let mut copy = data.to_vec();
    let started = Instant::now();
    copy.copy_from_slice(data);
    std::hint::black_box(&copy);
    let memcpy = rate(data.len(), started);
    drop(copy);

    let path = dir.join("baseline-write");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    for piece in data.chunks(WRITE) {
        file.write_all(piece)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_data()
        .with_context(|| format!("syncing {}", path.display()))?;
    let write = rate(data.len(), started);
    drop(file);
    let _ = std::fs::remove_file(&path);

    let mut compressor = zstd::bulk::Compressor::new(level).context("a zstd compressor")?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(CHUNK));
    let started = Instant::now();
    for piece in data.chunks(CHUNK) {
        out.clear();
        compressor
            .compress_to_buffer(piece, &mut out)
            .context("zstd")?;
        std::hint::black_box(&out);
    }
    let zstd = rate(data.len(), started);
    Ok(Baselines {
        memcpy,
        write,
        zstd,
    })
}

fn rate(bytes: usize, started: Instant) -> f64 {
    bytes as f64 / started.elapsed().as_secs_f64().max(1e-9)
}
