//! The `shipper` source (the receiving side of docs/protocol.md) over a
//! real socket: chunks stored as they are, replays de-duplicated also
//! after a restart, and every bad request refused with its status, the
//! zstd bomb and the truncated body included.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use shipper_components::sources::shipper::{ShipperOptions, ShipperSource, Verify, CONTENT_TYPE};
use shipper_core::chunk::{
    lying_body_for_test, seal_for_test, ChunkBuilder, ChunkOptions, ChunkView,
};
use shipper_core::component::{Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Log, LogOptions, StoredChunk};

const PRODUCER: &str = "0123456789abcdef0123456789abcdef";

/// A sender's log with `chunks` chunks of 100 records each.
fn sender_log(dir: &Path, chunks: u32) -> (Log, Vec<StoredChunk>) {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    for c in 0..chunks {
        let mut builder = ChunkBuilder::new("app", "files", ChunkOptions::default()).unwrap();
        for i in 0..100 {
            builder
                .push(format!(r#"{{"chunk":{c},"i":{i}}}"#).as_bytes(), 1, None)
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

fn body_of(chunks: &[StoredChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.frame().to_vec()).collect()
}

/// POSTs `body` to `/v1/chunks` with `headers`; returns (status, body).
fn post(address: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    shipper_tests::http(address.port(), "POST", "/v1/chunks", headers, body)
        .unwrap_or_else(|e| panic!("POST to {address}: {e}"))
}

fn good_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", CONTENT_TYPE),
        ("Shipper-Protocol", "1"),
        ("Shipper-Producer", PRODUCER),
        ("Authorization", "Bearer secret"),
    ]
}

struct Receiver {
    address: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

async fn start(log: &Log) -> Receiver {
    start_with(log, |_| {}).await
}

async fn start_with(log: &Log, change: impl FnOnce(&mut ShipperOptions)) -> Receiver {
    let mut options = ShipperOptions {
        address: "127.0.0.1:0".parse().unwrap(),
        auth: Some(std::sync::Arc::new(
            shipper_components::listen::auth::Authenticator::new(
                &shipper_components::listen::auth::InboundAuth::bearer("secret"),
            )
            .unwrap(),
        )),
        max_body_bytes: 4 << 20,
        max_chunk_bytes: 1 << 20,
        ..ShipperOptions::default()
    };
    change(&mut options);
    let mut source = ShipperSource::bind(options, "sidecars").await.unwrap();
    let address = source.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let mut cx = SourceContext {
        emitter: Emitter::new(log.clone(), "sidecars", ChunkOptions::default()).unwrap(),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(async move { source.run(&mut cx).await.unwrap() });
    Receiver {
        address,
        shutdown,
        task,
    }
}

impl Receiver {
    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap();
    }

    async fn post(
        &self,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
    ) -> (u16, String) {
        let address = self.address;
        tokio::task::spawn_blocking(move || post(address, &headers, &body))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_stored_as_they_are_and_replays_are_skipped_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 10);
    let receiver_dir = dir.path().join("receiver");
    let log = Log::open(&receiver_dir, LogOptions::default()).unwrap();
    let receiver = start(&log).await;

    let (status, answer) = receiver.post(good_headers(), body_of(&chunks[..6])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""high_water":600"#), "{answer}");
    assert!(answer.contains(r#""stored":600"#), "{answer}");
    // The same request again (a lost answer): nothing stored twice.
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks[..6])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""stored":0,"duplicate":600"#), "{answer}");
    // An overlapping retry: only the new chunks are stored.
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks[4..8])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""stored":200,"duplicate":200"#),
        "{answer}"
    );
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 800);

    // Stored as they are: same stream and compressed body, new component.
    let stored: Vec<StoredChunk> = log.reader(0).map(Result::unwrap).collect();
    assert_eq!(stored.len(), 8);
    for (got, sent) in stored.iter().zip(&chunks) {
        let (got, sent) = (got.view(), sent.view());
        assert_eq!(got.component(), b"sidecars");
        assert_eq!(got.stream(), sent.stream());
        assert_eq!(got.body(), sent.body());
        assert_eq!(got.record_count(), sent.record_count());
    }

    // Delivered and deleted, then restarted: the marks survive.
    log.commit_cursor("out", log.next_offset()).unwrap();
    log.close().unwrap();
    drop((log, stored));
    let log = Log::open(&receiver_dir, LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""stored":200,"duplicate":800"#),
        "{answer}"
    );
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_their_status_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 3);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let body = body_of(&chunks);
    let without = |name: &str| -> Vec<(&'static str, &'static str)> {
        good_headers()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect()
    };
    let with = |name: &'static str, value: &'static str| {
        let mut headers = without(name);
        headers.push((name, value));
        headers
    };

    let mut flipped = body.clone();
    flipped[200] ^= 1;
    let truncated = body[..body.len() - 10].to_vec();
    let mut out_of_order = body_of(&chunks[1..2]);
    out_of_order.extend(body_of(&chunks[..1]));

    // A zstd bomb: a chunk that declares 2.8 KB decompressed but holds
    // 256 MiB of zeros. The bounded decoder stops at the declared size.
    let bomb = {
        let view = chunks[0].view();
        let header_len = view.frame().len() - view.body().len();
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            encoder.write_all(&zeros).unwrap();
        }
        let compressed = encoder.finish().unwrap();
        let mut frame = view.frame()[..header_len].to_vec();
        frame.extend_from_slice(&compressed);
        let len = frame.len() as u32;
        frame[8..12].copy_from_slice(&len.to_le_bytes());
        seal_for_test(&mut frame, 0);
        assert!(
            ChunkView::parse(&frame).is_ok(),
            "a valid frame, a lying body"
        );
        frame
    };

    // A valid frame whose stream name is not UTF-8 ("app" → "\xffpp").
    let bad_stream = {
        let mut frame = chunks[0].frame().to_vec();
        assert_eq!(&frame[56..59], b"app");
        frame[56] = 0xff;
        seal_for_test(&mut frame, 0);
        frame
    };

    // (what, headers, body, expected status, a part of the answer)
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            without("Authorization"),
            body.clone(),
            401,
            "bearer token",
        ),
        (
            "wrong token",
            with("Authorization", "Bearer nope"),
            body.clone(),
            401,
            "bearer token",
        ),
        (
            "wrong type",
            with("Content-Type", "application/json"),
            body.clone(),
            415,
            "Content-Type",
        ),
        (
            "no version",
            without("Shipper-Protocol"),
            body.clone(),
            400,
            "Shipper-Protocol",
        ),
        (
            "future version",
            with("Shipper-Protocol", "9"),
            body.clone(),
            400,
            "versions: 1",
        ),
        (
            "no producer",
            without("Shipper-Producer"),
            body.clone(),
            400,
            "32 hex",
        ),
        ("empty body", good_headers(), Vec::new(), 400, "no chunk"),
        ("flipped byte", good_headers(), flipped, 400, "crc mismatch"),
        (
            "truncated body",
            good_headers(),
            truncated,
            400,
            "truncated chunk",
        ),
        (
            "out of order",
            good_headers(),
            out_of_order,
            400,
            "not ascending",
        ),
        (
            "zstd bomb",
            good_headers(),
            bomb,
            413,
            "does not decompress to its declared size",
        ),
        (
            "stream not UTF-8",
            good_headers(),
            bad_stream,
            400,
            "not UTF-8",
        ),
        ("too large", good_headers(), vec![0u8; 5 << 20], 413, ""),
    ];
    for (what, headers, body, status, message) in cases {
        let (got, answer) = receiver.post(headers, body).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.contains(message), "{what}: {answer}");
    }
    assert_eq!(log.next_offset(), 0, "nothing was stored");
    // And the receiver still works.
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks)).await;
    assert_eq!(status, 200, "{answer}");
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 300);
}

