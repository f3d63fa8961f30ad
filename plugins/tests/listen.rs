//! The limits every HTTP listener shares (`shipper_components::listen`),
//! proven on the `http` and `shipper` sources over real sockets on
//! 127.0.0.1: the connection cap, the deadlines of a request's head and
//! body, the memory budget of bodies, the draining of refused bodies, and
//! the parking limit of the shipper source. The clients are raw TCP, so a
//! test sees exactly what the listener sends and when it closes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipper_components::listen::ListenerLimits;
use shipper_components::sources::http::{HttpOptions, HttpSource, HttpSourceStats};
use shipper_components::sources::shipper::{
    ShipperOptions, ShipperSource, ShipperStats, CONTENT_TYPE, MAX_PARKED,
};
use shipper_core::chunk::{decode_body, ChunkBuilder, ChunkOptions, Decoder};
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Log, LogOptions, StoredChunk};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long a test waits for anything it expects; far more than any of
/// it takes on a loaded machine, so reaching it means it never happens.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `condition` until it holds; fails naming `what` after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Reads one answer until the listener closes the connection. A reset
/// after the whole answer arrived is no failure (the listener may close
/// with bytes of ours unread); an answer cut short is.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    let mut bytes = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    let outcome = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut piece).await {
                Ok(0) => return Ok(()),
                Ok(n) => bytes.extend_from_slice(&piece[..n]),
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .expect("the listener answers and closes the connection");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer ({outcome:?}): {text:?}"));
    let answer = Answer {
        status: head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    };
    let length: usize = answer
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {answer:?}"));
    assert_eq!(
        answer.body.len(),
        length,
        "the answer was cut short ({outcome:?}): {answer:?}"
    );
    answer
}

/// The head of a POST to `path` declaring `content_length`.
fn request_head(path: &str, headers: &[(&str, &str)], content_length: usize) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {content_length}\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One POST on its own connection; its answer.
async fn post(address: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut request = request_head(path, headers, body.len()).into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    read_answer(&mut stream).await
}

/// A connection that sent a request's head declaring `content_length`
/// and none of its body.
async fn stalled_upload(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    content_length: usize,
) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(request_head(path, headers, content_length).as_bytes())
        .await
        .unwrap();
    stream
}

/// True once the peer has closed `stream` (it reads end of file or a
/// reset); false while it is open and silent.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the listener sent bytes on a connection that sent no request"),
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Limits with short deadlines, so the tests that wait for them are fast.
fn short_limits() -> ListenerLimits {
    ListenerLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        budget_wait: Duration::from_millis(200),
        ..ListenerLimits::default()
    }
}

/// A source running on its own task, and its log.
struct Running {
    address: SocketAddr,
    log: Log,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), ComponentError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start<S: Source + 'static>(source: S, address: SocketAddr) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        let shutdown = Shutdown::new();
        let mut cx = SourceContext {
            emitter: Emitter::new(log.clone(), "listener", ChunkOptions::default()).unwrap(),
            shutdown: shutdown.clone(),
        };
        let mut source = source;
        let task = tokio::spawn(async move { source.run(&mut cx).await });
        Running {
            address,
            log,
            shutdown,
            task,
            _dir: dir,
        }
    }

    /// Stops the source; returns the records its log holds.
    async fn stop(self) -> Vec<String> {
        self.shutdown.trigger();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the source stops")
            .unwrap()
            .unwrap();
        let mut decoder = Decoder::default();
        let mut records = Vec::new();
        for chunk in self.log.reader(0) {
            let chunk = chunk.unwrap();
            let view = chunk.view();
            for record in decode_body(&view, &mut decoder).unwrap().records() {
                records.push(String::from_utf8_lossy(record.unwrap()).into_owned());
            }
        }
        records
    }
}

async fn http_source(
    max_body_bytes: usize,
    limits: ListenerLimits,
) -> (Running, Arc<HttpSourceStats>) {
    let source = HttpSource::bind(
        HttpOptions {
            address: "127.0.0.1:0".parse().unwrap(),
            path: "/ingest".into(),
            max_body_bytes,
            limits,
            tls: None,
            auth: None,
        },
        "web",
    )
    .await
    .unwrap();
    let (address, counters) = (source.local_addr().unwrap(), source.counters());
    (Running::start(source, address).await, counters)
}

