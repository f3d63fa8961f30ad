//! `shipper demo`: a quick check of the storage engine. It writes
//! generated access-log records into a log the way a source will (chunk
//! builder, zstd once, in the producing threads), reads them back the way a
//! sink will, verifies every record byte for byte, acknowledges them so
//! the segments are deleted, and prints what recovery repaired and the
//! throughput of each step.

use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, Compression, Decoder};
use shipper_core::corpus::{Corpus, CorpusKind};
use shipper_core::log::{Durability, Log, LogOptions};

use super::units::{grouped, megabytes};
use crate::Outcome;

/// The stream the demo writes.
const STREAM: &str = "access";
/// The component name stamped into the demo's chunks.
const COMPONENT: &str = "demo";
/// The cursor the demo commits after verifying.
const CURSOR: &str = "demo";
/// Flush period under `--durability interval`.
const INTERVAL: Duration = Duration::from_millis(100);
/// The seed of the demo's access-log corpus.
const SEED: u64 = 0;

/// When appended records are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityArg {
    /// Flush before acknowledging (group commit).
    Always,
    /// Flush every 100 ms.
    Interval,
    /// Leave writeback to the kernel.
    Never,
}

impl DurabilityArg {
    fn policy(self) -> Durability {
        match self {
            DurabilityArg::Always => Durability::Always,
            DurabilityArg::Interval => Durability::Interval(INTERVAL),
            DurabilityArg::Never => Durability::Never,
        }
    }
}

/// Arguments of `shipper demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Data directory to write into; created if missing, opened (and
    /// recovered) if it holds a log, and always kept. Default: a fresh
    /// temporary directory, removed at the end unless --keep.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Records to write.
    #[arg(long, default_value_t = 2_000_000, value_name = "N")]
    records: u64,
    /// Size of a record in bytes (JSON access-log lines; exact unless below
    /// the fixed fields seq, ts, req and status, 75 to 100 bytes).
    #[arg(long, default_value_t = 100, value_name = "B")]
    record_bytes: usize,
    /// Flush policy of the log.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Interval)]
    durability: DurabilityArg,
    /// Producer threads building and compressing chunks.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=64))]
    producers: u64,
    /// Size of a segment file in MiB.
    #[arg(long, default_value_t = 8, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    segment_mib: u64,
    /// Keep the temporary data directory.
    #[arg(long)]
    keep: bool,
    /// Do not commit the cursor after verifying: every record stays on disk.
    #[arg(long)]
    no_ack: bool,
}

/// A temporary data directory, removed when dropped unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn create() -> anyhow::Result<Self> {
        let name = format!(
            "shipper-demo-{}-{}",
            std::process::id(),
            shipper_core::chunk::now_nanos()
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)
            .with_context(|| format!("creating temporary data dir {}", path.display()))?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(error) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(dir = %self.path.display(), %error, "cannot remove temporary data dir");
            }
        }
    }
}

/// What the producers wrote.
#[derive(Debug, Default)]
struct Written {
    raw_bytes: u64,
    stored_bytes: u64,
    chunks: u64,
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<Outcome> {
    ensure!(args.records > 0, "--records must be at least 1");
    let mut temp = None;
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => temp.insert(TempDir::create()?).path.clone(),
    };
    if let Some(temp) = temp.as_mut() {
        temp.keep = args.keep;
    }
    let kept = args.data_dir.is_some() || args.keep;

    let segment_bytes = args.segment_mib << 20;
    let options = LogOptions {
        segment_bytes,
        max_bytes: LogOptions::default().max_bytes.max(3 * segment_bytes),
        durability: args.durability.policy(),
        ..LogOptions::default()
    };
    let log =
        Log::open(&dir, options).with_context(|| format!("opening data dir {}", dir.display()))?;

