//! The socket source over real sockets on 127.0.0.1 and a Unix socket.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shipper_components::sources::socket::{
    Listen, SocketFraming, SocketOptions, SocketParse, SocketSource,
};
use shipper_core::chunk::{decode_body, ChunkOptions, Decoder};
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Log, LogOptions};
use shipper_core::metrics::ComponentMetric;
use tokio::io::AsyncWriteExt;

fn options(listen: Listen, framing: SocketFraming, parse: SocketParse) -> SocketOptions {
    SocketOptions {
        listen,
        framing,
        max_connections: 16,
        idle_timeout: std::time::Duration::from_secs(300),
        max_frame_bytes: 1024,
        parse,
        tls: None,
        socket_mode: 0o600,
    }
}

fn records(log: &Log) -> Vec<Vec<u8>> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    for chunk in log.reader(0) {
        let chunk = chunk.unwrap();
        let view = chunk.view();
        for record in decode_body(&view, &mut decoder).unwrap().records() {
            out.push(record.unwrap().to_vec());
        }
    }
    out
}

/// A source running on its own task.
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), ComponentError>>,
}

impl Running {
    fn start(mut source: SocketSource, log: &Log) -> Running {
        let shutdown = Shutdown::new();
        let mut cx = SourceContext {
            emitter: Emitter::new(log.clone(), "net", ChunkOptions::default()).unwrap(),
            shutdown: shutdown.clone(),
        };
        let task = tokio::spawn(async move { source.run(&mut cx).await });
        Running { shutdown, task }
    }

    /// Stops the source; returns the log's records.
    async fn stop(self, log: &Log) -> Vec<Vec<u8>> {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
        records(log)
    }
}