async fn shipper_source(change: impl FnOnce(&mut ShipperOptions)) -> (Running, Arc<ShipperStats>) {
    let mut options = ShipperOptions {
        address: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: 4 << 20,
        ..ShipperOptions::default()
    };
    change(&mut options);
    let source = ShipperSource::bind(options, "sidecars").await.unwrap();
    let (address, counters) = (source.local_addr().unwrap(), source.counters());
    (Running::start(source, address).await, counters)
}

const PRODUCER: &str = "0123456789abcdef0123456789abcdef";

fn shipper_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Content-Type", CONTENT_TYPE),
        ("Shipper-Protocol", "1"),
        ("Shipper-Producer", PRODUCER),
    ]
}

/// A sender's stored chunks, 100 records each, as a shipper source
/// receives them.
fn sender_chunks(dir: &Path, chunks: u32) -> Vec<StoredChunk> {
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
    log.reader(0).map(Result::unwrap).collect()
}

fn body_of(chunks: &[StoredChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.frame().to_vec()).collect()
}

/// `max_connections` connections that send nothing hold every slot: the
/// next connection is answered `503` with `Retry-After` at once, without
/// a request; the idle ones are closed at the header deadline, counted,
/// and a request is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_until_idle_ones_reach_the_header_deadline() {
    let (source, counters) = http_source(
        64 * 1024,
        ListenerLimits {
            max_connections: 4,
            // Long enough that the idle connections still hold their slots
            // when the fifth comes, on a loaded machine too.
            header_timeout: Duration::from_secs(3),
            ..ListenerLimits::default()
        },
    )
    .await;
    let listener = counters.listener.clone();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(source.address).await.unwrap());
    }
    eventually("four connections accepted", || {
        listener.accepted.load(Ordering::Relaxed) == 4
    })
    .await;

    let mut fifth = TcpStream::connect(source.address).await.unwrap();
    let refused = read_answer(&mut fifth).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert!(
        refused.body.starts_with("too many connections"),
        "{refused:?}"
    );
    assert_eq!(listener.refused.load(Ordering::Relaxed), 1);
    assert_eq!(listener.accepted.load(Ordering::Relaxed), 4);

    eventually("the idle connections closed by the listener", || {
        idle.iter().all(closed_by_peer)
    })
    .await;
    eventually("the idle connections counted as timed out", || {
        listener.timed_out.load(Ordering::Relaxed) == 4
    })
    .await;
    // A slot is given back just after its connection is counted: a
    // request in between is refused, and counted.
    let deadline = Instant::now() + PATIENCE;
    let mut refusals = 1;
    let served = loop {
        let answer = post(source.address, "/ingest", &[], b"{\"n\":1}\n").await;
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
        refusals += 1;
    };
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(listener.refused.load(Ordering::Relaxed), refusals);
    drop(idle);
    assert_eq!(source.stop().await, vec!["{\"n\":1}"]);
}

/// A client that sends its request head a byte at a time (slowloris) is
/// cut off at `header_timeout`, however steadily it sends, while other
/// requests are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_deadline() {
    let (source, counters) = http_source(64 * 1024, short_limits()).await;
    let stream = TcpStream::connect(source.address).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if writing.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let served = post(source.address, "/ingest", &[], b"{\"n\":1}\n").await;
    assert_eq!(served.status, 200, "{served:?}");

    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, reading.read_to_end(&mut bytes)).await;
    assert!(
        closed.is_ok(),
        "the slow head was not cut off within {PATIENCE:?}"
    );
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    trickle.await.unwrap();
    assert_eq!(counters.listener.timed_out.load(Ordering::Relaxed), 1);
    assert_eq!(source.stop().await, vec!["{\"n\":1}"]);
}

