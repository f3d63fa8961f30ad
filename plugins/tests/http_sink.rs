//! The `http` sink against real receivers on 127.0.0.1: an axum receiver
//! that speaks enough of docs/protocol.md to check every frame (or decodes
//! NDJSON), with scripted answers for the failure cases, and a listener
//! that never answers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shipper_components::sinks::http::{
    HttpAuth, HttpCompression, HttpProtocol, HttpSink, HttpSinkOptions, HttpSinkStats, RetryOptions,
};
use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, ChunkView, Decoder};
use shipper_core::component::{ComponentError, Sink, SinkContext};
use shipper_core::log::{Log, LogOptions, StoredChunk};

/// A scripted answer; once the script is empty the receiver does its job.
#[derive(Debug, Clone)]
enum Scripted {
    /// Do the receiver's job for this request.
    Pass,
    Status {
        status: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
}

fn status(status: u16, body: &'static str) -> Scripted {
    Scripted::Status {
        status,
        retry_after: None,
        body,
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<Scripted>,
    requests: Vec<Received>,
    /// Records stored, in order.
    records: Vec<String>,
    /// Shipper protocol: the high-water mark of the (one) producer.
    high_water: u64,
}

#[derive(Debug, Clone)]
struct Receiver {
    address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    async fn start(script: impl IntoIterator<Item = Scripted>) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into_iter().collect(),
            ..Inner::default()
        }));
        let app = axum::Router::new()
            .route("/v1/chunks", axum::routing::post(shipper_handler))
            .route("/ndjson", axum::routing::post(ndjson_handler))
            .route("/json", axum::routing::post(json_handler))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { address, inner }
    }

    fn uri(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn requests(&self) -> Vec<Received> {
        self.inner.lock().unwrap().requests.clone()
    }

    fn records(&self) -> Vec<String> {
        self.inner.lock().unwrap().records.clone()
    }
}

/// Records the request; answers from the script if it has something left.
fn take_script(inner: &Mutex<Inner>, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Received {
        headers: headers.clone(),
        body: body.clone(),
        at: Instant::now(),
    });
    let Scripted::Status {
        status,
        retry_after,
        body,
    } = inner.script.pop_front()?
    else {
        return None;
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", value.parse().unwrap());
    }
    Some(response)
}

/// The receiving side of docs/protocol.md, minus durability: checks the
/// headers, parses and checks every frame, skips what is at or below the
/// high-water mark, and answers with it.
async fn shipper_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = take_script(&inner, &headers, &body) {
        return response;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("content-type") != Some("application/vnd.shipper.chunks") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "content type").into_response();
    }
    if header("shipper-protocol") != Some("1") {
        return (StatusCode::BAD_REQUEST, "versions: 1").into_response();
    }
    let producer = header("shipper-producer").unwrap_or_default().to_owned();
    if producer.len() != 32 || !producer.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (StatusCode::BAD_REQUEST, "producer").into_response();
    }
    let mut inner = inner.lock().unwrap();
    let mut rest = &body[..];
    let mut frames = Vec::new();
    let mut previous_end = 0;
    while !rest.is_empty() {
        let view = match ChunkView::parse(rest) {
            Ok(view) => view,
            Err(error) => {
                let index = frames.len();
                return (StatusCode::BAD_REQUEST, format!("frame {index}: {error}"))
                    .into_response();
            }
        };
        if view.first_offset() < previous_end {
            return (StatusCode::BAD_REQUEST, "frames out of order").into_response();
        }
        previous_end = view.end_offset();
        rest = &rest[view.frame().len()..];
        frames.push(view);
    }
    let mut decoder = Decoder::default();
    let (mut stored, mut duplicate) = (0, 0);
    for view in frames {
        if view.end_offset() <= inner.high_water {
            duplicate += view.record_count();
            continue;
        }
        if view.first_offset() < inner.high_water {
            return (StatusCode::CONFLICT, "overlaps the high-water mark").into_response();
        }
        let body = decode_body(&view, &mut decoder).unwrap();
        for record in body.records() {
            inner
                .records
                .push(String::from_utf8(record.unwrap().to_vec()).unwrap());
        }
        stored += view.record_count();
        inner.high_water = view.end_offset();
    }
    let answer = serde_json::json!({
        "producer": producer,
        "high_water": inner.high_water,
        "stored": stored,
        "duplicate": duplicate,
    });
    ([("content-type", "application/json")], answer.to_string()).into_response()
}

