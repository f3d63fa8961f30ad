//! The nats sink against a real NATS server with JetStream on
//! 127.0.0.1:4222. Without one the tests print why they skip, unless
//! `SHIPPER_REQUIRE_SERVICES=1`, which makes them fail instead. Every test
//! uses subjects and streams of its own (process id and time) and deletes
//! its streams at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, stream::Config as StreamConfig};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use shipper_components::sinks::nats::{
    MessagePer, NatsSink, NatsSinkOptions, END_OFFSET_HEADER, OFFSET_HEADER, PRODUCER_HEADER,
    STREAM_HEADER,
};
use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, ChunkView, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::{Log, LogOptions, StoredChunk};

const SERVER: &str = "127.0.0.1:4222";
const URL: &str = "nats://127.0.0.1:4222";

/// Whether NATS answers; panics instead of skipping when services are
/// required.
fn server_available() -> bool {
    shipper_tests::service_available("NATS", SERVER)
}

use shipper_tests::unique;

async fn jetstream() -> jetstream::Context {
    jetstream::new(async_nats::connect(URL).await.unwrap())
}

/// A log in `dir` holding `batches` chunks of `per_chunk` records
/// (`r<chunk>-<i>`, stream "app"), and its chunks.
fn log_with(dir: &std::path::Path, chunks: usize, per_chunk: usize) -> (Log, Vec<StoredChunk>) {
    let log = Log::open(dir.join("data"), LogOptions::default()).unwrap();
    for chunk in 0..chunks {
        let mut builder = ChunkBuilder::new("app", "in", ChunkOptions::default()).unwrap();
        for i in 0..per_chunk {
            builder
                .push(format!("r{chunk}-{i}").as_bytes(), 1, None)
                .unwrap();
        }
        log.append(builder.finish().unwrap().unwrap())
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    let stored = log.reader(0).map(Result::unwrap).collect();
    (log, stored)
}

fn context(log: &Log, committed: u64) -> SinkContext {
    SinkContext::new("out", log, committed)
}

/// Every message of `stream`, in order: (subject, headers, payload).
async fn messages(js: &jetstream::Context, stream: &str) -> Vec<(String, HeaderMap, Vec<u8>)> {
    let stream = js.get_stream(stream).await.unwrap();
    let count = stream.get_info().await.unwrap().state.messages as usize;
    let mut out = Vec::new();
    if count == 0 {
        return out;
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("messages arrive")
            .unwrap()
            .unwrap();
        out.push((
            message.subject.to_string(),
            message.headers.clone().unwrap_or_default(),
            message.payload.to_vec(),
        ));
    }
    out
}

async fn message_count(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_once_with_its_headers() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, chunks) = log_with(dir.path(), 3, 50);
    let subject = unique("headers");
    let options = NatsSinkOptions::new(URL, subject.clone());
    let stream = options.default_stream_name();
    let mut sink = NatsSink::new(options).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks[..1]).await.unwrap();
    sink.deliver(&chunks[1..]).await.unwrap();
    sink.close().await.unwrap();

    let js = jetstream().await;
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.config.subjects, [format!("{subject}.*")]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    let producer = log.producer_id().to_string();
    let got = messages(&js, &stream).await;
    assert_eq!(got.len(), 150);
    for (offset, (message_subject, headers, payload)) in got.iter().enumerate() {
        let (chunk, i) = (offset / 50, offset % 50);
        assert_eq!(payload, format!("r{chunk}-{i}").as_bytes());
        assert_eq!(*message_subject, format!("{subject}.{producer}"));
        assert_eq!(
            headers.get(NATS_MESSAGE_ID).unwrap().as_str(),
            format!("{producer}-{offset}")
        );
        assert_eq!(header(headers, PRODUCER_HEADER), producer);
        assert_eq!(header(headers, OFFSET_HEADER), offset.to_string());
        assert_eq!(header(headers, STREAM_HEADER), "app");
    }
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_offered_again_after_a_crash_adds_nothing() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, chunks) = log_with(dir.path(), 4, 100);
    let subject = unique("again");
    let options = NatsSinkOptions::new(URL, subject.clone());
    let stream = options.default_stream_name();
    let js = jetstream().await;

    let mut sink = NatsSink::new(options.clone()).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks[..2]).await.unwrap();
    sink.deliver(&chunks[2..]).await.unwrap();
    assert_eq!(message_count(&js, &stream).await, 400);
    // A kill before the runtime persisted the cursor of the second
    // delivery: a new sink opens at the cursor and is offered it again.
    drop(sink);
    let committed = chunks[2].first_offset();
    let mut sink = NatsSink::new(options.clone()).unwrap();
    sink.open(&context(&log, committed)).await.unwrap();
    sink.deliver(&chunks[2..]).await.unwrap();
    assert_eq!(message_count(&js, &stream).await, 400);
    // Offered again from the start of the log, by the same instance.
    sink.deliver(&chunks).await.unwrap();
    assert_eq!(message_count(&js, &stream).await, 400);
    js.delete_stream(&stream).await.unwrap();
}