/// Waits (bounded) until the log holds `expected` records.
async fn wait_for_records(log: &Log, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Records are appended when a chunk closes (5 ms linger).
        log.flush().unwrap();
        if log.next_offset() >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `condition` until it holds; fails naming `what` after 30 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True once the source has closed `stream` (end of file or a reset);
/// false while it is open and silent.
fn closed_by_source(stream: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the socket source never writes"),
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Runs `source` until the log holds `expected` records (bounded), then
/// shuts it down and returns the log's records.
async fn run_until(
    source: SocketSource,
    log: &Log,
    expected: u64,
    send: impl std::future::Future<Output = ()>,
) -> Vec<Vec<u8>> {
    let running = Running::start(source, log);
    send.await;
    wait_for_records(log, expected).await;
    running.stop(log).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_lines_from_concurrent_connections_all_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let source = SocketSource::bind(
        options(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            SocketFraming::Newline,
            SocketParse::None,
        ),
        "net",
    )
    .await
    .unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let send = async move {
        let mut clients = Vec::new();
        for client in 0..3 {
            clients.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
                let mut text = String::new();
                for i in 0..1000 {
                    text.push_str(&format!("client {client} line {i}\n"));
                }
                text.push_str(&format!("client {client} unterminated"));
                stream.write_all(text.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            }));
        }
        for client in clients {
            client.await.unwrap();
        }
    };
    let mut got = run_until(source, &log, 3003, send).await;
    got.sort();
    let mut expected: Vec<Vec<u8>> = (0..3)
        .flat_map(|c| {
            (0..1000)
                .map(move |i| format!("client {c} line {i}").into_bytes())
                .chain([format!("client {c} unterminated").into_bytes()])
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(counters.connections.load(Ordering::Relaxed), 3);
    assert_eq!(counters.records.load(Ordering::Relaxed), 3003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_octet_counted_syslog_is_stored_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path().join("data"), LogOptions::default()).unwrap();
    let path = dir.path().join("in.sock");
    let source = SocketSource::bind(
        options(
            Listen::Unix(path.clone()),
            SocketFraming::OctetCounting,
            SocketParse::Syslog,
        ),
        "net",
    )
    .await
    .unwrap();
    let counters = source.counters();
    let messages = [
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8",
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
        "not syslog at all",
    ];
    let send = async move {
        let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut wire = Vec::new();
        for message in messages {
            wire.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
        }
        stream.write_all(&wire).await.unwrap();
        stream.shutdown().await.unwrap();
    };
    let got = run_until(source, &log, 2, send).await;
    assert_eq!(got.len(), 2);
    for (record, message) in got.iter().zip(messages) {
        let json: serde_json::Value = serde_json::from_slice(record).unwrap();
        assert!(json.is_object(), "{json}");
        let text = json.to_string();
        let tail = message.rsplit(" - ").next().unwrap();
        assert!(
            text.contains(&tail[..10]) || text.contains("do-nuts"),
            "{text}"
        );
    }
    assert_eq!(counters.unparsable.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_keep_valid_json_and_count_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let source = SocketSource::bind(
        options(
            Listen::Udp("127.0.0.1:0".parse().unwrap()),
            SocketFraming::Newline,
            SocketParse::Json,
        ),
        "net",
    )
    .await
    .unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let oversized = "x".repeat(2000);
    let send = async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..50 {
            socket
                .send_to(format!("{{\"n\":{i}}}\n{{\"m\":{i}}}").as_bytes(), address)
                .await
                .unwrap();
            socket.send_to(b"{broken", address).await.unwrap();
        }
        socket
            .send_to(format!("\"{oversized}\"").as_bytes(), address)
            .await
            .unwrap();
    };
    let got = run_until(source, &log, 100, send).await;
    // UDP may drop datagrams under load; on loopback at this rate it does not.
    assert_eq!(got.len(), 100);
    assert!(got
        .iter()
        .all(|r| serde_json::from_slice::<serde_json::Value>(r).is_ok()));
    assert_eq!(counters.unparsable.load(Ordering::Relaxed), 50);
    assert_eq!(counters.oversized.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_long_lines_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let mut opts = options(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        SocketFraming::Newline,
        SocketParse::None,
    );
    opts.max_connections = 1;
    let source = SocketSource::bind(opts, "net").await.unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let refused_counter = counters.clone();
    let send = async move {
        let mut first = tokio::net::TcpStream::connect(address).await.unwrap();
        first.write_all(b"kept\n").await.unwrap();
        // Wait until the first connection is being served, then try a second.
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused_counter.connections.load(Ordering::Relaxed) < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut second, &mut byte),
        )
        .await
        .expect("the refused connection is closed");
        assert!(matches!(closed, Ok(0) | Err(_)));
        first
            .write_all(format!("{}\nalso kept\n", "y".repeat(5000)).as_bytes())
            .await
            .unwrap();
        first.shutdown().await.unwrap();
    };
    let got = run_until(source, &log, 2, send).await;
    assert_eq!(got, vec![b"kept".to_vec(), b"also kept".to_vec()]);
    assert_eq!(counters.refused.load(Ordering::Relaxed), 1);
    assert_eq!(counters.oversized.load(Ordering::Relaxed), 1);
}

/// At `max_connections`, a new connection closes the one idle longest
/// (idle at least a second) and is served: idle connections cannot keep
/// a sender out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_idlest_connection_makes_room_for_a_sender() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let mut opts = options(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        SocketFraming::Newline,
        SocketParse::None,
    );
    opts.max_connections = 8;
    let source = SocketSource::bind(opts, "net").await.unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let running = Running::start(source, &log);

    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    eventually("eight connections served", || {
        counters.connections.load(Ordering::Relaxed) == 8
    })
    .await;
    // Only a connection idle for a second may be closed for a new one.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut sender = tokio::net::TcpStream::connect(address).await.unwrap();
    sender.write_all(b"one\ntwo\n").await.unwrap();
    wait_for_records(&log, 2).await;
    eventually("the idlest connection closed", || {
        idle.iter().filter(|s| closed_by_source(s)).count() == 1
    })
    .await;
    assert_eq!(counters.evicted.load(Ordering::Relaxed), 1);
    assert_eq!(counters.refused.load(Ordering::Relaxed), 0);
    assert_eq!(counters.connections.load(Ordering::Relaxed), 9);
    // The sender's connection stays open and served.
    sender.write_all(b"three\n").await.unwrap();
    wait_for_records(&log, 3).await;
    drop((idle, sender));
    assert_eq!(
        running.stop(&log).await,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

/// A connection that sends nothing for `idle_timeout` is closed and
/// counted, whatever the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_idle_for_idle_timeout_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let mut opts = options(
        Listen::Tcp("127.0.0.1:0".parse().unwrap()),
        SocketFraming::Newline,
        SocketParse::None,
    );
    opts.idle_timeout = Duration::from_millis(500);
    let source = SocketSource::bind(opts, "net").await.unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let running = Running::start(source, &log);

    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    // One that sent a line before going quiet is closed as well.
    idle[0].write_all(b"said something\n").await.unwrap();
    eventually("the idle connections closed", || {
        idle.iter().all(closed_by_source)
    })
    .await;
    eventually("the idle connections counted", || {
        counters.idle_closed.load(Ordering::Relaxed) == 3
    })
    .await;
    assert_eq!(counters.evicted.load(Ordering::Relaxed), 0);
    assert_eq!(running.stop(&log).await, vec![b"said something".to_vec()]);
}