/// The body decoded by its Content-Encoding.
fn decoded(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    match headers.get("content-encoding").map(|v| v.to_str().unwrap()) {
        None => body.to_vec(),
        Some("zstd") => zstd::stream::decode_all(&body[..]).unwrap(),
        Some("gzip") => {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
                .unwrap();
            plain
        }
        Some(other) => panic!("unexpected encoding {other}"),
    }
}

/// A generic NDJSON endpoint: decodes by Content-Encoding, stores lines.
async fn ndjson_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = take_script(&inner, &headers, &body) {
        return response;
    }
    let text = String::from_utf8(decoded(&headers, &body)).unwrap();
    assert!(text.ends_with('\n'), "every line is terminated");
    let mut inner = inner.lock().unwrap();
    inner.records.extend(text.lines().map(str::to_owned));
    StatusCode::OK.into_response()
}

/// A JSON-array endpoint: stores each element, re-serialized.
async fn json_handler(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert_eq!(headers["content-type"], "application/json");
    let elements: Vec<serde_json::Value> =
        serde_json::from_slice(&decoded(&headers, &body)).unwrap();
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Received {
        headers,
        body,
        at: Instant::now(),
    });
    inner
        .records
        .extend(elements.iter().map(serde_json::Value::to_string));
    StatusCode::NO_CONTENT.into_response()
}

/// A log holding `chunks` chunks of `per_chunk` records each, all durable.
struct Stored {
    _dir: tempfile::TempDir,
    log: Log,
    chunks: Vec<StoredChunk>,
    records: Vec<String>,
}

fn record(chunk: usize, index: usize) -> String {
    format!(
        r#"{{"chunk":{chunk},"i":{index},"msg":"record {chunk}-{index} of the http sink test"}}"#
    )
}

fn stored(chunks: usize, per_chunk: usize) -> Stored {
    stored_with(chunks, per_chunk, |_| None)
}

/// Like [`stored`]; chunk `c` gets the extra record `extra(c)` at its end
/// (a record holding a newline makes the chunk length-prefixed).
fn stored_with(chunks: usize, per_chunk: usize, extra: impl Fn(usize) -> Option<String>) -> Stored {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("data"), LogOptions::default()).unwrap();
    let mut records = Vec::new();
    for c in 0..chunks {
        let mut builder = ChunkBuilder::new("s", "in", ChunkOptions::default()).unwrap();
        let mut chunk_records: Vec<String> = (0..per_chunk).map(|i| record(c, i)).collect();
        chunk_records.extend(extra(c));
        for (i, r) in chunk_records.iter().enumerate() {
            assert!(builder
                .push(r.as_bytes(), 1 + i as u64, None)
                .unwrap()
                .is_none());
        }
        records.extend(chunk_records);
        log.append(builder.finish().unwrap().unwrap())
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    let chunks = log.reader(0).map(Result::unwrap).collect();
    Stored {
        _dir: dir,
        log,
        chunks,
        records,
    }
}

/// Fast retries, so tests that retry take milliseconds.
fn options(uri: String) -> HttpSinkOptions {
    let mut options = HttpSinkOptions::new(uri);
    options.retry = RetryOptions {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        attempts: 5,
    };
    options.timeout = Duration::from_secs(20);
    // This file's receiver answers in arrival order and knows nothing of
    // `Shipper-After`: one request at a time. Pipelining is tested against
    // the real receiver in shipper.rs.
    options.max_in_flight = 1;
    options
}