/// A sender whose chunks use a trained dictionary, through the real `http`
/// sink: the receiver asks for the dictionary (422), gets it, stores the
/// chunks, and asks again after a restart (it forgets who sent what, not
/// the dictionary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionaries_travel_when_the_receiver_asks_for_them() {
    use shipper_components::sinks::http::{HttpAuth, HttpProtocol, HttpSink, HttpSinkOptions};
    use shipper_core::chunk::{decode_body, Decoder, DictionaryTraining};
    use shipper_core::component::{Sink, SinkContext};

    let dir = tempfile::tempdir().unwrap();
    let sender = Log::open(dir.path().join("sender"), LogOptions::default()).unwrap();
    let options = ChunkOptions {
        max_bytes: 2 << 10,
        dictionary: Some(DictionaryTraining {
            sample_records: 200,
            max_bytes: 8 << 10,
        }),
        ..ChunkOptions::default()
    };
    let mut emitter = Emitter::new(sender.clone(), "app", options).unwrap();
    let record = |i: u32| {
        format!(
            r#"{{"seq":{i},"device":"sensor-{}","temp":{}.5,"unit":"C"}}"#,
            i % 9,
            i % 40
        )
    };
    for i in 0..2_000 {
        emitter.emit("app", record(i).as_bytes(), 1, None).unwrap();
    }
    emitter.wait_durable().unwrap();
    let chunks: Vec<StoredChunk> = sender.reader(0).map(Result::unwrap).collect();
    assert!(chunks.iter().any(|c| c.view().dict_id() != 0));
    let (first, second) = chunks.split_at(chunks.len() / 2);

    let receiver_log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let sink_for = |address: SocketAddr| {
        let mut options = HttpSinkOptions::new(format!("http://{address}/v1/chunks"));
        options.protocol = HttpProtocol::Shipper;
        options.auth = Some(HttpAuth::Bearer {
            token: "secret".into(),
        });
        HttpSink::new(options).unwrap()
    };
    let cx = SinkContext::new("aggregator", &sender, 0);
    for half in [first, second] {
        // A fresh receiver each time: it has forgotten the upload.
        let receiver = start(&receiver_log).await;
        let mut sink = sink_for(receiver.address);
        sink.open(&cx).await.unwrap();
        sink.deliver(half).await.unwrap();
        receiver.stop().await;
    }
    assert_eq!(receiver_log.durable_offset(), 2_000);
    let mut decoder = Decoder::with_dictionaries(receiver_log.dictionaries());
    let mut seen = 0;
    for chunk in receiver_log.reader(0) {
        let chunk = chunk.unwrap();
        for got in decode_body(&chunk.view(), &mut decoder).unwrap().records() {
            assert_eq!(got.unwrap(), record(seen).as_bytes());
            seen += 1;
        }
    }
    assert_eq!(seen, 2_000);
    assert_eq!(receiver_log.dictionaries().len(), 1);
}

