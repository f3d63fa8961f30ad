//! `shipper validate -c FILE`, run as a separate process on real files.

use std::path::Path;
use std::process::Command;

/// Runs `shipper validate -c FILE`: (exit code, stdout, stderr).
fn validate(file: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(["validate", "-c"])
        .arg(file)
        .env_remove("SHIPPER_TOKEN")
        .env_remove("SHIPPER_DATA_DIR")
        .env("SHIPPER_TEST_URI", "https://ingest.example.com/v1")
        .output()
        .expect("running shipper");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_valid_config_prints_a_summary_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "data_dir = {data:?}\n\
             [sources.app]\ntype = \"file\"\ninclude = [\"/var/log/app/*.log\"]\n\
             [sources.spare]\ntype = \"stdin\"\n\
             [transforms.scrub]\ntype = \"remap\"\ninputs = [\"app\"]\nredact = [\"password\"]\n\
             [sinks.backend]\ntype = \"http\"\ninputs = [\"scrub\"]\nuri = \"${{SHIPPER_TEST_URI}}\"\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = validate(&file);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "config OK: 2 sources, 1 transforms, 1 sinks\n");
    // The unread source is a warning, with file, line and path.
    let warning = format!(
        "{}:5: sources.spare: warning: nothing reads",
        file.display()
    );
    assert!(stderr.starts_with(&warning), "{stderr}");
}

#[test]
fn an_invalid_config_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[log]\n\
         max_bytes = \"10 GiBs\"\n\
         [sources.app]\n\
         type = \"file\"\n\
         include = [\"/var/log/*.log\"]\n\
         [sinks.backend]\n\
         type = \"http\"\n\
         inputs = [\"app\", \"missing\"]\n\
         uri = \"https://x\"\n\
         batch = { max_bytes = \"4MiB\", max_age = 5 }\n\
         auth = { strategy = \"bearer\", token = \"${SHIPPER_TOKEN}\" }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = validate(&file);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    let name = file.display();
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{name}:2: log.max_bytes: invalid byte size `10 GiBs`"),
        format!(
            "{name}:8: sinks.backend.inputs: `missing` is not the name of a source or transform"
        ),
        format!("{name}:10: sinks.backend.batch.max_age: unknown key `max_age`"),
        format!(
            "{name}:11: sinks.backend.auth.token: environment variable `SHIPPER_TOKEN` is not set"
        ),
        format!("{name}: 4 errors found"),
    ];
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    for (line, prefix) in lines.iter().zip(&expected) {
        assert!(
            line.starts_with(prefix.as_str()),
            "`{line}` should start with `{prefix}`"
        );
    }
}

#[test]
fn a_syntax_error_points_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syntax.toml");
    std::fs::write(&file, "[sources.app]\ntype = \"stdin\"\n\n[sinks\n").unwrap();
    let (code, _, stderr) = validate(&file);
    assert_eq!(code, 1, "{stderr}");
    let prefix = format!("{}:4: ", file.display());
    assert!(stderr.starts_with(&prefix), "{stderr}");
}

#[test]
fn a_file_that_cannot_be_read_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = validate(&dir.path().join("absent.toml"));
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("reading config"), "{stderr}");
    assert!(stderr.contains("absent.toml"), "{stderr}");
    let (code, _, stderr) = validate(dir.path());
    assert_eq!(code, 2, "a directory: {stderr}");
}

#[test]
fn the_example_config_validates() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shipper.toml");
    let (code, stdout, stderr) = validate(&example);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "config OK: 2 sources, 1 transforms, 2 sinks\n");
    assert_eq!(stderr, "");
}

#[test]
fn an_sdk_source_validates_with_a_warning_that_run_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("embedded.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        format!(
            "data_dir = {data:?}\n\
             [sources.app]\ntype = \"sdk\"\n\
             [sinks.out]\ntype = \"blackhole\"\ninputs = [\"app\"]\n"
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = validate(&file);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "{}: sources.app: warning: `shipper run` refuses type \"sdk\": only an application embedding shipper (shipper::ingest::Ingestor) can feed it\n",
            file.display()
        )
    );
}

/// Runs `shipper run -c FILE` to its end: (exit code, stderr).
fn run(file: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shipper"))
        .args(["run", "-c"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running shipper");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn validate_refuses_what_run_refuses_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A generator that ends by itself, so a config `run` accepted would
    // end too instead of hanging the test.
    let head = format!(
        "data_dir = {:?}\n[admin]\naddress = \"127.0.0.1:0\"\n[sources.in]\ntype = \"generator\"\ncount = 1\n",
        dir.path().join("data")
    );
    let cases = [
        (
            "[sinks.pg]\ntype = \"postgres\"\ninputs = [\"in\"]\nconnection = \"host=127.0.0.1 sslmode=verify-ca\"\ntable = \"events\"\n",
            "10: sinks.pg.connection: sslmode=verify-ca needs a CA file",
        ),
        (
            "[sinks.disk]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out.ndjson.gz\"\ncompression = { codec = \"gzip\" }\n",
            "11: sinks.disk.compression.codec: gzip is not available",
        ),
        (
            "[sinks.disk]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out.ndjson\"\ncompression = []\n",
            "11: sinks.disk.compression: invalid type: array, expected a table",
        ),
        (
            "[sinks.disk]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out-%j.ndjson\"\n",
            "10: sinks.disk.path: path \"out-%j.ndjson\": unsupported field %j",
        ),
        (
            "[sinks.js]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"nats://a:4222,nats://b:4222\"\nsubject = \"events\"\n",
            "10: sinks.js.url: url \"nats://a:4222,nats://b:4222\": one server url, not a list",
        ),
        (
            "[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://127.0.0.1:1/\"\ntimeout_ms = 9223372036854775807\n",
            "11: sinks.web.timeout_ms: 9223372036854775807 ms is longer than 365 days",
        ),
    ];
    for (sink, expected) in cases {
        let file = dir.path().join("shipper.toml");
        std::fs::write(&file, format!("{head}{sink}")).unwrap();
        let expected = format!("{}:{expected}", file.display());
        let (code, stdout, stderr) = validate(&file);
        assert_eq!(code, 1, "{sink}: {stdout}{stderr}");
        assert!(stderr.starts_with(&expected), "{sink}: {stderr}");
        let (code, stderr) = run(&file);
        assert_eq!(code, 2, "{sink}: {stderr}");
        assert!(stderr.contains(&expected), "{sink}: {stderr}");
    }
}
