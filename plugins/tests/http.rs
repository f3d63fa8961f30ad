//! The http source over real HTTP on 127.0.0.1.

use std::io::Write;

use shipper_components::sources::http::{HttpOptions, HttpSource};
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Durability, Log, LogOptions};

use shipper_tests::records::stored as records;

/// One HTTP/1.1 POST over a plain TCP connection; returns status and body.
fn post(
    address: std::net::SocketAddr,
    path: &str,
    encoding: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let headers: Vec<(&str, &str)> = encoding
        .map(|e| ("Content-Encoding", e))
        .into_iter()
        .collect();
    shipper_tests::http(address.port(), "POST", path, &headers, body)
        .unwrap_or_else(|e| panic!("POST to {address}{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_answered_after_durability_and_bad_bodies_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions {
            durability: Durability::Always,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let options = HttpOptions {
        address: "127.0.0.1:0".parse().unwrap(),
        path: "/ingest".into(),
        max_body_bytes: 64 * 1024,
        limits: shipper_components::listen::ListenerLimits::default(),
        tls: None,
        auth: None,
    };
    let mut source = HttpSource::bind(options, "web").await.unwrap();
    let address = source.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let mut cx = SourceContext {
        emitter: Emitter::new(log.clone(), "http", ChunkOptions::default()).unwrap(),
        shutdown: shutdown.clone(),
    };
    let running = tokio::spawn(async move { source.run(&mut cx).await });

    let probe = log.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        // NDJSON: 200 only once durable.
        let (status, body) = post(address, "/ingest", None, b"{\"a\":1}\n{\"a\":2}\r\n\n");
        results.push((status, body));
        assert!(probe.durable_offset() >= 2, "answered before durable");
        // A JSON array, zstd-encoded: one record per element.
        let array = zstd::bulk::compress(br#"[{"b":1}, {"b": 2}, 3]"#, 3).unwrap();
        results.push(post(address, "/ingest", Some("zstd"), &array));
        // gzip.
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(b"{\"c\":1}\n").unwrap();
        results.push(post(
            address,
            "/ingest",
            Some("gzip"),
            &gzip.finish().unwrap(),
        ));
        // A bad line: 400 naming it, nothing of the body stored.
        results.push(post(address, "/ingest", None, b"{\"d\":1}\n{oops\n"));
        // A zstd bomb: 16 MiB of zeros in a few bytes; 413, bounded memory.
        let bomb = zstd::bulk::compress(&vec![b' '; 16 << 20], 19).unwrap();
        results.push(post(address, "/ingest", Some("zstd"), &bomb));
        // A body over the limit before decompression.
        results.push(post(address, "/ingest", None, &vec![b' '; 100 * 1024]));
        // An unknown encoding.
        results.push(post(address, "/ingest", Some("br"), b"{}"));
        results
    })
    .await
    .unwrap();
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        vec![200, 200, 200, 400, 413, 413, 415],
        "{results:?}"
    );
    assert_eq!(results[0].1, "{\"accepted\":2}");
    assert!(results[3].1.contains("line 2"), "{}", results[3].1);

    shutdown.trigger();
    running.await.unwrap().unwrap();
    assert_eq!(
        records(&log),
        vec![
            "{\"a\":1}",
            "{\"a\":2}",
            "{\"b\":1}",
            "{\"b\":2}",
            "3",
            "{\"c\":1}"
        ]
    );
}