/// Beyond the duplicate window JetStream would store a republished message
/// again: the sink must find what the stream holds and skip it, filling
/// holes (messages of a delivery that never arrived) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_duplicate_window_the_stream_decides_and_holes_are_filled() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, chunks) = log_with(dir.path(), 3, 40);
    let subject = unique("window");
    let mut options = NatsSinkOptions::new(URL, subject.clone());
    options.duplicate_window = Duration::from_millis(100);
    let stream = options.default_stream_name();
    let js = jetstream().await;

    let mut sink = NatsSink::new(options.clone()).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks[..1]).await.unwrap();
    // A delivery of chunks 1 and 2 that a kill cut short, pipelined over a
    // connection that was lost and re-established: some of its messages
    // are stored, with holes, and others' messages sit between them.
    let producer = log.producer_id().to_string();
    let mut decoder = Decoder::default();
    let ours = format!("{subject}.{producer}");
    let others = format!("{subject}.{}", "0".repeat(32));
    let mut published = 40;
    for chunk in &chunks[1..] {
        let view = ChunkView::parse(chunk.frame()).unwrap();
        let body = decode_body(&view, &mut decoder).unwrap();
        for (offset, record) in (chunk.first_offset()..).zip(body.records()) {
            if offset % 7 == 3 || offset >= 110 {
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{producer}-{offset}"));
            headers.insert(PRODUCER_HEADER, producer.as_str());
            headers.insert(OFFSET_HEADER, offset.to_string());
            headers.insert(STREAM_HEADER, "app");
            js.publish_with_headers(ours.clone(), headers, record.unwrap().to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
            published += 1;
            // Other producers' messages in the stream, between ours.
            if offset % 5 == 0 {
                js.publish(others.clone(), "someone else".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                published += 1;
            }
        }
    }
    assert_eq!(message_count(&js, &stream).await, published);
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.config.duplicate_window, Duration::from_millis(100));
    // Past the duplicate window: only the stream's contents can tell.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sink);
    let committed = chunks[1].first_offset();
    let mut sink = NatsSink::new(options).unwrap();
    sink.open(&context(&log, committed)).await.unwrap();
    sink.deliver(&chunks[1..]).await.unwrap();

    let got = messages(&js, &stream).await;
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for (message_subject, headers, payload) in &got {
        if message_subject.ends_with(&producer) {
            let offset: u64 = header(headers, OFFSET_HEADER).parse().unwrap();
            let (chunk, i) = (offset / 40, offset % 40);
            assert_eq!(payload, format!("r{chunk}-{i}").as_bytes());
            *seen.entry(offset).or_default() += 1;
        }
    }
    let expected: BTreeMap<u64, u32> = (0..120).map(|offset| (offset, 1)).collect();
    assert_eq!(seen, expected);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_messages_carry_frames_once() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, chunks) = log_with(dir.path(), 3, 20);
    let subject = unique("chunks");
    let mut options = NatsSinkOptions::new(URL, subject.clone());
    options.message = MessagePer::Chunk;
    let stream = options.default_stream_name();
    let mut sink = NatsSink::new(options.clone()).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks).await.unwrap();
    drop(sink);
    let mut sink = NatsSink::new(options).unwrap();
    sink.open(&context(&log, chunks[1].first_offset()))
        .await
        .unwrap();
    sink.deliver(&chunks[1..]).await.unwrap();

    let js = jetstream().await;
    let got = messages(&js, &stream).await;
    assert_eq!(got.len(), 3);
    let producer = log.producer_id().to_string();
    let mut decoder = Decoder::default();
    for ((_, headers, payload), chunk) in got.iter().zip(&chunks) {
        let (first, end) = (chunk.first_offset(), chunk.end_offset());
        assert_eq!(
            headers.get(NATS_MESSAGE_ID).unwrap().as_str(),
            format!("{producer}-{first}-{end}")
        );
        assert_eq!(header(headers, OFFSET_HEADER), first.to_string());
        assert_eq!(header(headers, END_OFFSET_HEADER), end.to_string());
        let view = ChunkView::parse(payload).unwrap();
        assert_eq!(view.first_offset(), first);
        let records = decode_body(&view, &mut decoder).unwrap().records().count();
        assert_eq!(records, 20);
    }
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_capture_the_subject_is_refused() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(dir.path(), 1, 1);
    let subject = unique("refused");
    let js = jetstream().await;
    let stream = format!("{subject}_exact");
    js.create_stream(StreamConfig {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..StreamConfig::default()
    })
    .await
    .unwrap();
    let mut options = NatsSinkOptions::new(URL, subject.clone());
    options.stream = Some(stream.clone());
    let mut sink = NatsSink::new(options.clone()).unwrap();
    let error = sink.open(&context(&log, 0)).await.unwrap_err();
    assert!(
        matches!(&error, ComponentError::Fatal(m) if m.contains("does not capture")),
        "{error:?}"
    );
    options.stream = None;
    options.subject = unique("absent");
    options.create_stream = false;
    let mut sink = NatsSink::new(options).unwrap();
    let error = sink.open(&context(&log, 0)).await.unwrap_err();
    assert!(
        matches!(&error, ComponentError::Fatal(m) if m.contains("create_stream is false")),
        "{error:?}"
    );
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_the_sink_is_retryable_then_created_again() {
    if !server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, chunks) = log_with(dir.path(), 2, 10);
    let options = NatsSinkOptions::new(URL, unique("deleted"));
    let stream = options.default_stream_name();
    let js = jetstream().await;
    let mut sink = NatsSink::new(options).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks[..1]).await.unwrap();
    js.delete_stream(&stream).await.unwrap();
    let error = sink.deliver(&chunks[1..]).await.unwrap_err();
    assert!(matches!(error, ComponentError::Retryable(_)), "{error:?}");
    // The runtime offers the same chunks again.
    sink.deliver(&chunks[1..]).await.unwrap();
    let got = messages(&js, &stream).await;
    let offsets: Vec<String> = got
        .iter()
        .map(|(_, headers, _)| header(headers, OFFSET_HEADER).to_owned())
        .collect();
    let expected: Vec<String> = (10..20).map(|o: u64| o.to_string()).collect();
    assert_eq!(offsets, expected);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retryable() {
    // A port nothing listens on: bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(dir.path(), 1, 1);
    let mut options = NatsSinkOptions::new(format!("nats://127.0.0.1:{port}"), unique("down"));
    options.timeout = Duration::from_secs(2);
    let mut sink = NatsSink::new(options).unwrap();
    let started = Instant::now();
    let error = sink.open(&context(&log, 0)).await.unwrap_err();
    assert!(matches!(error, ComponentError::Retryable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A `nats-server` of the test's own, with JetStream and mutual TLS on a
/// free port; killed when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsServer {
    /// `None` (skip, or fail under `SHIPPER_REQUIRE_SERVICES=1`) when there
    /// is no `nats-server` binary.
    fn start(dir: &std::path::Path, ca: &shipper_tests::pki::Ca) -> Option<TlsServer> {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists());
        let Some(binary) = binary else {
            shipper_tests::service_missing("no nats-server binary to start a TLS server with");
            return None;
        };
        let server = ca.server(dir, "nats");
        let port = shipper_tests::free_port();
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .args(["--tls", "--tlsverify", "--tlscert"])
            .arg(&server.crt)
            .arg("--tlskey")
            .arg(&server.key)
            .arg("--tlscacert")
            .arg(&ca.crt)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(TlsServer { child, port })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_over_mutual_tls_and_a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = shipper_tests::pki::Ca::new(dir.path(), "ca");
    let Some(server) = TlsServer::start(dir.path(), &ca) else {
        return;
    };
    let client = ca.client(dir.path(), "shipper");
    let (log, chunks) = log_with(dir.path(), 2, 20);
    let url = format!("tls://localhost:{}", server.port);
    let subject = unique("tls");
    let tls = |certificate: bool| {
        let settings = shipper_components::tls::TlsClientConfig {
            ca_file: Some(ca.crt.clone()),
            crt_file: certificate.then(|| client.crt.clone()),
            key_file: certificate.then(|| client.key.clone()),
            ..Default::default()
        };
        Some(shipper_components::tls::client_config(&settings, &[], "out").unwrap())
    };

    let mut options = NatsSinkOptions::new(url.clone(), subject.clone());
    options.tls = tls(true);
    options.timeout = Duration::from_secs(5);
    let mut sink = NatsSink::new(options.clone()).unwrap();
    sink.open(&context(&log, 0)).await.unwrap();
    sink.deliver(&chunks).await.unwrap();
    sink.close().await.unwrap();

    // Read back over the same TLS.
    let reader = async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(rustls::ClientConfig::clone(&tls(true).unwrap()))
        .connect(url.as_str())
        .await
        .unwrap();
    let js = jetstream::new(reader);
    assert_eq!(message_count(&js, &options.default_stream_name()).await, 40);

    let mut without = options.clone();
    without.tls = tls(false);
    let mut refused = NatsSink::new(without).unwrap();
    let error = refused.open(&context(&log, 0)).await.unwrap_err();
    assert!(matches!(error, ComponentError::Retryable(_)), "{error}");
}

/// A credentials file that is not one is a fatal error naming the file
/// (nothing to retry until the file is fixed), before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_that_is_not_one_is_fatal_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(dir.path(), 1, 1);
    let creds = dir.path().join("shipper.creds");
    std::fs::write(&creds, "not a credentials file\n").unwrap();
    let mut options = NatsSinkOptions::new(URL, unique("creds"));
    options.credentials_file = Some(creds.clone());
    let mut sink = NatsSink::new(options.clone()).unwrap();
    let error = sink.open(&context(&log, 0)).await.unwrap_err();
    assert!(
        matches!(&error, ComponentError::Fatal(m) if m.contains("shipper.creds")),
        "{error}"
    );
    options.credentials_file = Some(dir.path().join("missing.creds"));
    let error = NatsSink::new(options)
        .unwrap()
        .open(&context(&log, 0))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("missing.creds"), "{error}");
}
