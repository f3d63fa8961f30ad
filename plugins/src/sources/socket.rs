//! `socket`: records from TCP or Unix stream connections (newline or
//! RFC 6587 octet-counting framing) and from UDP datagrams (one record per
//! datagram, or per line with newline framing). Optionally parses each
//! record as syslog (RFC 5424 / 3164, stored as a JSON object) or checks it
//! is JSON.
//!
//! Connections read into a bounded queue that the source's task empties
//! into the log: when the log pushes back, the queue fills and connections
//! stop being read (TCP backpressure). Oversized frames are dropped and
//! counted (an oversized octet-counted frame is skipped: its length says
//! where the next one starts, so the connection goes on); a record that
//! fails the configured parse is dropped, counted and logged, never stored
//! half. Every drop is counted in `/metrics` and logged at most once per
//! ten seconds per kind; a UDP socket's receive-buffer overflows, counted
//! by the kernel, are read from `/proc/net/udp` and exported too.
//!
//! Stream connections are capped (`max_connections`, and the process's
//! own cap below its open-files limit, see [`crate::listen`]). A connection
//! that sends nothing for `idle_timeout` is closed; when the cap is
//! reached, the connection idle longest (at least a second) is closed to
//! make room for the new one, so idle connections cannot keep senders out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shipper_core::chunk::now_nanos;
use shipper_core::component::{ComponentError, Shutdown, Source, SourceContext};
use shipper_core::metrics::{counters_of, ComponentMetric};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::framing::lines::{LineOptions, LineSplitter, Overlong};
use crate::framing::octet::OctetDecoder;
use crate::listen::ConnectionSlots;
use crate::throttle::Throttle;

/// Where the source listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP on an address.
    Tcp(SocketAddr),
    /// UDP on an address.
    Udp(SocketAddr),
    /// A Unix stream socket at a path.
    Unix(PathBuf),
}

/// How a stream is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketFraming {
    /// One record per line.
    #[default]
    Newline,
    /// RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
}

/// What is done to each record before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketParse {
    /// Stored as received.
    #[default]
    None,
    /// Parsed as syslog and stored as a JSON object.
    Syslog,
    /// Stored if it is one JSON value, dropped (counted) otherwise.
    Json,
}

/// Options of a [`SocketSource`].
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Where to listen.
    pub listen: Listen,
    /// Stream framing (UDP: `Newline` splits datagrams into lines).
    pub framing: SocketFraming,
    /// Connections served at once (see the module docs for what happens
    /// at the cap).
    pub max_connections: usize,
    /// A stream connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Longest record; longer ones are dropped and counted.
    pub max_frame_bytes: usize,
    /// Parsing of each record.
    pub parse: SocketParse,
    /// TLS on TCP connections, when the source has a `tls` table.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// Permission bits of a Unix socket's file, whatever the umask
    /// (connecting needs write permission).
    pub socket_mode: u32,
}

/// Counters of a socket source.
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused because `max_connections` (or the process's
    /// cap) were open and none was idle enough to close.
    pub refused: AtomicU64,
    /// Idle connections closed to make room for a new one at the cap.
    pub evicted: AtomicU64,
    /// Connections closed after `idle_timeout` without a byte.
    pub idle_closed: AtomicU64,
    /// Stream connections closed on a framing error that leaves no way to
    /// find the next frame (a bad octet-counting length).
    pub framing_errors: AtomicU64,
    /// Records stored.
    pub records: AtomicU64,
    /// Frames dropped for being longer than `max_frame_bytes`.
    pub oversized: AtomicU64,
    /// Records dropped because they did not parse.
    pub unparsable: AtomicU64,
    /// Datagrams the kernel dropped because the UDP socket's receive
    /// buffer was full (from `/proc/net/udp`).
    pub udp_receive_drops: AtomicU64,
    /// TCP connections whose TLS handshake failed or did not finish
    /// within `idle_timeout`.
    pub tls_failed: AtomicU64,
}

/// Rate limits of the source's log lines, one per kind of event.
#[derive(Debug, Default)]
struct Throttles {
    oversized: Throttle,
    unparsable: Throttle,
    refused: Throttle,
    framing: Throttle,
    udp_drops: Throttle,
    tls: Throttle,
}