/// `verify = "frame"` (the default) stores a chunk whose compressed body
/// lies about its size (it passes the frame check; the sink that decodes
/// it later puts it in quarantine), `verify = "full"` refuses it with 413.
/// A body that is not a zstd frame at all is refused either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_frame_checks_headers_and_verify_full_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 3);
    let lying = lying_body_for_test(chunks[0].frame());
    let not_zstd = {
        let view = chunks[0].view();
        let mut frame = view.frame().to_vec();
        let header_len = frame.len() - view.body().len();
        frame[header_len..].fill(0x55);
        seal_for_test(&mut frame, 0);
        frame
    };
    for (verify, dir_name, lying_status) in
        [(Verify::Frame, "frame", 200), (Verify::Full, "full", 413)]
    {
        let log = Log::open(dir.path().join(dir_name), LogOptions::default()).unwrap();
        let receiver = start_with(&log, |o| o.verify = verify).await;
        let (status, answer) = receiver.post(good_headers(), not_zstd.clone()).await;
        assert_eq!(status, 413, "{verify:?}, not zstd: {answer}");
        assert!(
            answer.contains("not a zstd frame") || answer.contains("does not decode"),
            "{answer}"
        );
        let (status, answer) = receiver.post(good_headers(), lying.clone()).await;
        assert_eq!(status, lying_status, "{verify:?}, lying body: {answer}");
        receiver.stop().await;
        let stored = if lying_status == 200 { 100 } else { 0 };
        assert_eq!(log.durable_offset(), stored, "{verify:?}");
    }
}

