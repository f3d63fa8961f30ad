//! Dynamic plugins in real `shipper run` processes: the Rust redact
//! transform (examples/plugins/redact), the C file sink
//! (examples/plugins/c-file-sink), and the test fixtures under
//! tests/plugins (a sink that fails and panics on purpose, a source),
//! built by this test with cargo and cc; libraries shipper must refuse;
//! reload swapping a plugin; `kill -9` in the middle of deliveries.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_exactly_once, free_port, http_request, Guard, SHIPPER};

/// The plugin libraries, built once per test process.
struct Libraries {
    redact: PathBuf,
    flaky_sink: PathBuf,
    ticker_source: PathBuf,
    c_file_sink: PathBuf,
    wrong_abi: PathBuf,
    no_entry: PathBuf,
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the Rust plugins with cargo (it builds no cdylib for another
/// package's tests) into this test's target directory and profile, and the
/// C ones with cc into a directory of their own.
fn libraries() -> &'static Libraries {
    static BUILT: std::sync::OnceLock<Libraries> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test binary>
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--locked", "--lib"])
            .args(["-p", "shipper-redact"])
            .args(["-p", "shipper-test-flaky-sink"])
            .args(["-p", "shipper-test-ticker-source"])
            .arg("--manifest-path")
            .arg(repository().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let built = build.output().expect("running cargo to build the plugins");
        assert!(
            built.status.success(),
            "cargo build of the plugins failed:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let c_dir = profile_dir.join("c-plugins");
        std::fs::create_dir_all(&c_dir).unwrap();
        let compile = |source: &str, library: &str| {
            let out = c_dir.join(library);
            let compiled = Command::new("cc")
                .args([
                    "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
                ])
                .arg("-D_POSIX_C_SOURCE=200809L")
                .arg("-I")
                .arg(repository().join("plugins/sdk/include"))
                .arg("-o")
                .arg(&out)
                .arg(repository().join(source))
                .output()
                .expect("running cc");
            assert!(
                compiled.status.success(),
                "cc {source} failed:\n{}",
                String::from_utf8_lossy(&compiled.stderr)
            );
            out
        };
        Libraries {
            redact: profile_dir.join("libshipper_redact.so"),
            flaky_sink: profile_dir.join("libshipper_test_flaky_sink.so"),
            ticker_source: profile_dir.join("libshipper_test_ticker_source.so"),
            c_file_sink: compile(
                "examples/plugins/c-file-sink/file_sink.c",
                "libfile_sink.so",
            ),
            wrong_abi: compile("tests/plugins/c/wrong_abi.c", "libwrong_abi.so"),
            no_entry: compile("tests/plugins/c/no_entry.c", "libno_entry.so"),
        }
    })
}

/// `shipper plugin inspect` of `library` (with `--json` if asked):
/// exit code, stdout, stderr.
fn inspect(library: &Path, json: bool) -> (i32, String, String) {
    let mut command = Command::new(SHIPPER);
    command.args(["plugin", "inspect"]).arg(library);
    if json {
        command.arg("--json");
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn inspect_describes_each_plugin() {
    let libraries = libraries();
    for (library, name, kind, version) in [
        (
            &libraries.redact,
            "redact",
            "transform",
            env!("CARGO_PKG_VERSION"),
        ),
        (&libraries.c_file_sink, "c-file-sink", "sink", "1.0.0"),
        (
            &libraries.flaky_sink,
            "flaky-sink",
            "sink",
            env!("CARGO_PKG_VERSION"),
        ),
        (
            &libraries.ticker_source,
            "ticker-source",
            "source",
            env!("CARGO_PKG_VERSION"),
        ),
    ] {
        let (code, stdout, stderr) = inspect(library, true);
        assert_eq!(code, 0, "{stderr}");
        let described: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(described["name"], name, "{stdout}");
        assert_eq!(described["kind"], kind, "{stdout}");
        assert_eq!(described["version"], version, "{stdout}");
        assert_eq!(described["abi_version"], 1, "{stdout}");
        // Where it goes, beside the built-ins of its role.
        assert_eq!(described["section"], format!("{kind}s"), "{stdout}");
        let builtin = match kind {
            "source" => "file",
            "transform" => "filter",
            _ => "http",
        };
        assert!(
            described["builtin_types"]
                .as_array()
                .unwrap()
                .contains(&builtin.into()),
            "{stdout}"
        );
        let (code, stdout, _) = inspect(library, false);
        assert_eq!(code, 0);
        assert!(
            stdout.contains(&format!("name:         {name}\n")),
            "{stdout}"
        );
        assert!(stdout.contains("abi version:  1\n"), "{stdout}");
        assert!(
            stdout.contains(&format!("use:          [{kind}s.NAME] with plugin = ")),
            "{stdout}"
        );
    }
}

#[test]
fn libraries_that_are_not_usable_plugins_are_refused_with_the_reason() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.so");
    std::fs::write(&text, "not a library\n").unwrap();
    let writable = dir.path().join("libwritable.so");
    std::fs::copy(&libraries.redact, &writable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let missing = dir.path().join("libmissing.so");
    for (library, expected) in [
        (
            &libraries.wrong_abi,
            "built for plugin ABI version 999; this shipper speaks version 1",
        ),
        (
            &libraries.no_entry,
            "does not export `shipper_plugin_entry`",
        ),
        (&text, "not a loadable shared library"),
        (
            &writable,
            "refusing a library writable by others than its owner (mode 666)",
        ),
        (&missing, "No such file or directory"),
    ] {
        let (code, _, stderr) = inspect(library, false);
        assert_eq!(code, 1, "{}: {stderr}", library.display());
        assert!(stderr.contains(expected), "{}: {stderr}", library.display());
        assert!(
            stderr.contains(&library.display().to_string()),
            "the error names the file: {stderr}"
        );
    }
}

/// A data dir, an input log the `file` source named `app` tails, an admin
/// port, and whatever components the test adds.
fn config(dir: &Path, components: &str) -> (PathBuf, u16) {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let port = free_port();
    let path = dir.join("shipper.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = "{data}"
shutdown_timeout_ms = 10000
[log]
durability = "interval"
interval_ms = 20
[admin]
address = "127.0.0.1:{port}"
[sources.app]
type = "file"
include = ["{logs}/*.log"]
read_from = "beginning"
glob_interval_ms = 100
{components}"#,
            data = dir.join("data").display(),
            logs = dir.join("logs").display(),
        ),
    )
    .unwrap();
    (path, port)
}

/// Appends `lines` to the tailed log.
fn append(dir: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs/app.log"))
        .unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

fn numbered(range: std::ops::Range<u64>) -> Vec<String> {
    range
        .map(|seq| format!(r#"{{"seq":{seq},"msg":"event {seq} for the plugin test"}}"#))
        .collect()
}

/// Complete lines of `path` (a last line without its newline is still
/// being written).
fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete.lines().map(str::to_owned).collect()
}

fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often each `seq` appears in the output of a plugin sink, whose
/// lines are `OFFSET<TAB>STREAM<TAB>PAYLOAD`; checks that offsets only
/// grow.
fn seen_tsv(path: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    let mut last_offset = None;
    for line in lines(path) {
        let mut fields = line.splitn(3, '\t');
        let offset: u64 = fields.next().unwrap().parse().unwrap();
        assert!(
            last_offset.is_none_or(|last| offset > last),
            "offsets out of order at {line}"
        );
        last_offset = Some(offset);
        let _stream = fields.next().unwrap();
        let payload: serde_json::Value = serde_json::from_str(fields.next().unwrap()).unwrap();
        *counts.entry(payload["seq"].as_u64().unwrap()).or_insert(0) += 1;
    }
    counts
}

/// Runs records with cards and e-mails through the redact plugin at
/// `library` into a file sink and checks what arrives.
fn redact_pipeline(library: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let (config, _) = config(
        dir.path(),
        &format!(
            r#"[transforms.scrub]
plugin = "{redact}"
inputs = ["app"]
replacement = "<redacted>"
[sinks.out]
type = "file"
inputs = ["scrub"]
path = "{out}"
"#,
            redact = library.display(),
            out = out.display(),
        ),
    );
    let input = [
        r#"{"user":"ada@example.com","card":"4111 1111 1111 1111","amount":12}"#,
        r#"{"note":"nothing to hide","id":1234567890123}"#,
        r#"{"msg":"refund to 5500-0000-0000-0004 for bob.smith+shop@mail.example.org"}"#,
    ];
    append(dir.path(), &input.map(str::to_owned));
    let shipper = Guard::start(&config);
    wait_for("3 records", Duration::from_secs(30), || {
        lines(&out).len() == 3
    });
    shipper.terminate();
    assert_eq!(
        lines(&out),
        [
            r#"{"user":"<redacted>","card":"<redacted>","amount":12}"#,
            r#"{"note":"nothing to hide","id":1234567890123}"#,
            r#"{"msg":"refund to <redacted> for <redacted>"}"#,
        ]
    );
}

#[test]
fn the_rust_redact_transform_scrubs_records_in_a_pipeline() {
    redact_pipeline(&libraries().redact);
}

/// The toolchain that is not the one building this test, if rustup has one.
fn other_toolchain() -> Option<String> {
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    let ours =
        String::from_utf8_lossy(&Command::new("rustc").arg("--version").output().ok()?.stdout)
            .into_owned();
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or("").to_owned())
        .find(|toolchain| {
            let version = Command::new("rustup")
                .args(["run", toolchain, "rustc", "--version"])
                .output();
            version.is_ok_and(|v| v.status.success() && String::from_utf8_lossy(&v.stdout) != ours)
        })
}

#[test]
fn a_plugin_built_by_another_rustc_loads_and_runs() {
    let Some(toolchain) = other_toolchain() else {
        println!("skipped: rustup has no toolchain other than the one running the tests");
        return;
    };
    // A target directory of its own: two compilers never share artifacts.
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.ancestors().nth(3).unwrap().join("other-rustc");
    let built = Command::new("rustup")
        .args(["run", &toolchain, "cargo", "build", "--locked", "--lib"])
        .args(["-p", "shipper-redact", "--manifest-path"])
        .arg(repository().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTC")
        .env_remove("RUSTC")
        .output()
        .expect("running cargo");
    assert!(
        built.status.success(),
        "building the redact plugin with {toolchain} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let library = target_dir.join("debug/libshipper_redact.so");
    let (code, stdout, stderr) = inspect(&library, true);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"name\":\"redact\""), "{stdout}");
    redact_pipeline(&library);
}

#[test]
fn the_c_sink_gets_every_record_exactly_once_across_kill_9() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("archive.tsv");
    let (config, _) = config(
        dir.path(),
        &format!(
            r#"[sinks.archive]
plugin = "{sink}"
inputs = ["app"]
path = "{out}"
"#,
            sink = libraries.c_file_sink.display(),
            out = out.display(),
        ),
    );
    let total = 60_000;
    let batch = 5_000;
    let mut written = 0;
    let mut kills = 0;
    let mut shipper = Guard::start(&config);
    while written < total {
        append(dir.path(), &numbered(written..written + batch));
        written += batch;
        if written % 20_000 == 0 {
            // Some of what was written has arrived, not all: kill in the
            // middle of delivering.
            let arrived = written - batch;
            wait_for("part of the records", Duration::from_secs(60), || {
                lines(&out).len() as u64 >= arrived / 2
            });
            shipper.kill();
            kills += 1;
            shipper = Guard::start(&config);
        }
    }
    wait_for("every record", Duration::from_secs(120), || {
        seen_tsv(&out).len() as u64 >= total
    });
    shipper.terminate();
    assert_eq!(kills, 3);
    assert_exactly_once(&seen_tsv(&out), total);
}

#[test]
fn a_sink_plugin_that_fails_and_panics_loses_nothing() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flaky.tsv");
    let (config, port) = config(
        dir.path(),
        &format!(
            r#"[sinks.flaky]
plugin = "{sink}"
inputs = ["app"]
path = "{out}"
fail_times = 2
panic_on = "\"seq\":700,"
panic_times = 2
"#,
            sink = libraries.flaky_sink.display(),
            out = out.display(),
        ),
    );
    let total = 3_000;
    append(dir.path(), &numbered(0..total));
    let shipper = Guard::start(&config);
    wait_for("every record", Duration::from_secs(60), || {
        seen_tsv(&out).len() as u64 >= total
    });
    let (status, metrics) = http_request(port, "GET", "/metrics");
    assert_eq!(status, 200);
    let flaky = [("component_id", "flaky")];
    assert_eq!(
        shipper::metrics::sample(&metrics, "shipper_plugin_panics_total", &flaky),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        shipper::metrics::sample(&metrics, "shipper_plugin_errors_total", &flaky),
        Some(4.0),
        "two simulated outages and two panics: {metrics}"
    );
    let stderr = shipper.terminate();
    assert!(
        stderr.contains("the plugin panicked: flaky-sink: panic_on matched"),
        "{stderr}"
    );
    assert!(
        stderr.contains("backend unavailable (simulated)"),
        "{stderr}"
    );
    assert_exactly_once(&seen_tsv(&out), total);
}

#[test]
fn a_source_plugin_feeds_a_pipeline_and_its_panic_is_an_error_not_a_crash() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let write = |extra: &str| {
        let path = dir.path().join("ticker.toml");
        std::fs::write(
            &path,
            format!(
                r#"data_dir = "{data}"
[sources.ticks]
plugin = "{source}"
stream = "ticks"
count = 5000
{extra}
[sinks.out]
type = "file"
inputs = ["ticks"]
path = "{out}"
"#,
                data = dir.path().join("data").display(),
                source = libraries.ticker_source.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        path
    };
    // The source ends after its count: so does the run, with every record.
    Guard::start(&write("")).wait_for_exit(Duration::from_secs(60));
    let records = lines(&out);
    assert_eq!(records.len(), 5000);
    for (n, record) in records.iter().enumerate() {
        assert_eq!(record, &format!(r#"{{"n":{n},"source":"ticker"}}"#));
    }

    // A panic in the source's run is that source's error, not the
    // process's death: the run ends with the error, after storing and
    // delivering what the source emitted before.
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let (status, stderr) =
        Guard::start(&write("panic_at = 100")).wait_for_end(Duration::from_secs(60));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("source ticks: the plugin panicked: ticker-source: panic_at 100"),
        "{stderr}"
    );
    assert_eq!(lines(&out).len(), 100);
}

#[test]
fn a_source_plugin_that_never_asks_to_stop_is_stopped_by_its_next_emit() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let config = dir.path().join("ticker.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
shutdown_timeout_ms = 10000
[sources.ticks]
plugin = "{source}"
ignore_stop = true
interval_ms = 1
[sinks.out]
type = "file"
inputs = ["ticks"]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            source = libraries.ticker_source.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let shipper = Guard::start(&config);
    wait_for("some records", Duration::from_secs(30), || {
        lines(&out).len() >= 100
    });
    let stopping = Instant::now();
    let stderr = shipper.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert!(!stderr.contains("ERROR"), "an orderly stop: {stderr}");
    // Every record it emitted before the stop was stored and delivered, in order.
    for (n, record) in lines(&out).iter().enumerate() {
        assert_eq!(record, &format!(r#"{{"n":{n},"source":"ticker"}}"#));
    }
}

#[test]
fn a_delivery_a_reload_gave_up_on_ends_before_the_next_instance_opens() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flaky.tsv");
    let (config, port) = config(
        dir.path(),
        &format!(
            r#"[sinks.flaky]
plugin = "{sink}"
inputs = ["app"]
path = "{out}"
block_ms = 3000
"#,
            sink = libraries.flaky_sink.display(),
            out = out.display(),
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shutdown_timeout_ms = 10000", "shutdown_timeout_ms = 300");
    std::fs::write(&config, &text).unwrap();
    append(dir.path(), &numbered(0..500));
    let shipper = Guard::start(&config);
    wait_for("the blocked delivery", Duration::from_secs(30), || {
        dir.path().join("flaky.tsv.blocked").exists()
    });
    let blocked_at = Instant::now();
    // A changed sink: the reload stops the old one, gives up on its
    // delivery after 300 ms, and starts the new one while the plugin call
    // still sleeps. The new instance must open after the call has written
    // (its high-water mark then skips those records), not beside it.
    std::fs::write(
        &config,
        text.replace("block_ms = 3000\n", "block_ms = 3000\nfail_times = 0\n"),
    )
    .unwrap();
    let (_, body) = http_request(port, "POST", "/reload");
    assert!(
        body.contains("sink flaky did not finish its delivery within 300ms"),
        "{body}"
    );
    append(dir.path(), &numbered(500..1000));
    wait_for("every record", Duration::from_secs(60), || {
        seen_tsv(&out).len() >= 1000
    });
    // Whatever the sleeping call was going to write, it has written now.
    std::thread::sleep(
        (blocked_at + Duration::from_secs(4)).saturating_duration_since(Instant::now()),
    );
    let stderr = shipper.terminate();
    assert_exactly_once(&seen_tsv(&out), 1000);
    assert!(
        stderr.contains("waiting for a call of the sink's previous instance to return first"),
        "{stderr}"
    );
}

#[test]
fn a_reload_does_not_start_a_source_again_while_its_blocked_run_goes_on() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    let port = free_port();
    let config = dir.path().join("ticker.toml");
    let write = |stream: &str| {
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
shutdown_timeout_ms = 300
[admin]
address = "127.0.0.1:{port}"
[sources.ticks]
plugin = "{source}"
stream = "{stream}"
interval_ms = 5
block_ms = 3000
[sinks.out]
type = "file"
inputs = ["ticks"]
path = "{out}"
"#,
                data = dir.path().join("data").display(),
                source = libraries.ticker_source.display(),
                out = out.display(),
            ),
        )
        .unwrap();
    };
    write("a");
    let shipper = Guard::start(&config);
    wait_for("the first record", Duration::from_secs(30), || {
        lines(&out).len() == 1
    });
    // The source hangs in its own code: the reload's stop times out, and
    // its new run must wait for the old one to return.
    write("b");
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("failed [ticks, ticks]"), "{body}");
    assert!(
        body.contains("source ticks did not stop within 300ms"),
        "{body}"
    );
    assert!(
        body.contains("its previous run has not returned yet"),
        "{body}"
    );
    // Once it has returned (at its next emit, refused), a reload starts it.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_request(port, "POST", "/reload");
        if status == 200 {
            assert!(body.contains("started [ticks]"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = lines(&out).len();
    wait_for("the new run's records", Duration::from_secs(30), || {
        lines(&out).len() > before + 10
    });
    shipper.terminate();
}

#[test]
fn reload_swaps_a_plugin_for_another_library() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out/records.ndjson");
    // Two installs of the plugin under their own names, as an upgrade would be.
    let first = dir.path().join("libredact-1.so");
    let second = dir.path().join("libredact-2.so");
    std::fs::copy(&libraries.redact, &first).unwrap();
    std::fs::copy(&libraries.redact, &second).unwrap();
    let components = |library: &Path, replacement: &str| {
        format!(
            r#"[transforms.scrub]
plugin = "{library}"
inputs = ["app"]
replacement = "{replacement}"
[sinks.out]
type = "file"
inputs = ["scrub"]
path = "{out}"
"#,
            library = library.display(),
            out = out.display(),
        )
    };
    let (config, port) = config(dir.path(), &components(&first, "[one]"));
    let shipper = Guard::start(&config);
    append(dir.path(), &[r#"{"to":"a@example.com"}"#.to_owned()]);
    wait_for("the first record", Duration::from_secs(30), || {
        lines(&out).len() == 1
    });

    let (swapped, _) = self::config(dir.path(), &components(&second, "[two]"));
    assert_eq!(swapped, config);
    // `config` picked a new admin port; keep the running one.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &text[text.find("address = ").unwrap()..]
            .lines()
            .next()
            .unwrap()
            .to_owned(),
        &format!("address = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let (status, body) = http_request(port, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("restarted [app, scrub]"), "{body}");

    append(dir.path(), &[r#"{"to":"b@example.com"}"#.to_owned()]);
    wait_for("the second record", Duration::from_secs(30), || {
        lines(&out).len() == 2
    });
    shipper.terminate();
    assert_eq!(
        lines(&out),
        [r#"{"to":"[one]"}"#, r#"{"to":"[two]"}"#],
        "the second record went through the second library"
    );
}

#[test]
fn a_plugin_of_the_wrong_kind_is_refused_by_validate_and_run() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config(
        dir.path(),
        &format!(
            r#"[transforms.scrub]
plugin = "{sink}"
inputs = ["app"]
path = "x"
[sinks.void]
type = "blackhole"
inputs = ["scrub"]
"#,
            sink = libraries.c_file_sink.display(),
        ),
    );
    let expected = format!(
        "{} is a sink plugin (c-file-sink), not a transform",
        libraries.c_file_sink.display()
    );
    let validated = Command::new(SHIPPER)
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&validated.stderr);
    assert_eq!(validated.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("transforms.scrub.plugin: "), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");

    let ran = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(!ran.status.success(), "{stderr}");
    assert!(stderr.contains("not a transform"), "{stderr}");
}

#[test]
fn a_plugin_that_refuses_its_configuration_is_refused_by_validate_as_by_run() {
    let libraries = libraries();
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = config(
        dir.path(),
        &format!(
            r#"[transforms.scrub]
plugin = "{redact}"
inputs = ["app"]
colour = "red"
[sinks.void]
type = "blackhole"
inputs = ["scrub"]
"#,
            redact = libraries.redact.display(),
        ),
    );
    let validated = Command::new(SHIPPER)
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&validated.stderr);
    assert_eq!(validated.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(": transforms.scrub: the transform plugin redact refuses its configuration: redact: bad configuration: unknown field `colour`"),
        "{stderr}"
    );

    let ran = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert_eq!(ran.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `colour`"), "{stderr}");
}