/// What a connection and the source share.
#[derive(Debug, Default)]
struct Shared {
    counters: Arc<SocketStats>,
    throttles: Throttles,
}

impl Shared {
    fn handshake_failed(&self, error: &str) {
        self.counters.tls_failed.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.throttles.tls.allow() {
            tracing::warn!(
                %error,
                suppressed,
                "socket source: TLS handshake failed; connection closed (a plaintext client, or a client certificate that is missing, expired or not from tls.ca_file)"
            );
        }
    }

    fn dropped_oversized(&self, count: u64, max: usize) {
        if count == 0 {
            return;
        }
        self.counters.oversized.fetch_add(count, Ordering::Relaxed);
        if let Some(suppressed) = self.throttles.oversized.allow() {
            tracing::warn!(
                dropped = count,
                max_frame_bytes = max,
                suppressed,
                "socket source: a record longer than max_frame_bytes was dropped"
            );
        }
    }
}

/// Records read by a connection, handed to the source's task.
#[derive(Debug, Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
    }
}

/// Applies the parse option; `None` means: drop it (counted).
fn prepare<'a>(
    parse: SocketParse,
    record: &'a [u8],
    scratch: &'a mut Vec<u8>,
    shared: &Shared,
) -> Option<&'a [u8]> {
    let failed = match parse {
        SocketParse::None => return Some(record),
        // JSON is UTF-8 (RFC 8259); the check that skips values does not
        // look inside strings, so look first.
        SocketParse::Json => match std::str::from_utf8(record) {
            Err(error) => format!("not UTF-8: {error}"),
            Ok(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(record) {
                Ok(_) => return Some(record),
                Err(error) => format!("not JSON: {error}"),
            },
        },
        SocketParse::Syslog => match crate::parse::syslog::parse(record) {
            Ok(syslog) => {
                scratch.clear();
                crate::parse::syslog::write_json(&syslog, scratch);
                return Some(&scratch[..]);
            }
            Err(error) => format!("not syslog: {error}"),
        },
    };
    shared.counters.unparsable.fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = shared.throttles.unparsable.allow() {
        tracing::warn!(reason = %failed, suppressed, "socket source: a record that does not parse was dropped");
    }
    None
}

/// Listens on a socket and emits every record it receives.
#[derive(Debug)]
pub struct SocketSource {
    options: SocketOptions,
    stream: String,
    bound: Option<Bound>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Unix(UnixListener),
}

impl SocketSource {
    /// Binds the socket now, so that an address in use is an error at
    /// start. Records go to `stream`.
    pub async fn bind(options: SocketOptions, stream: &str) -> Result<Self, ComponentError> {
        let bound = match &options.listen {
            Listen::Tcp(address) => {
                Bound::Tcp(TcpListener::bind(address).await.map_err(|e| {
                    ComponentError::Fatal(format!("listening on tcp {address}: {e}"))
                })?)
            }
            Listen::Udp(address) => Bound::Udp(
                UdpSocket::bind(address)
                    .await
                    .map_err(|e| ComponentError::Fatal(format!("binding udp {address}: {e}")))?,
            ),
            Listen::Unix(path) => {
                // A socket file left by an earlier run is replaced; any
                // other kind of file is not touched.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                let listener = UnixListener::bind(path).map_err(|e| {
                    ComponentError::Fatal(format!(
                        "listening on unix socket {}: {e}",
                        path.display()
                    ))
                })?;
                std::fs::set_permissions(
                    path,
                    std::os::unix::fs::PermissionsExt::from_mode(options.socket_mode),
                )
                .map_err(|e| {
                    ComponentError::Fatal(format!(
                        "setting the mode of unix socket {}: {e}",
                        path.display()
                    ))
                })?;
                Bound::Unix(listener)
            }
        };
        Ok(SocketSource {
            options,
            stream: stream.to_owned(),
            bound: Some(bound),
            shared: Arc::default(),
        })
    }

    /// The bound address (TCP or UDP), e.g. after binding port 0.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self.bound.as_ref()? {
            Bound::Tcp(listener) => listener.local_addr().ok(),
            Bound::Udp(socket) => socket.local_addr().ok(),
            Bound::Unix(_) => None,
        }
    }

    /// The counters, shared with the running source.
    pub fn counters(&self) -> Arc<SocketStats> {
        self.shared.counters.clone()
    }
}

