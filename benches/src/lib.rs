//! Shared parts of shipper's benchmarks: a deterministic data set of
//! records (from [`shipper_core::corpus`], the one record generator),
//! chunk helpers, plain-syscall baselines, and the same-run ratio summary.
//!
//! Every figure is reported next to a baseline measured in the same process
//! (see STYLE.md, Benchmarks). criterion reports absolute numbers; the
//! benchmark routines also time each iteration through a [`Probe`], and
//! [`Summary`] turns the medians of those timings into ratios, printed as a
//! table and written to `target/shipper-bench-summary.json`. Timing inside
//! the routines (rather than reading criterion's files back) means the
//! summary only ever contains what ran in this process.
//!
//! ```
//! use shipper_benches::{Dataset, RecordSize};
//!
//! let data = Dataset::generate(RecordSize::Small, 64 * 1024, 7);
//! assert_eq!(data, Dataset::generate(RecordSize::Small, 64 * 1024, 7));
//! assert!(data.records().all(|r| r.len() == 100 && !r.contains(&b'\n')));
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shipper_core::chunk::{ChunkBuilder, ChunkOptions, ClosedChunk, Compression};
use shipper_core::corpus::{Corpus, CorpusKind};

/// The seed every data set is generated from.
pub const SEED: u64 = 0x0053_4849_5050_4552; // "SHIPPER"

/// Bytes per write(2) in the plain-file baselines.
pub const WRITE_PIECE: usize = 1 << 20;

/// The two record shapes the benchmarks sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSize {
    /// JSON access-log lines of 100 bytes.
    Small,
    /// JSON application events of 1 KiB.
    Large,
}

impl RecordSize {
    /// Label used in benchmark ids.
    pub fn label(self) -> &'static str {
        match self {
            RecordSize::Small => "100B",
            RecordSize::Large => "1KiB",
        }
    }

    /// The corpus these records come from.
    pub fn corpus(self, seed: u64) -> Corpus {
        match self {
            RecordSize::Small => Corpus::new(CorpusKind::AccessLog, seed).with_record_bytes(100),
            RecordSize::Large => Corpus::new(CorpusKind::Events, seed).with_record_bytes(1024),
        }
    }
}

/// Generated records stored back to back, each newline-terminated (NDJSON
/// as it is, which is also what a `Lines` chunk body holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    size: RecordSize,
    lines: Vec<u8>,
    /// End of each record (exclusive, before its newline).
    ends: Vec<usize>,
}

impl Dataset {
    /// Generates records of `size` until the payload bytes reach
    /// `target_bytes`. The same arguments always give the same records.
    pub fn generate(size: RecordSize, target_bytes: usize, seed: u64) -> Dataset {
        let mut corpus = size.corpus(seed);
        let mut lines = Vec::with_capacity(target_bytes + target_bytes / 8);
        let mut ends = Vec::new();
        while lines.len() - ends.len() < target_bytes {
            corpus.next_into(&mut lines);
            ends.push(lines.len());
            lines.push(b'\n');
        }
        Dataset { size, lines, ends }
    }

    /// The record shape.
    pub fn size(&self) -> RecordSize {
        self.size
    }

    /// The records, without their newlines.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = &self.lines[start..end];
            start = end + 1;
            record
        })
    }

    /// Number of records.
    pub fn record_count(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Payload bytes (records without newlines): what throughput is counted in.
    pub fn raw_bytes(&self) -> u64 {
        (self.lines.len() - self.ends.len()) as u64
    }

    /// Mean payload bytes per record.
    pub fn mean_record_bytes(&self) -> f64 {
        self.raw_bytes() as f64 / self.record_count() as f64
    }

    /// All records, newline-terminated, in one buffer (NDJSON).
    pub fn ndjson(&self) -> &[u8] {
        &self.lines
    }

    /// The records split into `parts` data sets of about equal size, in order.
    pub fn split(&self, parts: usize) -> Vec<Dataset> {
        let per_part = self.ends.len().div_ceil(parts.max(1));
        let mut out = Vec::with_capacity(parts);
        let mut start = 0;
        for ends in self.ends.chunks(per_part) {
            let end = ends[ends.len() - 1] + 1;
            out.push(Dataset {
                size: self.size,
                lines: self.lines[start..end].to_vec(),
                ends: ends.iter().map(|e| e - start).collect(),
            });
            start = end;
        }
        out
    }
}

/// Chunk options for the benchmarks: the defaults (256 KiB chunks) at `level`.
pub fn chunk_options(level: i32) -> ChunkOptions {
    ChunkOptions {
        compression: Compression::Zstd { level },
        ..ChunkOptions::default()
    }
}

