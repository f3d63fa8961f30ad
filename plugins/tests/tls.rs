//! TLS and bearer tokens on the listeners (http, shipper and socket
//! sources), with certificates the tests make: who gets in, who is refused
//! and why, nothing stored from a refused client, certificates that reload
//! without dropping the listener, and what `validate` says about the files.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shipper_components::config::{BuildContext, Checks, SourceComponent};
use shipper_components::sources::http::HttpSourceConfig;
use shipper_components::sources::socket::SocketSourceConfig;
use shipper_components::tls::{TlsClientConfig, TlsListenerConfig};
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{Shutdown, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Durability, Log, LogOptions};
use shipper_tests::pki::{client_config, Ca, Issued, Usage, Validity};
use shipper_tests::{free_port, http, https};

/// Held by the tests that reload: a reload is process-wide, and one test's
/// must not land between another's replacing its files and checking that
/// they are not used yet.
static RELOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use shipper_tests::records::stored as records;

/// A source built from its config text and run on a fresh log.
struct Running {
    log: Log,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(config: &dyn SourceComponent) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(
            dir.path(),
            LogOptions {
                durability: Durability::Always,
                ..LogOptions::default()
            },
        )
        .unwrap();
        let context = BuildContext {
            name: "tls",
            data_dir: dir.path(),
        };
        let mut source = config.build(&context).await.unwrap();
        let shutdown = Shutdown::new();
        let mut cx = SourceContext {
            emitter: Emitter::new(log.clone(), "tls", ChunkOptions::default()).unwrap(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(async move {
            source.run(&mut cx).await.unwrap();
        });
        Running {
            log,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) -> Log {
        self.shutdown.trigger();
        self.task.await.unwrap();
        self.log
    }
}

fn listener_tls(server: &Issued, ca: Option<&Path>, verify_client: bool) -> String {
    let mut table = format!(
        "tls = {{ crt_file = {:?}, key_file = {:?}",
        server.crt, server.key
    );
    if let Some(ca) = ca {
        table.push_str(&format!(", ca_file = {ca:?}"));
    }
    if verify_client {
        table.push_str(", verify_client = true");
    }
    table.push_str(" }\n");
    table
}

fn http_source(port: u16, tls: &str) -> HttpSourceConfig {
    toml::from_str(&format!(
        "address = \"127.0.0.1:{port}\"\npath = \"/ingest\"\n{tls}"
    ))
    .unwrap()
}

fn post_tls(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    body: &'static [u8],
) -> std::io::Result<(u16, String)> {
    https(port, config, "POST", "/ingest", &[], body)
}

/// Runs blocking client code off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_over_tls_takes_clients_that_trust_its_ca_and_refuses_the_others() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let other_ca = Ca::new(pki.path(), "other-ca");
    let server = ca.server(pki.path(), "server");
    let port = free_port();
    let running = Running::start(&http_source(port, &listener_tls(&server, None, false))).await;

    let (trusting, stranger) = (
        client_config(&ca.crt, None),
        client_config(&other_ca.crt, None),
    );
    let answers = blocking(move || {
        (
            post_tls(port, trusting, b"{\"over\":\"tls\"}\n"),
            // Plaintext to a TLS listener: no HTTP answer at all.
            http(port, "POST", "/ingest", &[], b"{\"over\":\"plain\"}\n"),
            // A server certificate from a CA the client does not trust.
            post_tls(port, stranger, b"{\"over\":\"untrusted\"}\n"),
        )
    })
    .await;
    let (trusted, plain, untrusted) = answers;
    assert_eq!(trusted.unwrap().0, 200);
    assert!(plain.is_err(), "a plaintext client got {plain:?}");
    let error = untrusted.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");

    let log = running.stop().await;
    assert_eq!(records(&log), vec!["{\"over\":\"tls\"}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_valid_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let other_ca = Ca::new(pki.path(), "other-ca");
    let server = ca.server(pki.path(), "server");
    let port = free_port();
    let config = http_source(port, &listener_tls(&server, Some(&ca.crt), true));
    let running = Running::start(&config).await;

    let good = ca.client(pki.path(), "sidecar-1");
    let foreign = other_ca.client(pki.path(), "intruder");
    let expired = ca.issue(pki.path(), "old", Usage::Client, Validity::Expired);
    let configs = [
        (
            "with a certificate of the CA",
            client_config(&ca.crt, Some(&good)),
        ),
        ("without a certificate", client_config(&ca.crt, None)),
        (
            "with a certificate of another CA",
            client_config(&ca.crt, Some(&foreign)),
        ),
        (
            "with an expired certificate",
            client_config(&ca.crt, Some(&expired)),
        ),
    ];
    let answers = blocking(move || {
        configs
            .into_iter()
            .map(|(who, config)| (who, post_tls(port, config, b"{\"who\":\"client\"}\n")))
            .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(answers[0].1.as_ref().unwrap().0, 200, "{}", answers[0].0);
    for (who, answer) in &answers[1..] {
        // TLS 1.3: the server's refusal arrives after the client's
        // handshake ends: an alert, or a connection closed under the
        // request. The server logs why (certificate required, unknown
        // issuer, expired).
        assert!(answer.is_err(), "{who}: {answer:?}");
    }
    let log = running.stop().await;
    assert_eq!(
        records(&log).len(),
        1,
        "only the client with a valid certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_an_expired_server_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let server = ca.issue(pki.path(), "server", Usage::Server, Validity::Expired);
    let port = free_port();
    let running = Running::start(&http_source(port, &listener_tls(&server, None, false))).await;
    let config = client_config(&ca.crt, None);
    let answer = blocking(move || post_tls(port, config, b"{}\n")).await;
    let error = answer.unwrap_err().to_string();
    assert!(error.contains("expired"), "{error}");
    let log = running.stop().await;
    assert!(records(&log).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_the_listener() {
    let _reloads = RELOADS.lock().await;
    let pki = tempfile::tempdir().unwrap();
    let first_ca = Ca::new(pki.path(), "first-ca");
    let second_ca = Ca::new(pki.path(), "second-ca");
    let live = tempfile::tempdir().unwrap();
    let installed = Issued {
        crt: live.path().join("server.crt"),
        key: live.path().join("server.key"),
    };
    let install = |issued: &Issued| {
        std::fs::copy(&issued.crt, &installed.crt).unwrap();
        std::fs::copy(&issued.key, &installed.key).unwrap();
    };
    install(&first_ca.server(pki.path(), "first"));
    let port = free_port();
    let running = Running::start(&http_source(port, &listener_tls(&installed, None, false))).await;
    let (first, second) = (
        client_config(&first_ca.crt, None),
        client_config(&second_ca.crt, None),
    );
    let before = blocking({
        let first = first.clone();
        move || post_tls(port, first, b"{\"n\":1}\n")
    })
    .await;
    assert_eq!(before.unwrap().0, 200);

    // New files in place: still the old certificate until a reload.
    install(&second_ca.server(pki.path(), "second"));
    let unchanged = blocking({
        let first = first.clone();
        move || post_tls(port, first, b"{\"n\":2}\n")
    })
    .await;
    assert_eq!(unchanged.unwrap().0, 200);

    shipper_components::reread::request();
    let after = blocking(move || {
        (
            post_tls(port, second, b"{\"n\":3}\n"),
            post_tls(port, first, b"{\"n\":4}\n"),
        )
    })
    .await;
    assert_eq!(after.0.unwrap().0, 200, "the new certificate is served");
    assert!(after.1.is_err(), "the old CA no longer matches");

    // A reload whose files are broken keeps the certificate it had.
    std::fs::write(&installed.key, "not a key").unwrap();
    shipper_components::reread::request();
    let config = client_config(&second_ca.crt, None);
    let kept = blocking(move || post_tls(port, config, b"{\"n\":5}\n")).await;
    assert_eq!(kept.unwrap().0, 200);

    let log = running.stop().await;
    assert_eq!(
        records(&log),
        vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":5}"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_socket_source_over_mutual_tls_stores_lines_and_refuses_plaintext() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let server = ca.server(pki.path(), "server");
    let client = ca.client(pki.path(), "app");
    let port = free_port();
    let config: SocketSourceConfig = toml::from_str(&format!(
        "mode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{}",
        listener_tls(&server, Some(&ca.crt), true)
    ))
    .unwrap();
    let running = Running::start(&config).await;
    let (with_certificate, without) = (
        client_config(&ca.crt, Some(&client)),
        client_config(&ca.crt, None),
    );
    blocking(move || {
        let send = |config: Arc<rustls::ClientConfig>, lines: &[u8]| -> std::io::Result<()> {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connection = rustls::ClientConnection::new(config, name).unwrap();
            let socket = std::net::TcpStream::connect(("127.0.0.1", port))?;
            let mut stream = rustls::StreamOwned::new(connection, socket);
            stream.write_all(lines)?;
            stream.flush()?;
            stream.conn.send_close_notify();
            stream.flush()?;
            // Whether the server took it shows in what it stores.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
            Ok(())
        };
        send(with_certificate, b"{\"tls\":1}\n{\"tls\":2}\n").unwrap();
        let _ = send(without, b"{\"tls\":\"no certificate\"}\n");
        let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = plain.write_all(b"{\"plain\":true}\n");
    })
    .await;
    let log = running.log.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while records(&log).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", records(&log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = running.stop().await;
    assert_eq!(records(&log), vec!["{\"tls\":1}", "{\"tls\":2}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_source_with_a_token_refuses_requests_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-from-a-file\n").unwrap();
    let port = free_port();
    let config = http_source(
        port,
        &format!("auth = {{ strategy = \"bearer\", token_file = {token_file:?} }}\n"),
    );
    let running = Running::start(&config).await;
    let answers = blocking(move || {
        let post = |headers: &[(&str, &str)], body: &[u8]| {
            http(port, "POST", "/ingest", headers, body).unwrap()
        };
        vec![
            post(&[], b"{\"token\":\"none\"}\n"),
            post(
                &[("Authorization", "Bearer wrong")],
                b"{\"token\":\"wrong\"}\n",
            ),
            post(
                &[("Authorization", "bearer s3cret-from-a-file")],
                b"{\"token\":\"right\"}\n",
            ),
        ]
    })
    .await;
    assert_eq!(answers[0].0, 401, "{:?}", answers[0]);
    assert_eq!(answers[1].0, 401, "{:?}", answers[1]);
    assert_eq!(answers[2].0, 200, "{:?}", answers[2]);
    let log = running.stop().await;
    assert_eq!(records(&log), vec!["{\"token\":\"right\"}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_certificate_and_ca_files_are_read_again_after_a_reload() {
    let _reloads = RELOADS.lock().await;
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let other_ca = Ca::new(pki.path(), "other-ca");
    let server = ca.server(pki.path(), "server");
    let port = free_port();
    let running = Running::start(&http_source(
        port,
        &listener_tls(&server, Some(&ca.crt), true),
    ))
    .await;
    // The client's files, replaced in place.
    let live = tempfile::tempdir().unwrap();
    let (crt, key, trust) = (
        live.path().join("client.crt"),
        live.path().join("client.key"),
        live.path().join("ca.crt"),
    );
    let install = |issued: &Issued, ca_file: &Path| {
        std::fs::copy(&issued.crt, &crt).unwrap();
        std::fs::copy(&issued.key, &key).unwrap();
        std::fs::copy(ca_file, &trust).unwrap();
    };
    install(&ca.client(pki.path(), "first"), &ca.crt);
    let settings = TlsClientConfig {
        ca_file: Some(trust.clone()),
        crt_file: Some(crt.clone()),
        key_file: Some(key.clone()),
        ..TlsClientConfig::default()
    };
    let config = shipper_components::tls::client_config(&settings, &[b"http/1.1"], "test").unwrap();
    let post = |config: Arc<rustls::ClientConfig>, body: &'static [u8]| {
        blocking(move || post_tls(port, config, body))
    };
    assert_eq!(post(config.clone(), b"{\"n\":1}\n").await.unwrap().0, 200);
    // A certificate of another CA in place: used only after a reload.
    install(&other_ca.client(pki.path(), "second"), &ca.crt);
    assert_eq!(post(config.clone(), b"{\"n\":2}\n").await.unwrap().0, 200);
    shipper_components::reread::request();
    assert!(
        post(config.clone(), b"{\"n\":3}\n").await.is_err(),
        "the server does not know the new certificate's CA"
    );
    // The right certificate again, and a CA file that does not trust the
    // server: refused by the client after the next reload.
    install(&ca.client(pki.path(), "third"), &other_ca.crt);
    shipper_components::reread::request();
    let error = post(config.clone(), b"{\"n\":4}\n")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
    install(&ca.client(pki.path(), "fourth"), &ca.crt);
    shipper_components::reread::request();
    assert_eq!(post(config, b"{\"n\":5}\n").await.unwrap().0, 200);
    let log = running.stop().await;
    assert_eq!(records(&log), vec!["{\"n\":1}", "{\"n\":2}", "{\"n\":5}"]);
}

/// What `validate` reports, as (error, keys, message).
#[derive(Default)]
struct Reported(Vec<(bool, String, String)>);

impl Checks for Reported {
    fn report(&mut self, error: bool, keys: &[&str], message: String) {
        self.0.push((error, keys.join("."), message));
    }
}

fn check_listener(tls: TlsListenerConfig) -> Vec<(bool, String, String)> {
    let mut reported = Reported::default();
    tls.check(&mut reported);
    reported.0
}

#[test]
fn validate_checks_the_files_of_a_tls_table() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let server = ca.server(pki.path(), "server");
    let other = ca.server(pki.path(), "other");
    let table = |crt: &Path, key: &Path| TlsListenerConfig {
        crt_file: crt.to_owned(),
        key_file: key.to_owned(),
        ca_file: Some(ca.crt.clone()),
        verify_client: true,
        min_version: Default::default(),
    };

    assert_eq!(check_listener(table(&server.crt, &server.key)), vec![]);

    let mismatch = check_listener(table(&server.crt, &other.key));
    assert_eq!(mismatch.len(), 1, "{mismatch:?}");
    assert!(mismatch[0].0);
    assert_eq!(mismatch[0].1, "tls.key_file");
    assert!(mismatch[0].2.contains("does not belong"), "{mismatch:?}");

    let missing = check_listener(table(&pki.path().join("nope.crt"), &server.key));
    assert_eq!(missing[0].1, "tls.crt_file");
    assert!(missing[0].2.contains("nope.crt"), "{missing:?}");

    let not_pem = pki.path().join("notes.crt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let garbage = check_listener(table(&not_pem, &server.key));
    assert!(garbage[0].2.contains("no PEM certificate"), "{garbage:?}");

    let expired = ca.issue(pki.path(), "expired", Usage::Server, Validity::Expired);
    let old = check_listener(table(&expired.crt, &expired.key));
    assert!(old[0].0 && old[0].2.contains("expired"), "{old:?}");

    let soon = ca.issue(pki.path(), "soon", Usage::Server, Validity::EndsIn(10));
    let warned = check_listener(table(&soon.crt, &soon.key));
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(!warned[0].0, "a warning, not an error");
    assert!(
        warned[0].2.contains("expires in 9 days") || warned[0].2.contains("expires in 10 days")
    );

    let no_ca = check_listener(TlsListenerConfig {
        ca_file: None,
        ..table(&server.crt, &server.key)
    });
    assert_eq!(no_ca[0].1, "tls.verify_client");

    let mut reported = Reported::default();
    TlsClientConfig {
        verify_certificate: false,
        crt_file: Some(server.crt.clone()),
        ..TlsClientConfig::default()
    }
    .check(&mut reported);
    let keys: Vec<&str> = reported.0.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        keys,
        ["tls.key_file", "tls.verify_certificate"],
        "{:?}",
        reported.0
    );
}