/// Pipelined requests: one that arrives before the request it follows
/// (`Shipper-After` above the high-water mark) waits for it, so chunks are
/// stored in the sender's order; one whose predecessor never comes is
/// answered 503 after `parked_at_most`, storing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_arrives_early_waits_for_the_one_it_follows() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 9);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start_with(&log, |o| o.parked_at_most = Duration::from_millis(800)).await;
    let with_after = |after: &'static str| {
        let mut headers = good_headers();
        headers.push(("Shipper-After", after));
        headers
    };
    let post_later = |headers: Vec<(&'static str, &'static str)>, body: Vec<u8>| {
        let address = receiver.address;
        tokio::task::spawn_blocking(move || post(address, &headers, &body))
    };

    // The third request, then the second, then the first.
    let third = post_later(with_after("600"), body_of(&chunks[6..]));
    let second = post_later(with_after("300"), body_of(&chunks[3..6]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished() && !second.is_finished(), "they wait");
    assert_eq!(log.next_offset(), 0, "nothing stored before the first");
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks[..3])).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""high_water":300"#), "{answer}");
    let (status, answer) = second.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""high_water":600"#), "{answer}");
    let (status, answer) = third.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""high_water":900"#), "{answer}");
    let stored: Vec<StoredChunk> = log.reader(0).map(Result::unwrap).collect();
    assert_eq!(stored.len(), 9);
    for (got, sent) in stored.iter().zip(&chunks) {
        assert_eq!(
            got.view().body(),
            sent.view().body(),
            "in the sender's order"
        );
    }

    // A request that follows an offset nothing reaches.
    let (status, answer) = receiver
        .post(with_after("5000"), body_of(&chunks[..3]))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("send it again"), "{answer}");
    // A replay that follows what is stored is answered at once.
    let (status, answer) = receiver
        .post(with_after("600"), body_of(&chunks[6..]))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""duplicate":300"#), "{answer}");
    let (status, answer) = receiver.post(with_after("x"), body_of(&chunks[..3])).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("Shipper-After"), "{answer}");
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 900);
}

/// In front of a receiver: forwards every request but the `fail`-th it
/// sees (counting from 1), which it answers `500` without forwarding.
async fn failing_proxy(target: SocketAddr, fail: u64) -> SocketAddr {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let seen = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let handler = move |State(seen): State<Arc<AtomicU64>>, headers: HeaderMap, body: Bytes| {
        let client = client.clone();
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == fail {
                return (StatusCode::INTERNAL_SERVER_ERROR, "injected".to_owned());
            }
            let mut forward = client.post(format!("http://{target}/v1/chunks"));
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    forward = forward.header(name.as_str(), value.as_bytes());
                }
            }
            let answer = forward.body(body).send().await.unwrap();
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            (status, answer.text().await.unwrap())
        }
    };
    let router = axum::Router::new()
        .route("/v1/chunks", axum::routing::post(handler))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

