//! `shipper bench`: each scenario runs a real pipeline end to end and
//! reports consistent figures with their same-run baselines. No timing is
//! asserted (this machine is shared): only that the figures exist, agree
//! with each other and with what was sent.

mod common;

use std::process::Command;

use common::SHIPPER;

fn bench(args: &[&str]) -> serde_json::Value {
    let output = Command::new(SHIPPER)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn positive(report: &serde_json::Value, key: &str) -> f64 {
    let value = report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key}: {report:#}"));
    assert!(value > 0.0, "{key} = {value}: {report:#}");
    value
}

fn check(report: &serde_json::Value, records: u64) {
    assert_eq!(report["records"], records, "{report:#}");
    let raw = report["raw_bytes"].as_u64().unwrap();
    let seconds = positive(report, "seconds");
    let rate = positive(report, "records_per_second");
    assert!((rate * seconds - records as f64).abs() < 1.0, "{report:#}");
    let mb_in = positive(report, "mb_per_second_in");
    assert!(
        (mb_in * 1e6 * seconds - raw as f64).abs() < 1e3,
        "{report:#}"
    );
    assert!(
        positive(report, "compression_ratio") > 1.5,
        "JSON compresses: {report:#}"
    );
    positive(report, "compressed_mb_per_second_out");
    positive(report, "peak_rss_bytes");
    let latency = &report["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    let max = latency["max"].as_f64().unwrap();
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{report:#}");
    for baseline in ["memcpy", "write", "zstd"] {
        let rate = report["baselines_mb_per_second"][baseline]
            .as_f64()
            .unwrap();
        let ratio = report["ratio_to"][baseline].as_f64().unwrap();
        assert!(
            rate > 0.0 && (ratio * rate - mb_in).abs() < 1e-6 * mb_in.max(1.0),
            "{report:#}"
        );
    }
}

#[test]
fn the_file_scenario_reports_every_figure_with_its_baselines() {
    let report = bench(&["--scenario", "file", "--records", "30000"]);
    assert_eq!(report["scenario"], "file → blackhole");
    assert_eq!(report["corpus"], "access_log");
    check(&report, 30_000);
    positive(&report, "cpu_seconds");
}

#[test]
fn the_tcp_scenario_over_several_connections() {
    let report = bench(&[
        "--scenario",
        "tcp",
        "--records",
        "30000",
        "--connections",
        "3",
        "--corpus",
        "iot",
        "--durability",
        "always",
        "--zstd-level",
        "3",
    ]);
    assert_eq!(report["durability"], "always");
    assert_eq!(report["zstd_level"], 3);
    check(&report, 30_000);
}

#[test]
fn the_http_scenario_ships_to_an_aggregator_and_draws_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("run.svg");
    let report = bench(&[
        "--scenario",
        "http",
        "--records",
        "30000",
        "--corpus",
        "events",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert_eq!(
        report["scenario"],
        "file → zstd → http → aggregator → blackhole"
    );
    check(&report, 30_000);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    assert_eq!(svg.matches("<polyline ").count(), 2, "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
}

#[test]
fn the_sdk_scenario_at_a_fixed_rate() {
    let report = bench(&[
        "--scenario",
        "sdk",
        "--records",
        "20000",
        "--rate",
        "40000",
        "--connections",
        "2",
        "--record-bytes",
        "150",
    ]);
    check(&report, 20_000);
    let mean = report["mean_record_bytes"].as_f64().unwrap();
    assert!((mean - 150.0).abs() < 1.0, "{report:#}");
    // 20,000 records offered at 40,000/s take half a second at least.
    assert!(report["seconds"].as_f64().unwrap() >= 0.45, "{report:#}");
}

#[test]
fn a_users_own_lines_are_sent_cycled() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mine.ndjson");
    std::fs::write(&input, "{\"a\":1}\n\n{\"b\":\"two\"}\n").unwrap();
    let report = bench(&["--input", input.to_str().unwrap(), "--records", "1001"]);
    check(&report, 1001);
    // 501 × {"a":1} (7 bytes) and 500 × {"b":"two"} (11 bytes).
    assert_eq!(report["raw_bytes"], 501 * 7 + 500 * 11);
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    for (args, expected) in [
        (&["--zstd-level", "0"][..], "--zstd-level must be 1 to 19"),
        (&["--records", "0"][..], "--records must be at least 1"),
        (&["--corpus", "tweets"][..], "unknown corpus `tweets`"),
        (
            &["--input", "/nonexistent/lines"][..],
            "reading /nonexistent/lines",
        ),
    ] {
        let output = Command::new(SHIPPER)
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn markdown_prints_the_readme_table_header_and_one_row() {
    let output = Command::new(SHIPPER)
        .args([
            "bench",
            "--scenario",
            "sdk",
            "--records",
            "5000",
            "--markdown",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("| scenario | records |"), "{text}");
    assert!(
        lines[2].starts_with("| sdk insert → blackhole | 5000 × "),
        "{text}"
    );
    assert_eq!(
        lines[0].matches('|').count(),
        lines[2].matches('|').count(),
        "{text}"
    );
}

/// A user's config: a file source and an http source through a remap
/// into a file sink, with a data dir and admin port the bench must not use.
fn user_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"
[admin]
address = "127.0.0.1:1"
[sources.app]
type = "file"
include = ["{logs}/*.log"]
read_from = "beginning"
[sources.web]
type = "http"
address = "127.0.0.1:{port}"
[transforms.scrub]
type = "remap"
inputs = ["app", "web"]
delete = ["ua"]
[sinks.archive]
type = "file"
inputs = ["scrub"]
path = "{out}"
"#,
            data = dir.join("not-used").display(),
            logs = dir.join("logs").display(),
            port = common::free_port(),
            out = dir.join("out/archive.ndjson").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_users_config_is_fed_through_its_file_or_http_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = user_config(dir.path());
    let config = config.to_str().unwrap();
    let archive = dir.path().join("out/archive.ndjson");
    for (source, records) in [("app", 20_000), ("web", 5_000)] {
        let _ = std::fs::remove_file(&archive);
        let report = bench(&[
            "--scenario",
            "config",
            "--config",
            config,
            "--source",
            source,
            "--records",
            &records.to_string(),
        ]);
        check(&report, records);
        let scenario = report["scenario"].as_str().unwrap();
        assert!(
            scenario.ends_with(&format!("(source {source}, sinks archive)")),
            "{scenario}"
        );
        // The sink delivered for real, through the transform.
        let text = std::fs::read_to_string(&archive).unwrap();
        assert_eq!(text.lines().count() as u64, records);
        assert!(text.lines().all(|line| !line.contains("\"ua\"")));
    }
    assert!(
        !dir.path().join("not-used").exists(),
        "the bench runs a copy with its own data dir"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .collect();
    assert!(
        left.is_empty(),
        "the bench removes the file it fed: {left:?}"
    );
}

#[test]
fn a_config_without_a_source_the_bench_can_feed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stdin.toml");
    std::fs::write(
        &config,
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
    )
    .unwrap();
    let output = Command::new(SHIPPER)
        .args(["bench", "--scenario", "config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no source the bench can feed"), "{stderr}");
    let output = Command::new(SHIPPER)
        .args(["bench", "--scenario", "config"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}

#[test]
fn record_sizes_from_a_range_and_a_duration_at_a_rate() {
    let report = bench(&[
        "--scenario",
        "sdk",
        "--record-bytes",
        "100..1000",
        "--records",
        "20000",
        "--seed",
        "7",
    ]);
    check(&report, 20_000);
    let mean = report["mean_record_bytes"].as_f64().unwrap();
    assert!(
        (500.0..600.0).contains(&mean),
        "uniform over 100..1000: {mean}"
    );

    let report = bench(&["--scenario", "sdk", "--duration", "0.5", "--rate", "20000"]);
    check(&report, 10_000);
    assert!(report["seconds"].as_f64().unwrap() >= 0.45, "{report:#}");

    for (args, expected) in [
        (
            &["--record-bytes", "10..5"][..],
            "the smallest size comes first",
        ),
        (&["--duration", "1"][..], "--rate"),
    ] {
        let output = Command::new(SHIPPER)
            .arg("bench")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
