//! The metrics that belong to no component: the log's, the process's
//! (`process_*`, as every Prometheus client library names them) and
//! `shipper_build_info`. Each is a collector of the process's
//! [`Registry`], read at every scrape.

use shipper_core::log::Log;
use shipper_core::metrics::{Registry, Samples};

use crate::procstat;

/// A registry holding the log's, the process's and the build's metrics;
/// components register theirs in it as they are built.
pub fn registry(log: &Log) -> Registry {
    let registry = Registry::new();
    let log = log.clone();
    registry.collect(move |samples| log_metrics(samples, &log));
    registry.collect(process_metrics);
    registry.collect(|samples| {
        samples.gauge(
            "shipper_build_info",
            "Always 1; the labels say which shipper runs.",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("os", std::env::consts::OS),
                ("arch", std::env::consts::ARCH),
            ],
            1.0,
        );
    });
    registry
}

fn log_metrics(samples: &mut Samples, log: &Log) {
    let m = log.metrics();
    let counters: [(&str, &str, u64); 13] = [
        (
            "shipper_log_appended_chunks_total",
            "Chunks appended to the log.",
            m.chunks_appended,
        ),
        (
            "shipper_log_appended_records_total",
            "Records appended to the log.",
            m.records_appended,
        ),
        (
            "shipper_log_appended_bytes_total",
            "Compressed bytes appended to the log.",
            m.bytes_appended,
        ),
        (
            "shipper_log_flushes_total",
            "Flushes to stable storage.",
            m.flushes,
        ),
        (
            "shipper_log_created_segments_total",
            "Segments the log created.",
            m.segments_created,
        ),
        (
            "shipper_log_deleted_segments_total",
            "Segments deleted after every sink acknowledged them.",
            m.segments_deleted,
        ),
        (
            "shipper_log_dropped_segments_total",
            "Segments deleted unacknowledged by when_full = drop_oldest.",
            m.segments_dropped,
        ),
        (
            "shipper_log_dropped_records_total",
            "Records deleted unacknowledged by when_full = drop_oldest.",
            m.records_dropped,
        ),
        (
            "shipper_log_skipped_chunks_total",
            "Damaged chunks skipped.",
            m.chunks_skipped,
        ),
        (
            "shipper_log_full_waits_total",
            "Times appends waited for the disk budget to have room.",
            m.full_waits,
        ),
        (
            "shipper_log_disk_full_waits_total",
            "Times appends waited for the filesystem to have room.",
            m.disk_full_waits,
        ),
        (
            "shipper_log_transient_errors_total",
            "Operations the log writer tried again after a passing error (out of file descriptors or memory).",
            m.transient_errors,
        ),
        (
            "shipper_log_lost_records_total",
            "Records recovery found lost to damage when the log was opened.",
            m.records_lost,
        ),
    ];
    for (name, help, value) in counters {
        samples.counter(name, help, &[], value);
    }
    let gauges: [(&str, &str, f64); 6] = [
        (
            "shipper_log_segments",
            "Segment files on disk.",
            m.segments as f64,
        ),
        (
            "shipper_log_disk_bytes",
            "Bytes of segment files on disk.",
            m.disk_bytes as f64,
        ),
        (
            "shipper_log_full",
            "1 while appends wait for room: the disk budget is reached or the disk is full.",
            f64::from(u8::from(log.is_full())),
        ),
        (
            "shipper_log_disk_full",
            "1 while the filesystem has no room for a new segment.",
            m.disk_full as f64,
        ),
        (
            "shipper_log_next_offset",
            "Offset the next record gets.",
            m.next_offset as f64,
        ),
        (
            "shipper_log_durable_offset",
            "Every record below this offset is durable.",
            m.durable_offset as f64,
        ),
    ];
    for (name, help, value) in gauges {
        samples.gauge(name, help, &[], value);
    }
    samples.counter_f64(
        "shipper_log_flush_seconds_total",
        "Time spent in flushes.",
        &[],
        m.flush_nanos as f64 / 1e9,
    );
}

fn process_metrics(samples: &mut Samples) {
    let usage = procstat::usage("self");
    samples.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[],
        usage.vm_rss as f64,
    );
    samples.counter_f64(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        &[],
        usage.cpu_seconds,
    );
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        samples.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            entries.count() as f64,
        );
    }
    if let Some(max) = max_open_files() {
        samples.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            &[],
            max as f64,
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits`.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The value of the series `name` in a `/metrics` text whose labels
/// include every pair of `labels`, summed over the series that match;
/// `None` when none does. What `shipper bench` and the tests read a
/// scrape with.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.rsplit_once("} ") {
                Some((series, value)) => (series, value),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let found = parse_labels(series);
        let matches = labels
            .iter()
            .all(|(key, want)| found.iter().any(|(k, v)| k == key && v == want));
        if let (true, Ok(value)) = (matches, value.trim().parse::<f64>()) {
            *total.get_or_insert(0.0) += value;
        }
    }
    total
}

/// `a="1",b="x\"y"` as pairs, escapes undone.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => {}
                },
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_a_subset_of_its_labels() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{component_id=\"a\\\"b\",component_kind=\"sink\"} 3\n\
                    x_total{component_id=\"c\",component_kind=\"sink\"} 4\n\
                    x_total_other{component_id=\"c\"} 9\ny 1.5\n";
        assert_eq!(
            sample(text, "x_total", &[("component_id", "a\"b")]),
            Some(3.0)
        );
        assert_eq!(
            sample(text, "x_total", &[("component_kind", "sink")]),
            Some(7.0)
        );
        assert_eq!(sample(text, "x_total", &[("component_id", "d")]), None);
        assert_eq!(sample(text, "y", &[]), Some(1.5));
    }

    #[test]
    fn the_registry_of_a_log_has_the_process_and_build_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), shipper_core::log::LogOptions::default()).unwrap();
        let text = registry(&log).render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "shipper_log_appended_records_total",
            "shipper_log_durable_offset",
        ] {
            assert!(sample(&text, name, &[]).is_some(), "{name} in {text}");
        }
        assert_eq!(
            sample(
                &text,
                "shipper_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        assert!(sample(&text, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
        log.close().unwrap();
    }
}