/// Builds the data set into closed chunks (push every record, close the last).
pub fn build_chunks(data: &Dataset, level: i32) -> Vec<ClosedChunk> {
    let mut builder =
        ChunkBuilder::new("bench", "corpus", chunk_options(level)).expect("valid options");
    let mut chunks = Vec::new();
    for (i, record) in data.records().enumerate() {
        if let Some(chunk) = builder.push(record, i as u64, None).expect("record fits") {
            chunks.push(chunk);
        }
    }
    chunks.extend(builder.finish().expect("compressing"));
    chunks
}

/// The frames of `chunks` back to back: the compressed bytes the log stores.
pub fn concat_frames(chunks: &[ClosedChunk]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.iter().map(|c| c.frame_len()).sum());
    for chunk in chunks {
        out.extend_from_slice(chunk.frame());
    }
    out
}

/// The directory cargo builds into: `CARGO_TARGET_DIR`, else the one that
/// holds the running benchmark executable (`target/<profile>/deps/…`),
/// else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        {
            if let Some(target) = deps.parent().and_then(Path::parent) {
                return target.to_owned();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// A scratch directory under the target directory, removed on drop.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let target = target_dir();
    std::fs::create_dir_all(&target)?;
    tempfile::Builder::new()
        .prefix("shipper-bench-")
        .tempdir_in(target)
}

/// The write(2) baseline: a file written in [`WRITE_PIECE`] pieces that
/// starts over (truncated, like a deleted segment) once it passes `limit`.
#[derive(Debug)]
pub struct PlainFile {
    file: File,
    written: u64,
    limit: u64,
    syncs: u64,
    sync_time: Duration,
}

impl PlainFile {
    /// Creates `path`.
    pub fn create(path: &Path, limit: u64) -> std::io::Result<PlainFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        Ok(PlainFile {
            file,
            written: 0,
            limit,
            syncs: 0,
            sync_time: Duration::ZERO,
        })
    }

    /// Truncates the file if it passed its limit (call outside the timing).
    pub fn recycle(&mut self) -> std::io::Result<()> {
        if self.written >= self.limit {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.file.sync_all()?;
            self.written = 0;
        }
        Ok(())
    }

    /// Writes `bytes` with one write(2) per [`WRITE_PIECE`].
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for piece in bytes.chunks(WRITE_PIECE) {
            self.file.write_all(piece)?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// fdatasync(2).
    pub fn sync(&mut self) -> std::io::Result<()> {
        let started = Instant::now();
        self.file.sync_data()?;
        self.syncs += 1;
        self.sync_time += started.elapsed();
        Ok(())
    }

    /// fdatasync calls so far and their mean duration.
    pub fn sync_stats(&self) -> (u64, Duration) {
        (self.syncs, self.sync_time / self.syncs.max(1) as u32)
    }
}

/// Latency of one small write + fdatasync on a filesystem.
#[derive(Debug, Clone, Copy)]
pub struct SyncLatency {
    /// Probes taken.
    pub samples: usize,
    /// Median.
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Fastest.
    pub min: Duration,
    /// Slowest.
    pub max: Duration,
}

/// Times `samples` appends of 4 KiB, each followed by fdatasync(2), to a
/// small file in `dir`.
pub fn measure_fdatasync(dir: &Path, samples: usize) -> std::io::Result<SyncLatency> {
    let path = dir.join("fdatasync-probe");
    let mut file = PlainFile::create(&path, u64::MAX)?;
    let block = vec![b'x'; 4096];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        file.write(&block)?;
        file.sync()?;
        times.push(started.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(SyncLatency {
        samples,
        median: at(0.5),
        p99: at(0.99),
        min: times[0],
        max: times[times.len() - 1],
    })
}

#[derive(Debug, Default)]
struct Series {
    records: u64,
    bytes: u64,
    samples: Vec<Duration>,
}

static SERIES: Mutex<BTreeMap<String, Series>> = Mutex::new(BTreeMap::new());

/// Times iterations of one benchmark for the summary. An iteration
/// processes `records` records of `bytes` payload bytes.
#[derive(Debug, Clone)]
pub struct Probe {
    id: String,
    records: u64,
    bytes: u64,
}

impl Probe {
    /// A probe named like the criterion benchmark (`group/function/size`).
    pub fn new(id: impl Into<String>, records: u64, bytes: u64) -> Probe {
        Probe {
            id: id.into(),
            records,
            bytes,
        }
    }

    /// The probe's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs and times one iteration.
    pub fn time<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = work();
        let elapsed = started.elapsed();
        let mut series = SERIES.lock().unwrap_or_else(|e| e.into_inner());
        let entry = series.entry(self.id.clone()).or_default();
        entry.records = self.records;
        entry.bytes = self.bytes;
        entry.samples.push(elapsed);
        out
    }
}

