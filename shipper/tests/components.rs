//! Every kind of [`shipper::components`]: a section in docs/config.md, built
//! by `shipper run` from a minimal config, and its counters in `/metrics`
//! once it has handled a few records. One pipeline holds them all: the http
//! sink sends to the shipper source of the same process, stdin, a file, an
//! HTTP POST, a TCP connection and an MQTT broker feed the sources. The
//! same run feeds each source (and the transforms and the postgres sink) a
//! bad record and reads back, from `/metrics`, the counter that says it was
//! dropped or altered.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_request, unique, SHIPPER};
use shipper::components::{SINKS, SOURCES, TRANSFORMS};
use shipper::metrics::sample;
use shipper_tests::service_available;

/// The docs section of each kind: `### \`type = "NAME"\`` under its role's
/// `## ` heading.
fn documented(docs: &str, role: &str, type_name: &str) -> bool {
    let Some(start) = docs.find(&format!("\n## {role}\n")) else {
        return false;
    };
    let section = &docs[start + 1..];
    let end = section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3);
    section[..end].contains(&format!("\n### `type = \"{type_name}\"`"))
}

#[test]
fn every_kind_has_its_section_in_the_config_docs() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .unwrap();
    let kinds = SOURCES
        .iter()
        .map(|kind| ("Sources", kind.type_name))
        .chain(TRANSFORMS.iter().map(|kind| ("Transforms", kind.type_name)))
        .chain(SINKS.iter().map(|kind| ("Sinks", kind.type_name)));
    for (role, type_name) in kinds {
        assert!(
            documented(&docs, role, type_name),
            "docs/config.md has no section `type = \"{type_name}\"` under ## {role}"
        );
    }
}

/// Sends `lines` on a TCP connection to `port` and closes it.
fn send_tcp(port: u16, lines: &[u8]) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(lines).unwrap();
}

/// POSTs NDJSON `body` to `port` at `/`; returns the status.
fn post(port: u16, body: &str) -> u16 {
    let ndjson = [("Content-Type", "application/x-ndjson")];
    shipper_tests::http(port, "POST", "/", &ndjson, body.as_bytes())
        .unwrap()
        .0
}

/// Publishes `payloads` at QoS 1 and waits for the broker's acknowledgements.
fn publish(topic: &str, payloads: &[&str]) {
    shipper_tests::mqtt::Publisher::new(&unique("publisher")).publish(topic, payloads);
}

/// A metric a component must show: name, its own labels, the component.
type Wanted<'a> = (String, Vec<(&'a str, &'a str)>, String);

/// The components of the pipeline, by kind and type: each a table of the
/// config (its name is `<type>_<kind>`), `None` where a service it needs
/// is not running.
struct Pipeline {
    config: String,
    /// `(kind, type, component name)` of every component in the config.
    components: Vec<(&'static str, &'static str, String)>,
}