/// A body that stops coming gets `408` after `body_timeout`; one that
/// keeps coming, but slower than `min_body_rate`, gets `408` too once
/// `body_timeout` has passed. Neither stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_trickling_bodies_get_408_and_store_nothing() {
    let (source, counters) = http_source(
        2 << 20,
        ListenerLimits {
            min_body_rate: 64 * 1024,
            ..short_limits()
        },
    )
    .await;

    let stalled = async {
        let mut stalled = stalled_upload(source.address, "/ingest", &[], 1 << 20).await;
        read_answer(&mut stalled).await
    };
    let trickling = async {
        let (mut reading, mut writing) = stalled_upload(source.address, "/ingest", &[], 1 << 20)
            .await
            .into_split();
        let trickle = tokio::spawn(async move {
            let piece = [b' '; 1024];
            for _ in 0..1024 {
                if writing.write_all(&piece).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let answer = read_answer(&mut reading).await;
        trickle.abort();
        answer
    };
    let (stalled, trickling) = tokio::join!(stalled, trickling);
    assert_eq!(stalled.status, 408, "{stalled:?}");
    assert!(
        stalled.body.contains("no part of the body arrived"),
        "{stalled:?}"
    );
    assert_eq!(trickling.status, 408, "{trickling:?}");
    assert!(trickling.body.contains("slower than"), "{trickling:?}");

    assert_eq!(counters.requests.too_slow.load(Ordering::Relaxed), 2);
    assert_eq!(counters.requests.accepted.load(Ordering::Relaxed), 0);
    assert_eq!(source.stop().await, Vec::<String>::new());
}

/// Fills a listener's 4 MiB body budget with two stalled uploads that
/// declare 2 MiB each; returns them once a probe is answered `503` (a probe
/// admitted instead is refused for its body, so it stores nothing).
async fn fill_the_budget(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<TcpStream> {
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_upload(address, path, headers, 2 << 20).await);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let probe = post(address, path, headers, b"x").await;
        if probe.status == 503 {
            break;
        }
        assert_eq!(probe.status, 400, "{probe:?}");
        assert!(Instant::now() < deadline, "the budget never filled");
    }
    stalled
}

/// Stalled uploads that hold the whole `max_buffered_bytes` make the next
/// request wait `budget_wait` and be answered `503` with `Retry-After`;
/// once they are gone (their clients disconnect), the budget is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_over_the_memory_budget_get_503_until_the_budget_is_back() {
    let limits = ListenerLimits {
        max_buffered_bytes: 4 << 20,
        budget_wait: Duration::from_millis(200),
        ..ListenerLimits::default()
    };
    let (source, counters) = http_source(4 << 20, limits).await;
    let stalled = fill_the_budget(source.address, "/ingest", &[]).await;

    let started = Instant::now();
    let refused = post(source.address, "/ingest", &[], b"{\"n\":1}\n").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert!(refused.body.contains("request bodies"), "{refused:?}");
    // Refused after budget_wait and the drain of its (complete) body, not
    // after the stalled uploads' body_timeout (30 s).
    assert!(started.elapsed() < Duration::from_secs(20), "{started:?}");
    assert!(counters.requests.unavailable.load(Ordering::Relaxed) >= 2);

    drop(stalled);
    let deadline = Instant::now() + PATIENCE;
    let served = loop {
        let answer = post(source.address, "/ingest", &[], b"{\"n\":2}\n").await;
        if answer.status != 503 || Instant::now() > deadline {
            break answer;
        }
    };
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(source.stop().await, vec!["{\"n\":2}"]);
}

