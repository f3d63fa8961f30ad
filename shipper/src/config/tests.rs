//! Table-driven tests of whole config files: each bad file with every
//! diagnostic it must produce (line, key path, part of the message).

use std::time::Duration;

use shipper_core::log::{Durability, WhenFull};

use super::*;
use shipper_components::sources::file::{FileSourceConfig, ReadFrom};
use shipper_components::sources::generator::GeneratorSourceConfig;
use shipper_components::sources::stdin::StdinSourceConfig;
use shipper_core::corpus::CorpusKind;

fn env(name: &str) -> Option<String> {
    match name {
        "TOKEN" => Some("s3cret".into()),
        "BATCH_BYTES" => Some("2MiB".into()),
        _ => None,
    }
}

/// A source and a sink that read each other, for cases about one key.
const WIRED: &str =
    "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n";

fn errors(text: &str) -> Vec<(usize, String, String)> {
    match parse(text, &env) {
        Ok(loaded) => panic!("expected errors, got a config: {:?}", loaded.config),
        Err(invalid) => invalid
            .errors()
            .map(|d| (d.line, d.path.clone(), d.message.clone()))
            .collect(),
    }
}

/// What a bad file is about, the file, and each error as (line, key
/// path, part of the message).
type Case = (
    &'static str,
    String,
    &'static [(usize, &'static str, &'static str)],
);