/// The median timing of one benchmark in this run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Benchmark id.
    pub id: String,
    /// Iterations timed (criterion's warm-up included).
    pub iterations: usize,
    /// Median time of one iteration.
    pub median: Duration,
    /// Records per iteration.
    pub records: u64,
    /// Payload bytes per iteration.
    pub bytes: u64,
}

impl Measurement {
    /// Records per second at the median.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.median.as_secs_f64()
    }
    /// Payload MB (10^6 bytes) per second at the median.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.median.as_secs_f64() / 1e6
    }
}

/// What a summary row must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// figure / baseline (in throughput) at least this.
    Ratio(f64),
    /// The figure at least this many records per second.
    RecordsPerSec(f64),
    /// No target in the issue: the ratio is reported for information.
    Report,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ratio(r) => write!(f, "ratio >= {r:.2}"),
            Target::RecordsPerSec(r) => write!(f, ">= {:.1} M rec/s", r / 1e6),
            Target::Report => f.write_str("(reported)"),
        }
    }
}

/// A figure compared with its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// Benchmark id of the figure.
    pub figure: String,
    /// Benchmark id of the baseline.
    pub baseline: String,
    /// What the figure must reach.
    pub target: Target,
    /// Why this baseline and target.
    pub note: String,
}

impl Row {
    /// A row.
    pub fn new(
        figure: impl Into<String>,
        baseline: impl Into<String>,
        target: Target,
        note: &str,
    ) -> Row {
        Row {
            figure: figure.into(),
            baseline: baseline.into(),
            target,
            note: note.to_owned(),
        }
    }
}

/// The same-run comparison printed after criterion's groups.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows to evaluate.
    pub rows: Vec<Row>,
    /// Free-form facts about the run (corpus, machine, load).
    pub conditions: BTreeMap<String, String>,
    /// fdatasync latency measured in the run.
    pub fdatasync: Option<SyncLatency>,
}

fn measurements() -> BTreeMap<String, Measurement> {
    let series = SERIES.lock().unwrap_or_else(|e| e.into_inner());
    series
        .iter()
        .filter(|(_, s)| !s.samples.is_empty())
        .map(|(id, s)| {
            let mut samples = s.samples.clone();
            samples.sort();
            let median = samples[samples.len() / 2];
            (
                id.clone(),
                Measurement {
                    id: id.clone(),
                    iterations: samples.len(),
                    median,
                    records: s.records,
                    bytes: s.bytes,
                },
            )
        })
        .collect()
}

fn rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else {
        format!("{:.1} k", value / 1e3)
    }
}