/// What the accept loop knows of one open stream connection.
#[derive(Debug)]
struct Tracked {
    /// When it last delivered a byte (milliseconds on the source's clock).
    last_read_ms: AtomicU64,
    /// Triggered to close it (evicted to make room).
    evict: Shutdown,
}

/// The open stream connections, for finding the one idle longest.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<Vec<Weak<Tracked>>>,
}

impl Connections {
    fn track(&self, now_ms: u64) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            last_read_ms: AtomicU64::new(now_ms),
            evict: Shutdown::new(),
        });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|weak| weak.strong_count() > 0);
        open.push(Arc::downgrade(&tracked));
        tracked
    }

    /// Closes the connection idle longest, if it has been idle at least
    /// `at_least` (ms); returns whether one was told to close.
    fn evict_idlest(&self, now_ms: u64, at_least: u64) -> bool {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let idlest = open
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|t| !t.evict.is_triggered())
            .min_by_key(|t| t.last_read_ms.load(Ordering::Relaxed));
        match idlest {
            Some(tracked)
                if now_ms.saturating_sub(tracked.last_read_ms.load(Ordering::Relaxed))
                    >= at_least =>
            {
                tracked.evict.trigger();
                true
            }
            _ => false,
        }
    }
}

/// Milliseconds since `epoch`.
fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Reads one stream connection until it ends, is idle for `idle_timeout`
/// or is evicted, sending its records.
async fn serve_stream<S: AsyncRead + Unpin>(
    mut stream: S,
    options: SocketOptions,
    shared: Arc<Shared>,
    batches: mpsc::Sender<Batch>,
    tracked: Arc<Tracked>,
    epoch: Instant,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut scratch = Vec::new();
    let mut lines = LineSplitter::new(LineOptions {
        max_line_bytes: options.max_frame_bytes,
        overlong: Overlong::Drop,
        ..LineOptions::default()
    });
    let mut octets = OctetDecoder::new(options.max_frame_bytes);
    let mut dropped_lines = 0;
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(options.idle_timeout, stream.read(&mut buffer)) => read,
            () = tracked.evict.wait() => break,
        };
        let n = match read {
            Err(_) => {
                shared.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        tracked
            .last_read_ms
            .store(millis_since(epoch), Ordering::Relaxed);
        let mut batch = Batch::default();
        match options.framing {
            SocketFraming::Newline => {
                let mut cursor = lines.feed(&buffer[..n]);
                while let Some(line) = cursor.next() {
                    if let Some(record) = prepare(options.parse, line.bytes, &mut scratch, &shared)
                    {
                        batch.push(record);
                    }
                }
                let dropped = lines.dropped_lines();
                shared.dropped_oversized(dropped - dropped_lines, options.max_frame_bytes);
                dropped_lines = dropped;
            }
            SocketFraming::OctetCounting => {
                let mut frames = octets.feed(&buffer[..n]);
                while let Some(frame) = frames.next() {
                    match frame {
                        Ok(frame) => {
                            if let Some(record) =
                                prepare(options.parse, frame.bytes, &mut scratch, &shared)
                            {
                                batch.push(record);
                            }
                        }
                        Err(error) if !error.is_fatal() => {
                            // Its length says where the next frame starts:
                            // skipped, and the connection goes on.
                            shared.dropped_oversized(1, options.max_frame_bytes);
                        }
                        Err(error) => {
                            shared
                                .counters
                                .framing_errors
                                .fetch_add(1, Ordering::Relaxed);
                            if let Some(suppressed) = shared.throttles.framing.allow() {
                                tracing::warn!(%error, suppressed, "socket source: bad octet-counting frame; closing the connection");
                            }
                            let _ = batches.send(batch).await;
                            return;
                        }
                    }
                }
            }
        }
        if !batch.ends.is_empty() && batches.send(batch).await.is_err() {
            return;
        }
    }
    let mut batch = Batch::default();
    if options.framing == SocketFraming::Newline {
        if let Some(last) = lines.finish() {
            if let Some(record) = prepare(options.parse, last.bytes, &mut scratch, &shared) {
                batch.push(record);
            }
        }
        shared.dropped_oversized(
            lines.dropped_lines() - dropped_lines,
            options.max_frame_bytes,
        );
    }
    if !batch.ends.is_empty() {
        let _ = batches.send(batch).await;
    }
}