async fn opened(options: HttpSinkOptions, stored: &Stored) -> HttpSink {
    let mut sink = HttpSink::new(options).unwrap();
    let cx = SinkContext::new("web", &stored.log, 0);
    sink.open(&cx).await.unwrap();
    sink
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    HttpSinkStats::get(counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_in_order_as_the_stored_frames() {
    let stored = stored(12, 40);
    let receiver = Receiver::start([]).await;
    let mut options = options(receiver.uri("/v1/chunks"));
    options.max_records = 100;
    let mut sink = opened(options, &stored).await;
    // Two deliveries, as the runtime would hand them.
    sink.deliver(&stored.chunks[..7]).await.unwrap();
    sink.deliver(&stored.chunks[7..]).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    let requests = receiver.requests();
    // 100 records a request, 40 a chunk: 2 chunks each; 7 + 5 chunks.
    assert_eq!(requests.len(), 4 + 3);
    let producer = stored.log.producer_id().to_string();
    let mut frames = Vec::new();
    for request in &requests {
        let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-type"), "application/vnd.shipper.chunks");
        assert_eq!(header("shipper-protocol"), "1");
        assert_eq!(header("shipper-producer"), producer);
        assert_eq!(header("content-length"), request.body.len().to_string());
        assert!(request.headers.get("authorization").is_none());
        frames.extend_from_slice(&request.body);
    }
    // The bodies are the stored frames, byte for byte.
    let expected: Vec<u8> = stored
        .chunks
        .iter()
        .flat_map(|c| c.frame().to_vec())
        .collect();
    assert_eq!(frames, expected);
    let stats = sink.stats();
    assert_eq!(count(&stats.requests), 7);
    assert_eq!(count(&stats.retries), 0);
    assert_eq!(count(&stats.body_bytes), expected.len() as u64);
    let raw: usize = stored.records.iter().map(|r| r.len() + 1).sum();
    assert_eq!(count(&stats.raw_bytes), raw as u64);
    assert_eq!(stats.latency.snapshot().count, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_is_delivered_once_after_a_retry() {
    let stored = stored(3, 10);
    let receiver = Receiver::start([status(500, "try later")]).await;
    let mut sink = opened(options(receiver.uri("/v1/chunks")), &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same batch again");
    let stats = sink.stats();
    assert_eq!(
        (
            count(&stats.requests),
            count(&stats.retries),
            count(&stats.failures)
        ),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_offered_again_resends_only_what_was_not_acknowledged() {
    let stored = stored(4, 10);
    let receiver = Receiver::start([
        Scripted::Pass,
        status(502, "bad gateway"),
        status(502, "bad gateway"),
    ])
    .await;
    let mut options = options(receiver.uri("/v1/chunks"));
    options.max_records = 20;
    options.retry.attempts = 2;
    let mut sink = opened(options, &stored).await;
    let error = sink.deliver(&stored.chunks).await.unwrap_err();
    assert!(matches!(error, ComponentError::Retryable(_)), "{error:?}");
    assert_eq!(receiver.records(), stored.records[..20]);
    // The runtime offers the same chunks again: only chunks 2 and 3 go.
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    let frame_of = |c: usize| stored.chunks[c].frame().to_vec();
    assert_eq!(requests[3].body, [frame_of(2), frame_of(3)].concat());
    assert_eq!(count(&sink.stats().retries), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let stored = stored(2, 5);
    let receiver = Receiver::start([
        Scripted::Status {
            status: 429,
            retry_after: Some("1"),
            body: "slow down",
        },
        Scripted::Status {
            status: 503,
            retry_after: Some("Thu, 01 Jan 1970 00:00:00 GMT"),
            body: "a date in the past: no wait",
        },
    ])
    .await;
    let mut sink = opened(options(receiver.uri("/v1/chunks")), &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    let waited = requests[1].at - requests[0].at;
    // Without Retry-After the backoff would be 5-20 ms.
    assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_403_or_404_is_retried_and_never_dead_lettered() {
    let stored = stored(2, 10);
    let receiver = Receiver::start([
        status(401, "a valid bearer token is required"),
        status(403, "forbidden"),
        status(404, "no such path"),
    ])
    .await;
    let mut sink = opened(options(receiver.uri("/v1/chunks")), &stored).await;
    // A wrong token or uri is the config's fault, not the batch's: the
    // batch waits (here the fourth try passes, as after a fixed config).
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    assert_eq!(receiver.requests().len(), 4);
    assert!(!stored
        .log
        .dir()
        .join("sinks/web.dead-letter.ndjson")
        .exists());
    let stats = sink.stats();
    assert_eq!(count(&stats.dead_lettered_batches), 0);
    assert_eq!(count(&stats.retries), 3);
    // Out of attempts, it is a retryable error that names the cause.
    let receiver = Receiver::start([status(401, "no"), status(401, "no")]).await;
    let mut options = options(receiver.uri("/v1/chunks"));
    options.retry.attempts = 2;
    let mut sink = opened(options, &stored).await;
    match sink.deliver(&stored.chunks).await {
        Err(ComponentError::Retryable(reason)) => assert!(
            reason.contains("refuses the sink itself") && reason.contains("credentials"),
            "{reason}"
        ),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_is_dead_lettered_and_the_sink_moves_on() {
    let stored = stored(4, 10);
    let receiver = Receiver::start([status(413, "body too large")]).await;
    let mut options = options(receiver.uri("/v1/chunks"));
    options.max_records = 20;
    let mut sink = opened(options, &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    // The first request (chunks 0 and 1) was refused; the second stored.
    assert_eq!(receiver.records(), stored.records[20..]);
    assert_eq!(receiver.requests().len(), 2);
    let file = stored.log.dir().join("sinks/web.dead-letter.ndjson");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 21);
    assert_eq!(lines[..20], stored.records[..20]);
    let trailer: serde_json::Value = serde_json::from_str(lines[20]).unwrap();
    let trailer = &trailer["shipper_dead_letter"];
    assert_eq!(trailer["status"], 413);
    assert_eq!(trailer["answer"], "body too large");
    assert_eq!(trailer["sink"], "web");
    assert_eq!(
        (
            &trailer["first_offset"],
            &trailer["end_offset"],
            &trailer["records"]
        ),
        (&0.into(), &20.into(), &20.into())
    );
    let stats = sink.stats();
    assert_eq!(count(&stats.dead_lettered_batches), 1);
    assert_eq!(count(&stats.dead_lettered_records), 20);
    assert_eq!(count(&stats.retries), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_file_keeps_the_refused_batch_in_the_log() {
    let stored = stored(2, 10);
    let receiver = Receiver::start([status(413, "body too large"), status(413, "again")]).await;
    let mut tight = options(receiver.uri("/v1/chunks"));
    tight.dead_letter_max_bytes = 64;
    let mut sink = opened(tight, &stored).await;
    let file = stored.log.dir().join("sinks/web.dead-letter.ndjson");
    match sink.deliver(&stored.chunks).await {
        Err(ComponentError::Retryable(reason)) => assert!(
            reason.contains("would pass dead_letter_max_bytes (64)")
                && reason.contains("stays in the log"),
            "{reason}"
        ),
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert!(!file.exists(), "nothing written past the limit");
    assert_eq!(count(&sink.stats().dead_lettered_batches), 0);
    // Room again (a sink rebuilt with a higher limit): dead-lettered.
    let mut roomy = options(receiver.uri("/v1/chunks"));
    roomy.dead_letter_max_bytes = 1 << 20;
    let mut sink = opened(roomy, &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(count(&sink.stats().dead_lettered_batches), 1);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_short_answer_to_a_200_is_retryable() {
    let stored = stored(2, 5);
    let receiver = Receiver::start([
        status(200, "<html>not json</html>"),
        status(200, r#"{"high_water":3}"#),
    ])
    .await;
    let mut options = options(receiver.uri("/v1/chunks"));
    options.retry.attempts = 1;
    let mut sink = opened(options, &stored).await;
    for expected in [
        "unreadable answer",
        "high_water 3, below the batch's end offset 10",
    ] {
        match sink.deliver(&stored.chunks).await {
            Err(ComponentError::Retryable(reason)) => {
                assert!(reason.contains(expected), "{reason:?} lacks {expected:?}")
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }
    assert!(receiver.records().is_empty());
    // Offered again by the runtime: delivered.
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    assert_eq!(count(&sink.stats().failures), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_is_a_retryable_timeout() {
    let stored = stored(1, 5);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Accepts, reads nothing, answers nothing; keeps the connections open.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut options = options(format!("http://{address}/v1/chunks"));
    options.timeout = Duration::from_millis(300);
    options.retry.attempts = 2;
    let mut sink = opened(options, &stored).await;
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), sink.deliver(&stored.chunks))
        .await
        .expect("the sink's own timeout ends the delivery");
    match result {
        Err(ComponentError::Retryable(reason)) => {
            assert!(reason.contains("timed out"), "{reason}");
            assert!(reason.contains("2 attempts"), "{reason}");
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(count(&sink.stats().requests), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_over_zstd_sends_the_stored_bodies_without_recompressing() {
    let stored = stored(5, 30);
    let receiver = Receiver::start([]).await;
    let mut options = options(receiver.uri("/ndjson"));
    options.protocol = HttpProtocol::Ndjson;
    options.compression = HttpCompression::Zstd { level: 3 };
    let mut sink = opened(options, &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    assert_eq!(receiver.records(), stored.records);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers["content-type"], "application/x-ndjson");
    assert_eq!(request.headers["content-encoding"], "zstd");
    assert!(request.headers.get("shipper-producer").is_none());
    let bodies: Vec<u8> = stored
        .chunks
        .iter()
        .flat_map(|c| c.view().body().to_vec())
        .collect();
    assert_eq!(
        request.body[..],
        bodies[..],
        "the stored bodies, back to back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_decodes_what_cannot_pass_through() {
    // Chunk 1 holds a record with a newline: stored length-prefixed, so it
    // is decoded and compressed again between two stored bodies.
    let stored = stored_with(3, 4, |c| {
        (c == 1).then(|| "two\\nlines".replace("\\n", "\n"))
    });
    assert_eq!(
        stored.chunks[1].view().layout(),
        shipper_core::chunk::BodyLayout::LengthPrefixed
    );
    let lines: Vec<String> = stored
        .records
        .iter()
        .flat_map(|r| r.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    for compression in [
        HttpCompression::Zstd { level: 1 },
        HttpCompression::Gzip { level: 6 },
        HttpCompression::None,
    ] {
        let receiver = Receiver::start([]).await;
        let mut options = options(receiver.uri("/ndjson"));
        options.protocol = HttpProtocol::Ndjson;
        options.compression = compression;
        let mut sink = opened(options, &stored).await;
        sink.deliver(&stored.chunks).await.unwrap();
        assert_eq!(receiver.records(), lines, "{compression:?}");
        let request = &receiver.requests()[0];
        if let HttpCompression::Zstd { .. } = compression {
            let first = stored.chunks[0].view().body();
            let last = stored.chunks[2].view().body();
            assert!(request.body.starts_with(first) && request.body.ends_with(last));
        }
        let expected_encoding = compression.content_encoding();
        assert_eq!(
            request
                .headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            expected_encoding
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_basic_auth_and_custom_headers_are_sent() {
    let stored = stored(1, 3);
    let cases = [
        (
            HttpAuth::Bearer {
                token: "s3cret".into(),
            },
            "Bearer s3cret",
        ),
        (
            HttpAuth::Basic {
                user: "user".into(),
                password: "pass word".into(),
            },
            "Basic dXNlcjpwYXNzIHdvcmQ=",
        ),
    ];
    for (auth, expected) in cases {
        let receiver = Receiver::start([]).await;
        let mut options = options(receiver.uri("/v1/chunks"));
        options.auth = Some(auth.clone());
        options.headers = vec![("X-Tenant".into(), "blue".into())];
        assert!(!format!("{options:?}").contains("s3cret"));
        assert!(!format!("{options:?}").contains("pass word"));
        let mut sink = opened(options, &stored).await;
        sink.deliver(&stored.chunks).await.unwrap();
        let request = &receiver.requests()[0];
        assert_eq!(request.headers["authorization"], expected, "{auth:?}");
        assert_eq!(request.headers["x-tenant"], "blue");
        assert_eq!(receiver.records(), stored.records);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_sends_one_array_of_the_records() {
    let stored = stored(3, 7);
    let receiver = Receiver::start([]).await;
    let mut options = options(receiver.uri("/json"));
    options.protocol = HttpProtocol::Json;
    options.compression = HttpCompression::Gzip { level: 1 };
    let mut sink = opened(options, &stored).await;
    sink.deliver(&stored.chunks).await.unwrap();
    let expected: Vec<String> = stored
        .records
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(receiver.records(), expected);
    assert_eq!(
        receiver.requests().len(),
        1,
        "one request; 204 acknowledges it"
    );
}