    println!(
        "shipper demo: {} JSON access-log records of ~{} bytes, {} producer thread(s), zstd level 1, durability {}",
        grouped(args.records),
        args.record_bytes,
        args.producers,
        match args.durability {
            DurabilityArg::Always => "always".to_owned(),
            DurabilityArg::Interval => format!("interval ({} ms)", INTERVAL.as_millis()),
            DurabilityArg::Never => "never".to_owned(),
        }
    );
    println!(
        "data dir     {}{}",
        dir.display(),
        if kept {
            ""
        } else {
            " (removed at exit; --keep keeps it)"
        }
    );
    println!("producer id  {}", log.producer_id());
    print_recovery(&log);
    let first = log.next_offset();
    if first > log.start_offset() {
        println!(
            "existing     offsets {}..{} already stored; appending after them",
            log.start_offset(),
            first
        );
    }

    let corpus = Corpus::new(CorpusKind::AccessLog, SEED).with_record_bytes(args.record_bytes);
    let started = Instant::now();
    let written = write(&log, &corpus, args.records, args.producers)?;
    let end = log.next_offset();
    log.wait_durable(end)
        .with_context(|| format!("waiting for offsets {first}..{end} to be durable"))?;
    let write_time = started.elapsed();
    ensure!(
        end - first == args.records,
        "the log assigned {} offsets to {} records",
        end - first,
        args.records
    );

    let (read_time, read_records) = read_and_verify(&log, &corpus, first..end)?;

    let acked = if args.no_ack {
        None
    } else {
        log.commit_cursor(CURSOR, end)
            .with_context(|| format!("committing cursor {CURSOR} at {end} in {}", dir.display()))?;
        Some(end)
    };
    let metrics = log.metrics();
    log.close()
        .with_context(|| format!("closing data dir {}", dir.display()))?;

    let raw = written.raw_bytes;
    println!(
        "written      offsets {first}..{end} in {} chunks",
        grouped(written.chunks)
    );
    println!(
        "raw          {:.1} MB of records (newlines and framing not counted)",
        megabytes(raw)
    );
    println!(
        "stored       {:.1} MB of chunk frames, ratio {:.2}",
        megabytes(written.stored_bytes),
        raw as f64 / written.stored_bytes.max(1) as f64
    );
    print_rate(
        "write",
        args.records,
        raw,
        write_time,
        "generate + chunk + zstd + append + durable",
    );
    print_rate(
        "read",
        read_records,
        raw,
        read_time,
        "read from the map + decompress",
    );
    println!(
        "verified     {} records, byte for byte",
        grouped(read_records)
    );
    println!(
        "segments     {} created while writing, {} deleted after the ack, {} on disk ({})",
        metrics.segments_created,
        metrics.segments_deleted,
        metrics.segments,
        match acked {
            Some(offset) => format!("cursor {CURSOR} committed at {offset}"),
            None => "--no-ack: cursor not committed, every record kept".to_owned(),
        }
    );
    Ok(Outcome::Success)
}

fn print_recovery(log: &Log) {
    let report = log.recovery_report();
    if report.is_clean() {
        println!("recovery     {report}");
        return;
    }
    println!("recovery     repaired on open:");
    for line in report.to_string().lines() {
        println!("  {line}");
    }
}

fn print_rate(what: &str, records: u64, bytes: u64, time: Duration, note: &str) {
    let seconds = time.as_secs_f64().max(1e-9);
    println!(
        "{what:<12} {} records in {seconds:.3} s: {:.2} M records/s, {:.0} MB/s raw ({note})",
        grouped(records),
        records as f64 / seconds / 1e6,
        megabytes(bytes) / seconds,
    );
}

/// Generates `records` lines on `producers` threads, each building and
/// compressing its own chunks and appending them.
fn write(log: &Log, corpus: &Corpus, records: u64, producers: u64) -> anyhow::Result<Written> {
    let results: Vec<anyhow::Result<Written>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let seqs = records * p / producers..records * (p + 1) / producers;
                scope.spawn(move || produce(log, corpus, seqs))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a producer thread panicked"))
            })
            .collect()
    });
    let mut total = Written::default();
    for result in results {
        let written = result?;
        total.raw_bytes += written.raw_bytes;
        total.stored_bytes += written.stored_bytes;
        total.chunks += written.chunks;
    }
    Ok(total)
}