/// The real `http` sink with several requests in flight against the real
/// receiver: every record stored once, in order, when one request in the
/// middle of a pipeline fails (the sink goes on one at a time from there,
/// and the requests after it wait at the receiver instead of overtaking
/// it), and across a receiver restart with the batch offered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_sink_stores_everything_in_order() {
    use shipper_components::sinks::http::{HttpAuth, HttpSink, HttpSinkOptions, HttpSinkStats};
    use shipper_core::component::{Sink, SinkContext};

    let dir = tempfile::tempdir().unwrap();
    let (sender, chunks) = sender_log(&dir.path().join("sender"), 60);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let sink_to = |address: SocketAddr, committed: u64| {
        let mut options = HttpSinkOptions::new(format!("http://{address}/v1/chunks"));
        options.auth = Some(HttpAuth::Bearer {
            token: "secret".into(),
        });
        options.max_records = 200; // 2 chunks a request
        options.max_in_flight = 8;
        options.retry.initial = Duration::from_millis(5);
        let mut sink = HttpSink::new(options).unwrap();
        let cx = SinkContext::new("aggregator", &sender, committed);
        async move {
            sink.open(&cx).await.unwrap();
            sink
        }
    };

    let receiver = start(&log).await;
    let proxy = failing_proxy(receiver.address, 3).await;
    let mut sink = sink_to(proxy, 0).await;
    sink.deliver(&chunks[..24]).await.unwrap();
    let stats = sink.stats();
    assert_eq!(HttpSinkStats::get(&stats.failures), 1, "the injected 500");
    assert_eq!(log.durable_offset(), 2_400);

    // The receiver restarts; a new sink offers part of it again.
    receiver.stop().await;
    let receiver = start(&log).await;
    let mut sink = sink_to(receiver.address, 2_000).await;
    sink.deliver(&chunks[20..]).await.unwrap();
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 6_000);
    let stored: Vec<StoredChunk> = log.reader(0).map(Result::unwrap).collect();
    assert_eq!(stored.len(), 60);
    for (got, sent) in stored.iter().zip(&chunks) {
        assert_eq!(
            got.view().body(),
            sent.view().body(),
            "in the sender's order"
        );
    }
}

/// A copy of `chunk`'s frame with its first offset set to `first`.
fn moved_to(chunk: &StoredChunk, first: u64) -> Vec<u8> {
    let mut frame = chunk.frame().to_vec();
    seal_for_test(&mut frame, first);
    frame
}

/// Headers with `extra` added.
fn headers_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut headers = good_headers();
    headers.extend_from_slice(extra);
    headers
}

