//! The bench's report: figures, baselines and ratios, as a table or JSON.

use std::fmt::Write;

use super::{BenchArgs, Measured, Workload};
use shipper::harness::baseline::Baselines;

/// Everything a run measured.
#[derive(Debug, serde::Serialize)]
pub(super) struct Report {
    scenario: String,
    corpus: String,
    durability: &'static str,
    zstd_level: i32,
    connections: usize,
    rate: Option<u64>,
    seed: u64,
    records: u64,
    raw_bytes: u64,
    mean_record_bytes: f64,
    seconds: f64,
    records_per_second: f64,
    mb_per_second_in: f64,
    compressed_mb_per_second_out: f64,
    compression_ratio: f64,
    /// User + system CPU of the shipper processes (for `sdk`, this process).
    cpu_seconds: f64,
    cpu_seconds_per_gb: f64,
    /// The bench's own load generator and sampling (not counted above).
    generator_cpu_seconds: f64,
    /// The shipper processes' peak RSS (summed); for `sdk`, what the
    /// pipeline added to the bench process, the workload excluded.
    peak_rss_bytes: u64,
    /// Written by the generator → acknowledged by the sink, in ms, from the
    /// two counters sampled about every 10 ms (the resolution).
    latency_ms: Latency,
    baselines_mb_per_second: BaselineRates,
    /// shipper's MB/s in ÷ each baseline's.
    ratio_to: BaselineRates,
}

#[derive(Debug, serde::Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

#[derive(Debug, serde::Serialize)]
struct BaselineRates {
    memcpy: f64,
    write: f64,
    zstd: f64,
}

impl Report {
    pub(super) fn new(
        scenario: String,
        args: &BenchArgs,
        workload: &Workload,
        measured: &Measured,
        baselines: Baselines,
    ) -> Report {
        let seconds = measured.elapsed.as_secs_f64().max(1e-9);
        let raw_bytes = workload.ndjson.len() as u64 - workload.records;
        let bytes_in = raw_bytes as f64 / seconds;
        let mb = |bytes_per_second: f64| bytes_per_second / 1e6;
        let corpus = match &args.input {
            Some(path) => path.display().to_string(),
            None => args.corpus.name().to_owned(),
        };
        Report {
            scenario,
            corpus,
            durability: args.durability.name(),
            zstd_level: args.zstd_level,
            connections: args.connections,
            rate: args.rate,
            seed: args.seed,
            records: workload.records,
            raw_bytes,
            mean_record_bytes: raw_bytes as f64 / workload.records as f64,
            seconds,
            records_per_second: workload.records as f64 / seconds,
            mb_per_second_in: mb(bytes_in),
            compressed_mb_per_second_out: mb(measured.stored_bytes as f64 / seconds),
            compression_ratio: raw_bytes as f64 / measured.stored_bytes.max(1) as f64,
            cpu_seconds: measured.cpu_seconds,
            generator_cpu_seconds: measured.generator_cpu_seconds,
            cpu_seconds_per_gb: measured.cpu_seconds / (raw_bytes as f64 / 1e9),
            peak_rss_bytes: measured.peak_rss,
            latency_ms: latency(measured, workload.records),
            baselines_mb_per_second: BaselineRates {
                memcpy: mb(baselines.memcpy),
                write: mb(baselines.write),
                zstd: mb(baselines.zstd),
            },
            ratio_to: BaselineRates {
                memcpy: bytes_in / baselines.memcpy,
                write: bytes_in / baselines.write,
                zstd: bytes_in / baselines.zstd,
            },
        }
    }