/// The same budget on the shipper source; here the stalled uploads end by
/// their `body_timeout` (`408`), which gives their budget back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_bodies_over_the_memory_budget_get_503_until_the_budget_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = sender_chunks(dir.path(), 2);
    let (source, counters) = shipper_source(|options| {
        options.limits = ListenerLimits {
            max_buffered_bytes: 4 << 20,
            budget_wait: Duration::from_millis(200),
            // The window in which the budget is spent; ends the test's wait.
            body_timeout: Duration::from_secs(6),
            ..ListenerLimits::default()
        };
    })
    .await;
    let headers = shipper_headers();
    let stalled = fill_the_budget(source.address, "/v1/chunks", &headers).await;

    let refused = post(source.address, "/v1/chunks", &headers, &body_of(&chunks)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert!(refused.body.contains("request bodies"), "{refused:?}");
    assert_eq!(log_end(&source), 0);

    for mut upload in stalled {
        let answer = read_answer(&mut upload).await;
        assert_eq!(answer.status, 408, "{answer:?}");
    }
    let served = post(source.address, "/v1/chunks", &headers, &body_of(&chunks)).await;
    assert_eq!(served.status, 200, "{served:?}");
    assert!(served.body.contains(r#""stored":200"#), "{served:?}");
    assert_eq!(counters.requests.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(source.stop().await.len(), 200);
}

fn log_end(source: &Running) -> u64 {
    source.log.flush().unwrap();
    source.log.next_offset()
}

/// Requests of one producer that follow an offset nothing has reached
/// yet are parked, holding their bodies: beyond [`MAX_PARKED`] of them
/// the extra ones are answered `503` at once instead of kept; the parked
/// ones are stored when the request they follow comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipper_requests_parked_beyond_max_parked_are_refused_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = sender_chunks(dir.path(), 6);
    let (source, counters) =
        shipper_source(|options| options.parked_at_most = Duration::from_secs(300)).await;
    let extra = 6;
    let mut headers = shipper_headers();
    headers.push(("Shipper-After", "300"));
    let later = Arc::new(body_of(&chunks[3..]));
    let mut waiting: Vec<JoinHandle<Answer>> = (0..MAX_PARKED + extra)
        .map(|_| {
            let (address, headers, body) = (source.address, headers.clone(), later.clone());
            tokio::spawn(async move { post(address, "/v1/chunks", &headers, &body).await })
        })
        .collect();
    eventually("the extra requests answered", || {
        waiting.iter().filter(|w| w.is_finished()).count() >= extra
    })
    .await;
    let (answered, parked): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|w| w.is_finished());
    assert_eq!(answered.len(), extra, "only the extra ones are answered");
    for answer in answered {
        let answer = answer.await.unwrap();
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
        assert!(answer.body.contains("already wait"), "{answer:?}");
    }
    assert_eq!(
        counters.requests.unavailable.load(Ordering::Relaxed),
        extra as u64
    );
    assert_eq!(log_end(&source), 0);

    let first = post(
        source.address,
        "/v1/chunks",
        &shipper_headers(),
        &body_of(&chunks[..3]),
    )
    .await;
    assert_eq!(first.status, 200, "{first:?}");
    for answer in parked {
        let answer = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("a parked request is answered once the one it follows is stored")
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(
        counters.requests.accepted.load(Ordering::Relaxed),
        1 + MAX_PARKED as u64
    );
    assert_eq!(source.stop().await.len(), 600);
}

/// A body declared larger than `max_body_bytes` is answered `413` at once,
/// and what the client still sends of it is read and thrown away, so a
/// client that writes its whole body before reading gets to read the
/// answer instead of a broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_body_bytes_is_drained_so_its_client_reads_the_413() {
    let max = 16 << 20;
    let (source, counters) = http_source(max, short_limits()).await;
    let body = vec![b' '; max + 1024];
    let mut stream = TcpStream::connect(source.address).await.unwrap();
    let mut request = request_head("/ingest", &[], body.len()).into_bytes();
    request.extend_from_slice(&body);
    // Far more than the socket buffers hold (a send buffer grows to 4 MiB
    // here): only a listener that reads it lets the write finish.
    let written = tokio::time::timeout(PATIENCE, stream.write_all(&request))
        .await
        .expect("the listener reads the refused body");
    assert!(written.is_ok(), "{written:?}");
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body.contains("larger than"), "{answer:?}");
    assert_eq!(counters.requests.too_large.load(Ordering::Relaxed), 1);
    assert_eq!(source.stop().await, Vec::<String>::new());
}

/// JSON is UTF-8: a body with invalid UTF-8 inside a JSON string is
/// refused whole with `400` naming it; valid UTF-8 is stored as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_with_invalid_utf8_are_refused_whole() {
    let (source, counters) = http_source(64 * 1024, short_limits()).await;
    let refused = post(
        source.address,
        "/ingest",
        &[],
        b"{\"ok\":1}\n{\"a\":\"\xff\xfe\"}\n",
    )
    .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("invalid UTF-8"), "{refused:?}");
    assert!(refused.body.contains("line 2"), "{refused:?}");
    assert_eq!(counters.requests.invalid.load(Ordering::Relaxed), 1);

    let served = post(
        source.address,
        "/ingest",
        &[],
        "{\"a\":\"é ✓\"}\n".as_bytes(),
    )
    .await;
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(source.stop().await, vec!["{\"a\":\"é ✓\"}"]);
}