fn produce(log: &Log, corpus: &Corpus, seqs: Range<u64>) -> anyhow::Result<Written> {
    let options = ChunkOptions {
        compression: Compression::Zstd { level: 1 },
        ..ChunkOptions::default()
    };
    let mut builder =
        ChunkBuilder::new(STREAM, COMPONENT, options).context("creating a chunk builder")?;
    let mut written = Written::default();
    let mut line = Vec::with_capacity(1024);
    let mut last = None;
    let append = |chunk: shipper_core::chunk::ClosedChunk, written: &mut Written| {
        written.stored_bytes += chunk.frame_len() as u64;
        written.chunks += 1;
        log.append(chunk).context("appending a chunk")
    };
    for seq in seqs {
        line.clear();
        let timestamp = corpus.record_into(seq, &mut line);
        written.raw_bytes += line.len() as u64;
        if let Some(chunk) = builder
            .push(&line, timestamp, None)
            .context("adding a record to a chunk")?
        {
            last = Some(append(chunk, &mut written)?);
        }
    }
    if let Some(chunk) = builder.finish().context("closing the last chunk")? {
        last = Some(append(chunk, &mut written)?);
    }
    if let Some(ticket) = last {
        // Appends from one thread are stored in order: once the last one
        // is in the log, all of this producer's chunks are.
        ticket.wait().context("appending the last chunk")?;
    }
    Ok(written)
}

/// Reads `range` back and checks that it holds exactly the generated
/// records, each once. Returns the time spent reading and decompressing
/// (verification not included) and the records read.
fn read_and_verify(
    log: &Log,
    corpus: &Corpus,
    range: Range<u64>,
) -> anyhow::Result<(Duration, u64)> {
    let count = range.end - range.start;
    let mut seen = vec![0u64; count.div_ceil(64) as usize];
    let mut expected = Vec::with_capacity(1024);
    let mut decoder = Decoder::default();
    let mut reader = log.reader(range.start);
    let mut read_time = Duration::ZERO;
    let mut records = 0u64;
    loop {
        let started = Instant::now();
        let Some(chunk) = reader.next() else { break };
        let chunk = chunk.with_context(|| format!("reading {}", log.dir().display()))?;
        if let Some((from, to)) = reader.take_gap() {
            if to > range.start {
                bail!("offsets {from}..{to} are missing from the log");
            }
        }
        if chunk.first_offset() < range.start {
            continue;
        }
        let view = chunk.view();
        let body = decode_body(&view, &mut decoder)
            .with_context(|| format!("decoding the chunk at offset {}", chunk.first_offset()))?;
        read_time += started.elapsed();
        for record in body.records() {
            let record =
                record.with_context(|| format!("chunk at offset {}", chunk.first_offset()))?;
            let Some(seq) = Corpus::seq_of(record).filter(|&s| s < count) else {
                bail!(
                    "record {} in the chunk at offset {} is not one the demo wrote: {:?}",
                    records,
                    chunk.first_offset(),
                    String::from_utf8_lossy(&record[..record.len().min(80)])
                );
            };
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            ensure!(seen[word] & bit == 0, "record seq {seq} read twice");
            seen[word] |= bit;
            expected.clear();
            corpus.record_into(seq, &mut expected);
            ensure!(
                record == expected.as_slice(),
                "record seq {seq} differs from what was written"
            );
            records += 1;
        }
    }
    ensure!(
        records == count,
        "read back {records} of the {count} records written"
    );
    Ok((read_time, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_verifies_a_small_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let corpus = Corpus::new(CorpusKind::AccessLog, SEED).with_record_bytes(120);
        let written = write(&log, &corpus, 5000, 2).unwrap();
        assert_eq!(log.next_offset(), 5000);
        assert!(written.stored_bytes < written.raw_bytes);
        log.flush().unwrap();
        let (_, records) = read_and_verify(&log, &corpus, 0..5000).unwrap();
        assert_eq!(records, 5000);
        assert!(read_and_verify(&log, &corpus, 0..4999).is_err());
        // Records of another seed are not the ones written.
        let other = Corpus::new(CorpusKind::AccessLog, SEED + 1).with_record_bytes(120);
        assert!(read_and_verify(&log, &other, 0..5000).is_err());
        log.close().unwrap();
    }
}
