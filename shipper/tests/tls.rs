//! TLS between real processes, with certificates made by the test: a
//! sidecar ships to an aggregator over mutual TLS (the http sink's client
//! certificate, the shipper source's `verify_client`), a sidecar without a
//! valid certificate is refused and keeps its records, and the admin
//! endpoint serves `/metrics` over TLS only.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{file_sink, free_port, seen, Guard};
use shipper_tests::pki::{client_config, Ca, Issued};

fn write(path: &Path, text: String) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn listener_tls(server: &Issued, ca: &Path) -> String {
    format!(
        "{{ crt_file = {:?}, key_file = {:?}, ca_file = {ca:?}, verify_client = true }}",
        server.crt, server.key
    )
}

fn aggregator(dir: &Path, port: u16, admin: u16, server: &Issued, ca: &Path) -> PathBuf {
    write(
        &dir.join("aggregator.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:{admin}"
tls = {tls}

[log]
durability = "interval"
interval_ms = 20

[sources.sidecars]
type = "shipper"
address = "127.0.0.1:{port}"
tls = {tls}

{sinks}"#,
            data = dir.join("aggregator-data").display(),
            tls = listener_tls(server, ca),
            sinks = file_sink(dir, "sidecars"),
        ),
    )
}

/// A sidecar named `name` tailing `DIR/NAME.log`, shipping over TLS with
/// `client` as its certificate (none if `None`).
fn sidecar(dir: &Path, name: &str, port: u16, ca: &Path, client: Option<&Issued>) -> PathBuf {
    let certificate = client.map_or(String::new(), |client| {
        format!(", crt_file = {:?}, key_file = {:?}", client.crt, client.key)
    });
    write(
        &dir.join(format!("{name}.toml")),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:0"

[log]
durability = "interval"
interval_ms = 20

[sources.app]
type = "file"
include = ["{log}"]
glob_interval_ms = 50

[sinks.aggregator]
type = "http"
inputs = ["app"]
uri = "https://localhost:{port}/v1/chunks"
protocol = "shipper"
retry = {{ initial_ms = 50, max_ms = 200 }}
tls = {{ ca_file = {ca:?}{certificate} }}
"#,
            data = dir.join(format!("{name}-data")).display(),
            log = dir.join(format!("{name}.log")).display(),
        ),
    )
}

