//! Request bodies give their memory back to the system when their
//! requests end. One test alone in its binary: it measures the resident
//! memory of the whole process, which no other test may share.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipper_components::listen::ListenerLimits;
use shipper_components::sources::http::{HttpOptions, HttpSource};
use shipper_core::chunk::ChunkOptions;
use shipper_core::component::{Shutdown, Source, SourceContext};
use shipper_core::emit::Emitter;
use shipper_core::log::{Log, LogOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;
/// Uploads at once, each declaring `DECLARED` bytes and sending `SENT`.
const UPLOADS: usize = 20;
const DECLARED: usize = 8 * MIB;
const SENT: usize = 6 * MIB;
/// What the stalled uploads must be seen holding, at least.
const PEAK_AT_LEAST: usize = 100 * MIB;
/// How far above the start memory may stay once they ended. Bodies in
/// maps of their own leave a few MiB (read buffers the heap keeps); held
/// on the heap instead, they were seen leaving 50 MiB after two rounds.
const LEFT_AT_MOST: usize = 32 * MIB;
const PATIENCE: Duration = Duration::from_secs(60);

/// What the clients send, from one shared block so that they hold no
/// memory of their own.
static BLOCK: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// This process's resident memory (VmRSS), in bytes.
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn head(length: usize) -> String {
    format!(
        "POST /ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Sends `SENT` bytes of a body declared `DECLARED` long, then nothing;
/// returns the status of the answer.
async fn stalled_upload(address: SocketAddr) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(head(DECLARED).as_bytes()).await.unwrap();
    for _ in 0..SENT / BLOCK.len() {
        stream.write_all(&BLOCK).await.unwrap();
    }
    let mut answer = Vec::new();
    // The listener may reset the connection after its answer.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Runs `UPLOADS` stalled uploads at once; checks that they are seen
/// holding their bodies, that they time out, and that once they ended
/// memory is back near `start`.
async fn stalled_uploads_give_their_memory_back(address: SocketAddr, start: usize, round: u32) {
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|_| tokio::spawn(stalled_upload(address)))
        .collect();
    let deadline = Instant::now() + PATIENCE;
    let mut peak = start;
    while peak < start + PEAK_AT_LEAST
        && Instant::now() < deadline
        && !uploads.iter().all(|u| u.is_finished())
    {
        peak = peak.max(resident());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        peak >= start + PEAK_AT_LEAST,
        "round {round}: the stalled uploads were never seen holding {} MiB (start {} MiB, peak {} MiB)",
        PEAK_AT_LEAST / MIB,
        start / MIB,
        peak / MIB
    );
    for upload in uploads {
        assert_eq!(
            upload.await.unwrap(),
            408,
            "round {round}: a stalled upload times out"
        );
    }

    let deadline = Instant::now() + PATIENCE;
    let mut now = resident();
    while now > start + LEFT_AT_MOST && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = resident();
    }
    assert!(
        now <= start + LEFT_AT_MOST,
        "round {round}: memory stayed {} MiB above the start ({} MiB) after the requests ended (peak {} MiB)",
        (now - start) / MIB,
        start / MIB,
        peak / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_give_their_memory_back_when_requests_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let mut source = HttpSource::bind(
        HttpOptions {
            address: "127.0.0.1:0".parse().unwrap(),
            path: "/ingest".into(),
            max_body_bytes: 16 * MIB,
            limits: ListenerLimits {
                // Admits every upload: the memory is the bodies'.
                max_buffered_bytes: (UPLOADS * DECLARED * 2) as u64,
                // Long enough to see them all held at once.
                body_timeout: Duration::from_secs(4),
                ..ListenerLimits::default()
            },
            tls: None,
            auth: None,
        },
        "web",
    )
    .await
    .unwrap();
    let address = source.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let mut cx = SourceContext {
        emitter: Emitter::new(log.clone(), "http", ChunkOptions::default()).unwrap(),
        shutdown: shutdown.clone(),
    };
    let running = tokio::spawn(async move { source.run(&mut cx).await });

    // One request first, so that what serving any request costs once is
    // in the start.
    let mut warm = TcpStream::connect(address).await.unwrap();
    warm.write_all(format!("{}{{}}\n", head(3)).as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    warm.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let start = resident();

    // Twice: the second round proves the first left nothing behind that
    // holds memory for later requests, whatever the allocator learned.
    for round in 1..=2 {
        stalled_uploads_give_their_memory_back(address, start, round).await;
    }
    shutdown.trigger();
    running.await.unwrap().unwrap();
    assert_eq!(log.next_offset(), 1, "only the first request stored");
}