#[test]
fn every_kind_builds_from_a_minimal_config_and_counts_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let (http_port, shipper_port, socket_port) = (free_port(), free_port(), free_port());
    let inbox = dir.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let postgres = service_available("PostgreSQL", "127.0.0.1:5432");
    let nats = service_available("NATS", "127.0.0.1:4222");
    let mqtt = service_available("Mosquitto", "127.0.0.1:1883");
    let topic = unique("shipper-components");
    let table = unique("components").replace('-', "_");
    let mut tables: BTreeMap<(&str, &str), String> = BTreeMap::new();
    tables.insert(
        ("source", "file"),
        format!(
            "include = [\"{}/*.log\"]\nmax_line_bytes = \"1KiB\"\non_long_line = \"drop\"\nglob_interval_ms = 50",
            inbox.display()
        ),
    );
    tables.insert(("source", "generator"), "count = 5".into());
    tables.insert(
        ("source", "http"),
        format!("address = \"127.0.0.1:{http_port}\""),
    );
    if mqtt {
        tables.insert(
            ("source", "mqtt"),
            format!("host = \"127.0.0.1\"\ntopics = [\"{topic}\"]"),
        );
    }
    tables.insert(
        ("source", "shipper"),
        format!("address = \"127.0.0.1:{shipper_port}\""),
    );
    tables.insert(
        ("source", "socket"),
        format!(
            "address = \"127.0.0.1:{socket_port}\"\nmax_frame_bytes = \"1KiB\"\nparse = \"json\""
        ),
    );
    tables.insert(("source", "stdin"), String::new());
    tables.insert(
        ("transform", "filter"),
        "inputs = [\"stdin_source\"]\nfield = \"n\"\nexists = true".into(),
    );
    tables.insert(
        ("transform", "remap"),
        "inputs = [\"generator_source\"]\nadd = { seen = true }".into(),
    );
    tables.insert(
        ("transform", "sample"),
        "inputs = [\"generator_source\"]\nrate = 1".into(),
    );
    let readable = [
        "file_source",
        "generator_source",
        "http_source",
        "mqtt_source",
        "socket_source",
        "stdin_source",
        "filter_transform",
        "remap_transform",
        "sample_transform",
    ];
    let inputs = |names: &[&str]| {
        let names: Vec<String> = names
            .iter()
            .filter(|name| mqtt || **name != "mqtt_source")
            .map(|name| format!("\"{name}\""))
            .collect();
        format!("inputs = [{}]", names.join(", "))
    };
    tables.insert(
        ("sink", "blackhole"),
        inputs(&[&readable[..], &["shipper_source"]].concat()),
    );
    tables.insert(
        ("sink", "file"),
        format!(
            "{}\npath = \"{}\"",
            inputs(&["remap_transform"]),
            dir.path().join("out.ndjson").display()
        ),
    );
    tables.insert(
        ("sink", "http"),
        format!(
            "{}\nuri = \"http://127.0.0.1:{shipper_port}/v1/chunks\"\nbatch = {{ max_age_ms = 10 }}",
            inputs(&["generator_source"])
        ),
    );
    if nats {
        tables.insert(
            ("sink", "nats"),
            format!(
                "{}\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{topic}\"\nstream = \"{}\"",
                inputs(&["sample_transform"]),
                topic.replace(['-', '.'], "_")
            ),
        );
    }
    if postgres {
        tables.insert(
            ("sink", "postgres"),
            format!(
                "{}\nconnection = \"{}\"\ntable = \"{table}\"\ntable_per_stream = false\nhwm_table = \"{table}_hwm\"",
                inputs(&["stdin_source"]),
                common::SERVER
            ),
        );
    }
    tables.insert(("sink", "stdout"), inputs(&["generator_source"]));

    // Every kind is in the pipeline, or skipped for a service (printed
    // above), or the sdk source (embedded only: see below).
    let roles = [
        (
            "source",
            SOURCES.iter().map(|k| k.type_name).collect::<Vec<_>>(),
        ),
        (
            "transform",
            TRANSFORMS.iter().map(|k| k.type_name).collect(),
        ),
        ("sink", SINKS.iter().map(|k| k.type_name).collect()),
    ];
    let skipped = |kind: &str, type_name: &str| match (kind, type_name) {
        ("source", "sdk") => true,
        ("source", "mqtt") => !mqtt,
        ("sink", "nats") => !nats,
        ("sink", "postgres") => !postgres,
        _ => false,
    };
    let mut pipeline = Pipeline {
        config: format!(
            "data_dir = \"{}\"\nshutdown_timeout_ms = 5000\n[admin]\naddress = \"127.0.0.1:{admin}\"\n",
            dir.path().join("data").display()
        ),
        components: Vec::new(),
    };
    for (kind, types) in &roles {
        for type_name in types {
            if skipped(kind, type_name) {
                continue;
            }
            let table = tables.get(&(*kind, *type_name)).unwrap_or_else(|| {
                panic!("no minimal config for the {kind} type {type_name}: add it to this test")
            });
            let name = format!("{type_name}_{kind}");
            pipeline.config.push_str(&format!(
                "[{kind}s.{name}]\ntype = \"{type_name}\"\n{table}\n"
            ));
            pipeline.components.push((kind, type_name, name));
        }
    }
    let config = dir.path().join("shipper.toml");
    std::fs::write(&config, &pipeline.config).unwrap();

    let mut child = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(Instant::now() < deadline, "shipper did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Wait for the listeners too.
    for port in [http_port, shipper_port, socket_port] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} never opened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Good records for every source, and a bad one for those that count it.
    let long = "x".repeat(2000);
    std::fs::write(
        inbox.join("a.log"),
        format!("{{\"n\":1}}\n{long}\n{{\"n\":2}}\n"),
    )
    .unwrap();
    writeln!(stdin, "{{\"n\":1}}\nnot json\n{{\"n\":3}}").unwrap();
    stdin.flush().unwrap();
    assert_eq!(post(http_port, "{\"n\":1}\n{\"n\":2}\n"), 200);
    assert_eq!(post(http_port, "{\"n\":"), 400, "invalid JSON is refused");
    send_tcp(
        socket_port,
        format!("{{\"n\":1}}\nnot json\n{{\"pad\":\"{long}\"}}\n{{\"n\":2}}\n").as_bytes(),
    );
    if mqtt {
        // The middle one is over the log's record limit (16 MiB).
        let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(17 << 20));
        publish(&topic, &["{\"n\":1}", &oversized, "{\"n\":2}"]);
    }

    let expected = |metrics: &str, name: &str, labels: &[(&str, &str)]| {
        sample(metrics, name, labels).unwrap_or(0.0) >= 1.0
    };
    // What each component must show once it handled records.
    let wanted: Vec<Wanted> = pipeline
        .components
        .iter()
        .map(|(kind, _, name)| {
            let metric = match *kind {
                "sink" => "shipper_component_sent_records_total",
                _ => "shipper_component_received_records_total",
            };
            (metric.to_owned(), Vec::new(), name.clone())
        })
        .chain(
            [
                // A line over max_line_bytes, dropped.
                (
                    "shipper_source_lines_total",
                    vec![("outcome", "dropped")],
                    "file_source",
                ),
                // A frame over max_frame_bytes and one that is not JSON.
                (
                    "shipper_source_discarded_records_total",
                    vec![("reason", "oversized")],
                    "socket_source",
                ),
                (
                    "shipper_source_discarded_records_total",
                    vec![("reason", "unparsable")],
                    "socket_source",
                ),
                // The request whose body is not JSON.
                (
                    "shipper_source_requests_total",
                    vec![("outcome", "invalid")],
                    "http_source",
                ),
                // The line of stdin that is not JSON, which the filter
                // cannot read.
                (
                    "shipper_transform_unreadable_records_total",
                    vec![],
                    "filter_transform",
                ),
                // What the shipper source received from the http sink.
                (
                    "shipper_source_requests_total",
                    vec![("outcome", "accepted")],
                    "shipper_source",
                ),
                ("shipper_http_requests_total", vec![], "http_sink"),
            ]
            .into_iter()
            .map(|(metric, labels, name)| (metric.to_owned(), labels, name.to_owned())),
        )
        .chain(
            // The MQTT message over the record limit, dropped.
            mqtt.then(|| {
                (
                    "shipper_source_discarded_records_total".to_owned(),
                    vec![("reason", "oversized")],
                    "mqtt_source".to_owned(),
                )
            }),
        )
        .chain(
            // The line that is not JSON, stored as a JSON string.
            postgres.then(|| {
                (
                    "shipper_postgres_altered_rows_total".to_owned(),
                    vec![("alteration", "stored_as_text")],
                    "postgres_sink".to_owned(),
                )
            }),
        )
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let (status, metrics) = http_request(admin, "GET", "/metrics");
        assert_eq!(status, 200);
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(metric, labels, name)| {
                let mut labels = labels.clone();
                labels.push(("component_id", name));
                !expected(&metrics, metric, &labels)
            })
            .map(|(metric, labels, name)| format!("{metric}{labels:?} of {name}"))
            .collect();
        if missing.is_empty() {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s, not counted: {missing:#?}\n{metrics}\n{}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "checked {} series of {} components",
        wanted.len(),
        pipeline.components.len()
    );
    // Every component metric carries the same three labels.
    for (kind, type_name, name) in &pipeline.components {
        assert!(
            metrics.contains(&format!(
                "{{component_id=\"{name}\",component_kind=\"{kind}\",component_type=\"{type_name}\""
            )),
            "{name}: {metrics}"
        );
    }
    drop(stdin);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
    );
    if postgres {
        // Dropped with the handle.
        let mut database = common::Database::connect().unwrap();
        database
            .tables
            .extend([table.clone(), format!("{table}_hwm")]);
    }
}

/// The `sdk` source is what an embedding application inserts through:
/// `shipper run` has nothing to feed it and refuses it by name.
#[test]
fn the_sdk_source_is_refused_by_shipper_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shipper.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n[sources.app]\ntype = \"sdk\"\n[sinks.void]\ntype = \"blackhole\"\ninputs = [\"app\"]\n",
            dir.path().join("data").display(),
            free_port()
        ),
    )
    .unwrap();
    let output = Command::new(SHIPPER)
        .args(["run", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "source app: type \"sdk\" takes the records of an application that embeds shipper"
        ),
        "{stderr}"
    );
}