fn lines(path: &Path, seqs: std::ops::Range<u64>) {
    let text: String = seqs
        .map(|seq| format!("{{\"seq\":{seq},\"msg\":\"over tls\"}}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_sidecar_ships_to_an_aggregator_over_mutual_tls_and_a_sidecar_without_a_certificate_is_refused()
{
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let server = ca.server(&pki, "aggregator");
    let client = ca.client(&pki, "sidecar-1");

    let (port, admin) = (free_port(), free_port());
    let aggregator = Guard::start(&aggregator(dir.path(), port, admin, &server, &ca.crt));
    lines(&dir.path().join("good.log"), 0..500);
    lines(&dir.path().join("bad.log"), 1000..1100);
    let good = Guard::start(&sidecar(dir.path(), "good", port, &ca.crt, Some(&client)));
    let bad = Guard::start(&sidecar(dir.path(), "bad", port, &ca.crt, None));

    let out = dir.path().join("out/records.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen(&out).len() < 500 {
        assert!(
            Instant::now() < deadline,
            "{} of 500 records arrived",
            seen(&out).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The admin endpoint: over TLS, with a client certificate of the CA.
    let config = client_config(&ca.crt, Some(&client));
    let (status, metrics) =
        shipper_tests::https(admin, config, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    // The sidecar without a certificate tried and was refused at the handshake.
    let refused = shipper::metrics::sample(
        &metrics,
        "shipper_source_connections_closed_total",
        &[("component_id", "sidecars"), ("reason", "tls_handshake")],
    )
    .unwrap_or(0.0);
    assert!(refused >= 1.0, "{metrics}");
    assert!(
        shipper_tests::http(admin, "GET", "/metrics", &[], b"").is_err(),
        "plaintext to the admin endpoint"
    );

    // The refused sidecar keeps its records in its log (it cannot drain
    // them at a stop: it is killed instead).
    bad.kill();
    let bad_log = std::fs::read_to_string(dir.path().join("bad.stderr")).unwrap();
    good.terminate();
    let stderr = aggregator.terminate();
    let counts = seen(&out);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (0..500).collect::<Vec<_>>(),
        "only the sidecar with a certificate got in"
    );
    assert!(counts.values().all(|&n| n == 1), "once");
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(bad_log.contains("CertificateRequired"), "{bad_log}");
}

#[test]
fn post_reload_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "adm1n-t0ken\n").unwrap();
    let admin = free_port();
    let config = write(
        &dir.path().join("shipper.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:{admin}"
auth = {{ strategy = "bearer", token_file = {token:?} }}

[sources.in]
type = "generator"
format = "iot"
rate = 10

[sinks.out]
type = "blackhole"
inputs = ["in"]
"#,
            data = dir.path().join("data").display(),
        ),
    );
    let running = Guard::start(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    // /metrics stays open on loopback.
    let metrics = loop {
        match shipper_tests::http(admin, "GET", "/metrics", &[], b"") {
            Ok((200, body)) => break body,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the admin endpoint never answered"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(metrics.contains("shipper_build_info"));
    assert!(!metrics.contains("adm1n-t0ken"), "a secret in /metrics");
    let reload = |headers: &[(&str, &str)]| {
        shipper_tests::http(admin, "POST", "/reload", headers, b"").unwrap()
    };
    let (status, body) = reload(&[]);
    assert_eq!(status, 401, "{body}");
    let (status, _) = reload(&[("Authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    let (status, body) = reload(&[("Authorization", "Bearer adm1n-t0ken")]);
    assert_eq!(status, 200, "{body}");
    let stderr = running.terminate();
    assert!(
        !stderr.contains("adm1n-t0ken"),
        "a secret in the log:\n{stderr}"
    );
}

/// The local PostgreSQL's certificate: Debian's self-signed "snakeoil"
/// one (package ssl-cert), issued to `localhost`.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The producer id a sidecar's data directory will have: the directory is
/// opened once here, as `shipper run` will open it.
fn producer_of(data: &Path) -> String {
    let log = shipper_core::log::Log::open(data, shipper_core::log::LogOptions::default()).unwrap();
    let id = log.producer_id().to_string();
    log.close().unwrap();
    id
}

/// The whole path over TLS: two sidecars ship to an aggregator over
/// mutual TLS, each with a token bound to its own producer id; the
/// aggregator writes to PostgreSQL over TLS with the server's certificate
/// verified (`sslmode=verify-full`). The sidecar that presents the other
/// one's token is refused (403) and nothing of it is stored; the other's
/// lines arrive exactly once.
#[test]
fn sidecar_to_aggregator_to_postgres_over_tls_with_tokens_bound_to_producers() {
    let Some(mut database) = common::Database::connect() else {
        return;
    };
    if !Path::new(SNAKEOIL).exists() {
        shipper_tests::service_missing(&format!("no {SNAKEOIL}: PostgreSQL's TLS certificate"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let server = ca.server(&pki, "aggregator");
    let (good_data, bad_data) = (dir.path().join("good-data"), dir.path().join("bad-data"));
    let (good_id, bad_id) = (producer_of(&good_data), producer_of(&bad_data));
    let table = common::unique("tls_rows");
    let hwm = common::unique("tls_hwm");
    database.tables.extend([table.clone(), hwm.clone()]);

    let (port, admin) = (free_port(), free_port());
    let aggregator = write(
        &dir.path().join("aggregator.toml"),
        format!(
            r#"data_dir = "{data}"

[admin]
address = "127.0.0.1:{admin}"

[log]
durability = "interval"
interval_ms = 20

[sources.sidecars]
type = "shipper"
address = "127.0.0.1:{port}"
tls = {tls}
auth = {{ strategy = "bearer", tokens = [
  {{ token = "good-token", producers = ["{good_id}"] }},
  {{ token = "bad-token", producers = ["{bad_id}"] }},
] }}

[sinks.db]
type = "postgres"
inputs = ["sidecars"]
connection = "host=localhost port=5432 user=postgres dbname=test sslmode=verify-full sslrootcert={SNAKEOIL}"
table = "{table}"
table_per_stream = false
hwm_table = "{hwm}"
"#,
            data = dir.path().join("aggregator-data").display(),
            tls = listener_tls(&server, &ca.crt),
        ),
    );
    let running = Guard::start(&aggregator);
    // Each sidecar with its own certificate; the bad one with the good
    // one's token.
    let start_sidecar = |name: &str, data: &Path, token: &str, seqs: std::ops::Range<u64>| {
        let client = ca.client(&pki, name);
        lines(&dir.path().join(format!("{name}.log")), seqs);
        let config = sidecar(dir.path(), name, port, &ca.crt, Some(&client));
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(
                &format!("data_dir = \"{}\"", dir.path().join(format!("{name}-data")).display()),
                &format!("data_dir = \"{}\"", data.display()),
            )
            .replace(
                "protocol = \"shipper\"\n",
                &format!("protocol = \"shipper\"\nauth = {{ strategy = \"bearer\", token = \"{token}\" }}\n"),
            );
        std::fs::write(&config, text).unwrap();
        Guard::start(&config)
    };
    let good = start_sidecar("good", &good_data, "good-token", 0..300);
    let bad = start_sidecar("bad", &bad_data, "good-token", 1000..1100);

    let deadline = Instant::now() + Duration::from_secs(60);
    while database.rows(&table) < 300 {
        assert!(
            Instant::now() < deadline,
            "{} of 300 rows arrived",
            database.rows(&table)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A moment for anything that should not arrive to arrive.
    std::thread::sleep(Duration::from_millis(500));
    bad.kill();
    good.terminate();
    let stderr = running.terminate();
    assert_eq!(database.rows(&table), 300, "only the good sidecar's lines");
    assert_eq!(
        database.number(&format!(
            "SELECT count(DISTINCT (payload->>'seq')::int8) FROM {table} WHERE (payload->>'seq')::int8 < 300"
        )),
        300,
        "each once"
    );
    assert!(stderr.contains("may not write for producer"), "{stderr}");
    let bad_log = std::fs::read_to_string(dir.path().join("bad.stderr")).unwrap();
    assert!(bad_log.contains("403"), "{bad_log}");
}