impl Summary {
    /// Prints the measurements and the ratio table to stdout and writes
    /// them as JSON to `target/shipper-bench-summary.json`. Returns the path.
    pub fn report(&self) -> std::io::Result<PathBuf> {
        let measured = measurements();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\n=== shipper benchmark summary (medians of per-iteration timings, this run) ==="
        );
        for (key, value) in &self.conditions {
            let _ = writeln!(text, "{key}: {value}");
        }
        if let Some(sync) = &self.fdatasync {
            let _ = writeln!(
                text,
                "fdatasync (4 KiB append + fdatasync, {} probes): median {:.3} ms, p99 {:.3} ms, min {:.3} ms, max {:.3} ms",
                sync.samples,
                sync.median.as_secs_f64() * 1e3,
                sync.p99.as_secs_f64() * 1e3,
                sync.min.as_secs_f64() * 1e3,
                sync.max.as_secs_f64() * 1e3,
            );
        }
        let _ = writeln!(
            text,
            "\n{:<52} {:>6} {:>11} {:>13} {:>10}",
            "benchmark", "iters", "median", "records/s", "MB/s"
        );
        for m in measured.values() {
            let _ = writeln!(
                text,
                "{:<52} {:>6} {:>8.2} ms {:>13} {:>10.1}",
                m.id,
                m.iterations,
                m.median.as_secs_f64() * 1e3,
                rate(m.records_per_sec()),
                m.mb_per_sec()
            );
        }
        let _ = writeln!(
            text,
            "\n{:<40} {:>21}  {:<50} {:>21} {:>7}  {:<16} result",
            "figure", "records/s | MB/s", "baseline", "records/s | MB/s", "ratio", "target"
        );
        let mut rows_json = Vec::new();
        for row in &self.rows {
            let figure = measured.get(&row.figure);
            let baseline = measured.get(&row.baseline);
            let ratio = match (figure, baseline) {
                (Some(f), Some(b)) => Some(f.mb_per_sec() / b.mb_per_sec()),
                _ => None,
            };
            let pass = match (row.target, figure, ratio) {
                (Target::Ratio(min), _, Some(ratio)) => Some(ratio >= min),
                (Target::RecordsPerSec(min), Some(f), _) => Some(f.records_per_sec() >= min),
                _ => None,
            };
            let cell = |m: Option<&Measurement>| match m {
                Some(m) => format!("{:>9} | {:>7.1}", rate(m.records_per_sec()), m.mb_per_sec()),
                None => "not run".to_owned(),
            };
            let _ = writeln!(
                text,
                "{:<40} {:>21}  {:<50} {:>21} {:>7}  {:<16} {}",
                row.figure,
                cell(figure),
                row.baseline,
                cell(baseline),
                ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
                row.target.to_string(),
                match (pass, row.target, figure) {
                    (Some(true), _, _) => "pass",
                    (Some(false), _, _) => "MISS",
                    (None, Target::Report, Some(_)) => "-",
                    (None, _, _) => "not run",
                }
            );
            rows_json.push(serde_json::json!({
                "figure": row.figure,
                "baseline": row.baseline,
                "figure_records_per_s": figure.map(Measurement::records_per_sec),
                "figure_mb_per_s": figure.map(Measurement::mb_per_sec),
                "baseline_records_per_s": baseline.map(Measurement::records_per_sec),
                "baseline_mb_per_s": baseline.map(Measurement::mb_per_sec),
                "ratio": ratio,
                "target": row.target.to_string(),
                "pass": pass,
                "note": row.note,
            }));
        }
        let _ = writeln!(text, "\nratio = figure MB/s / baseline MB/s (same payload bytes, so also the records/s ratio); MB = 10^6 bytes of raw record payload.");
        let mut noted = std::collections::BTreeSet::new();
        for row in &self.rows {
            let group = row
                .figure
                .rsplit_once('/')
                .map_or(&row.figure[..], |(group, _)| group);
            if noted.insert(&row.note) {
                let _ = writeln!(text, "  {group}: {}", row.note);
            }
        }
        print!("{text}");

        let json = serde_json::json!({
            "generated_unix_s": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "conditions": self.conditions,
            "fdatasync": self.fdatasync.map(|s| serde_json::json!({
                "samples": s.samples,
                "median_ms": s.median.as_secs_f64() * 1e3,
                "p99_ms": s.p99.as_secs_f64() * 1e3,
                "min_ms": s.min.as_secs_f64() * 1e3,
                "max_ms": s.max.as_secs_f64() * 1e3,
            })),
            "measurements": measured.values().map(|m| serde_json::json!({
                "id": m.id,
                "iterations": m.iterations,
                "median_ms": m.median.as_secs_f64() * 1e3,
                "records_per_iteration": m.records,
                "bytes_per_iteration": m.bytes,
                "records_per_s": m.records_per_sec(),
                "mb_per_s": m.mb_per_sec(),
            })).collect::<Vec<_>>(),
            "rows": rows_json,
        });
        let path = target_dir().join("shipper-bench-summary.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).map_err(std::io::Error::other)? + "\n",
        )?;
        println!("summary written to {}", path.display());
        Ok(path)
    }
}

/// The system load averages, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_deterministic_exact_and_varied() {
        for (size, bytes) in [(RecordSize::Small, 100.0), (RecordSize::Large, 1024.0)] {
            let data = Dataset::generate(size, 1 << 20, SEED);
            assert_eq!(data, Dataset::generate(size, 1 << 20, SEED));
            assert_eq!(data.mean_record_bytes(), bytes, "{size:?}");
            assert!(data.raw_bytes() >= 1 << 20);
            let distinct: std::collections::HashSet<&[u8]> = data.records().collect();
            assert_eq!(distinct.len() as u64, data.record_count());
            for record in data.records().take(100) {
                serde_json::from_slice::<serde_json::Value>(record).expect("records are JSON");
            }
            let parts = data.split(3);
            let rejoined: Vec<&[u8]> = parts.iter().flat_map(|p| p.records()).collect();
            assert_eq!(rejoined, data.records().collect::<Vec<_>>());
        }
    }
}