/// Receives datagrams until the queue closes, sending their records.
async fn serve_udp(
    socket: UdpSocket,
    options: SocketOptions,
    shared: Arc<Shared>,
    batches: mpsc::Sender<Batch>,
) {
    let mut buffer = vec![0u8; 65_536];
    let mut scratch = Vec::new();
    let local = socket.local_addr().ok();
    let mut drops = local.and_then(udp_drops);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let n = tokio::select! {
            received = socket.recv(&mut buffer) => match received {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, "udp receive failed");
                    continue;
                }
            },
            _ = check.tick() => {
                // The kernel's count of datagrams dropped on a full
                // receive buffer: a loss no read can see.
                if let (Some(before), Some(now)) = (drops, local.and_then(udp_drops)) {
                    if now > before {
                        shared
                            .counters
                            .udp_receive_drops
                            .fetch_add(now - before, Ordering::Relaxed);
                        if let Some(suppressed) = shared.throttles.udp_drops.allow() {
                            tracing::warn!(
                                dropped = now - before,
                                suppressed,
                                "socket source: the kernel dropped datagrams, the UDP receive buffer was full (raise net.core.rmem_max or send less)"
                            );
                        }
                    }
                    drops = Some(now);
                } else if drops.is_none() {
                    drops = local.and_then(udp_drops);
                }
                continue;
            }
        };
        let datagram = &buffer[..n];
        let mut batch = Batch::default();
        let pieces: Vec<&[u8]> = match options.framing {
            SocketFraming::Newline => datagram
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect(),
            SocketFraming::OctetCounting => vec![datagram],
        };
        for piece in pieces {
            if piece.len() > options.max_frame_bytes {
                shared.dropped_oversized(1, options.max_frame_bytes);
                continue;
            }
            if let Some(record) = prepare(options.parse, piece, &mut scratch, &shared) {
                batch.push(record);
            }
        }
        if !batch.ends.is_empty() && batches.send(batch).await.is_err() {
            return;
        }
    }
}

/// The kernel's count of datagrams dropped by the UDP socket bound to
/// `local` (`drops`, the last column of `/proc/net/udp` or `udp6`).
fn udp_drops(local: SocketAddr) -> Option<u64> {
    let (table, wanted) = match local {
        SocketAddr::V4(v4) => (
            "/proc/net/udp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            ),
        ),
        SocketAddr::V6(v6) => {
            let octets = v6.ip().octets();
            let words: String = octets
                .chunks(4)
                .map(|word| {
                    format!(
                        "{:08X}",
                        u32::from_le_bytes(word.try_into().expect("4 bytes"))
                    )
                })
                .collect();
            ("/proc/net/udp6", format!("{words}:{:04X}", v6.port()))
        }
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        (local == wanted).then(|| line.split_whitespace().last()?.parse().ok())?
    })
}