/// A forged request with a known producer's id and one chunk far ahead of
/// its mark, declaring nothing, is refused (409, `Shipper-Conflict: gap`)
/// and moves nothing: the producer's real chunks are stored afterwards. A
/// jump the sender declares (`Shipper-From`) is taken and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_jump_of_a_known_producers_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 6);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let (status, answer) = receiver.post(good_headers(), body_of(&chunks[..2])).await;
    assert_eq!(status, 200, "{answer}");

    let far = (1u64 << 62) - 100;
    let forged = moved_to(&chunks[2], far);
    let (status, answer) = receiver.post(good_headers(), forged).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("without declaring"), "{answer}");
    assert_eq!(log.next_offset(), 200, "nothing stored");

    // The producer goes on where it was: stored, nothing lost.
    let (status, answer) = receiver
        .post(
            headers_with(&[("Shipper-From", "200")]),
            body_of(&chunks[2..4]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""stored":200"#), "{answer}");

    // A declared jump (the sender says what lies between was acknowledged
    // elsewhere) is taken.
    let declared = body_of(&[chunks[5].clone()]);
    let (status, answer) = receiver
        .post(headers_with(&[("Shipper-From", "500")]), declared)
        .await;
    assert_eq!(status, 200, "{answer}");
    // A declaration above the request's own first chunk is nonsense.
    let (status, answer) = receiver
        .post(
            headers_with(&[("Shipper-From", "9000")]),
            moved_to(&chunks[0], 8000),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 500);
}

/// The other half of a forged mark: a receiver that already believes it
/// holds offsets the sender never had (its mark set far ahead before the
/// sender ever spoke to it) answers the sender's chunks as duplicates.
/// The real `http` sink checks the answer against its own log and stops
/// with a loud error instead of acknowledging: its records are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_claims_offsets_the_sender_never_had_stops_the_sink() {
    use shipper_components::sinks::http::{HttpAuth, HttpProtocol, HttpSink, HttpSinkOptions};
    use shipper_core::component::{ComponentError, Sink, SinkContext};
    let dir = tempfile::tempdir().unwrap();
    let (sender, chunks) = sender_log(&dir.path().join("sender"), 3);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let producer = sender.producer_id().to_string();
    let producer: &'static str = Box::leak(producer.into_boxed_str());
    let mut forged_headers = good_headers();
    forged_headers.retain(|(name, _)| *name != "Shipper-Producer");
    forged_headers.push(("Shipper-Producer", producer));
    // The sink's name is as visible in its traffic as its producer id.
    forged_headers.push(("Shipper-Sink", "aggregator"));
    let (status, answer) = receiver
        .post(forged_headers, moved_to(&chunks[0], (1u64 << 62) - 100))
        .await;
    assert_eq!(
        status, 200,
        "a producer never seen: nothing to contradict yet: {answer}"
    );

    let mut options = HttpSinkOptions::new(format!("http://{}/v1/chunks", receiver.address));
    options.protocol = HttpProtocol::Shipper;
    options.auth = Some(HttpAuth::Bearer {
        token: "secret".into(),
    });
    let mut sink = HttpSink::new(options).unwrap();
    let stats = sink.stats();
    sink.open(&SinkContext::new("aggregator", &sender, 0))
        .await
        .unwrap();
    let outcome = sink.deliver(&chunks).await;
    match outcome {
        Err(ComponentError::Fatal(reason)) => {
            assert!(reason.contains("contradicts this log"), "{reason}")
        }
        other => panic!("the sink acknowledged a contradicting answer: {other:?}"),
    }
    assert_eq!(
        stats
            .contradictions
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    receiver.stop().await;
    // The receiver stored only the forged chunk.
    assert_eq!(log.durable_offset(), 100);
}

/// A chunk whose header claims more records than its body can hold (4.29
/// billion records and one line) is refused before it costs offsets, with
/// either check; `verify = "full"` also refuses a count that is merely
/// wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_claiming_more_records_than_it_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 1);
    let with_count = |count: u32| {
        let mut frame = chunks[0].frame().to_vec();
        frame[24..28].copy_from_slice(&count.to_le_bytes());
        seal_for_test(&mut frame, 0);
        frame
    };
    for (verify, dir_name) in [(Verify::Frame, "frame"), (Verify::Full, "full")] {
        let log = Log::open(dir.path().join(dir_name), LogOptions::default()).unwrap();
        let receiver = start_with(&log, |o| o.verify = verify).await;
        let (status, answer) = receiver.post(good_headers(), with_count(u32::MAX)).await;
        assert_eq!(status, 400, "{verify:?}: {answer}");
        assert!(answer.contains("more than its"), "{answer}");
        let (status, answer) = receiver.post(good_headers(), with_count(101)).await;
        let expected = if verify == Verify::Full { 413 } else { 200 };
        assert_eq!(status, expected, "{verify:?}, 101 of 100 records: {answer}");
        receiver.stop().await;
        assert!(
            log.next_offset() <= 101,
            "{verify:?}: {}",
            log.next_offset()
        );
    }
}