    /// The human table.
    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "shipper bench: {} — {} records of {} ({:.0} B mean), durability {}, zstd {}{}",
            self.scenario,
            self.records,
            self.corpus,
            self.mean_record_bytes,
            self.durability,
            self.zstd_level,
            self.rate
                .map_or(String::new(), |rate| format!(", {rate} records/s offered")),
        );
        let _ = writeln!(out);
        let rows = [
            ("records/s", format!("{:.0}", self.records_per_second)),
            ("MB/s in", format!("{:.1}", self.mb_per_second_in)),
            (
                "compressed MB/s out",
                format!(
                    "{:.1} (ratio {:.2})",
                    self.compressed_mb_per_second_out, self.compression_ratio
                ),
            ),
            (
                "CPU s per GB",
                format!(
                    "{:.2} ({:.2} s; the load generator {:.2} s more)",
                    self.cpu_seconds_per_gb, self.cpu_seconds, self.generator_cpu_seconds
                ),
            ),
            (
                "peak RSS",
                format!("{:.1} MiB", self.peak_rss_bytes as f64 / (1 << 20) as f64),
            ),
            (
                "latency p50 / p99 / p99.9 / max",
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} ms (±10 ms)",
                    self.latency_ms.p50,
                    self.latency_ms.p99,
                    self.latency_ms.p999,
                    self.latency_ms.max
                ),
            ),
        ];
        for (what, value) in rows {
            let _ = writeln!(out, "  {what:<32} {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  baseline (same bytes, same run)   MB/s      shipper ÷ baseline"
        );
        for (what, rate, ratio) in [
            (
                "memcpy",
                self.baselines_mb_per_second.memcpy,
                self.ratio_to.memcpy,
            ),
            (
                "write(2) + fdatasync",
                self.baselines_mb_per_second.write,
                self.ratio_to.write,
            ),
            (
                "zstd, same level, 1 thread",
                self.baselines_mb_per_second.zstd,
                self.ratio_to.zstd,
            ),
        ] {
            let _ = writeln!(out, "  {what:<32} {rate:>8.1}  {ratio:>8.3}");
        }
        out
    }
}

impl Report {
    /// One Markdown table row (see [`Report::markdown_header`]).
    pub(super) fn markdown_row(&self) -> String {
        format!(
            "| {} | {} × {:.0} B {} | {} | {:.0} k | {:.1} | {:.1} ({:.2}×) | {:.2} | {:.0} MiB | {:.0} / {:.0} ms | {:.2} / {:.2} / {:.2} |\n",
            self.scenario,
            self.records,
            self.mean_record_bytes,
            self.corpus,
            self.durability,
            self.records_per_second / 1e3,
            self.mb_per_second_in,
            self.compressed_mb_per_second_out,
            self.compression_ratio,
            self.cpu_seconds_per_gb,
            self.peak_rss_bytes as f64 / (1 << 20) as f64,
            self.latency_ms.p50,
            self.latency_ms.p99,
            self.ratio_to.memcpy,
            self.ratio_to.write,
            self.ratio_to.zstd,
        )
    }

    /// The header of [`Report::markdown_row`]'s table.
    pub(super) fn markdown_header() -> &'static str {
        "| scenario | records | durability | records/s | MB/s in | compressed MB/s out (ratio) | CPU s/GB | peak RSS | latency p50 / p99 | ÷ memcpy / write(2) / zstd |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    }
}

/// Percentiles of (acknowledged − written) time per record, from the
/// sampled counters: record `i` was written at the first sample whose
/// written count exceeds `i`, and acknowledged at the first whose
/// acknowledged count does. Taken over 10,000 records spread evenly
/// through the run.
fn latency(measured: &Measured, records: u64) -> Latency {
    let samples = &measured.samples;
    let first = |index: u64, counter: fn(&super::Sample) -> u64| {
        let at = samples.partition_point(|s| counter(s) <= index);
        samples.get(at).map_or(measured.elapsed, |s| s.at)
    };
    const SPREAD: u64 = 10_000;
    let mut latencies: Vec<f64> = (0..SPREAD.min(records))
        .map(|k| {
            let index = k * records / SPREAD.min(records);
            let written = first(index, |s| s.written);
            let acknowledged = first(index, |s| s.acknowledged);
            acknowledged.saturating_sub(written).as_secs_f64() * 1e3
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies.get(index).copied().unwrap_or(0.0)
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}