#[async_trait]
impl Source for SocketSource {
    fn metrics(&self) -> Vec<ComponentMetric> {
        const CLOSED: &str = "shipper_source_connections_closed_total";
        const DISCARDED: &str = "shipper_source_discarded_records_total";
        counters_of(
            &self.shared.counters,
            &[
                (
                    "shipper_source_connections_total",
                    "Connections accepted.",
                    &[],
                    |c| &c.connections,
                ),
                (
                    "shipper_source_connections_refused_total",
                    "Connections refused at the connection cap.",
                    &[],
                    |c| &c.refused,
                ),
                (
                    CLOSED,
                    "Connections the source closed: idle for idle_timeout, evicted at the cap for a new one, or after a framing error.",
                    &[("reason", "idle")],
                    |c| &c.idle_closed,
                ),
                (CLOSED, "", &[("reason", "evicted")], |c| &c.evicted),
                (CLOSED, "", &[("reason", "framing")], |c| &c.framing_errors),
                (CLOSED, "", &[("reason", "tls_handshake")], |c| &c.tls_failed),
                (
                    DISCARDED,
                    "Records the source received and dropped, by why.",
                    &[("reason", "oversized")],
                    |c| &c.oversized,
                ),
                (DISCARDED, "", &[("reason", "unparsable")], |c| &c.unparsable),
                (
                    DISCARDED,
                    "",
                    &[("reason", "udp_receive_buffer")],
                    |c| &c.udp_receive_drops,
                ),
            ],
        )
    }

    async fn run(&mut self, cx: &mut SourceContext) -> Result<(), ComponentError> {
        let bound = self
            .bound
            .take()
            .ok_or_else(|| ComponentError::Fatal("socket source run twice".into()))?;
        let (sender, mut receiver) = mpsc::channel::<Batch>(64);
        let mut tasks = JoinSet::new();
        let options = self.options.clone();
        let shared = self.shared.clone();
        match bound {
            Bound::Udp(socket) => {
                tasks.spawn(serve_udp(socket, options, shared, sender));
            }
            Bound::Tcp(listener) => {
                tasks.spawn(accept_loop(listener, options, shared, sender));
            }
            Bound::Unix(listener) => {
                tasks.spawn(accept_loop(listener, options, shared, sender));
            }
        }
        loop {
            tokio::select! {
                batch = receiver.recv() => match batch {
                    Some(batch) => self.emit(cx, &batch)?,
                    None => break,
                },
                () = cx.shutdown.wait() => break,
            }
        }
        // Stop reading, then store what was already read.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        while let Ok(batch) = receiver.try_recv() {
            self.emit(cx, &batch)?;
        }
        cx.emitter.durable().await?;
        Ok(())
    }
}