/// The auth scheme is case-insensitive (RFC 7235); the token is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_matched_without_regard_to_case() {
    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 3);
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let with_auth = |value: &'static str| {
        let mut headers = good_headers();
        headers.retain(|(name, _)| *name != "Authorization");
        headers.push(("Authorization", value));
        headers
    };
    for (index, value) in ["bearer secret", "BEARER secret", "Bearer   secret"]
        .into_iter()
        .enumerate()
    {
        let (status, answer) = receiver
            .post(with_auth(value), body_of(&chunks[index..=index]))
            .await;
        assert_eq!(status, 200, "{value}: {answer}");
    }
    for value in ["Bearer SECRET", "Basic secret", "secret", "Bearer"] {
        let (status, answer) = receiver.post(with_auth(value), body_of(&chunks)).await;
        assert_eq!(status, 401, "{value}: {answer}");
    }
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 300);
}

/// A dictionary upload whose id does not match its content is refused
/// before anything is written: 300 such uploads used to leave 300 files
/// (loaded again at every start) though each was answered 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dictionary_upload_leaves_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<Vec<u8>> = (0..2_000)
        .map(|i| format!(r#"{{"seq":{i},"device":"sensor-{}","ok":true}}"#, i % 7).into_bytes())
        .collect();
    let dictionary = zstd::dict::from_samples(&samples, 4096).unwrap();
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let upload = |id: &'static str| {
        let mut headers = good_headers();
        headers.retain(|(name, _)| *name != "Content-Type");
        headers.push((
            "Content-Type",
            shipper_components::sources::shipper::DICTIONARY_CONTENT_TYPE,
        ));
        headers.push(("Shipper-Dictionary", id));
        headers
    };
    let files = || {
        std::fs::read_dir(dir.path().join("receiver/dictionaries"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".zdict")
            })
            .count()
    };
    for _ in 0..20 {
        let (status, answer) = receiver.post(upload("7"), dictionary.clone()).await;
        assert_eq!(status, 409, "{answer}");
    }
    assert_eq!(files(), 0, "nothing written for refused uploads");
    let id = log.dictionaries().id_for(&dictionary).to_string();
    let id: &'static str = Box::leak(id.into_boxed_str());
    let (status, answer) = receiver.post(upload(id), dictionary.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(files(), 1);
    receiver.stop().await;
}

/// Two `http` sinks of one sidecar, reading different components, send to
/// one receiver: their chunks interleave in the producer's offsets. Each
/// keeps its own mark (`Shipper-Sink`), so one that is ahead never makes
/// the other's chunks look like duplicates — with one mark per producer,
/// sink `b`'s older chunks were answered "duplicate" and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_of_one_sender_keep_their_own_marks() {
    use shipper_components::sinks::http::{HttpAuth, HttpProtocol, HttpSink, HttpSinkOptions};
    use shipper_core::component::{Sink, SinkContext};
    let dir = tempfile::tempdir().unwrap();
    let sender = Log::open(dir.path().join("sender"), LogOptions::default()).unwrap();
    for (c, component) in ["a", "b", "a", "b", "a", "b"].into_iter().enumerate() {
        let mut builder = ChunkBuilder::new("app", component, ChunkOptions::default()).unwrap();
        for i in 0..100 {
            builder
                .push(format!(r#"{{"chunk":{c},"i":{i}}}"#).as_bytes(), 1, None)
                .unwrap();
        }
        sender
            .append(builder.finish().unwrap().unwrap())
            .unwrap()
            .wait_durable()
            .unwrap();
    }
    let chunks: Vec<StoredChunk> = sender.reader(0).map(Result::unwrap).collect();
    let of = |component: &[u8]| -> Vec<StoredChunk> {
        chunks
            .iter()
            .filter(|c| c.view().component() == component)
            .cloned()
            .collect()
    };
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start(&log).await;
    let sink = |name: &str| {
        let mut options = HttpSinkOptions::new(format!("http://{}/v1/chunks", receiver.address));
        options.protocol = HttpProtocol::Shipper;
        options.auth = Some(HttpAuth::Bearer {
            token: "secret".into(),
        });
        (
            HttpSink::new(options).unwrap(),
            SinkContext::new(name, &sender, 0),
        )
    };
    let (mut a, a_cx) = sink("a");
    let (mut b, b_cx) = sink("b");
    a.open(&a_cx).await.unwrap();
    b.open(&b_cx).await.unwrap();
    // Sink a delivers everything first (its mark reaches offset 500), then b.
    a.deliver(&of(b"a")).await.unwrap();
    b.deliver(&of(b"b")).await.unwrap();
    receiver.stop().await;
    assert_eq!(
        log.durable_offset(),
        600,
        "every record of both sinks stored"
    );
    // And after a restart each sink's replay is a duplicate of its own.
    let receiver = start(&log).await;
    let (mut b, b_cx) = {
        let mut options = HttpSinkOptions::new(format!("http://{}/v1/chunks", receiver.address));
        options.protocol = HttpProtocol::Shipper;
        options.auth = Some(HttpAuth::Bearer {
            token: "secret".into(),
        });
        (
            HttpSink::new(options).unwrap(),
            SinkContext::new("b", &sender, 0),
        )
    };
    b.open(&b_cx).await.unwrap();
    b.deliver(&of(b"b")).await.unwrap();
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 600, "nothing stored twice");
}