#[test]
fn every_error_with_its_path_and_line() {
    // (what, file, [(line, path, part of the message)]) — every error the
    // file has, in line order, and no other.
    let cases: &[Case] = &[
        (
            "syntax errors, one per line",
            "a = 1\nb = \"unterminated\nc = 2\nd = = 3\n".into(),
            &[(2, "", "invalid basic string"), (4, "", "extra `=`")],
        ),
        (
            "unknown keys at every level",
            format!("colour = 1\n[log]\nsegmnet_bytes = 1\n{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://x\"\nbatch = {{ max_recs = 1 }}\n"),
            &[
                (1, "colour", "unknown key `colour`"),
                (3, "log.segmnet_bytes", "unknown key `segmnet_bytes`"),
                (13, "sinks.web.batch.max_recs", "unknown key `max_recs`"),
            ],
        ),
        (
            "wrong types",
            format!("data_dir = 7\n[log]\ninterval_ms = \"fast\"\n[admin]\naddress = \"localhost\"\n{WIRED}timeout = 1\n"),
            &[
                (1, "data_dir", "invalid type: integer `7`"),
                (3, "log.interval_ms", "expected a non-negative integer"),
                (5, "admin.address", "invalid socket address"),
                (11, "sinks.out.timeout", "unknown key"),
            ],
        ),
        (
            "missing required keys, all of them",
            "[sources.in]\ntype = \"stdin\"\n[sinks.pg]\ntype = \"postgres\"\ninputs = [\"in\"]\n[sinks.nats]\ninputs = [\"in\"]\n".into(),
            &[
                (3, "sinks.pg", "missing required key `connection`"),
                (3, "sinks.pg", "missing required key `table`"),
                (6, "sinks.nats", "missing required key `type`"),
            ],
        ),
        (
            "nats sinks: scheme, wildcard subject, stream name, limits, a subject shared",
            format!("{WIRED}[sinks.a]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"ws://x:1\"\nsubject = \"logs.*\"\nstream = \"a.b\"\nmax_pending = 0\n[sinks.b]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"nats://x:4222\"\nsubject = \"events\"\n[sinks.c]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"nats://x:4222\"\nsubject = \"events\"\n"),
            &[
                (9, "sinks.a.url", "nats:// or tls://"),
                (10, "sinks.a.subject", "wildcards"),
                (11, "sinks.a.stream", "must not contain"),
                (12, "sinks.a.max_pending", "at least 1"),
                (22, "sinks.c.subject", "sink `b` has subject"),
            ],
        ),
        (
            "a required key of the wrong type is one error, not two",
            "[sources.logs]\ntype = \"file\"\ninclude = 5\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"logs\"]\n".into(),
            &[(3, "sources.logs.include", "expected an array")],
        ),
        (
            "inputs naming nothing, a sink, or missing",
            format!("{WIRED}[sinks.b]\ntype = \"blackhole\"\ninputs = [\n  \"in\",\n  \"ghost\",\n  \"out\",\n]\n[transforms.t]\ntype = \"sample\"\nrate = 10\n[transforms.u]\ntype = \"sample\"\nrate = 10\ninputs = []\n"),
            &[
                (10, "sinks.b.inputs", "`ghost` is not the name of a source or transform"),
                (11, "sinks.b.inputs", "`out` is a sink"),
                (13, "transforms.t.inputs", "missing required key `inputs`"),
                (16, "transforms.u.inputs", "`inputs` is empty"),
            ],
        ),
        (
            "a cycle among transforms",
            format!("{WIRED}[transforms.a]\ntype = \"remap\"\ninputs = [\"in\", \"c\"]\nredact = [\"x\"]\n[transforms.b]\ntype = \"remap\"\ninputs = [\"a\"]\nredact = [\"x\"]\n[transforms.c]\ntype = \"remap\"\ninputs = [\"b\"]\nredact = [\"x\"]\n[transforms.self]\ntype = \"sample\"\ninputs = [\"self\"]\nrate = 2\n"),
            &[
                (8, "transforms.a.inputs", "a -> c -> b -> a"),
                (20, "transforms.self.inputs", "self -> self"),
            ],
        ),
        (
            "invalid enum values",
            format!("[log]\nwhen_full = \"drop_newest\"\ndurability = 1\n[logging]\nformat = \"xml\"\n{WIRED}[sources.s]\ntype = \"socket\"\nmode = \"sctp\"\naddress = \"127.0.0.1:1\"\n[sinks.w]\ninputs = [\"s\"]\ntype = \"warp\"\n"),
            &[
                (2, "log.when_full", "unknown variant `drop_newest`, expected `block` or `drop_oldest`"),
                (3, "log.durability", "expected a string"),
                (5, "logging.format", "unknown variant `xml`"),
                (13, "sources.s.mode", "unknown variant `sctp`"),
                (17, "sinks.w.type", "unknown sink type `warp`, expected one of blackhole, file, http"),
            ],
        ),
        (
            "invalid byte sizes and ranges",
            format!("[log]\nsegment_bytes = \"64 MiBs\"\nmax_bytes = -1\n{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"https://x\"\nbatch = {{ max_bytes = \"1.5MiB\" }}\ncompression = {{ codec = \"gzip\", level = 12 }}\n"),
            &[
                (2, "log.segment_bytes", "unknown unit `MiBs`"),
                (3, "log.max_bytes", "negative"),
                (13, "sinks.web.batch.max_bytes", "invalid byte size `1.5MiB`"),
            ],
        ),
        (
            "compression threads bound",
            format!("[log]\ncompression_threads = 1000\n{WIRED}"),
            &[(2, "log.compression_threads", "must be 0 (one per core) to 256")],
        ),
        (
            "dictionary bounds",
            format!("[log]\ndictionary = {{ sample_records = 2, max_bytes = \"8MiB\" }}\n{WIRED}"),
            &[
                (2, "log.dictionary.sample_records", "must be at least 10"),
                (2, "log.dictionary.max_bytes", "must be between 1KiB and 1MiB"),
            ],
        ),
        (
            "value checks after deserialization",
            format!("[log]\nsegment_bytes = \"64MiB\"\nmax_bytes = \"128MiB\"\n{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"ftp://x\"\ncompression = {{ codec = \"gzip\", level = 12 }}\nauth = {{ strategy = \"basic\", user = \"u\" }}\n"),
            &[
                (3, "log.max_bytes", "at least 3 × segment_bytes (192MiB)"),
                (12, "sinks.web.uri", "must start with http:// or https://"),
                (13, "sinks.web.compression.level", "out of range for gzip: 1 to 9"),
                (14, "sinks.web.auth", "needs `user` and `password`"),
            ],
        ),
        (
            "http sink retries, timeouts, headers and the dead-letter file",
            format!("{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://x\"\nretry = {{ initial_ms = 500, max_ms = 100, attempts = 0 }}\nconnect_timeout_ms = 0\nheaders = {{ Content-Type = \"text/plain\", \"bad name\" = \"x\", x-ok = \"a\\u0007b\" }}\ndead_letter = \"\"\ndead_letter_max_bytes = 0\n"),
            &[
                (10, "sinks.web.retry.max_ms", "must be at least `initial_ms`"),
                (10, "sinks.web.retry.attempts", "must be at least 1"),
                (11, "sinks.web.connect_timeout_ms", "must be at least 1"),
                (12, "sinks.web.headers.Content-Type", "is set by the sink"),
                (12, "sinks.web.headers.\"bad name\"", "not a valid header name"),
                (12, "sinks.web.headers.x-ok", "not a valid header value"),
                (13, "sinks.web.dead_letter", "must not be empty"),
                (14, "sinks.web.dead_letter_max_bytes", "must be at least 1 byte"),
            ],
        ),
        (
            "max_in_flight: 0, or more than 1 without the shipper protocol",
            format!("{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://x\"\nmax_in_flight = 0\n[sinks.nd]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://x\"\nprotocol = \"ndjson\"\nmax_in_flight = 2\n"),
            &[
                (10, "sinks.web.max_in_flight", "must be at least 1"),
                (16, "sinks.nd.max_in_flight", "needs protocol \"shipper\""),
            ],
        ),
        (
            "a shipper source's verify",
            "[sources.in]\ntype = \"shipper\"\naddress = \"127.0.0.1:1\"\nverify = \"none\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n".into(),
            &[(4, "sources.in.verify", "unknown variant `none`, expected `frame` or `full`")],
        ),
        (
            "an http sink's on_rejected",
            format!("{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://x\"\non_rejected = \"drop\"\n"),
            &[(10, "sinks.web.on_rejected", "unknown variant `drop`, expected `dead_letter` or `retry`")],
        ),
        (
            "a regex that does not compile",
            "[sources.app]\ntype = \"file\"\ninclude = [\"/var/log/*.log\"]\nmultiline = { start_pattern = \"^(\\\\d+\" }\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"app\"]\n".into(),
            &[(4, "sources.app.multiline.start_pattern", "invalid regex `^(\\d+`: unclosed group")],
        ),
        (
            "a data_dir whose parent does not exist",
            format!("data_dir = \"/nonexistent-shipper-test/a/data\"\n{WIRED}"),
            &[(1, "data_dir", "parent directory `/nonexistent-shipper-test/a` does not exist")],
        ),
        (
            "duplicate and invalid names",
            format!("{WIRED}[transforms.in]\ntype = \"sample\"\ninputs = [\"in\"]\nrate = 1\n[sinks.\".hidden\"]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"),
            &[
                (6, "transforms.in", "already used by source `in` (line 1)"),
                (10, "sinks.\".hidden\"", "invalid name `.hidden`"),
            ],
        ),
        (
            "socket and mqtt combinations",
            format!("{WIRED}[sources.u]\ntype = \"socket\"\nmode = \"unix\"\naddress = \"127.0.0.1:9\"\n[sources.m]\ntype = \"mqtt\"\ntopics = []\nqos = 3\n"),
            &[
                (6, "sources.u.path", "missing required key `path`"),
                (9, "sources.u.address", "listens on `path`"),
                (10, "sources.m", "needs `url` or `host`"),
                (12, "sources.m.topics", "at least one topic"),
                (13, "sources.m.qos", "qos 3 is not 0 or 1"),
            ],
        ),
        (
            "generator values",
            format!("{WIRED}[sources.gen]\ntype = \"generator\"\nformat = \"csv\"\n[sources.g2]\ntype = \"generator\"\nstream = \"x\"\n"),
            &[
                (8, "sources.gen.format", "unknown variant `csv`, expected one of `access_log`, `events`, `iot`"),
                (11, "sources.g2.stream", "unknown key `stream`"),
            ],
        ),
        (
            "generator ranges",
            format!("{WIRED}[sources.g]\ntype = \"generator\"\ncount = 0\nrate = 0\nrecord_bytes = \"2MiB\"\n"),
            &[
                (8, "sources.g.count", "must be at least 1"),
                (9, "sources.g.rate", "must be at least 1 record per second"),
                (10, "sources.g.record_bytes", "must be at most 1MiB"),
            ],
        ),
        (
            "postgres table names and timeout",
            format!("{WIRED}[sinks.pg]\ntype = \"postgres\"\ninputs = [\"in\"]\nconnection = \"host=db\"\ntable = \"Logs\"\nhwm_table = \"a.b.c\"\ntimeout_ms = 0\n[sinks.pg2]\ntype = \"postgres\"\ninputs = [\"in\"]\nconnection = \"\"\ntable = \"audit.events\"\nhwm_table = \"audit.events\"\n"),
            &[
                (10, "sinks.pg.table", "must be lowercase letters, digits and _"),
                (11, "sinks.pg.hwm_table", "\"b.c\" must be lowercase"),
                (12, "sinks.pg.timeout_ms", "must be at least 1"),
                (16, "sinks.pg2.connection", "must not be empty"),
                (18, "sinks.pg2.hwm_table", "must not be the records table"),
            ],
        ),
        (
            "an unset variable, at its key, without follow-on errors",
            format!("{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"${{BACKEND_URI}}\"\nauth = {{ strategy = \"bearer\", token = \"${{TOKEN}}\" }}\n"),
            &[(9, "sinks.web.uri", "environment variable `BACKEND_URI` is not set")],
        ),
        (
            "a duration longer than 365 days",
            format!("[log]\ninterval_ms = 31536000001\n{WIRED}"),
            &[(2, "log.interval_ms", "31536000001 ms is longer than 365 days")],
        ),
    ];
    check_cases(cases);
}

/// Runs table-driven cases: each file must produce exactly its errors, in
/// line order, each message containing its part.
fn check_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for (what, text, expected) in cases {
        let found: Vec<(usize, String, String)> = match parse(text, &env) {
            Ok(_) => Vec::new(),
            Err(invalid) => invalid
                .errors()
                .map(|d| (d.line, d.path.clone(), d.message.clone()))
                .collect(),
        };
        let found_short: Vec<(usize, &str)> = found
            .iter()
            .map(|(line, path, _)| (*line, path.as_str()))
            .collect();
        let expected_short: Vec<(usize, &str)> = expected
            .iter()
            .map(|(line, path, _)| (*line, *path))
            .collect();
        if found_short != expected_short {
            failures.push(format!(
                "{what}: expected {expected_short:?}, found {found:#?}"
            ));
            continue;
        }
        for ((_, _, message), (_, _, needle)) in found.iter().zip(expected.iter()) {
            if !message.contains(needle) {
                failures.push(format!("{what}: `{message}` lacks `{needle}`"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_source_nobody_reads_is_a_warning() {
    let text = format!("{WIRED}[sources.spare]\ntype = \"stdin\"\n");
    let loaded = parse(&text, &env).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["6: sources.spare: warning: nothing reads from this source: no transform or sink names `spare` in its inputs"]
    );
}

#[test]
fn a_minimal_config_takes_the_defaults() {
    let loaded = parse(WIRED, &env).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.admin.address.to_string(), "127.0.0.1:8686");
    assert_eq!(config.logging.level, LogLevel::Info);
    assert_eq!(config.logging.format, LogFormat::Human);
    assert_eq!(
        config.sources["in"],
        SourceConfig::builtin(StdinSourceConfig {})
    );
    assert_eq!(config.sinks["out"].inputs(), ["in".to_owned()]);
    let options = config.log_options();
    let engine = LogOptions::default();
    assert_eq!(options.segment_bytes, engine.segment_bytes);
    assert_eq!(options.max_bytes, engine.max_bytes);
    assert_eq!(
        options.durability,
        Durability::Interval(Duration::from_millis(100))
    );
    assert_eq!(options.when_full, WhenFull::Block);
}

#[test]
fn the_log_section_maps_to_log_options() {
    for (section, segment, max, when_full, durability) in [
        (
            "segment_bytes = \"1MiB\"\nmax_bytes = \"4MB\"\nwhen_full = \"drop_oldest\"\ndurability = \"always\"",
            1 << 20,
            4_000_000,
            WhenFull::DropOldest,
            Durability::Always,
        ),
        (
            "segment_bytes = 65536\nmax_bytes = \"1GiB\"\ndurability = \"interval\"\ninterval_ms = 250",
            65_536,
            1 << 30,
            WhenFull::Block,
            Durability::Interval(Duration::from_millis(250)),
        ),
        ("durability = \"never\"", 4 << 20, 10 << 30, WhenFull::Block, Durability::Never),
    ] {
        let text = format!("[log]\n{section}\n{WIRED}");
        let options = parse(&text, &env).unwrap().config.log_options();
        assert_eq!(
            (options.segment_bytes, options.max_bytes, options.when_full, options.durability),
            (segment, max, when_full, durability),
            "{section}"
        );
    }
}

#[test]
fn variables_are_substituted_before_parsing() {
    let text = format!(
        "{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"${{URI:-https://default.example}}\"\nbatch = {{ max_bytes = \"${{BATCH_BYTES}}\" }}\nauth = {{ strategy = \"bearer\", token = \"${{TOKEN}}\" }}\nheaders = {{ x-cost = \"$$5\" }}\n"
    );
    let config = parse(&text, &env).unwrap().config;
    let Some(http) = config.sinks["web"].get::<shipper_components::sinks::http::HttpSinkConfig>()
    else {
        panic!("{:?}", config.sinks["web"]);
    };
    assert_eq!(http.uri, "https://default.example");
    assert_eq!(http.batch.max_bytes, ByteSize::mib(2));
    assert_eq!(http.auth.as_ref().unwrap().token.as_deref(), Some("s3cret"));
    assert_eq!(http.headers["x-cost"], "$5");
    assert!(
        !format!("{http:?}").contains("s3cret"),
        "Debug shows the token"
    );
}

#[test]
fn lines_stay_those_of_the_file_when_a_value_spans_lines() {
    let lookup = |name: &str| (name == "MULTI").then(|| "a\nb\nc".to_owned());
    let text = "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\nnote = \"\"\"${MULTI}\"\"\"\nbogus = 1\n";
    let invalid = parse(text, &lookup).unwrap_err();
    let found: Vec<String> = invalid.errors().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("6: sinks.out.note: unknown key"),
        "{found:?}"
    );
    assert!(
        found[1].starts_with("7: sinks.out.bogus: unknown key"),
        "{found:?}"
    );
}

#[test]
fn every_component_type_loads_with_its_keys() {
    let text = r#"
[sources.f]
type = "file"
include = ["/var/log/*.log"]
exclude = ["/var/log/skip.log"]
read_from = "end"
multiline = { start_pattern = '^\S', timeout_ms = 200 }
max_line_bytes = "256KiB"
on_long_line = "drop"
[sources.s]
type = "socket"
mode = "udp"
address = "127.0.0.1:514"
parse = "syslog"
max_frame_bytes = 65536
[sources.t]
type = "socket"
mode = "unix"
path = "/run/app.sock"
framing = "octet_counting"
max_connections = 8
parse = "json"
[sources.h]
type = "http"
address = "127.0.0.1:8080"
path = "/ingest"
max_body_bytes = "4MiB"
[sources.m]
type = "mqtt"
host = "127.0.0.1"
port = 1883
topics = ["sensors/#"]
qos = 1
client_id = "edge-1"
[sources.in]
type = "stdin"
[sources.g]
type = "generator"
format = "iot"
count = 1_000
rate = 500
seed = 7
record_bytes = "256B"
[transforms.keep]
type = "filter"
inputs = ["f", "s", "t"]
field = "level"
not_equals = "debug"
action = "keep"
[transforms.some]
type = "sample"
inputs = ["keep", "h"]
rate = 10
key = "user"
[transforms.fix]
type = "remap"
inputs = ["some", "m", "in", "g"]
rename = { msg = "message" }
delete = ["tmp"]
redact = ["password"]
add = { env = "prod", version = 2 }
[sinks.web]
type = "http"
inputs = ["fix"]
uri = "http://127.0.0.1:9000/"
protocol = "ndjson"
compression = { codec = "gzip", level = 6 }
batch = { max_records = 500, max_bytes = "1MiB", max_age_ms = 100 }
auth = { strategy = "basic", user = "u", password = "p" }
headers = { x-tenant = "a" }
timeout_ms = 5000
connect_timeout_ms = 1000
retry = { initial_ms = 100, max_ms = 10000, attempts = 3 }
on_rejected = "retry"
dead_letter = "./dead/web.ndjson"
[sinks.disk]
type = "file"
inputs = ["fix"]
path = "./out/%Y.ndjson"
encoding = "ndjson"
compression = { codec = "zstd", level = 19 }
[sinks.null]
type = "blackhole"
inputs = ["fix"]
[sinks.pg]
type = "postgres"
inputs = ["fix"]
connection = "postgres://u:p@localhost/db"
table = "events"
[sinks.js]
type = "nats"
inputs = ["fix"]
url = "nats://127.0.0.1:4222"
subject = "events"
stream = "EVENTS"
"#;
    let loaded = parse(text, &env).unwrap_or_else(|invalid| panic!("{invalid}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    let types = |names: Vec<&'static str>| names;
    assert_eq!(
        types(
            config
                .sources
                .values()
                .map(SourceConfig::type_name)
                .collect()
        ),
        [
            "file",
            "generator",
            "http",
            "stdin",
            "mqtt",
            "socket",
            "socket"
        ]
    );
    assert_eq!(
        types(
            config
                .transforms
                .values()
                .map(TransformConfig::type_name)
                .collect()
        ),
        ["remap", "filter", "sample"]
    );
    assert_eq!(
        types(config.sinks.values().map(SinkConfig::type_name).collect()),
        ["file", "nats", "blackhole", "postgres", "http"]
    );
    let file = config.sources["f"].get::<FileSourceConfig>().unwrap();
    assert_eq!(file.read_from, ReadFrom::End);
    assert_eq!(file.max_line_bytes, ByteSize::kib(256));
    assert!(file
        .multiline
        .as_ref()
        .unwrap()
        .start_pattern
        .0
        .is_match("x"));
    assert_eq!(
        config.sources["g"],
        SourceConfig::builtin(GeneratorSourceConfig {
            format: CorpusKind::Iot,
            count: Some(1_000),
            rate: Some(500),
            seed: 7,
            record_bytes: Some(ByteSize(256)),
        })
    );
    let remap = config.transforms["fix"]
        .get::<shipper_components::transform::RemapTransformConfig>()
        .unwrap();
    assert_eq!(remap.add["version"], FieldValue::Integer(2));
    assert!(!format!("{:?}", config.sinks["pg"]).contains("u:p@"));
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_with_its_line() {
    let invalid = parse_bytes(b"a = 1\nb = \"\xff\"\n", &env).unwrap_err();
    let found: Vec<String> = invalid.errors().map(ToString::to_string).collect();
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("2: the file is not UTF-8"),
        "{found:?}"
    );
}

#[test]
fn the_example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shipper.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = parse(&text, &|_| None).unwrap_or_else(|invalid| panic!("{invalid}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        (
            loaded.config.sources.len(),
            loaded.config.transforms.len(),
            loaded.config.sinks.len()
        ),
        (2, 1, 2)
    );
}

#[test]
fn a_generator_takes_its_defaults() {
    let text = "[sources.gen]\ntype = \"generator\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"gen\"]\n";
    let config = parse(text, &env).unwrap().config;
    assert_eq!(
        config.sources["gen"],
        SourceConfig::builtin(GeneratorSourceConfig {
            format: CorpusKind::AccessLog,
            count: None,
            rate: None,
            seed: 0,
            record_bytes: None,
        })
    );
}

#[test]
fn the_quickstart_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // Its data_dir, ./target/quickstart-data, is relative to the repository
    // root, where the quick start runs; the variable moves it here.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // The certificates examples/make-certs.sh would make.
    let ca = shipper_tests::pki::Ca::new(dir.path(), "ca");
    ca.server(dir.path(), "aggregator");
    ca.client(dir.path(), "sidecar");
    let tls = dir.path().display().to_string();
    let lookup = |name: &str| match name {
        "SHIPPER_DATA_DIR" => Some(data.clone()),
        "SHIPPER_TLS" => Some(tls.clone()),
        _ => None,
    };
    let loaded = parse(&text, &lookup).unwrap_or_else(|invalid| panic!("{invalid}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let config = loaded.config;
    let Some(generator) = config.sources["access"].get::<GeneratorSourceConfig>() else {
        panic!("{:?}", config.sources);
    };
    assert_eq!(generator.count, Some(2_000_000));
    assert_eq!(config.sinks["archive"].type_name(), "file");
    assert_eq!(config.admin.address.to_string(), "127.0.0.1:8686");
}

#[test]
fn the_sidecar_and_aggregator_examples_validate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    // The certificates examples/make-certs.sh would make.
    let ca = shipper_tests::pki::Ca::new(dir.path(), "ca");
    ca.server(dir.path(), "aggregator");
    ca.client(dir.path(), "sidecar");
    let tls = dir.path().display().to_string();
    let lookup = |name: &str| match name {
        "SHIPPER_DATA_DIR" => Some(data.clone()),
        "SHIPPER_TLS" => Some(tls.clone()),
        _ => None,
    };
    for (file, source, sink) in [
        ("sidecar.toml", "file", "http"),
        ("aggregator.toml", "shipper", "postgres"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = parse(&text, &lookup).unwrap_or_else(|invalid| panic!("{file}: {invalid}"));
        assert!(loaded.warnings.is_empty(), "{file}: {:?}", loaded.warnings);
        let config = loaded.config;
        assert_eq!(config.sources.len(), 1, "{file}");
        assert_eq!(config.sources.values().next().unwrap().type_name(), source);
        assert_eq!(config.sinks.values().next().unwrap().type_name(), sink);
    }
}

/// Every duration key of the config: its path, and a file that sets it to
/// `MS` (and is valid for any value up to the bound).
fn duration_keys() -> Vec<(&'static str, String)> {
    let file_source = "[sources.f]\ntype = \"file\"\ninclude = [\"/var/log/*.log\"]\n";
    let http_sink =
        "[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://127.0.0.1:9/\"\n";
    let postgres_sink = "[sinks.pg]\ntype = \"postgres\"\ninputs = [\"in\"]\nconnection = \"host=db\"\ntable = \"events\"\n";
    let nats_sink =
        "[sinks.js]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"events\"\n";
    let http_source = "[sources.h]\ntype = \"http\"\naddress = \"127.0.0.1:18080\"\n";
    let socket_source = "[sources.s]\ntype = \"socket\"\naddress = \"127.0.0.1:18081\"\n";
    vec![
        (
            "shutdown_timeout_ms",
            format!("shutdown_timeout_ms = MS\n{WIRED}"),
        ),
        (
            "log.interval_ms",
            format!("[log]\ninterval_ms = MS\n{WIRED}"),
        ),
        (
            "sources.f.multiline.timeout_ms",
            format!(
                "{WIRED}{file_source}multiline = {{ start_pattern = \"^a\", timeout_ms = MS }}\n"
            ),
        ),
        (
            "sources.f.glob_interval_ms",
            format!("{WIRED}{file_source}glob_interval_ms = MS\n"),
        ),
        (
            "sources.f.rotate_wait_ms",
            format!("{WIRED}{file_source}rotate_wait_ms = MS\n"),
        ),
        (
            "sinks.web.timeout_ms",
            format!("{WIRED}{http_sink}timeout_ms = MS\n"),
        ),
        (
            "sinks.web.connect_timeout_ms",
            format!("{WIRED}{http_sink}connect_timeout_ms = MS\n"),
        ),
        (
            "sinks.web.batch.max_age_ms",
            format!("{WIRED}{http_sink}batch = {{ max_age_ms = MS }}\n"),
        ),
        (
            "sinks.web.retry.initial_ms",
            format!(
                "{WIRED}{http_sink}retry = {{ initial_ms = MS, max_ms = {MAX_DURATION_MS} }}\n"
            ),
        ),
        (
            "sinks.web.retry.max_ms",
            format!("{WIRED}{http_sink}retry = {{ max_ms = MS }}\n"),
        ),
        (
            "sinks.pg.timeout_ms",
            format!("{WIRED}{postgres_sink}timeout_ms = MS\n"),
        ),
        (
            "sinks.js.duplicate_window_ms",
            format!("{WIRED}{nats_sink}duplicate_window_ms = MS\n"),
        ),
        (
            "sinks.js.timeout_ms",
            format!("{WIRED}{nats_sink}timeout_ms = MS\n"),
        ),
        (
            "sources.h.header_timeout_ms",
            format!("{WIRED}{http_source}header_timeout_ms = MS\n"),
        ),
        (
            "sources.h.body_timeout_ms",
            format!("{WIRED}{http_source}body_timeout_ms = MS\n"),
        ),
        (
            "sources.s.idle_timeout_ms",
            format!("{WIRED}{socket_source}idle_timeout_ms = MS\n"),
        ),
    ]
}

#[test]
fn every_duration_key_refuses_more_than_365_days() {
    let mut failures = Vec::new();
    for (key, text) in duration_keys() {
        let at_most = text.replace("MS", &MAX_DURATION_MS.to_string());
        if let Err(invalid) = parse(&at_most, &env) {
            failures.push(format!("{key} = {MAX_DURATION_MS} is refused: {invalid}"));
        }
        // `i64::MAX` is the largest integer TOML holds; `Instant` + that
        // many milliseconds overflows.
        for too_long in [MAX_DURATION_MS + 1, i64::MAX as u64] {
            let found = errors(&text.replace("MS", &too_long.to_string()));
            let expected = format!("{too_long} ms is longer than 365 days");
            if found.len() != 1 || found[0].1 != key || !found[0].2.contains(&expected) {
                failures.push(format!("{key} = {too_long}: {found:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_documented_duration_key_is_bounded() {
    // A `*_ms` key added to docs/config.md and not to `duration_keys` fails
    // here, so the bound is tested for every duration there is.
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .unwrap();
    let mut documented: Vec<&str> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`'))
        .map(|(key, _)| key)
        .filter(|key| key.ends_with("_ms"))
        .collect();
    let mut tested: Vec<&str> = duration_keys()
        .iter()
        .map(|(key, _)| key.rsplit('.').next().unwrap())
        .collect();
    documented.sort_unstable();
    tested.sort_unstable();
    assert_eq!(documented, tested);
}

#[test]
fn an_array_is_refused_where_a_table_is_expected() {
    // serde reads a struct from a sequence too: each of these would load
    // as defaults (or as fields in order) without a word.
    let http_sink =
        "[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://127.0.0.1:9/\"\n";
    let file_sink = "[sinks.disk]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"./out.ndjson\"\n";
    let file_source = "[sources.f]\ntype = \"file\"\ninclude = [\"/var/log/*.log\"]\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{WIRED}{file_sink}compression = []\n"),
            "sinks.disk.compression",
        ),
        (
            format!("{WIRED}{http_sink}compression = [\"gzip\", 6]\n"),
            "sinks.web.compression",
        ),
        (format!("{WIRED}{http_sink}batch = []\n"), "sinks.web.batch"),
        (
            format!("{WIRED}{http_sink}retry = [100]\n"),
            "sinks.web.retry",
        ),
        (
            format!("{WIRED}{http_sink}auth = [\"bearer\", \"t\"]\n"),
            "sinks.web.auth",
        ),
        (
            format!("{WIRED}{file_source}multiline = [\"^a\"]\n"),
            "sources.f.multiline",
        ),
        (format!("log = []\n{WIRED}"), "log"),
        (format!("[log]\ndictionary = []\n{WIRED}"), "log.dictionary"),
        (format!("admin = []\n{WIRED}"), "admin"),
        (format!("logging = []\n{WIRED}"), "logging"),
    ];
    let mut failures = Vec::new();
    for (text, key) in cases {
        let found = match parse(text, &env) {
            Ok(_) => Vec::new(),
            Err(invalid) => invalid
                .errors()
                .map(|d| (d.path.clone(), d.message.clone()))
                .collect(),
        };
        let last = key.rsplit('.').next().unwrap();
        let line = text
            .lines()
            .position(|line| line.starts_with(&format!("{last} = [")))
            .unwrap();
        let wanted = (
            key.to_string(),
            "invalid type: array, expected a table".to_string(),
        );
        if found != [wanted] {
            failures.push(format!("{key}: {found:?}"));
        }
        let lines: Vec<usize> = parse(text, &env)
            .err()
            .map(|invalid| invalid.errors().map(|d| d.line).collect())
            .unwrap_or_default();
        if lines != [line + 1] {
            failures.push(format!("{key}: lines {lines:?}, expected {}", line + 1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A postgres sink reading `in`, and its further keys.
fn postgres(keys: &str) -> String {
    format!("{WIRED}[sinks.pg]\ntype = \"postgres\"\ninputs = [\"in\"]\n{keys}")
}

#[test]
fn validate_refuses_what_the_postgres_sink_refuses() {
    let cases: &[Case] = &[
        (
            "verify-ca with nothing to verify against",
            postgres("connection = \"host=db sslmode=verify-ca\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "sslmode=verify-ca needs a CA file")],
        ),
        (
            "a CA file that is not there, in a URL",
            postgres("connection = \"postgres://u:hunter2@db/logs?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "/nonexistent/ca.pem")],
        ),
        (
            "an sslmode libpq does not know",
            postgres("connection = \"host=db sslmode=always\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "invalid value for option `sslmode`")],
        ),
        (
            "a connection string that does not parse",
            postgres("connection = \"host=db port=x\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "invalid value for option `port`")],
        ),
        (
            "an unterminated quote",
            postgres("connection = \"host='db\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "unterminated quoted connection parameter value")],
        ),
        (
            "garbage",
            postgres("connection = \"not a connection string\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "expected `=` but got `a`")],
        ),
        (
            "an unknown option, whose value (a password) is never shown",
            postgres("connection = \"host=db password=hunter2 colour=blue\"\ntable = \"events\"\n"),
            &[(9, "sinks.pg.connection", "unknown option `colour`")],
        ),
        (
            "records in the default high-water-mark table",
            postgres("connection = \"host=db\"\ntable = \"audit.shipper_hwm\"\n"),
            &[(10, "sinks.pg.table", "is the default high-water-mark table")],
        ),
    ];
    check_cases(cases);
    for (_, text, _) in cases {
        for (_, _, message) in errors(text) {
            assert!(!message.contains("hunter2"), "{message}");
        }
    }
}

/// A file sink reading `in`, and its further keys.
fn file_sink(keys: &str) -> String {
    format!("{WIRED}[sinks.disk]\ntype = \"file\"\ninputs = [\"in\"]\n{keys}")
}

#[test]
fn validate_refuses_what_the_file_sink_refuses() {
    let cases: &[Case] = &[
        (
            "a strftime field the sink does not fill",
            file_sink("path = \"./out/%Y-%j.ndjson\"\n"),
            &[(
                9,
                "sinks.disk.path",
                "unsupported field %j (use %Y %m %d %H %%)",
            )],
        ),
        (
            "a lone % at the end",
            file_sink("path = \"./out/100%\"\n"),
            &[(9, "sinks.disk.path", "ends with a lone %")],
        ),
        (
            "the json encoding, not built yet",
            file_sink("path = \"./out.json\"\nencoding = \"json\"\n"),
            &[(
                10,
                "sinks.disk.encoding",
                "encoding \"json\" is not available",
            )],
        ),
        (
            "gzip, not built yet",
            file_sink("path = \"./out.ndjson.gz\"\ncompression = { codec = \"gzip\" }\n"),
            &[(10, "sinks.disk.compression.codec", "gzip is not available")],
        ),
    ];
    check_cases(cases);
}

/// An http sink reading `in`, and its further keys.
fn http_sink(keys: &str) -> String {
    format!("{WIRED}[sinks.web]\ntype = \"http\"\ninputs = [\"in\"]\n{keys}")
}

#[test]
fn validate_refuses_what_the_http_sink_refuses() {
    let cases: &[Case] = &[
        (
            "a uri without a host",
            http_sink("uri = \"http://\"\n"),
            &[(9, "sinks.web.uri", "empty host")],
        ),
        (
            "a uri with a space in its host",
            http_sink("uri = \"https://ingest example.com/v1\"\n"),
            &[(9, "sinks.web.uri", "invalid international domain name")],
        ),
        (
            "a port out of range",
            http_sink("uri = \"http://127.0.0.1:99999/\"\n"),
            &[(9, "sinks.web.uri", "invalid port number")],
        ),
        (
            "a bearer token that is no header value",
            http_sink("uri = \"http://127.0.0.1:9/\"\nauth = { strategy = \"bearer\", token = \"a\\nb\" }\n"),
            &[(10, "sinks.web.auth.token", "is not a valid header value")],
        ),
    ];
    check_cases(cases);
}

#[test]
fn validate_refuses_a_nats_url_the_client_cannot_parse() {
    let nats = |url: &str| {
        format!("{WIRED}[sinks.js]\ntype = \"nats\"\ninputs = [\"in\"]\nurl = \"{url}\"\nsubject = \"events\"\n")
    };
    let cases: &[Case] = &[
        (
            "a port that is no number",
            nats("nats://127.0.0.1:port"),
            &[(
                9,
                "sinks.js.url",
                "NATS server URL is invalid: invalid port number",
            )],
        ),
        (
            "a list of servers",
            nats("nats://a:4222,nats://b:4222"),
            &[(9, "sinks.js.url", "one server url, not a list")],
        ),
    ];
    check_cases(cases);
}

/// An mqtt source `m`, read by a sink, with `keys`.
fn mqtt_source(keys: &str) -> String {
    format!("{WIRED}[sources.m]\ntype = \"mqtt\"\n{keys}[sinks.m_out]\ntype = \"blackhole\"\ninputs = [\"m\"]\n")
}

#[test]
fn validate_refuses_what_the_mqtt_source_refuses() {
    let cases: &[Case] = &[
        (
            "credentials in the url",
            mqtt_source("url = \"mqtt://user:secret@broker:1883\"\ntopics = [\"a\"]\n"),
            &[(
                8,
                "sources.m.url",
                "credentials in the url are not supported",
            )],
        ),
        (
            "a path in the url",
            mqtt_source("url = \"mqtt://broker:1883/x\"\ntopics = [\"a\"]\n"),
            &[(8, "sources.m.url", "no path or query")],
        ),
        (
            "a bad port in the url",
            mqtt_source("url = \"mqtt://broker:0\"\ntopics = [\"a\"]\n"),
            &[(8, "sources.m.url", "bad port")],
        ),
        (
            "a user without a password",
            mqtt_source("url = \"mqtts://broker\"\ntopics = [\"a\"]\nusername = \"u\"\n"),
            &[(6, "sources.m.password", "`username` needs `password`")],
        ),
        (
            "port 0",
            mqtt_source("host = \"broker\"\nport = 0\ntopics = [\"a\"]\n"),
            &[(9, "sources.m.port", "must be 1 to 65535")],
        ),
        (
            "an empty client id",
            mqtt_source("host = \"broker\"\nclient_id = \"\"\ntopics = [\"a\"]\n"),
            &[(9, "sources.m.client_id", "must not be empty")],
        ),
        (
            "topic filters the client refuses",
            mqtt_source("host = \"broker\"\ntopics = [\"a/#/b\", \"ok/+/x\", \"a+\", \"\"]\n"),
            &[
                (9, "sources.m.topics", "invalid topic filter \"a/#/b\""),
                (9, "sources.m.topics", "invalid topic filter \"a+\""),
                (9, "sources.m.topics", "invalid topic filter \"\""),
            ],
        ),
    ];
    check_cases(cases);
}

#[test]
fn validate_refuses_what_the_transforms_refuse() {
    let transform = |keys: &str| {
        format!("{WIRED}[transforms.t]\ninputs = [\"in\"]\n{keys}[sinks.t_out]\ntype = \"blackhole\"\ninputs = [\"t\"]\n")
    };
    let cases: &[Case] = &[
        (
            "a filter field with an empty segment",
            transform("type = \"filter\"\nfield = \"http..status\"\nexists = true\n"),
            &[(9, "transforms.t.field", "invalid field path \"http..status\": has an empty segment")],
        ),
        (
            "a filter comparing with NaN",
            transform("type = \"filter\"\nfield = \"x\"\nequals = nan\n"),
            &[(10, "transforms.t.equals", "NaN is not a JSON number")],
        ),
        (
            "a sample key with a trailing dot",
            transform("type = \"sample\"\nrate = 2\nkey = \"user.\"\n"),
            &[(10, "transforms.t.key", "invalid field path \"user.\"")],
        ),
        (
            "remap paths",
            transform("type = \"remap\"\nrename = { \".a\" = \"b\", c = \"d..e\" }\ndelete = [\"\"]\nredact = [\"x.\"]\nadd = { \"y..z\" = 1 }\n"),
            &[
                (9, "transforms.t.rename.\".a\"", "invalid field path \".a\""),
                (9, "transforms.t.rename.c", "invalid field path \"d..e\""),
                (10, "transforms.t.delete", "invalid field path \"\": must not be empty"),
                (11, "transforms.t.redact", "invalid field path \"x.\""),
                (12, "transforms.t.add.\"y..z\"", "invalid field path \"y..z\""),
            ],
        ),
        (
            "an infinite value added",
            transform("type = \"remap\"\nadd = { w = -inf }\n"),
            &[(9, "transforms.t.add.w", "-inf is not a JSON number")],
        ),
    ];
    check_cases(cases);
}

#[test]
fn validate_refuses_two_listeners_on_one_address() {
    let source = |name: &str, keys: &str| {
        format!("[sources.{name}]\n{keys}[sinks.{name}_out]\ntype = \"blackhole\"\ninputs = [\"{name}\"]\n")
    };
    let http = |name: &str, address: &str| {
        source(name, &format!("type = \"http\"\naddress = \"{address}\"\n"))
    };
    let cases: &[Case] = &[
        (
            "two http sources on one address",
            format!("{}{}", http("a", "127.0.0.1:9000"), http("b", "127.0.0.1:9000")),
            &[(9, "sources.b.address", "tcp 127.0.0.1:9000 is where `sources.a.address` (line 3) listens too: the second would find the address in use")],
        ),
        (
            "a wildcard address and a specific one on one port",
            format!(
                "{}{}",
                source("agg", "type = \"shipper\"\naddress = \"0.0.0.0:9001\"\n"),
                source("raw", "type = \"socket\"\naddress = \"127.0.0.1:9001\"\n"),
            ),
            &[(9, "sources.raw.address", "tcp 127.0.0.1:9001 overlaps tcp 0.0.0.0:9001")],
        ),
        (
            "IPv6's wildcard takes the IPv4 port too",
            format!("{}{}", http("a", "127.0.0.1:9002"), http("b", "[::]:9002")),
            &[(9, "sources.b.address", "overlaps tcp 127.0.0.1:9002")],
        ),
        (
            "a source on the admin endpoint's default address",
            http("a", "127.0.0.1:8686"),
            &[(3, "sources.a.address", "where `admin.address` (its default) listens")],
        ),
        (
            "a source on the admin endpoint's address",
            format!("[admin]\naddress = \"0.0.0.0:9003\"\n{}", http("a", "127.0.0.1:9003")),
            &[(5, "sources.a.address", "where `admin.address` (line 2) listens")],
        ),
        (
            "two udp sockets",
            format!(
                "{}{}",
                source("u1", "type = \"socket\"\nmode = \"udp\"\naddress = \"0.0.0.0:514\"\n"),
                source("u2", "type = \"socket\"\nmode = \"udp\"\naddress = \"0.0.0.0:514\"\n"),
            ),
            &[(11, "sources.u2.address", "udp 0.0.0.0:514 is where `sources.u1.address` (line 4) listens too")],
        ),
        (
            "two unix sockets on one path",
            format!(
                "{}{}",
                source("s1", "type = \"socket\"\nmode = \"unix\"\npath = \"/tmp/shipper-test.sock\"\n"),
                source("s2", "type = \"socket\"\nmode = \"unix\"\npath = \"/tmp/shipper-test.sock\"\n"),
            ),
            &[(11, "sources.s2.path", "the second would replace the first's socket file")],
        ),
    ];
    check_cases(cases);

    // TCP and UDP on one port, and port 0 twice, are fine.
    let fine = format!(
        "{}{}{}{}",
        source("t", "type = \"socket\"\naddress = \"127.0.0.1:9004\"\n"),
        source(
            "u",
            "type = \"socket\"\nmode = \"udp\"\naddress = \"127.0.0.1:9004\"\n"
        ),
        http("a", "127.0.0.1:0"),
        http("b", "127.0.0.1:0"),
    );
    if let Err(invalid) = parse(&fine, &env) {
        panic!("{invalid}");
    }
}

#[test]
fn validate_refuses_what_the_listening_sources_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_socket = dir.path().join("file");
    std::fs::write(&not_a_socket, "").unwrap();
    let source = |keys: &str| {
        format!("{WIRED}[sources.s]\n{keys}[sinks.s_out]\ntype = \"blackhole\"\ninputs = [\"s\"]\n")
    };
    let cases: &[Case] = &[
        (
            "an http path axum takes for a capture",
            source("type = \"http\"\naddress = \"127.0.0.1:0\"\npath = \"/ingest/{tenant}\"\n"),
            &[(9, "sources.s.path", "must be a literal path")],
        ),
        (
            "an http path in axum's old capture syntax, which it refuses",
            source("type = \"http\"\naddress = \"127.0.0.1:0\"\npath = \"/ingest/:tenant\"\n"),
            &[(9, "sources.s.path", "must be a literal path")],
        ),
        (
            "a shipper path with an unbalanced brace",
            source("type = \"shipper\"\naddress = \"127.0.0.1:0\"\npath = \"/v1/chunks{\"\n"),
            &[(9, "sources.s.path", "must be a literal path")],
        ),
        (
            "a unix socket in a directory that does not exist",
            source("type = \"socket\"\nmode = \"unix\"\npath = \"/nonexistent-shipper-test/app.sock\"\n"),
            &[(9, "sources.s.path", "directory `/nonexistent-shipper-test` does not exist")],
        ),
        (
            "a unix socket path that is a file",
            source(&format!("type = \"socket\"\nmode = \"unix\"\npath = {:?}\n", not_a_socket.display().to_string())),
            &[(9, "sources.s.path", "exists and is not a socket")],
        ),
    ];
    check_cases(cases);
}

#[test]
fn listener_limits_are_checked_by_key() {
    let http = "[sources.h]\ntype = \"http\"\naddress = \"127.0.0.1:18080\"\n";
    let shipper = "[sources.a]\ntype = \"shipper\"\naddress = \"127.0.0.1:18082\"\n";
    let socket = "[sources.s]\ntype = \"socket\"\naddress = \"127.0.0.1:18081\"\n";
    let cases = [
        (
            format!("{WIRED}{http}max_connections = 0\n"),
            "sources.h.max_connections",
            "at least 1",
        ),
        (
            format!("{WIRED}{http}header_timeout_ms = 0\n"),
            "sources.h.header_timeout_ms",
            "at least 1",
        ),
        (
            format!("{WIRED}{http}body_timeout_ms = 0\n"),
            "sources.h.body_timeout_ms",
            "at least 1",
        ),
        (
            format!("{WIRED}{http}max_body_bytes = \"8MiB\"\nmax_buffered_bytes = \"4MiB\"\n"),
            "sources.h.max_buffered_bytes",
            "at least max_body_bytes",
        ),
        (
            format!("{WIRED}{shipper}max_buffered_bytes = \"1MiB\"\n"),
            "sources.a.max_buffered_bytes",
            "at least max_body_bytes",
        ),
        (
            format!("{WIRED}{socket}idle_timeout_ms = 0\n"),
            "sources.s.idle_timeout_ms",
            "at least 1",
        ),
    ];
    for (text, key, message) in cases {
        let found = errors(&text);
        assert!(
            found
                .iter()
                .any(|(_, path, m)| path == key && m.contains(message)),
            "{key}: {found:?}"
        );
    }
}

#[test]
fn a_listener_beyond_loopback_without_tls_or_a_token_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let open = format!(
        "[sources.s]\ntype = \"socket\"\naddress = \"0.0.0.0:18091\"\n[sources.h]\ntype = \"http\"\naddress = \"0.0.0.0:18092\"\n[sources.a]\ntype = \"shipper\"\naddress = \"0.0.0.0:18093\"\nauth = {{ strategy = \"bearer\", token_file = {token:?} }}\n[sources.l]\ntype = \"http\"\naddress = \"127.0.0.1:18094\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"s\", \"h\", \"a\", \"l\"]\n[admin]\naddress = \"0.0.0.0:18095\"\n"
    );
    let loaded = parse(&open, &env).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("3: sources.s.address: warning: tcp 0.0.0.0:18091"),
        "{warnings:#?}"
    );
    assert!(
        warnings[0].contains("neither `tls` nor `auth`"),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].starts_with("6: sources.h.address: warning:"),
        "{warnings:#?}"
    );
    assert!(
        warnings[2].contains("admin.address: warning:"),
        "{warnings:#?}"
    );
    assert!(
        warnings[2].contains("POST /reload is refused"),
        "{warnings:#?}"
    );

    // A token file that cannot be read, and a token bound to producers
    // where there are none, are errors.
    let bad = format!(
        "{WIRED}[sources.h]\ntype = \"http\"\naddress = \"127.0.0.1:18096\"\nauth = {{ strategy = \"bearer\", tokens = [{{ token_file = \"/nonexistent/token\" }}, {{ token = \"x\", producers = [\"0123456789abcdef0123456789abcdef\"] }}] }}\n"
    );
    let errors = errors(&bad);
    let messages: Vec<String> = errors
        .iter()
        .map(|(_, path, m)| format!("{path}: {m}"))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("/nonexistent/token")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("only a `shipper` source knows producers")),
        "{messages:#?}"
    );
}