/// RFC 6587 octet counting: a frame longer than `max_frame_bytes` is
/// skipped by its declared length and counted; the frames around it are
/// stored and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_octet_counted_frame_is_skipped_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let source = SocketSource::bind(
        options(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            SocketFraming::OctetCounting,
            SocketParse::None,
        ),
        "net",
    )
    .await
    .unwrap();
    let address = source.local_addr().unwrap();
    let counters = source.counters();
    let running = Running::start(source, &log);

    let oversized = "x".repeat(2000);
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let wire = format!("5 first{} {oversized}6 second5 third", oversized.len());
    stream.write_all(wire.as_bytes()).await.unwrap();
    wait_for_records(&log, 3).await;
    assert_eq!(counters.oversized.load(Ordering::Relaxed), 1);
    stream.write_all(b"5 after").await.unwrap();
    wait_for_records(&log, 4).await;
    assert!(!closed_by_source(&stream), "the connection stays open");
    assert_eq!(counters.framing_errors.load(Ordering::Relaxed), 0);
    drop(stream);
    assert_eq!(
        running.stop(&log).await,
        vec![
            b"first".to_vec(),
            b"second".to_vec(),
            b"third".to_vec(),
            b"after".to_vec()
        ]
    );
}

/// The value of the source's metric `name` with `reason`.
fn metric(metrics: &[ComponentMetric], name: &str, reason: &str) -> u64 {
    metrics
        .iter()
        .find(|m| m.name == name && m.labels.contains(&("reason", reason)))
        .unwrap_or_else(|| panic!("no metric {name} {{reason={reason}}} in {metrics:?}"))
        .value()
}

/// With `parse = json`, a line that is not JSON and one with invalid
/// UTF-8 inside a JSON string are dropped; they and an oversized line are
/// counted, and the counts are in the source's metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_records_are_counted_in_the_sources_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let source = SocketSource::bind(
        options(
            Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            SocketFraming::Newline,
            SocketParse::Json,
        ),
        "net",
    )
    .await
    .unwrap();
    let address = source.local_addr().unwrap();
    let metrics = source.metrics();
    let running = Running::start(source, &log);

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut wire = b"{\"ok\":1}\nnot json\n{\"s\":\"\xff\xfe\"}\n".to_vec();
    wire.extend_from_slice(format!("\"{}\"\n", "x".repeat(2000)).as_bytes());
    wire.extend_from_slice(b"{\"ok\":2}\n");
    stream.write_all(&wire).await.unwrap();
    stream.shutdown().await.unwrap();
    wait_for_records(&log, 2).await;
    let discarded = "shipper_source_discarded_records_total";
    eventually("the drops counted", || {
        metric(&metrics, discarded, "unparsable") == 2
            && metric(&metrics, discarded, "oversized") == 1
    })
    .await;
    assert_eq!(metric(&metrics, discarded, "udp_receive_buffer"), 0);
    assert_eq!(
        running.stop(&log).await,
        vec![b"{\"ok\":1}".to_vec(), b"{\"ok\":2}".to_vec()]
    );
}
