//! The `shipper` binary, run as a separate process on real directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shipper_core::chunk::frame::CHUNK_MAGIC;
use shipper_core::log::segment::SEGMENT_HEADER_LEN;
use shipper_core::log::{Log, LogOptions};

fn shipper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running shipper")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs shipper and checks its exit code, printing its output on mismatch.
fn expect(args: &[&str], code: i32) -> (String, String) {
    let output = shipper(args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(
        output.status.code(),
        Some(code),
        "shipper {args:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn inspect_json(dir: &Path) -> serde_json::Value {
    let (stdout, _) = expect(&["inspect", "--json", path_str(dir)], 0);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn inspect_reports_a_clean_log_written_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (stdout, _) = expect(
        &[
            "demo",
            "--data-dir",
            path_str(&data),
            "--records",
            "30000",
            "--record-bytes",
            "400",
            "--segment-mib",
            "1",
            "--durability",
            "never",
            "--no-ack",
        ],
        0,
    );
    assert!(stdout.contains("recovery     clean"), "{stdout}");
    assert!(stdout.contains("verified     30,000 records"), "{stdout}");

    let report = inspect_json(&data);
    let segments = report["segments"].as_array().unwrap();
    assert_eq!(segments.len(), segment_files(&data).len());
    assert!(segments.len() >= 2, "{report:#}");
    let records: u64 = segments
        .iter()
        .map(|s| s["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, 30_000);
    assert_eq!(report["records"], 30_000);
    assert_eq!(report["start_offset"], 0);
    assert_eq!(report["next_offset"], 30_000);
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    assert!(report["locked_by"].is_null());
    assert_eq!(segments.last().unwrap()["state"], "active");
    assert_eq!(segments[0]["state"], "sealed");
    assert_eq!(report["producer_id"].as_str().unwrap().len(), 32);

    let (human, _) = expect(&["inspect", "--verify", path_str(&data)], 0);
    let first = segment_files(&data)[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for expected in [
        first.as_str(),
        "sealed",
        "active",
        "findings: none",
        "lock         free",
    ] {
        assert!(human.contains(expected), "no {expected:?} in\n{human}");
    }
}

#[test]
fn verify_finds_a_flipped_byte_and_shipper_then_starts_and_reports_the_skip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = path_str(&data);
    expect(
        &[
            "demo",
            "--data-dir",
            data_arg,
            "--records",
            "20000",
            "--no-ack",
        ],
        0,
    );
    let report = inspect_json(&data);
    assert!(
        report["segments"][0]["chunks"].as_u64().unwrap() >= 2,
        "{report:#}"
    );

    // Flip one byte in the body of the first chunk of the first segment.
    let segment = segment_files(&data).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let chunk = SEGMENT_HEADER_LEN;
    assert_eq!(bytes[chunk..chunk + 4], CHUNK_MAGIC);
    let frame_len = u32::from_le_bytes(bytes[chunk + 8..chunk + 12].try_into().unwrap()) as usize;
    let header_len = u16::from_le_bytes(bytes[chunk + 12..chunk + 14].try_into().unwrap()) as usize;
    assert!(
        frame_len > header_len + 100,
        "frame {frame_len}, header {header_len}"
    );
    let flipped = chunk + header_len + (frame_len - header_len) / 2;
    bytes[flipped] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let file_name = segment.file_name().unwrap().to_str().unwrap().to_owned();

    let (stdout, _) = expect(&["inspect", "--verify", data_arg], 1);
    let line = stdout
        .lines()
        .find(|l| l.contains("corrupt_chunk"))
        .unwrap_or_else(|| panic!("no corrupt_chunk finding in\n{stdout}"));
    assert!(
        line.contains(&file_name) && line.contains("at byte 64"),
        "{line}"
    );

    let (stdout, _) = expect(&["inspect", "--json", "--verify", data_arg], 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["kind"] == "corrupt_chunk"
            && f["position"] == 64
            && f["corruption"] == true
            && f["path"].as_str().unwrap().ends_with(&file_name)),
        "{report:#}"
    );

    // shipper starts on the damaged directory, says what it skipped, and
    // appends after the records already there.
    let (stdout, _) = expect(&["demo", "--data-dir", data_arg, "--records", "1000"], 0);
    let skipped = stdout
        .lines()
        .find(|l| l.contains("skipped corrupt chunk"))
        .unwrap_or_else(|| panic!("no skipped chunk reported in\n{stdout}"));
    assert!(
        skipped.contains(&file_name) && skipped.contains("at byte 64"),
        "{skipped}"
    );
    assert!(stdout.contains("lost records at offsets 0.."), "{stdout}");
    assert!(
        stdout.contains("written      offsets 20000..21000"),
        "{stdout}"
    );
    assert!(stdout.contains("verified     1,000 records"), "{stdout}");

    // The repair is on disk: the directory now verifies, and the loss is a note.
    let (stdout, _) = expect(&["inspect", "--verify", data_arg], 0);
    assert!(stdout.contains("repaired_loss"), "{stdout}");
}

#[test]
fn inspect_of_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    for args in [
        vec!["inspect", path_str(&missing)],
        vec!["inspect", "--verify", "--json", path_str(&missing)],
    ] {
        let (stdout, stderr) = expect(&args, 2);
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains(path_str(&missing)) && stderr.contains("does not exist"),
            "{stderr}"
        );
    }
    assert!(!missing.exists(), "inspect must not create the directory");
}

#[test]
fn inspect_names_the_process_holding_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    // This test process is "another process" to the shipper it runs.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let pid = std::process::id().to_string();

    let (stdout, _) = expect(&["inspect", path_str(dir.path())], 0);
    assert!(stdout.contains(&format!("held by pid {pid}")), "{stdout}");
    let report = inspect_json(dir.path());
    assert_eq!(report["locked_by"], pid.as_str());

    // The demo cannot open it either, and says who has it.
    let (_, stderr) = expect(
        &[
            "demo",
            "--data-dir",
            path_str(dir.path()),
            "--records",
            "10",
        ],
        2,
    );
    assert!(
        stderr.contains("opening data dir") && stderr.contains(&pid),
        "{stderr}"
    );

    log.close().unwrap();
    let report = inspect_json(dir.path());
    assert!(report["locked_by"].is_null(), "{report:#}");
}

#[test]
fn demo_in_a_temporary_directory_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(["demo", "--records", "5000", "--producers", "1"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("removed at exit"), "{stdout}");
    assert!(stdout.contains("cursor demo committed at 5000"), "{stdout}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "{stdout}"
    );
}