/// Tokens bound to producers: a sidecar's token writes only its own
/// producer's offsets, so a token that leaks cannot move another
/// sidecar's high-water mark (403, nothing stored); an unbound token
/// writes for any producer; token files are read again on reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bound_to_producers_writes_only_theirs() {
    use shipper_components::listen::auth::{Authenticator, InboundAuth};

    let dir = tempfile::tempdir().unwrap();
    let (_sender, chunks) = sender_log(&dir.path().join("sender"), 4);
    let token_file = dir.path().join("ops.token");
    std::fs::write(&token_file, "ops-token\n").unwrap();
    let auth: InboundAuth = toml::from_str(&format!(
        r#"strategy = "bearer"
tokens = [
  {{ token = "web-1-token", producers = ["{PRODUCER}"] }},
  {{ token = "web-2-token", producers = ["ffffffffffffffffffffffffffffffff"] }},
  {{ token_file = {token_file:?} }},
]"#
    ))
    .unwrap();
    let authenticator = std::sync::Arc::new(Authenticator::new(&auth).unwrap());
    let log = Log::open(dir.path().join("receiver"), LogOptions::default()).unwrap();
    let receiver = start_with(&log, |options| options.auth = Some(authenticator)).await;
    let with_token = |token: &'static str| {
        let mut headers = good_headers();
        headers.retain(|(name, _)| *name != "Authorization");
        headers.push(("Authorization", token));
        headers
    };

    // Another producer's token: refused, nothing stored, the mark unmoved.
    let (status, answer) = receiver
        .post(with_token("Bearer web-2-token"), body_of(&chunks[..2]))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("may not write for producer"), "{answer}");
    assert_eq!(log.next_offset(), 0);
    // Its own token: stored.
    let (status, answer) = receiver
        .post(with_token("Bearer web-1-token"), body_of(&chunks[..2]))
        .await;
    assert_eq!(status, 200, "{answer}");
    // An unbound token from a file: any producer.
    let (status, answer) = receiver
        .post(with_token("Bearer ops-token"), body_of(&chunks[2..3]))
        .await;
    assert_eq!(status, 200, "{answer}");
    // The file rotated: the old token stops working after a reload.
    std::fs::write(&token_file, "rotated-ops-token").unwrap();
    shipper_components::reread::request();
    let (status, _) = receiver
        .post(with_token("Bearer ops-token"), body_of(&chunks[3..]))
        .await;
    assert_eq!(status, 401);
    let (status, answer) = receiver
        .post(
            with_token("Bearer rotated-ops-token"),
            body_of(&chunks[3..]),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    receiver.stop().await;
    assert_eq!(log.durable_offset(), 400);
}