impl SocketSource {
    fn emit(&self, cx: &mut SourceContext, batch: &Batch) -> Result<(), ComponentError> {
        let now = now_nanos();
        let mut start = 0;
        for &end in &batch.ends {
            cx.emitter
                .emit(&self.stream, &batch.data[start..end], now, None)?;
            start = end;
        }
        self.shared
            .counters
            .records
            .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A listener of stream connections.
trait Acceptor: Send + 'static {
    type Stream: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Acceptor for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections, serving at most `max_connections` at once (see
/// the module docs for what happens at the cap).
async fn accept_loop<A: Acceptor>(
    listener: A,
    options: SocketOptions,
    shared: Arc<Shared>,
    batches: mpsc::Sender<Batch>,
) {
    let slots = ConnectionSlots::new(options.max_connections);
    let open = Connections::default();
    let epoch = Instant::now();
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept_stream().await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let mut slot = slots.try_acquire();
        if slot.is_none() && open.evict_idlest(millis_since(epoch), 1_000) {
            shared.counters.evicted.fetch_add(1, Ordering::Relaxed);
            slot = slots.acquire_within(Duration::from_millis(500)).await;
        }
        let Some(slot) = slot else {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.throttles.refused.allow() {
                tracing::warn!(
                    max = options.max_connections,
                    suppressed,
                    "socket source: connection refused: max_connections reached and every connection is busy"
                );
            }
            drop(stream);
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let tracked = open.track(millis_since(epoch));
        let (options, shared, batches) = (options.clone(), shared.clone(), batches.clone());
        connections.spawn(async move {
            match options.tls.clone() {
                None => serve_stream(stream, options, shared, batches, tracked, epoch).await,
                Some(tls) => {
                    let handshake =
                        tokio::time::timeout(options.idle_timeout, tls.acceptor().accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_stream(stream, options, shared, batches, tracked, epoch).await;
                        }
                        Ok(Err(error)) => shared.handshake_failed(&error.to_string()),
                        Err(_) => shared.handshake_failed("no handshake within idle_timeout"),
                    }
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram socket nobody reads, flooded until its receive buffer
    /// overflows: `udp_drops` reads the kernel's count of what it dropped,
    /// for IPv4 and (where the host has it) IPv6.
    #[test]
    fn udp_drops_reads_the_kernels_count_of_a_full_receive_buffer() {
        for (address, family) in [("127.0.0.1:0", "IPv4"), ("[::1]:0", "IPv6")] {
            let receiver = match std::net::UdpSocket::bind(address) {
                Ok(receiver) => receiver,
                Err(error) if family == "IPv6" => {
                    eprintln!("no IPv6 loopback here ({error}); IPv6 not checked");
                    continue;
                }
                Err(error) => panic!("binding {address}: {error}"),
            };
            let local = receiver.local_addr().unwrap();
            assert_eq!(udp_drops(local), Some(0), "{family}: nothing dropped yet");
            let sender = std::net::UdpSocket::bind(address).unwrap();
            let datagram = [b'x'; 1024];
            let deadline = Instant::now() + Duration::from_secs(30);
            let dropped = loop {
                for _ in 0..256 {
                    sender.send_to(&datagram, local).unwrap();
                }
                let dropped = udp_drops(local).expect("the socket is in the table");
                if dropped > 0 {
                    break dropped;
                }
                assert!(
                    Instant::now() < deadline,
                    "{family}: the kernel never dropped"
                );
            };
            // The count only grows while the buffer stays full.
            sender.send_to(&datagram, local).unwrap();
            assert!(udp_drops(local).unwrap() > dropped, "{family}");
            drop(receiver);
            assert_eq!(
                udp_drops(local),
                None,
                "{family}: a closed socket has no entry"
            );
        }
    }
}

/// The `socket` source's config: `[sources.NAME] type = "socket"`. Every key is described in docs/config.md.
#[allow(missing_docs)]
mod config {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use serde::Deserialize;
    use shipper_core::component::Source;

    use super::{Listen, SocketFraming, SocketOptions, SocketParse, SocketSource};
    use crate::config::{
        duration_ms, BuildContext, BuildError, ByteSize, Checks, Listener, SourceComponent,
    };
    use crate::listen::config::{default_idle_timeout_ms, default_max_connections};

    fn default_max_frame_bytes() -> ByteSize {
        ByteSize::mib(1)
    }

    /// Transport of a socket source.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum SocketMode {
        #[default]
        Tcp,
        Udp,
        Unix,
    }

    /// `type = "socket"`: TCP, UDP or a Unix stream socket.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SocketSourceConfig {
        #[serde(default)]
        pub mode: SocketMode,
        /// `IP:port` to listen on, for `tcp` and `udp`.
        #[serde(default)]
        pub address: Option<SocketAddr>,
        /// Socket file, for `unix`.
        #[serde(default)]
        pub path: Option<PathBuf>,
        #[serde(default)]
        pub framing: SocketFraming,
        #[serde(default = "default_max_connections")]
        pub max_connections: u32,
        /// A stream connection that sends nothing for this long is closed.
        #[serde(default = "default_idle_timeout_ms", deserialize_with = "duration_ms")]
        pub idle_timeout_ms: u64,
        #[serde(default = "default_max_frame_bytes")]
        pub max_frame_bytes: ByteSize,
        #[serde(default)]
        pub parse: SocketParse,
        /// TLS on TCP connections.
        #[serde(default)]
        pub tls: Option<crate::tls::TlsListenerConfig>,
        /// Permission bits of the unix socket's file.
        #[serde(default = "default_socket_mode")]
        pub socket_mode: crate::config::FileMode,
    }

    fn default_socket_mode() -> crate::config::FileMode {
        crate::config::FileMode(0o660)
    }

    /// A Unix socket's path: its directory must exist, and the path must be
    /// free or a socket (a stale one is replaced; any other file is not).
    fn check_socket_path(path: &Path, check: &mut dyn Checks) {
        let shown = path.display();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
                check.error(
                    &["path"],
                    format!("`{shown}` exists and is not a socket; shipper replaces only a socket"),
                );
            }
            Ok(_) => {}
            Err(_) => {
                let parent = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                if !parent.is_dir() {
                    check.error(
                        &["path"],
                        format!("directory `{}` does not exist", parent.display()),
                    );
                }
            }
        }
    }

    impl crate::config::Named for SocketSourceConfig {
        const TYPE: &'static str = "socket";
    }

    #[async_trait::async_trait]
    impl SourceComponent for SocketSourceConfig {
        fn check(&self, check: &mut dyn Checks) {
            if self.mode == SocketMode::Unix {
                match &self.path {
                    None => check.error(&["path"], "missing required key `path` (mode = \"unix\")"),
                    Some(path) => check_socket_path(path, check),
                }
                if self.address.is_some() {
                    check.error(
                        &["address"],
                        "mode = \"unix\" listens on `path`, not `address`",
                    );
                }
            } else {
                if self.address.is_none() {
                    check.error(
                        &["address"],
                        "missing required key `address` (an IP:port, for mode = \"tcp\" or \"udp\")",
                    );
                }
                if self.path.is_some() {
                    check.error(
                        &["path"],
                        "`path` is for mode = \"unix\"; tcp and udp listen on `address`",
                    );
                }
            }
            if self.mode == SocketMode::Udp && self.framing == SocketFraming::OctetCounting {
                check.error(
                    &["framing"],
                    "octet_counting frames a stream; a UDP datagram is one record",
                );
            }
            if self.max_connections == 0 {
                check.error(&["max_connections"], "must be at least 1");
            }
            if self.idle_timeout_ms == 0 {
                check.error(&["idle_timeout_ms"], "must be at least 1");
            }
            if self.max_frame_bytes.bytes() == 0 {
                check.error(&["max_frame_bytes"], "must be at least 1 byte");
            }
            if let Some(tls) = &self.tls {
                match self.mode {
                    SocketMode::Tcp => tls.check(check),
                    SocketMode::Udp => check.error(
                        &["tls"],
                        "TLS is for mode = \"tcp\"; a UDP source has none (no DTLS): keep UDP on a trusted network or send over TCP",
                    ),
                    SocketMode::Unix => check.error(
                        &["tls"],
                        "TLS is for mode = \"tcp\"; a unix socket is reached only on this host, guarded by its file `mode`",
                    ),
                }
            }
        }

        fn listener(&self) -> Option<(&'static str, Listener)> {
            match (self.mode, self.address, &self.path) {
                (SocketMode::Tcp, Some(address), _) => Some(("address", Listener::Tcp(address))),
                (SocketMode::Udp, Some(address), _) => Some(("address", Listener::Udp(address))),
                (SocketMode::Unix, _, Some(path)) => Some(("path", Listener::Unix(path.clone()))),
                _ => None,
            }
        }

        /// A unix socket is reached only on this host (guarded by
        /// `socket_mode`); TCP by TLS.
        fn secured(&self) -> bool {
            self.mode == SocketMode::Unix || self.tls.is_some()
        }

        async fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
            let listen = match (self.mode, self.address, &self.path) {
                (SocketMode::Tcp, Some(address), _) => Listen::Tcp(address),
                (SocketMode::Udp, Some(address), _) => Listen::Udp(address),
                (SocketMode::Unix, _, Some(path)) => Listen::Unix(path.clone()),
                _ => return Err("tcp and udp need `address`, unix needs `path`".into()),
            };
            let options = SocketOptions {
                listen,
                framing: self.framing,
                max_connections: self.max_connections as usize,
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                max_frame_bytes: usize::try_from(self.max_frame_bytes.0).unwrap_or(usize::MAX),
                parse: self.parse,
                tls: match (&self.tls, self.mode) {
                    (Some(tls), SocketMode::Tcp) => Some(std::sync::Arc::new(
                        crate::tls::ServerTls::new(tls, &[]).map_err(|e| format!("tls: {e}"))?,
                    )),
                    _ => None,
                },
                socket_mode: self.socket_mode.bits(),
            };
            let source = SocketSource::bind(options, cx.name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(source))
        }
    }
}

pub use config::{SocketMode, SocketSourceConfig};
